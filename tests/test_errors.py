"""Bad arguments, bad files and crafted files: one clear xlagen error, before anything compiles.

The property tests at the bottom feed random configs and random safetensors headers to `load`
and accept only success or an XlagenError: never another exception, a hang or a TF traceback.
"""
import dataclasses
import json
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_path, generator
from xlagen import models
from xlagen.engine import defaults, options
from xlagen.engine import (CheckpointFormatError, CheckpointNotFoundError, GenerationArgumentError, MemoryLimitError,
                           XlagenError, load)

# (keyword options, words the message must hold); every one is refused by options.parse.
BAD_OPTIONS = [
    (dict(num_beams=0), "num_beams must be >= 1"),
    (dict(do_sample=True, top_p=0.0), r"top_p must be in \(0.0, 1.0\]"),
    (dict(do_sample=True, top_p=1.5), r"top_p must be in \(0.0, 1.0\]"),
    (dict(do_sample=True, top_k=-1), "top_k must be >= 0"),
    (dict(do_sample=True, temperature=-0.5), r"temperature must be in \(0.0, inf\]"),
    (dict(do_sample=True, min_p=2.0), r"min_p must be in \[0.0, 1.0\]"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (dict(max_new_tokens=2.5), "max_new_tokens must be an int"),
    (dict(num_beams=4, num_return_sequences=5), "num_return_sequences=5 is more than num_beams=4"),
    (dict(num_return_sequences=2), "needs do_sample=True or num_beams >= 2"),
    (dict(num_beams=2, do_sample=True), "beam sampling"),
    (dict(max_new_token=4), "unknown option 'max_new_token'; did you mean 'max_new_tokens'"),
    (dict(temprature=0.7), "did you mean 'temperature'"),
    (dict(early_stopping="sometimes"), "early_stopping must be True, False or 'never'"),
    (dict(do_sample="yes"), "do_sample must be True or False"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be in"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be >= 0"),
    (dict(eos_token_id=10_000), r"eos_token_id=\[10000\] is outside the vocabulary"),
    (dict(pad_token_id=-3), "pad_token_id must be >= 0"),
    (dict(seed="abc"), "seed must be an int or a pair"),
    (dict(seed=-1), r"seed must be in \[0, 2\*\*62\)"),
    (dict(pad_to_multiple_of=0), "pad_to_multiple_of must be >= 1"),
    (dict(memory_limit=-1), "memory_limit must be in"),
    (dict(max_length=3, max_new_tokens=None), "max_length=3 leaves no room"),
]


@pytest.mark.parametrize("kwargs,words", BAD_OPTIONS, ids=[next(iter(k)) + "-" + str(i) for i, (k, _) in enumerate(BAD_OPTIONS)])
def test_bad_option_is_refused_before_compiling(tiny, kwargs, words):
    count = tiny.trace_count
    kwargs = dict(dict(max_new_tokens=2), **kwargs)
    with pytest.raises(GenerationArgumentError, match=words):
        tiny.generate([[1, 2, 3]], **kwargs)
    assert tiny.trace_count == count


BAD_INPUTS = [
    (dict(input_ids=[[1, 10_000]]), r"token ids outside \[0, 384\): \[10000\]"),
    (dict(input_ids=[[-5, 2]]), r"outside \[0, 384\): \[-5\]"),
    (dict(input_ids=[[1.5, 2.0]]), "input_ids must hold integers"),
    (dict(input_ids=[[1, 2], [3]]), "rectangular"),
    (dict(input_ids=[]), r"shape \[batch, length\]"),
    (dict(input_ids=[[[1, 2]]]), r"shape \[batch, length\]"),
    (dict(input_ids=[[1, 2]], attention_mask=[[1, 1, 1]]), r"attention_mask has shape \[1, 3\] but input_ids has \[1, 2\]"),
    (dict(input_ids=[[1, 2]], attention_mask=[[1, 2]]), "only 0 \\(padding\\) and 1"),
    (dict(input_ids=[[1, 2]], attention_mask=[[0, 0]]), "all padding"),
    (dict(input_ids=[[1] * 60], max_new_tokens=10), "plus max_new_tokens=10 is 70, beyond the model's 64 positions"),
    # Checked before the narrowing cast: 2**32 + 5 must not wrap to the valid id 5.
    (dict(input_ids=np.array([[2**32 + 5, 7, 8]], np.int64)), r"input_ids holds values outside the int32 range: \[4294967301\]"),
    (dict(input_ids=np.array([[-2**40, 7]], np.int64)), "outside the int32 range"),
    (dict(input_ids=np.array([[2**64 - 1, 7]], np.uint64)), "outside the int32 range"),
    (dict(input_ids=[[5, 7]], attention_mask=np.array([[2**32 + 1, 1]], np.int64)),
     "attention_mask holds values outside the int32 range"),
]


@pytest.mark.parametrize("kwargs,words", BAD_INPUTS)
def test_bad_input_is_refused_before_compiling(tiny, kwargs, words):
    count = tiny.trace_count
    kwargs = dict(dict(max_new_tokens=2), **kwargs)
    with pytest.raises(GenerationArgumentError, match=words):
        tiny.generate(**kwargs)
    assert tiny.trace_count == count


def test_logits_check_positions_and_memory_as_generate_does(tiny):
    count = tiny.trace_count
    # Under XLA an out-of-range position id would be clamped into plausible logits.
    with pytest.raises(GenerationArgumentError, match=r"longest input \(74 tokens\) is beyond the model's 64 positions"):
        tiny.logits([[1] * 74])
    with pytest.raises(GenerationArgumentError, match="outside the int32 range"):
        tiny.logits(np.array([[2**32 + 5]], np.int64))
    with pytest.raises(MemoryLimitError, match=r"logits [\d.]+ MiB.*above the memory limit"):
        tiny.logits([[1] * 60] * 64, memory_limit=2**20)
    assert tiny.trace_count == count
    # Padding does not count: a left-padded row of 60 real tokens fits.
    assert tiny.logits([[0] * 14 + [1] * 60], attention_mask=[[0] * 14 + [1] * 60]).shape == (1, 74, 384)


def test_right_padding_warns_for_decoder_only(tiny):
    with pytest.warns(UserWarning, match="left padding"):
        tiny.generate([[1, 2, 0]], attention_mask=[[1, 1, 0]], max_new_tokens=1)


def test_text_and_logits_arguments(tiny):
    with pytest.raises(GenerationArgumentError, match="prompts must be a str"):
        tiny.generate_text([])
    with pytest.raises(GenerationArgumentError, match="decoder_input_ids is only for encoder-decoder"):
        tiny.logits([[1, 2]], decoder_input_ids=[[0]])


# -- memory -------------------------------------------------------------------------------------

def test_memory_estimate_counts_batch_beams_layers_length_width(tiny):
    c = tiny.config
    parts = tiny.model.memory_estimate(batch=3, prompt_len=8, group=4, max_new_tokens=16)
    assert parts["kv cache"] == 2 * c.n_layer * c.n_embd * (3 * 8 + 3 * 4 * 16) * 4


def test_cache_beyond_the_limit_is_refused_with_the_figure(tiny):
    count = tiny.trace_count
    with pytest.raises(MemoryLimitError, match=r"needs about [\d.]+ MiB \(kv cache [\d.]+ MiB.*batch 64 x 4 beams.*"
                                               r"2 layers.*above the memory limit of 1.0 MiB.*memory_limit="):
        tiny.generate([[1, 2, 3]] * 64, num_beams=4, max_new_tokens=40, memory_limit=2**20)
    assert tiny.trace_count == count
    assert issubclass(MemoryLimitError, GenerationArgumentError)


def test_generator_limit_can_be_raised(tmp_path):
    gen = load(fixture_path("gpt2-tiny"), memory_limit=1000)
    with pytest.raises(MemoryLimitError, match="above the memory limit"):
        gen.generate([[1, 2, 3]], max_new_tokens=2)
    gen.memory_limit = 2**30
    assert gen.generate([[1, 2, 3]], max_new_tokens=2).shape == (1, 5)


def test_t5_estimate_counts_the_cross_attention_cache():
    gen = load(fixture_path("t5-v1_1-tiny"))
    c = gen.config
    parts = gen.model.memory_estimate(batch=2, prompt_len=16, group=3, max_new_tokens=5)
    assert parts["cross-attention cache"] == 2 * c.decoder_layers * c.num_heads * c.d_kv * 2 * 16 * 4
    assert parts["kv cache"] == 2 * c.decoder_layers * c.num_heads * c.d_kv * (2 * 1 + 2 * 3 * 5) * 4


# -- files that must never run code -------------------------------------------------------------

class _Exploit:
    """Unpickling this would create `marker`: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def config_only(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(os.path.join(fixture_path("gpt2-tiny"), "config.json"), folder)
    return folder


def test_pickled_weights_are_refused_not_unpickled(config_only, tmp_path):
    marker = tmp_path / "pwned"
    (config_only / "pytorch_model.bin").write_bytes(pickle.dumps({"wte.weight": _Exploit(str(marker))}))
    with pytest.raises(CheckpointNotFoundError, match=r"pickled.*not read.*save_pretrained\(folder, safe_serialization=True\)"):
        load(config_only)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_not_unpickled(config_only, tmp_path):
    marker = tmp_path / "pwned"
    (config_only / "model.safetensors").write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(CheckpointFormatError, match="model.safetensors is not a readable safetensors file"):
        load(config_only)
    assert not marker.exists()


def test_integer_weights_are_refused(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(fixture_path("gpt2-tiny"), folder)
    tensors = models.read_tensors([str(folder / "model.safetensors")])
    tensors["transformer.wpe.weight"] = tensors["transformer.wpe.weight"].astype(np.int32)
    from safetensors.numpy import save_file
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match="'wpe.weight'.*dtype int32; weights must be floating point"):
        load(folder)


@pytest.mark.parametrize("fixture,field", [("gpt2-tiny", "n_layer"), ("opt-tiny", "num_hidden_layers"),
                                           ("t5-v1_1-tiny", "num_decoder_layers")])
def test_a_layer_count_the_files_cannot_hold_is_refused_before_anything_is_built(tmp_path, fixture, field):
    """A huge layer count once made load() list every layer's tensor names first (tens of GB)."""
    folder = tmp_path / "ckpt"
    shutil.copytree(fixture_path(fixture), folder)
    config = json.loads((folder / "config.json").read_text())
    config[field] = 2**31
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match=f"config.json: {field}=2147483648, but .* holds only \\d+ tensors"):
        load(folder)


# -- property tests -----------------------------------------------------------------------------

def _json_values():
    return st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True),
                     st.text(max_size=8), st.lists(st.integers(-2, 5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _fields(module, config_class):
    return [f.name for f in dataclasses.fields(config_class) if f.name != "raw"]


CONFIG_FIELDS = {
    "gpt2-tiny": _fields(models.gpt2, models.gpt2.GPT2Config),
    "opt-tiny": _fields(models.opt, models.opt.OPTConfig),
    "t5-v1_1-tiny": _fields(models.t5, models.t5.T5Config),
}
# XLAGEN_PROPERTY_EXAMPLES=1000 pytest tests/test_errors.py searches harder than CI has time for.
PROPERTY_SETTINGS = settings(max_examples=int(os.environ.get("XLAGEN_PROPERTY_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_xlagen_errors(folder):
    try:
        load(folder)
    except XlagenError:
        pass  # any other exception fails the test with its traceback


@PROPERTY_SETTINGS
@given(data=st.data(), fixture=st.sampled_from(sorted(CONFIG_FIELDS)))
def test_random_configs_give_only_xlagen_errors(tmp_path_factory, data, fixture):
    folder = tmp_path_factory.mktemp("cfg")
    shutil.copy(os.path.join(fixture_path(fixture), "model.safetensors"), folder)
    config = json.loads(open(os.path.join(fixture_path(fixture), "config.json")).read())
    changed = data.draw(st.dictionaries(st.sampled_from(CONFIG_FIELDS[fixture] + ["model_type", "architectures"]),
                                        _json_values(), min_size=1, max_size=4))
    config.update(changed)
    body = json.dumps(config) if data.draw(st.booleans()) else data.draw(st.text(max_size=40))
    (folder / "config.json").write_text(body)
    _only_xlagen_errors(folder)


DTYPES = ["F32", "F16", "F64", "BF16", "I32", "I64", "U8", "BOOL", "F8_E4M3", "X", ""]


@st.composite
def _safetensors_bytes(draw, names):
    """A safetensors file with a random, often inconsistent, header."""
    header = {}
    offset = 0
    for name in draw(st.lists(st.sampled_from(names) | st.text(max_size=6), max_size=4, unique=True)):
        shape = draw(st.lists(st.integers(-1, 70), max_size=3))
        start = offset if draw(st.booleans()) else draw(st.integers(-2, 1000))
        end = start + draw(st.integers(-4, 4 * 70 * 70))
        header[name] = {"dtype": draw(st.sampled_from(DTYPES)), "shape": shape, "data_offsets": [start, end]}
        offset = max(offset, end)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4) | st.integers(), max_size=2))
    raw = json.dumps(header).encode()
    length = len(raw) if draw(st.booleans()) else draw(st.integers(0, 2**64 - 1))
    data = bytes(draw(st.integers(0, max(0, offset + draw(st.integers(-8, 8))))) if offset < 200_000 else 0)
    return struct.pack("<Q", length) + raw + data


@PROPERTY_SETTINGS
@given(data=st.data())
def test_random_safetensors_headers_give_only_xlagen_errors(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("st")
    shutil.copy(os.path.join(fixture_path("gpt2-tiny"), "config.json"), folder)
    names = list(models.gpt2.hub_shapes(models.load_config(fixture_path("gpt2-tiny"))))
    (folder / "model.safetensors").write_bytes(data.draw(_safetensors_bytes(names)))
    _only_xlagen_errors(folder)


@PROPERTY_SETTINGS
@given(kwargs=st.dictionaries(st.sampled_from(sorted(defaults.DEFAULTS) + sorted(defaults.EXTRA)), _json_values(), max_size=5))
def test_random_options_give_only_argument_errors(kwargs):
    gen = generator("gpt2-tiny")
    try:
        options.parse(kwargs, gen.generation_config, gen.config, 3, gen.vocab_size)
    except GenerationArgumentError:
        pass
