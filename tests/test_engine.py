"""The generate / generate_text / logits contract, on the tiny fixture checkpoint."""
import numpy as np
import pytest

from conftest import fixture_path, generation_reference, generator, reference
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
    eager = dict(jit_compile=False)  # the output width is the question, not the compiled program
    assert tiny.generate([[5, 6, 7]], max_length=10, **eager).shape == (1, 10)
    # transformers reads its untouched default max_length of 20 as 20 new tokens, within the positions
    assert tiny.generate([[5, 6, 7]], **eager).shape == (1, 23)
    assert tiny.generate([[5] * 50], **eager).shape == (1, 64)
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


def test_logits_share_a_program_per_bucket_and_the_cache_is_bounded():
    from xlagen.engine import load
    gen = load(fixture_path("gpt2-tiny"), max_programs=2)
    rng = np.random.RandomState(1)
    first = rng.randint(1, 300, size=(1, 20))
    full = gen.logits(first)
    count = gen.trace_count
    for width in range(17, 25):  # one bucket of 8
        gen.logits(rng.randint(1, 300, size=(1, width)))
    assert gen.trace_count == count
    for width in (3, 30, 40):  # three more buckets, two kept
        gen.logits(rng.randint(1, 300, size=(1, width)))
        assert len(gen._programs) <= 2
    assert gen.trace_count == count + 3
    gen.generate([[5, 6, 7]], max_new_tokens=2)  # generate programs share the bound
    assert len(gen._programs) == 2
    # A dropped program compiles again when it is needed again, and computes the same.
    np.testing.assert_array_equal(gen.logits(first), full)
    assert gen.trace_count == count + 5


def test_bucketed_logits_equal_unbucketed(tiny):
    ids = np.random.RandomState(2).randint(1, 300, size=(2, 11))
    # Unbucketed eagerly (no program for the odd width): the padding is the question.
    np.testing.assert_allclose(tiny.logits(ids), tiny.logits(ids, pad_to_multiple_of=1, jit_compile=False), atol=1e-4)
    t5 = generator("t5-v1_1-tiny")
    ref = reference("t5-v1_1-tiny")
    args = dict(attention_mask=ref["attention_mask"], decoder_input_ids=ref["decoder_input_ids"][:, :5])
    np.testing.assert_allclose(t5.logits(ref["input_ids"], **args),
                               t5.logits(ref["input_ids"], pad_to_multiple_of=1, jit_compile=False, **args), atol=1e-4)


def test_the_loop_and_the_generator_never_ask_the_model_kind():
    import inspect
    from xlagen.engine import generator as generator_module, loops, planning
    from xlagen.engine.loops import beam_search, common, decode, multi_token, rows
    for module in (loops, decode, common, rows, beam_search, multi_token, planning, generator_module):
        assert "is_encoder_decoder" not in inspect.getsource(module)


@pytest.mark.parametrize("name", ["opt-tiny", "t5-v1_1-tiny"])
def test_missing_mask_is_inferred_from_the_pad_id_as_transformers_does(name):
    ref = generation_reference(name)
    gen = generator(name)
    ids = ref["nomask_input_ids"]
    # Eagerly: the mask is resolved before the decode functions run, compiled or not (tests/test_eager.py).
    np.testing.assert_array_equal(gen.generate(ids, max_new_tokens=12, jit_compile=False), ref["nomask_greedy"])
    np.testing.assert_array_equal(gen.generate(ids, max_new_tokens=12, num_beams=3, jit_compile=False),
                                  ref["nomask_beam"])


def test_mask_is_not_inferred_when_the_pad_id_is_an_eos_id(tiny):
    ids = [[0, 0, 5, 6, 7]]  # gpt2-tiny: pad falls back to EOS 0
    with pytest.warns(UserWarning, match="cannot be inferred"):
        unmasked = tiny.generate(ids, max_new_tokens=4)
    np.testing.assert_array_equal(unmasked, tiny.generate(ids, attention_mask=np.ones((1, 5), np.int32), max_new_tokens=4))


@pytest.mark.parametrize("variant", ["derived", "explicit", "absent"])
def test_generation_defaults_come_from_where_transformers_takes_them(variant, tmp_path):
    """config.json with legacy generation keys (num_beams=3, max_length=9, ...) beside a derived
    generation_config.json, an explicit one, or none: the same defaults as transformers."""
    from legacy_folders import legacy_folder
    from xlagen.engine import load
    ref = generation_reference("legacy")
    gen = load(legacy_folder(fixture_path("gpt2-tiny"), variant, str(tmp_path / variant)))
    out = gen.generate(ref["input_ids"], attention_mask=ref["attention_mask"], jit_compile=False)  # options, not XLA
    np.testing.assert_array_equal(out, ref[f"{variant}_sequences"])


def test_program_cache_is_safe_across_threads():
    import threading
    from xlagen.engine import load
    gen = load(fixture_path("gpt2-tiny"), max_programs=2)
    rng = np.random.RandomState(3)
    inputs = [rng.randint(1, 300, size=(1, width)) for width in (3, 11, 19)] * 2  # three buckets, each twice
    expected = [gen.logits(ids, jit_compile=False) for ids in inputs]
    results, errors = [None] * len(inputs), []

    def work(i):
        try:
            results[i] = gen.logits(inputs[i])
        except Exception as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(gen._programs) <= 2
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)  # compiled against eager: float order only
