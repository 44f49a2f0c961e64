"""Low-precision weights: bfloat16 checkpoints load; load(dtype="bfloat16") and load(quantize="int8")
decode exactly as float32 does on the widened weights, in every product formulation
(kernels.layers._low_product: one or two rows, 3-64 rows, a prompt of more than 64), eagerly and
compiled; weight_bytes and the memory estimate count the stored bytes."""
import json
import shutil

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import fixture_path
from xlagen.engine import CheckpointFormatError, GenerationArgumentError, load
from xlagen.engine.jobs.cli import main
from xlagen.kernels import precision

LOW = {"bf16": dict(dtype="bfloat16"), "int8": dict(quantize="int8")}
FIXTURES = ("gpt2-tiny", "opt-tiny", "t5-v1_1-tiny")


def _widened_copy(gen, folder):
    """A float32 checkpoint holding exactly the weights a low-precision Generator computes with."""
    shutil.copytree(gen.path, folder)
    save_file({n: np.ascontiguousarray(t) for n, t in gen.model.hub_tensors().items()}, str(folder / "model.safetensors"))
    return load(folder)


# bfloat16 takes the same product paths as int8, without the scale, and OPT the same decoder
# code as GPT-2: once each is enough
@pytest.fixture(scope="module", params=[("gpt2-tiny", "bf16"), ("gpt2-tiny", "int8"), ("t5-v1_1-tiny", "int8")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def pair(request, tmp_path_factory):
    fixture, kind = request.param
    low = load(fixture_path(fixture), **LOW[kind])
    return low, _widened_copy(low, tmp_path_factory.mktemp(kind) / fixture)


def _prompts(gen, batch, width=7):
    rng = np.random.RandomState(batch)
    ids = rng.randint(3, gen.vocab_size, size=(batch, width)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :2] = 0
    return ids, mask


# 1 prompt: 7-row prompt products, 1-row steps; 4 beams: 4-row steps (int8 looped, bfloat16 on
# the call's float32 copy); 10 prompts x 2 beams: a 70-row prompt, 20-row steps
@pytest.mark.parametrize("batch, options", [(1, {}), (1, dict(num_beams=4)), (10, dict(num_beams=2))],
                         ids=["1row", "beams4", "beams-prompt70"])
def test_low_precision_decodes_as_float32_on_the_widened_weights(pair, batch, options):
    low, wide = pair
    ids, mask = _prompts(low, batch)
    kwargs = dict(attention_mask=mask, max_new_tokens=6, min_new_tokens=6, **options)
    np.testing.assert_array_equal(low.generate(ids, **kwargs), wide.generate(ids, **kwargs))
    if batch == 1:
        return
    decoder = {"decoder_input_ids": ids} if low.config.is_encoder_decoder else {}
    np.testing.assert_allclose(low.logits(ids, mask, **decoder), wide.logits(ids, mask, **decoder), rtol=1e-4, atol=1e-4)


def test_eager_low_precision_gives_the_compiled_tokens():
    low = load(fixture_path("gpt2-tiny"), quantize="int8")
    ids, mask = _prompts(low, 2)
    kwargs = dict(attention_mask=mask, max_new_tokens=5, num_beams=3)
    np.testing.assert_array_equal(low.generate(ids, jit_compile=False, **kwargs), low.generate(ids, **kwargs))


def test_weight_bytes_and_memory_estimate_count_the_stored_dtype():
    # float32 without its head screen (test_screen counts that); narrow weights keep none
    gens = {kind: load(fixture_path("gpt2-tiny"), **kw) for kind, kw in dict(LOW, fp32={"head_screen": False}).items()}
    fp32 = gens["fp32"].weight_bytes
    assert fp32 == sum(v.shape.num_elements() * 4 for v in gens["fp32"].model.w.values())
    assert 0.5 < gens["bf16"].weight_bytes / fp32 < 0.52  # vectors stay float32
    assert 0.25 < gens["int8"].weight_bytes / fp32 < 0.3  # one byte, plus a float32 scale per row
    matrices = sum(v.shape.num_elements() for v in gens["fp32"].model.w.values() if v.shape.rank == 2)
    assert "widened weights" not in gens["fp32"].model.memory_estimate(1, 8, 4, 16)
    largest = max(v.shape.num_elements() for v in gens["fp32"].model.w.values())
    # int8 runs up to 4 rows as one-row products, bfloat16 up to 2; past that a step widens every matrix
    assert gens["int8"].model.memory_estimate(1, 8, 5, 16)["widened weights"] == 4 * matrices
    assert gens["int8"].model.memory_estimate(1, 8, 4, 16)["widened weights"] == 4 * largest
    assert gens["bf16"].model.memory_estimate(1, 8, 3, 16)["widened weights"] == 4 * matrices
    assert gens["bf16"].model.memory_estimate(1, 8, 2, 16)["widened weights"] == 4 * largest


def test_int8_rows_hold_127_steps_of_their_largest_weight():
    w = np.random.RandomState(0).randn(5, 9).astype(np.float32)
    w[3] = 0
    values, scale = precision.quantize_int8(w)
    assert values.dtype == np.int8 and np.abs(values).max(axis=1).tolist() == [127, 127, 127, 0, 127]
    assert scale[3] == 1.0
    assert np.abs(values * scale[:, None] - w).max() <= scale.max() / 2 + 1e-7


def test_bfloat16_checkpoint_loads(tmp_path):
    folder = tmp_path / "bf16"
    shutil.copytree(fixture_path("gpt2-tiny"), folder)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({n: t.astype(ml_dtypes.bfloat16) for n, t in tensors.items()}, str(folder / "model.safetensors"))
    rounded = tmp_path / "rounded"  # the same values, as float32
    shutil.copytree(fixture_path("gpt2-tiny"), rounded)
    save_file({n: t.astype(ml_dtypes.bfloat16).astype(np.float32) for n, t in tensors.items()}, str(rounded / "model.safetensors"))
    ids = np.array([[5, 6, 7, 8]], np.int32)
    gen = load(folder)
    assert gen.model.w["wte.weight"].dtype.name == "float32"
    np.testing.assert_array_equal(gen.logits(ids), load(rounded).logits(ids))
    np.testing.assert_array_equal(load(folder, dtype="bfloat16").generate(ids, max_new_tokens=4),
                                  load(rounded).generate(ids, max_new_tokens=4))


def test_integer_weights_are_still_refused(tmp_path):
    folder = tmp_path / "ints"
    shutil.copytree(fixture_path("gpt2-tiny"), folder)
    tensors = load_file(str(folder / "model.safetensors"))
    name = next(n for n in tensors if n.endswith("wte.weight"))
    tensors[name] = tensors[name].astype(np.int8)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match="'wte.weight'.*int8; weights must be floating point"):
        load(folder)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype="int8"), "dtype='int8' is not a weight dtype.*float32, bfloat16"),
    (dict(quantize="int4"), "quantize='int4' is not supported; use 'int8'"),
    (dict(dtype="bfloat16", quantize="int8"), "does not combine with dtype='bfloat16'"),
])
def test_bad_precision_arguments_are_named(kwargs, message):
    with pytest.raises(GenerationArgumentError, match=message):
        load(fixture_path("gpt2-tiny"), **kwargs)


def test_cli_flags(capsys):
    args = ["generate", "hello", "--model", fixture_path("gpt2-tiny"), "--max-new-tokens", "4"]
    assert main(args + ["--quantize", "int8"]) == 0
    assert capsys.readouterr().out.strip()
    with pytest.raises(SystemExit):
        main(args + ["--dtype", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_int8_export_is_a_quarter_of_fp32_and_gives_generates_tokens(tmp_path):
    import os
    import tensorflow as tf
    sizes = {}
    fp32 = load(fixture_path("gpt2-tiny"))
    ids, mask = _prompts(fp32, 2, width=8)
    for kind, kwargs in (("int8", LOW["int8"]),):
        gen = load(fixture_path("gpt2-tiny"), **kwargs)
        directory = str(tmp_path / kind)
        gen.export(directory, prompt_length=8, max_new_tokens=5, batch_size=2)
        variables = os.path.join(directory, "variables")
        sizes[kind] = sum(os.path.getsize(os.path.join(variables, f)) for f in os.listdir(variables))
        served = tf.saved_model.load(directory).signatures["serving_default"]
        got = served(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))["sequences"].numpy()
        np.testing.assert_array_equal(got, gen.generate(ids, attention_mask=mask, max_new_tokens=5))
    assert sizes["int8"] / fp32.weight_bytes < 0.3, (sizes, fp32.weight_bytes)
