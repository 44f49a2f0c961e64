"""T5 v1.0 and v1.1 against transformers on the same weights; encoder-decoder specifics."""
import numpy as np
import pytest

from conftest import generator, reference
from xlagen.engine import GenerationArgumentError

MODELS = ["t5-v1_0-tiny", "t5-v1_1-tiny"]
NEW = 12


@pytest.mark.parametrize("name", MODELS)
def test_decoder_logits_match_transformers(name):
    ref = reference(name)
    logits = generator(name).logits(ref["input_ids"], attention_mask=ref["attention_mask"],
                                    decoder_input_ids=ref["decoder_input_ids"])
    assert logits.shape == ref["logits"].shape
    # logits reach tens here: absolute 1e-4 plus 1e-5 of the value
    np.testing.assert_allclose(logits, ref["logits"], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("variant,options", [
    ("greedy", dict(eos_token_id=None, pad_token_id=0)),
    ("greedy_eos", dict(eos_token_id="eos+", pad_token_id=1)),
    ("greedy_min_new", dict(eos_token_id="eos", pad_token_id=1, min_new_tokens=7)),
    ("greedy_penalized", dict(eos_token_id=None, pad_token_id=0, repetition_penalty=1.5, no_repeat_ngram_size=2)),
])
def test_greedy_matches_transformers(name, variant, options):
    ref = reference(name)
    eos = int(ref["eos"])
    options = dict(options, eos_token_id={"eos": eos, "eos+": [eos, 383]}.get(options["eos_token_id"], options["eos_token_id"]))
    out = generator(name).generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW, **options)
    expected = ref[variant]
    assert out.shape == (len(expected), 1 + NEW)
    assert (out[:, 0] == 0).all()  # decoder_start_token_id
    np.testing.assert_array_equal(out[:, :expected.shape[1]], expected)
    assert (out[:, expected.shape[1]:] == options["pad_token_id"]).all()


@pytest.mark.parametrize("name", MODELS)
def test_padded_rows_equal_the_input_alone(name):
    ref = reference(name)  # right padded, as T5's tokenizer pads
    gen = generator(name)
    batch = gen.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=NEW, eos_token_id=None)
    for row in (1, 3):
        alone = gen.generate(ref["input_ids"][row][ref["attention_mask"][row] == 1][None], max_new_tokens=NEW,
                             eos_token_id=None)
        np.testing.assert_array_equal(alone[0], batch[row])


def test_one_program_per_bucket_and_sampling_is_reproducible():
    gen = generator("t5-v1_1-tiny")
    rng = np.random.RandomState(0)
    gen.generate(rng.randint(3, 300, size=(2, 5)), max_new_tokens=6, do_sample=True, seed=1)
    count = gen.trace_count
    ids = rng.randint(3, 300, size=(2, 7))
    a = gen.generate(ids, max_new_tokens=6, do_sample=True, seed=5, top_p=0.8, decoder_start_token_id=2)
    b = gen.generate(ids, max_new_tokens=6, do_sample=True, seed=5, top_p=0.8, decoder_start_token_id=2)
    assert gen.trace_count == count
    np.testing.assert_array_equal(a, b)
    assert (a[:, 0] == 2).all()


def test_generate_text_returns_the_decoded_output():
    gen = generator("t5-v1_1-tiny")
    texts = gen.generate_text(["The for statement", "If"], max_new_tokens=5, eos_token_id=None)
    ids = gen.generate([gen.tokenizer.encode("If").ids], max_new_tokens=5, eos_token_id=None, jit_compile=False)
    assert texts[1] == gen.tokenizer.decode(ids[0, 1:].tolist())


def test_logits_need_decoder_input_ids():
    with pytest.raises(GenerationArgumentError, match="decoder_input_ids"):
        generator("t5-v1_0-tiny").logits([[5, 6, 1]])
    with pytest.raises(GenerationArgumentError, match="only for encoder-decoder"):
        generator("gpt2-tiny").logits([[5, 6]], decoder_input_ids=[[0]])
