"""Each model family against transformers' own outputs on the same weights (tools/make_fixtures.py)."""
import numpy as np
import pytest

from conftest import generator, reference

# Every layout of the same weights shares gpt2-tiny's reference; the others have their own.
CHECKPOINTS = [("gpt2-tiny", "gpt2-tiny"), ("gpt2-tiny-hub", "gpt2-tiny"), ("gpt2-tiny-sharded", "gpt2-tiny"),
               ("gpt2-variant", "gpt2-variant"), ("gpt2-untied", "gpt2-untied"),
               ("opt-tiny", "opt-tiny"), ("opt-tiny-unprefixed", "opt-tiny"), ("opt-350m-tiny", "opt-350m-tiny"),
               ("opt-variant", "opt-variant")]
MODELS = sorted({ref for _, ref in CHECKPOINTS})
NEW = 12


@pytest.mark.parametrize("name,ref_name", CHECKPOINTS)
def test_logits_match_transformers(name, ref_name):
    ref = reference(ref_name)
    mask = ref["attention_mask"]
    logits = generator(name).logits(ref["input_ids"], attention_mask=mask)
    assert logits.shape == ref["logits"].shape and logits.dtype == np.float32
    real = mask.astype(bool)  # padding positions carry no meaning
    np.testing.assert_allclose(logits[real], ref["logits"][real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_tokens_match_transformers(name):
    ref = reference(name)
    out = generator(name).generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW,
                                   eos_token_id=None, pad_token_id=int(ref["pad"]))
    np.testing.assert_array_equal(out, ref["greedy"])


@pytest.mark.parametrize("name", MODELS)
def test_eos_stops_rows_and_pads_after(name):
    ref = reference(name)
    eos = int(ref["eos"])
    out = generator(name).generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW,
                                   eos_token_id=[eos, 383], pad_token_id=1)
    expected = ref["greedy_eos"]  # transformers stops when every row is done: pad the rest
    width = ref["input_ids"].shape[1]
    assert out.shape == (len(expected), width + NEW)
    np.testing.assert_array_equal(out[:, :expected.shape[1]], expected)
    assert (out[:, expected.shape[1]:] == 1).all()
    new = out[:, width:]
    stopped = (new == eos).any(axis=1)
    assert stopped.any()
    for row in np.flatnonzero(stopped):
        first = int(np.argmax(new[row] == eos))
        assert (new[row, first + 1:] == 1).all()


@pytest.mark.parametrize("name", ["gpt2-tiny", "opt-tiny"])
def test_min_new_tokens_suppresses_eos(name):
    ref = reference(name)
    out = generator(name).generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW,
                                          eos_token_id=int(ref["eos"]), pad_token_id=1, min_new_tokens=7)
    expected = ref["greedy_min_new"]
    np.testing.assert_array_equal(out[:, :expected.shape[1]], expected)
    assert not (out[:, ref["input_ids"].shape[1]:][:, :7] == int(ref["eos"])).any()


@pytest.mark.parametrize("names", [("gpt2-tiny", "gpt2-tiny-hub", "gpt2-tiny-sharded"),
                                   ("opt-tiny", "opt-tiny-unprefixed")])
def test_key_layouts_load_identical_weights(names):
    weights = [generator(n).model.w for n in names]
    for other in weights[1:]:
        assert other.keys() == weights[0].keys()
        for k in weights[0]:
            np.testing.assert_array_equal(other[k].numpy(), weights[0][k].numpy())


@pytest.mark.parametrize("name", ["opt-tiny", "opt-350m-tiny", "gpt2-variant"])
def test_padded_rows_equal_the_prompt_alone(name):
    ref = reference(name)
    gen = generator(name)
    batch = gen.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW, eos_token_id=None)
    width = ref["input_ids"].shape[1]
    for row in (1, 3):
        prompt = ref["input_ids"][row][ref["attention_mask"][row] == 1]
        # Alone, eagerly (the same functions: tests/test_eager.py); the compiled program alone is
        # checked on gpt2-tiny in tests/test_engine.py.
        alone = gen.generate(prompt[None], max_new_tokens=NEW, eos_token_id=None, jit_compile=False)
        np.testing.assert_array_equal(alone[0, len(prompt):], batch[row, width:])
