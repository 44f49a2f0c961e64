"""Sampling, warpers and processors: transformers' semantics, reproducible seeds, no retracing."""
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import reference
from xlagen.engine import GenerationArgumentError, loops, options
from xlagen.engine.loops import processing
from xlagen.kernels import processors, sampling
from xlagen.kernels.search import NO_TOKEN



def _same_logits(actual, expected):
    actual = np.asarray(actual)
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-6, atol=1e-6)


def _knobs(**values):
    k = dict(eos_ids=[NO_TOKEN], pad_id=0, min_new_tokens=0, repetition_penalty=1.0, temperature=1.0, top_k=0,
             top_p=1.0, min_p=0.0, seed=[0, 0], length_penalty=1.0, early_stopping=0, decoder_start_id=0, penalty_alpha=0.0)
    k.update(values)
    controls = tf.nest.map_structure(tf.constant, processing.control_values(options.ControlOptions(), 1))
    return loops.Knobs(controls=controls, **{n: tf.constant(v, getattr(loops.KNOB_DTYPES, n)) for n, v in k.items()})


CASES = {
    "repetition_1.3": lambda x, h: processors.repetition_penalty(x, h, 1.3),
    "repetition_0.7": lambda x, h: processors.repetition_penalty(x, h, 0.7),
    "ngram_2": lambda x, h: processors.no_repeat_ngram(x, h, tf.constant(h.shape[1]), 2),
    "ngram_3": lambda x, h: processors.no_repeat_ngram(x, h, tf.constant(h.shape[1]), 3),
    "temperature_0.7": lambda x, h: sampling.temperature(x, 0.7),
    "top_k_5": lambda x, h: sampling.top_k(x, tf.constant(5)),
    "top_k_1": lambda x, h: sampling.top_k(x, tf.constant(1)),
    "top_p_0.8": lambda x, h: sampling.top_p(x, tf.constant(0.8, tf.float64)),
    "top_p_0.3": lambda x, h: sampling.top_p(x, tf.constant(0.3, tf.float64)),
    "top_p_0.999": lambda x, h: sampling.top_p(x, tf.constant(0.999, tf.float64)),
    "min_p_0.1": lambda x, h: sampling.min_p(x, tf.constant(0.1)),
    "min_p_0.5": lambda x, h: sampling.min_p(x, tf.constant(0.5)),
    "chain": lambda x, h: processing.scores(
        x, h, tf.constant(h.shape[1]), tf.constant(5),
        _knobs(repetition_penalty=1.2, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05),
        loops.Strategy(choice="draw", no_repeat_ngram_size=2), processing.Prepared(last_step=11), 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_processor_matches_transformers(case):
    ref = reference("processors")
    fn = tf.function(CASES[case], jit_compile=True)
    _same_logits(fn(tf.constant(ref["logits"]), tf.constant(ref["history"], tf.int32)), ref[case])


def test_disabled_warpers_change_nothing():
    logits = tf.constant(reference("processors")["logits"])
    for out in (sampling.top_k(logits, tf.constant(0)), sampling.top_k(logits, tf.constant(64)),
                sampling.top_p(logits, tf.constant(1.0, tf.float64)), sampling.min_p(logits, tf.constant(0.0)),
                processors.repetition_penalty(logits, tf.zeros([4, 3], tf.int32), 1.0)):
        np.testing.assert_array_equal(out, logits)


def test_history_padding_is_ignored():
    logits = tf.constant(reference("processors")["logits"][:1])
    history = tf.constant([[NO_TOKEN, NO_TOKEN, 3, 4, 3]])
    out = processors.no_repeat_ngram(logits, history, tf.constant(5), 2).numpy()
    assert np.isneginf(out[0, 4]) and np.isfinite(np.delete(out[0], 4)).all()
    out = processors.repetition_penalty(logits, history, 2.0).numpy()
    changed = np.flatnonzero(out[0] != logits.numpy()[0])
    assert set(changed) <= {3, 4}


def test_greedy_with_penalties_matches_transformers(tiny):
    ref = reference("gpt2-tiny")
    out = tiny.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=12, eos_token_id=None,
                        pad_token_id=0, repetition_penalty=1.5, no_repeat_ngram_size=2)
    np.testing.assert_array_equal(out, ref["greedy_penalized"])


@pytest.mark.parametrize("knobs", [dict(top_k=1, temperature=1.5), dict(top_k=0, temperature=1e-4)])
def test_sampling_degenerates_to_greedy(tiny, knobs):
    ref = reference("gpt2-tiny")
    out = tiny.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=12, eos_token_id=None,
                        pad_token_id=0, do_sample=True, seed=7, **knobs)
    np.testing.assert_array_equal(out, ref["greedy"])


def test_first_token_distribution_matches_warped_softmax(tiny):
    """4000 independent draws of the first token against transformers' warped softmax, for
    cases that each make a different processor cut (temperature + top-k, top-p, min-p,
    repetition penalty; see SAMPLING_CASES in tools/make_fixtures.py).

    With K tokens kept, the expected total variation of n draws is about
    sum_i sqrt(p_i (1 - p_i) / (2 pi n)) (half the sum of mean absolute deviations of the
    binomial counts); we allow three times that (0.035 to 0.07 here), well below what switching
    off the case's processor moves (0.13 to 0.43 of total variation, measured), and no draw
    at all outside the kept set.
    """
    ref = reference("gpt2-tiny")
    n = 4000
    count = None
    for case, (row, options) in enumerate(json.loads(str(ref["sampling_cases"]))):
        warped = ref["warped_first"][case].astype(np.float64)
        kept = np.isfinite(warped)
        probs = np.exp(warped[kept] - warped[kept].max())
        probs /= probs.sum()
        ids, mask = ref["input_ids"][row:row + 1], ref["attention_mask"][row:row + 1]
        out = tiny.generate(np.repeat(ids, n, 0), attention_mask=np.repeat(mask, n, 0), max_new_tokens=1,
                            do_sample=True, seed=(3, case), eos_token_id=None, **options)
        count = tiny.trace_count if count is None else count
        first = out[:, -1]
        assert kept[first].all(), f"case {case}: drew a token the processors remove"
        freq = np.bincount(first, minlength=len(warped))[kept] / n
        tv = 0.5 * np.abs(freq - probs).sum()
        expected = np.sqrt(probs * (1 - probs) / (2 * np.pi * n)).sum()
        assert tv < 3 * expected, (case, tv, expected)
    assert tiny.trace_count == count  # every case ran in the same program


def test_knob_sweep_compiles_one_program(tiny):
    ids = [[5, 6, 7, 8]]
    tiny.generate(ids, max_new_tokens=6, do_sample=True, seed=0)
    count = tiny.trace_count
    seen = set()
    for temperature, top_k, top_p, min_p, penalty, seed in [(0.5, 0, 1.0, 0.0, 1.0, 1), (1.3, 10, 0.9, 0.0, 1.2, 2),
                                                           (0.9, 50, 0.5, 0.1, 0.8, (5, 9)), (2.0, 3, 1.0, 0.3, 1.0, 3)]:
        out = tiny.generate(ids, max_new_tokens=6, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                            min_p=min_p, repetition_penalty=penalty, seed=seed, eos_token_id=[1, 2])
        seen.add(tuple(out[0]))
    assert tiny.trace_count == count
    assert len(seen) > 1


def test_same_seed_same_tokens_even_after_recompiling(tiny):
    from xlagen.engine import load
    ids = reference("gpt2-tiny")["input_ids"][:2]
    mask = reference("gpt2-tiny")["attention_mask"][:2]
    kw = dict(max_new_tokens=10, do_sample=True, top_k=0, eos_token_id=None)
    a = tiny.generate(ids, attention_mask=mask, seed=11, **kw)
    np.testing.assert_array_equal(a, tiny.generate(ids, attention_mask=mask, seed=11, **kw))
    fresh = load(tiny.path)  # a new program, traced and compiled again
    np.testing.assert_array_equal(a, fresh.generate(ids, attention_mask=mask, seed=11, **kw))
    assert not np.array_equal(a, tiny.generate(ids, attention_mask=mask, seed=12, **kw))


def test_rows_draw_independently_and_returns_are_grouped(tiny):
    out = tiny.generate([[5, 6, 7], [9, 10, 11]], max_new_tokens=8, do_sample=True, top_k=0, seed=1,
                        num_return_sequences=3, eos_token_id=None)
    assert out.shape == (6, 11)
    np.testing.assert_array_equal(out[:3, :3], [[5, 6, 7]] * 3)
    np.testing.assert_array_equal(out[3:, :3], [[9, 10, 11]] * 3)
    assert len({tuple(r) for r in out[:3, 3:].tolist()}) > 1


def test_output_scores_are_the_processed_scores_of_each_step(tiny):
    ids = [[5, 6, 7, 8]]
    res = tiny.generate(ids, max_new_tokens=3, output_scores=True, eos_token_id=None)
    assert res.sequences.shape == (1, 7) and res.transition_scores.shape == (1, 3)
    assert len(res.scores) == 3 and res.scores[0].shape == (1, tiny.vocab_size) and res.scores[0].dtype == np.float32
    # Greedy without processors: each step's scores are the model's logits, the transition score the chosen one's.
    logits = tiny.logits(res.sequences[:, :-1], jit_compile=False)
    for i in range(3):
        np.testing.assert_allclose(res.scores[i][0], logits[0, 3 + i], atol=1e-4)
    np.testing.assert_allclose(res.transition_scores[0], [logits[0, 3 + i, res.sequences[0, 4 + i]] for i in range(3)],
                               atol=1e-4)
    assert res.sequences_scores is None
    # Sampling: the warped scores (top-k leaves 5 finite entries), and the drawn token is one of them.
    sampled = tiny.generate(ids, max_new_tokens=3, output_scores=True, do_sample=True, top_k=5, seed=0,
                            eos_token_id=None)
    for i, step in enumerate(sampled.scores):
        assert np.isfinite(step[0]).sum() == 5
        assert sampled.transition_scores[0, i] == step[0, sampled.sequences[0, 4 + i]]


@pytest.mark.parametrize("bad,words", [
    (dict(do_sample=True, top_p=0.0), "top_p must be in (0.0, 1.0]"),
    (dict(do_sample=True, top_p=1.5), "top_p must be in"),
    (dict(do_sample=True, top_k=-1), "top_k must be >= 0"),
    (dict(do_sample=True, temperature=0.0), "temperature must be in (0.0, inf]"),
    (dict(do_sample=True, min_p=2.0), "min_p must be in [0.0, 1.0]"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be in"),
    (dict(num_return_sequences=2), "needs do_sample=True"),
    (dict(do_sample=True, seed="x"), "seed must be"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be >= 0"),
])
def test_bad_sampling_arguments(tiny, bad, words):
    with pytest.raises(GenerationArgumentError) as info:
        tiny.generate([[1, 2]], max_new_tokens=2, **bad)
    assert words in str(info.value)
