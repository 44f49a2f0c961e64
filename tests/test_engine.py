"""The generate / generate_text / logits contract, on the tiny fixture checkpoint."""
import numpy as np
import pytest

from conftest import reference
from xlagen.engine import GenerationArgumentError


def _rows(ref):
    ids, mask = ref["input_ids"], ref["attention_mask"]
    return [ids[i][mask[i] == 1] for i in range(len(ids))]


def test_each_padded_row_equals_the_prompt_alone(tiny):
    ref = reference("gpt2-tiny")
    batch = tiny.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=8, eos_token_id=None)
    width = ref["input_ids"].shape[1]
    for i, row in enumerate(_rows(ref)):
        alone = tiny.generate(row[None], max_new_tokens=8, eos_token_id=None)
        np.testing.assert_array_equal(alone[0, len(row):], batch[i, width:])


def test_padded_logits_equal_unpadded(tiny):
    ref = reference("gpt2-tiny")
    logits = tiny.logits(ref["input_ids"], attention_mask=ref["attention_mask"])
    row = _rows(ref)[1]
    np.testing.assert_allclose(tiny.logits(row)[0], logits[1, -len(row):], atol=1e-5)


def test_same_bucket_does_not_retrace_new_bucket_does(tiny):
    rng = np.random.RandomState(0)
    tiny.generate(rng.randint(1, 300, size=(2, 3)), max_new_tokens=5)
    count = tiny.trace_count
    # Widths 1..8 share the bucket of 8; new ids, masks and EOS ids are tensors, not program keys.
    tiny.generate(rng.randint(1, 300, size=(2, 7)), max_new_tokens=5, eos_token_id=[5, 6, 7])
    tiny.generate(rng.randint(1, 300, size=(2, 8)), attention_mask=[[0] * 3 + [1] * 5, [1] * 8], max_new_tokens=5,
                  min_new_tokens=2, pad_token_id=3)
    assert tiny.trace_count == count
    tiny.generate(rng.randint(1, 300, size=(2, 9)), max_new_tokens=5)
    assert tiny.trace_count == count + 1


def test_output_layout_keeps_prompt_as_given(tiny):
    ids = [[7, 8, 9], [1, 2, 3]]
    out = tiny.generate(ids, attention_mask=[[0, 1, 1], [1, 1, 1]], max_new_tokens=4)
    assert out.dtype == np.int32 and out.shape == (2, 7)
    np.testing.assert_array_equal(out[:, :3], ids)


def test_one_dimensional_input_is_one_row(tiny):
    out = tiny.generate([5, 6, 7], max_new_tokens=3)
    assert out.shape == (1, 6)


def test_max_length_counts_the_prompt(tiny):
    assert tiny.generate([[5, 6, 7]], max_length=10).shape == (1, 10)
    # transformers' default max_length is 20
    assert tiny.generate([[5, 6, 7]]).shape == (1, 20)
    with pytest.raises(GenerationArgumentError, match="max_new_tokens"):
        tiny.generate([[5, 6, 7]], max_length=3)


def test_generate_text_round_trips_through_the_tokenizer(tiny):
    prompts = ["The for statement", "If"]
    texts = tiny.generate_text(prompts, max_new_tokens=6, eos_token_id=None)
    completions = tiny.generate_text(prompts, max_new_tokens=6, eos_token_id=None, return_full_text=False)
    tok = tiny.tokenizer
    for prompt, text, completion in zip(prompts, texts, completions):
        assert text.startswith(prompt)
        assert text == prompt + completion
        ids = tok.encode(prompt).ids
        out = tiny.generate([ids], max_new_tokens=6, eos_token_id=None)
        assert tok.decode(out[0, len(ids):].tolist()) == completion
    assert tok.decode(tok.encode(prompts[0]).ids) == prompts[0]


def test_logits_shape_and_dtype(tiny):
    logits = tiny.logits([[1, 2, 3]])
    assert logits.shape == (1, 3, tiny.config.vocab_size) and logits.dtype == np.float32
