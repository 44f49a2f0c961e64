"""Contrastive search (penalty_alpha > 0, top_k > 1) against transformers' TF contrastive_search
on the same weights (tools/make_contrastive_fixtures.py), batch invariance, no retrace for a
new alpha, and output_scores."""
import functools
import json
import os

import numpy as np
import pytest

from conftest import FIXTURES, generator, reference

NEW = 12
MODELS = ["gpt2-tiny", "opt-tiny", "t5-v1_1-tiny"]


@functools.lru_cache(maxsize=None)
def contrastive():
    with np.load(os.path.join(FIXTURES, "reference", "contrastive.npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


CASES = json.loads(str(contrastive()["cases"]))


def _options(case):
    ref = contrastive()
    return dict(CASES[case], eos_token_id=int(ref["eos"]), pad_token_id=int(ref["pad"]), max_new_tokens=NEW)


def _batch(name):
    """The five fixture prompts as one padded batch (left padded; T5's encoder input right padded)."""
    inputs = reference(name)
    return inputs["input_ids"], inputs["attention_mask"]


def _new_tokens(name, sequences):
    start = 1 if generator(name).config.is_encoder_decoder else reference(name)["input_ids"].shape[1]
    return np.asarray(sequences)[:, start:]


# Every case on GPT-2; on OPT and T5 the first (plain) and the last (with repetition penalty and
# n-gram ban), each a compiled program of its own; the last of OPT and T5 runs eagerly (the same
# functions, tests/test_eager.py), as GPT-2's compiled last case already carries its processors.
PAIRS = [("gpt2-tiny", c) for c in range(len(CASES))] + [(m, c) for m in MODELS[1:] for c in (0, len(CASES) - 1)]


@pytest.mark.parametrize("name,case", PAIRS)
def test_padded_batch_matches_transformers(name, case):
    """Every row of a padded batch gives the tokens TF transformers gives the prompt alone, unpadded."""
    ids, mask = _batch(name)
    eager = {"jit_compile": False} if name != "gpt2-tiny" and case else {}
    out = generator(name).generate(ids, attention_mask=mask, **_options(case), **eager)
    np.testing.assert_array_equal(_new_tokens(name, out), contrastive()[f"{name}_case{case}"])


@pytest.mark.parametrize("name", MODELS)
def test_each_prompt_alone_matches_transformers(name):
    """Batch invariance: each prompt alone (padded only up to its length bucket) gives what it gives in the batch."""
    ref, gen = contrastive(), generator(name)
    for row, (prompt, length) in enumerate(zip(ref[f"{name}_prompts"], ref[f"{name}_lengths"])):
        # an explicit mask: pad_token_id 1 is also T5's </s>, which mask inference would drop
        # eagerly: the same functions as the compiled batch of test_padded_batch_matches_transformers
        # (tests/test_eager.py), without a program per prompt length
        out = gen.generate(prompt[None, :length], attention_mask=np.ones([1, length], np.int32), jit_compile=False,
                           **_options(0))
        start = 1 if gen.config.is_encoder_decoder else length
        np.testing.assert_array_equal(np.asarray(out)[0, start:], ref[f"{name}_case0"][row])


def test_contrastive_differs_from_greedy():
    ref = contrastive()
    ids, mask = _batch("gpt2-tiny")
    greedy = generator("gpt2-tiny").generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None,
                                              pad_token_id=1)
    np.testing.assert_array_equal(_new_tokens("gpt2-tiny", greedy), ref["gpt2-tiny_greedy"])
    assert (ref["gpt2-tiny_case1"] != ref["gpt2-tiny_greedy"]).any()


def test_new_alpha_reuses_the_program(tiny):
    ids, mask = _batch("gpt2-tiny")
    tiny.generate(ids, attention_mask=mask, **_options(0))
    count = tiny.trace_count
    out = tiny.generate(ids, attention_mask=mask, **dict(_options(0), penalty_alpha=0.25))
    assert tiny.trace_count == count
    # the other alpha changes the tokens: the program did not bake 0.6 in
    assert (_new_tokens("gpt2-tiny", out) != contrastive()["gpt2-tiny_case0"]).any()
    tiny.generate(ids, attention_mask=mask, **dict(_options(0), top_k=5))  # top_k is static here: a new program
    assert tiny.trace_count == count + 1


def test_top_k_one_or_zero_alpha_is_greedy(tiny):
    """transformers' GenerationMode: penalty_alpha > 0 with top_k <= 1, or alpha 0, is greedy search."""
    ids, mask = _batch("gpt2-tiny")
    greedy = tiny.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None, pad_token_id=1)
    for options in (dict(penalty_alpha=0.6, top_k=1), dict(penalty_alpha=0.0, top_k=4)):
        out = tiny.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None, pad_token_id=1, **options)
        np.testing.assert_array_equal(out, greedy)


@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-v1_1-tiny"])
def test_output_scores(name):
    """scores: [steps] x [B, V] processed scores; transition_scores: [B, N], the chosen tokens' entries."""
    ref = contrastive()
    ids, mask = _batch(name)
    out = generator(name).generate(ids, attention_mask=mask, output_scores=True, **_options(0))
    np.testing.assert_array_equal(_new_tokens(name, out.sequences), ref[f"{name}_case0"])
    expected_tokens = ref[f"{name}_case0"]
    lengths = [list(t).index(int(ref["eos"])) + 1 if int(ref["eos"]) in t else NEW for t in expected_tokens]
    assert len(out.scores) == max(lengths)
    assert all(s.shape == (len(ids), generator(name).vocab_size) for s in out.scores)
    assert out.transition_scores.shape == (len(ids), NEW)
    assert out.sequences_scores is None
    scores = np.stack(out.scores, axis=1)  # [B, steps, V]
    for row, steps in enumerate(lengths):  # a row's entries up to its EOS (then pad, as in greedy)
        expected = ref[f"{name}_case0_scores"][row, :steps]
        actual = scores[row, :steps]
        np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(actual[finite], expected[finite], atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(out.transition_scores[row, :steps], ref[f"{name}_case0_transition"][row, :steps],
                                   atol=1e-4, rtol=1e-5)


def test_model_hidden_states_are_the_head_input(tiny):
    """prefill/step with hidden=True return the head's input; the default calls are unchanged
    and return hidden None (the boundary's arity never changes)."""
    import tensorflow as tf
    model = tiny.model
    ids, mask = (tf.constant(a, tf.int32) for a in _batch("gpt2-tiny"))
    start = tf.constant(0, tf.int32)
    logits, state, prefix, none = model.prefill(ids, mask, start, 4, 2)
    assert none is None
    logits_h, state_h, prefix_h, hidden = model.prefill(ids, mask, start, 4, 2, hidden=True)
    np.testing.assert_array_equal(logits.numpy(), logits_h.numpy())
    assert hidden.shape == (ids.shape[0], ids.shape[1], model.config.n_embd)
    np.testing.assert_allclose(model.head(hidden[:, -1]).numpy(), logits.numpy(), atol=1e-5)
    tokens = tf.constant([[5, 6]] * ids.shape[0], tf.int32)
    step_logits, _, none = model.step(tokens, state)
    assert none is None
    step_logits_h, _, step_hidden = model.step(tokens, state_h, hidden=True)
    assert step_hidden.shape == (ids.shape[0], 2, model.config.n_embd)
    np.testing.assert_array_equal(step_logits.numpy(), step_logits_h.numpy())
    np.testing.assert_allclose(model.head(step_hidden).numpy(), step_logits.numpy(), atol=1e-5)
