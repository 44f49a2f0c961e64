"""Beam search against transformers' (PyTorch) beam search on the same weights."""
import json

import numpy as np
import pytest

from conftest import generation_reference, generator, reference
from xlagen.engine import GenerationArgumentError

NEW = 12


def _cases():
    """Every case on GPT-2 (the loop never looks inside the model); on OPT and T5 the cases with
    several returns and with processors and a negative length penalty; on each other layout the
    latter. Each case is a program to compile, ~5 s each on 2 cores."""
    every = range(len(json.loads(str(reference("gpt2-tiny")["beam_cases"]))))
    cases = {"gpt2-tiny": every, "opt-tiny": (0, 4), "t5-v1_1-tiny": (0, 4)}
    # T5 v1.0's layout decodes greedily in tests/test_t5.py; its beams are v1.1's loop.
    cases.update({name: (4,) for name in ("gpt2-variant", "gpt2-untied", "opt-350m-tiny", "opt-variant")})
    return [(name, i) for name, indices in cases.items() for i in indices]


@pytest.mark.parametrize("name,case", _cases())
def test_beam_search_matches_transformers(name, case):
    ref = reference(name)
    options = json.loads(str(ref["beam_cases"]))[case]
    if options["eos_token_id"] == "eos":
        options["eos_token_id"] = int(ref["eos"])
    gen = generator(name)
    out = gen.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW,
                       pad_token_id=1, output_scores=True, **options)
    expected = ref[f"beam_{case}_sequences"]
    returns = options.get("num_return_sequences", 1)
    prefix = 1 if gen.config.is_encoder_decoder else ref["input_ids"].shape[1]
    assert out.sequences.shape == (len(ref["input_ids"]) * returns, prefix + NEW)
    np.testing.assert_array_equal(out.sequences[:, :expected.shape[1]], expected)
    assert (out.sequences[:, expected.shape[1]:] == 1).all()
    np.testing.assert_allclose(out.sequences_scores, ref[f"beam_{case}_scores"], atol=1e-4, rtol=1e-5)


def test_beam_token_scores_add_up_to_the_sequence_score(tiny):
    ref = reference("gpt2-tiny")
    out = tiny.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW, num_beams=3,
                        eos_token_id=int(ref["eos"]), pad_token_id=1, length_penalty=1.0, output_scores=True)
    lengths = (out.transition_scores != 0).sum(axis=1)
    np.testing.assert_allclose(out.transition_scores.sum(axis=1) / lengths, out.sequences_scores, rtol=1e-5)


def test_beam_rows_equal_the_prompt_alone(tiny):
    ref = reference("gpt2-tiny")
    batch = tiny.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=6, num_beams=3,
                          eos_token_id=None)
    width = ref["input_ids"].shape[1]
    for row in (1, 3):
        prompt = ref["input_ids"][row][ref["attention_mask"][row] == 1]
        # Alone, eagerly: the same functions (tests/test_eager.py), no program to compile per length.
        alone = tiny.generate(prompt[None], max_new_tokens=6, num_beams=3, eos_token_id=None, jit_compile=False)
        np.testing.assert_array_equal(alone[0, len(prompt):], batch[row, width:])


def test_length_penalty_stopping_mode_and_eos_count_do_not_recompile(tiny):
    ids = [[5, 6, 7, 8]]
    tiny.generate(ids, max_new_tokens=5, num_beams=2, eos_token_id=3)
    count = tiny.trace_count
    for penalty, stopping, eos in ((0.5, True, 4), (2.0, "never", [4, 5]), (-1.0, False, [1, 2, 3, 4, 5, 6, 7, 8])):
        tiny.generate(ids, max_new_tokens=5, num_beams=2, eos_token_id=eos, length_penalty=penalty,
                      early_stopping=stopping)
    assert tiny.trace_count == count
    # A ninth EOS id needs a longer EOS vector: a new program, and trace_count says so.
    tiny.generate(ids, max_new_tokens=5, num_beams=2, eos_token_id=list(range(1, 10)))
    assert tiny.trace_count == count + 1
    tiny.generate(ids, max_new_tokens=5, num_beams=2, eos_token_id=list(range(1, 12)))
    assert tiny.trace_count == count + 1


@pytest.mark.parametrize("name", ["gpt2-tiny", "opt-tiny", "t5-v1_1-tiny"])
def test_beam_search_with_two_eos_ids_matches_transformers(name):
    ref = generation_reference(name)
    gen = generator(name)
    ids, mask = reference(name)["input_ids"], reference(name)["attention_mask"]
    out = gen.generate(ids, attention_mask=mask, max_new_tokens=NEW, num_beams=4, num_return_sequences=2,
                       eos_token_id=ref["beam_eos2_ids"].tolist(), pad_token_id=1, output_scores=True)
    expected = ref["beam_eos2_sequences"]
    np.testing.assert_array_equal(out.sequences[:, :expected.shape[1]], expected)
    assert (out.sequences[:, expected.shape[1]:] == 1).all()
    np.testing.assert_allclose(out.sequences_scores, ref["beam_eos2_scores"], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("bad,words", [
    (dict(num_beams=0), "num_beams must be >= 1"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences=3 is more than num_beams=2"),
    (dict(num_beams=2, do_sample=True), "beam sampling"),
    (dict(num_beams=2, early_stopping="sometimes"), "early_stopping must be"),
])
def test_bad_beam_arguments(tiny, bad, words):
    with pytest.raises(GenerationArgumentError) as info:
        tiny.generate([[1, 2]], max_new_tokens=2, **bad)
    assert words in str(info.value)
