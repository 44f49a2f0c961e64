"""output_scores: transformers' `scores` (per-step processed scores), compute_transition_scores
and sequences_scores, on the same weights and inputs (tools/make_generation_fixtures.py)."""
import numpy as np
import pytest

from conftest import generation_reference, generator, reference

NEW = 12


def _same_scores(actual, expected):
    """Equal where transformers has -inf, within 1e-4 (plus 1e-5 of the value) elsewhere."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-v1_1-tiny"])
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_scores_match_transformers(name, strategy):
    ref, inputs = generation_reference(name), reference(name)
    options = dict(eos_token_id=int(ref["scores_eos"]), pad_token_id=1, max_new_tokens=NEW, output_scores=True)
    options.update(repetition_penalty=1.3) if strategy == "greedy" else options.update(
        num_beams=3, num_return_sequences=2, length_penalty=1.0)
    out = generator(name).generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], **options)
    expected = ref[f"scores_{strategy}_sequences"]
    np.testing.assert_array_equal(out.sequences[:, :expected.shape[1]], expected)
    steps = ref[f"scores_{strategy}_scores"]
    assert len(out.scores) == len(steps)  # one entry per step the loop ran, as transformers
    _same_scores(np.stack(out.scores), steps)
    transition = ref[f"scores_{strategy}_transition"]
    _same_scores(out.transition_scores[:, :transition.shape[1]], transition)
    if strategy == "beam":
        np.testing.assert_allclose(out.sequences_scores, ref["scores_beam_sequences_scores"], atol=1e-4, rtol=1e-5)
    else:
        assert out.sequences_scores is None


def test_scores_are_counted_in_the_memory_estimate(tiny):
    from xlagen.engine import MemoryLimitError
    ids = [[1, 2, 3]] * 8
    tiny.generate(ids, max_new_tokens=40, memory_limit=700_000)  # about 0.45 MB without scores, 0.94 MB with
    with pytest.raises(MemoryLimitError, match=r"scores [\d.]+ MiB"):
        tiny.generate(ids, max_new_tokens=40, output_scores=True, memory_limit=700_000)
