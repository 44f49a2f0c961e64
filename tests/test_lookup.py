"""Prompt lookup decoding (prompt_lookup_num_tokens): the drafting rule, the multi-token model
step, and greedy tokens identical to transformers' greedy outputs and to plain greedy decoding,
with rows that accept different numbers of drafts."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import generator, reference
from xlagen.kernels import drafts
from xlagen.models import GenerationArgumentError

NEW = 12


def test_drafts_follow_the_longest_earliest_match():
    none = -1
    history = tf.constant([[5, 6, 7, 8, 5, 6, none, none],    # 2-gram (5, 6) at slot 0
                           [1, 2, 3, 1, 2, 9, 1, 2],          # (1, 2) first at slot 0, not at 3
                           [none, none, 3, 4, 5, 6, none, none],  # no earlier 6: nothing
                           [9, 4, 9, 7, 3, 4, 9, none],       # (4, 9) at slot 1; 1-gram 9 would give 4
                           [2, 3, 8, 8, 2, 3, none, none]])   # (2, 3) at 0, two tokens before the end
    got, count = drafts.prompt_lookup(history, tf.constant([6, 8, 6, 7, 6]), 3, 2)
    np.testing.assert_array_equal(count, [3, 3, 0, 3, 3])
    np.testing.assert_array_equal(got, [[7, 8, 5], [3, 1, 2], [0, 0, 0], [7, 3, 4], [8, 8, 2]])
    # K larger than what follows the match: only up to the filled slots.
    got, count = drafts.prompt_lookup(history[:1], tf.constant([6]), 6, 2)
    np.testing.assert_array_equal(count, [4])
    np.testing.assert_array_equal(got, [[7, 8, 5, 6, 0, 0]])
    # max_matching_ngram_size=1 takes the earliest single-token match.
    got, count = drafts.prompt_lookup(history[3:4], tf.constant([7]), 2, 1)
    np.testing.assert_array_equal(got, [[4, 9]])


def test_accepted_counts_the_leading_confirmed_drafts():
    proposed = tf.constant([[4, 5, 6], [4, 5, 6], [4, 5, 6], [4, 5, 6]])
    chosen = tf.constant([[4, 5, 6, 1], [4, 9, 6, 1], [7, 5, 6, 1], [4, 5, 6, 1]])
    np.testing.assert_array_equal(drafts.accepted(proposed, tf.constant([3, 3, 3, 1]), chosen), [3, 1, 0, 1])


@pytest.mark.parametrize("name", ["gpt2-tiny", "opt-350m-tiny"])
def test_extend_at_per_row_positions_gives_the_step_logits(name):
    """Rows fill the cache at their own positions; a rejected draft's key is hidden, then replaced."""
    model = generator(name).model
    ids = tf.constant([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]], tf.int32)
    mask = tf.constant([[0, 0, 1, 1, 1, 1], [1] * 6], tf.int32)
    fed = np.array([[11, 12, 13, 14, 15], [21, 22, 23, 24, 25]], np.int32)
    start = model.prefill(ids, mask, tf.constant(0), 8, 1).state
    state, expected = start, []
    for i in range(5):
        logits, state, _ = model.step(tf.constant(fed[:, i:i + 1]), state)
        expected.append(logits[:, 0].numpy())
    expected = np.stack(expected, 1)  # [B, 5, V]
    first, state, _ = model.extend(tf.constant(fed[:, None, :3]), start, tf.zeros([2, 1], tf.int32))
    np.testing.assert_allclose(first[:, 0], expected[:, :3], atol=1e-4)
    # Row 0 keeps 1 of its 3 tokens, row 1 all 3 (and feeds a token the check ignores).
    again = np.array([[fed[0, 1], fed[0, 2], fed[0, 3]], [fed[1, 3], fed[1, 4], 99]], np.int32)
    second = model.extend(tf.constant(again[:, None]), state, tf.constant([[1], [3]]))
    np.testing.assert_allclose(second.logits[0, 0], expected[0, 1:4], atol=1e-4)
    np.testing.assert_allclose(second.logits[1, 0, :2], expected[1, 3:5], atol=1e-4)


@pytest.mark.parametrize("name", ["gpt2-tiny", "opt-350m-tiny"])  # GPT-2's and OPT's decoders
def test_greedy_tokens_match_transformers(name):
    ref = reference(name)
    out = generator(name).generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW,
                                   eos_token_id=None, pad_token_id=int(ref["pad"]), prompt_lookup_num_tokens=3)
    np.testing.assert_array_equal(out, ref["greedy"])


def test_eos_min_new_tokens_and_penalties_match_transformers(tiny):
    ref = reference("gpt2-tiny")
    eos = int(ref["eos"])
    common = dict(attention_mask=ref["attention_mask"], max_new_tokens=NEW, prompt_lookup_num_tokens=2)
    out = tiny.generate(ref["input_ids"], eos_token_id=[eos, 383], pad_token_id=1, **common)
    np.testing.assert_array_equal(out[:, :ref["greedy_eos"].shape[1]], ref["greedy_eos"])
    out = tiny.generate(ref["input_ids"], eos_token_id=eos, pad_token_id=1, min_new_tokens=7, **common)
    np.testing.assert_array_equal(out[:, :ref["greedy_min_new"].shape[1]], ref["greedy_min_new"])
    out = tiny.generate(ref["input_ids"], eos_token_id=None, pad_token_id=0, repetition_penalty=1.5,
                        no_repeat_ngram_size=2, **common)
    np.testing.assert_array_equal(out, ref["greedy_penalized"])


def _cycling(gen):
    """Prompts and a sequence_bias that makes the model cycle a -> b -> c -> a: the first two
    rows already hold the cycle (their drafts are right), the others enter it at their own time."""
    a, b, c = 11, 23, 37
    rows = [[5, 6, a, b, c, a, b, c, a], [9, c, a, b], [40, 41, 42, 43, 44, 45, 46], [50, 51, 52]]
    width = max(map(len, rows))
    ids = np.array([[0] * (width - len(r)) + r for r in rows], np.int32)
    mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows], np.int32)
    bias = [[[a, b], 60.0], [[b, c], 60.0], [[c, a], 60.0]]
    return ids, mask, dict(sequence_bias=bias, pad_token_id=0, max_new_tokens=20)


# EOS (37, in the cycle) after 5 tokens, and processors that count each row's own step.
ENDING = dict(eos_token_id=37, min_new_tokens=5, forced_eos_token_id=3, bad_words_ids=[[23, 40]],
              exponential_decay_length_penalty=(9, 1.5))


@pytest.mark.parametrize("options", [dict(eos_token_id=None), ENDING])
def test_rows_accept_different_counts_with_the_tokens_of_plain_greedy(tiny, options):
    ids, mask, common = _cycling(tiny)
    plain = tiny.generate(ids, attention_mask=mask, output_scores=True, **common, **options)
    out = tiny.generate(ids, attention_mask=mask, output_scores=True, prompt_lookup_num_tokens=4, **common,
                        **options)
    np.testing.assert_array_equal(out.sequences, plain.sequences)
    new = out.sequences[:, ids.shape[1]:]
    taken = np.where(out.accepted >= 0, out.accepted + 1, 0).sum(axis=1)  # tokens each row's steps emitted
    if options["eos_token_id"] is None:
        np.testing.assert_array_equal(taken, 20 - 1)  # the first token comes from the prompt's step
        steps = (out.accepted >= 0).sum(axis=1)  # model steps each row took part in
        assert out.accepted[0].max() == 4 and len(set(steps)) > 1
        assert steps[0] <= 5  # 19 tokens in at most 5 model steps
    else:  # a row ends at its first EOS, inside a step's accepted drafts or not
        ends = [int(np.argmax(r == 37)) + 1 if (r == 37).any() else 20 for r in new]
        np.testing.assert_array_equal(taken + 1, ends)
    assert ((out.accepted <= out.drafted) & (out.drafted <= 4)).all()
    # Each token's scores and transition score are plain greedy's, up to the row's end.
    for row, end in enumerate(taken + 1):
        np.testing.assert_allclose(out.transition_scores[row, :end], plain.transition_scores[row, :end], atol=1e-4)
        assert (out.transition_scores[row, end:] == 0).all()
        for n in range(end):
            finite = np.isfinite(plain.scores[n][row])
            np.testing.assert_array_equal(np.isfinite(out.scores[n][row]), finite)
            np.testing.assert_allclose(out.scores[n][row][finite], plain.scores[n][row][finite], atol=1e-4)


def test_eager_path_gives_the_compiled_tokens(tiny):
    ids, mask, common = _cycling(tiny)
    common = dict(common, max_new_tokens=8)
    compiled = tiny.generate(ids, attention_mask=mask, prompt_lookup_num_tokens=3, eos_token_id=None, **common)
    eager = tiny.generate(ids, attention_mask=mask, prompt_lookup_num_tokens=3, eos_token_id=None,
                          jit_compile=False, **common)
    np.testing.assert_array_equal(eager, compiled)


@pytest.mark.parametrize("kwargs,words", [
    (dict(num_beams=2), "num_beams > 1"),
    (dict(penalty_alpha=0.5, top_k=3), "contrastive"),
    (dict(stop_strings=["x"]), "stop_strings"),
    (dict(logits_processor=[lambda logits, history, step: logits]), "logits_processor"),
])
def test_combinations_it_cannot_run_are_refused(tiny, kwargs, words):
    with pytest.raises(GenerationArgumentError, match=words):
        tiny.generate([[5, 6, 7]], max_new_tokens=4, prompt_lookup_num_tokens=3, **kwargs)


def test_bad_values_and_encoder_decoders_are_refused(tiny):
    for value in (0, -1, 2.5):
        with pytest.raises(GenerationArgumentError, match="prompt_lookup_num_tokens"):
            tiny.generate([[5, 6, 7]], max_new_tokens=4, prompt_lookup_num_tokens=value)
    with pytest.raises(GenerationArgumentError, match="max_matching_ngram_size"):
        tiny.generate([[5, 6, 7]], max_new_tokens=4, prompt_lookup_num_tokens=2, max_matching_ngram_size=0)
    with pytest.raises(GenerationArgumentError, match="decoder-only"):
        generator("t5-v1_1-tiny").generate([[5, 6, 7]], max_new_tokens=4, prompt_lookup_num_tokens=2)


def test_a_checkpoint_default_it_cannot_run_is_left_off(tiny):
    """transformers applies generation_config's prompt_lookup_num_tokens; beam search cannot
    check drafts, so xlagen leaves it to plain beam search, and sampling checks them."""
    original = tiny.generation_config
    try:
        tiny.generation_config = dict(original or {}, prompt_lookup_num_tokens=3)
        greedy = tiny.decode_call([[5, 6, 7]], max_new_tokens=4)
        sampled = tiny.decode_call([[5, 6, 7]], max_new_tokens=4, do_sample=True)
        beams = tiny.decode_call([[5, 6, 7]], max_new_tokens=4, num_beams=2)
    finally:
        tiny.generation_config = original
    assert greedy.plan.strategy.drafter == "lookup" and greedy.plan.strategy.draft_tokens == 3
    assert sampled.plan.strategy.drafter == "lookup" and sampled.plan.strategy.choice == "draw"
    assert beams.plan.strategy.loop == "beam"


# -- assisted decoding: the same loop, drafts from another model ------------------------------

def test_assistant_drafts_give_transformers_greedy_tokens(tiny):
    ref = reference("gpt2-tiny")
    common = dict(attention_mask=ref["attention_mask"], max_new_tokens=NEW, eos_token_id=None,
                  pad_token_id=int(ref["pad"]), output_scores=True)
    same = tiny.generate(ref["input_ids"], assistant_model=tiny, **common)  # drafts are greedy's own
    np.testing.assert_array_equal(same.sequences, ref["greedy"])
    np.testing.assert_array_equal(same.accepted, [[3, 3, 2]] * 5)  # 11 tokens after the prompt's: 3 steps
    other = tiny.generate(ref["input_ids"], assistant_model=generator("gpt2-variant"), num_assistant_tokens=2,
                          **common)
    np.testing.assert_array_equal(other.sequences, ref["greedy"])
    assert (other.drafted[:, 0] == 2).all() and other.drafted.max() == 2  # fewer only near the last token


def test_assistant_with_eos_and_processors_gives_plain_greedy_tokens(tiny):
    ids, mask, common = _cycling(tiny)
    options = dict(ENDING, output_scores=True, **common)  # plain greedy's program is the lookup test's
    plain = tiny.generate(ids, attention_mask=mask, **options)
    out = tiny.generate(ids, attention_mask=mask, assistant_model=generator("gpt2-variant"), **options)
    np.testing.assert_array_equal(out.sequences, plain.sequences)
    new = out.sequences[:, ids.shape[1]:]
    taken = np.where(out.accepted >= 0, out.accepted + 1, 0).sum(axis=1)
    ends = [int(np.argmax(r == 37)) + 1 if (r == 37).any() else 20 for r in new]
    np.testing.assert_array_equal(taken + 1, ends)


def test_assistant_programs_are_kept_per_assistant(tiny):
    ref = reference("gpt2-tiny")
    common = dict(attention_mask=ref["attention_mask"], max_new_tokens=NEW, eos_token_id=None,
                  pad_token_id=int(ref["pad"]), output_scores=True, assistant_model=tiny)
    tiny.generate(ref["input_ids"], **common)
    before = tiny.trace_count
    tiny.generate(ref["input_ids"][::-1], **common)
    assert tiny.trace_count == before  # same bucket, same assistant: no retrace
    ids = [[5, 6, 7]]
    strategy = {name: tiny.decode_call(ids, max_new_tokens=4, assistant_model=generator(name)).plan.strategy
                for name in ("gpt2-tiny", "gpt2-variant")}
    assert strategy["gpt2-tiny"].assistant is tiny.model and strategy["gpt2-tiny"] != strategy["gpt2-variant"]


@pytest.mark.parametrize("kwargs,words", [
    (dict(assistant_model="gpt2"), "must be an xlagen Generator"),
    (dict(assistant_model="t5"), "encoder-decoder"),
    (dict(assistant_model="opt"), "vocabulary"),
    (dict(assistant_model="self", num_beams=3), "num_beams > 1"),
    (dict(assistant_model="self", prompt_lookup_num_tokens=2), "one drafter at a time"),
    (dict(assistant_model="self", num_assistant_tokens=0), "num_assistant_tokens"),
])
def test_assistants_that_cannot_draft_are_refused(tiny, kwargs, words):
    given = {"self": tiny, "t5": generator("t5-v1_1-tiny"), "opt": generator("opt-tiny"), "gpt2": "gpt2"}
    kwargs = dict(kwargs, assistant_model=given[kwargs["assistant_model"]])
    with pytest.raises(GenerationArgumentError, match=words):
        tiny.generate([[5, 6, 7]], max_new_tokens=4, **kwargs)


def test_a_keyword_assistant_wins_over_the_checkpoints_prompt_lookup_and_export_refuses_it(tiny, tmp_path):
    original = tiny.generation_config
    try:
        tiny.generation_config = dict(original or {}, prompt_lookup_num_tokens=3)
        strategy = tiny.decode_call([[5, 6, 7]], max_new_tokens=4, assistant_model=tiny).plan.strategy
    finally:
        tiny.generation_config = original
    assert strategy.loop == "multi_token" and strategy.drafter == "assisted"
    with pytest.raises(GenerationArgumentError, match="assistant_model"):
        tiny.export(str(tmp_path / "out"), prompt_length=4, max_new_tokens=4, assistant_model=tiny)
