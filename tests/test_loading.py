"""Loading checkpoints: layouts, config fields, and clear errors for broken folders."""
import builtins
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import fixture_path
from xlagen.engine import (CheckpointFormatError, CheckpointNotFoundError, UnsupportedModelError, XlagenError, load)


@pytest.fixture
def folder(tmp_path):
    """A writable copy of the tiny checkpoint."""
    dst = tmp_path / "ckpt"
    shutil.copytree(fixture_path("gpt2-tiny"), dst)
    return dst


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_loads_config_generation_config_and_tokenizer():
    gen = load(fixture_path("gpt2-tiny"))
    assert gen.config.n_layer == 2 and gen.config.n_embd == 64
    assert gen.generation_config["eos_token_id"] == 0
    assert gen.tokenizer.get_vocab_size() == gen.config.vocab_size
    assert gen.path == fixture_path("gpt2-tiny")


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load(str(tmp_path / "nothing"))


def test_missing_config(folder):
    os.remove(folder / "config.json")
    with pytest.raises(CheckpointNotFoundError, match="config.json is missing"):
        load(folder)


def test_malformed_config(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointFormatError, match="config.json is not valid JSON"):
        load(folder)


def test_unknown_model_type(folder):
    _edit_config(folder, model_type="llama")
    with pytest.raises(UnsupportedModelError, match="'llama' is not supported; supported: gpt2, opt, t5"):
        load(folder)


def test_config_field_of_wrong_type(folder):
    _edit_config(folder, n_layer="two")
    with pytest.raises(CheckpointFormatError, match="n_layer"):
        load(folder)


def test_no_weights_file(folder):
    os.remove(folder / "model.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="no weights"):
        load(folder)


def test_shape_mismatch_names_tensor_and_shapes(folder):
    _edit_config(folder, n_embd=32)
    with pytest.raises(CheckpointFormatError, match=r"'wte.weight'.*\[384, 64\].*\[384, 32\]"):
        load(folder)


def test_missing_tensor_is_named(folder):
    _edit_config(folder, n_layer=3)
    with pytest.raises(CheckpointFormatError, match="'h.2.ln_1.weight' is missing"):
        load(folder)


def test_garbage_weights_file(folder):
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage garbage!")
    with pytest.raises(CheckpointFormatError, match="model.safetensors is not a readable safetensors file"):
        load(folder)


def test_shard_missing(tmp_path):
    dst = tmp_path / "sharded"
    shutil.copytree(fixture_path("gpt2-tiny-sharded"), dst)
    shard = sorted(p for p in os.listdir(dst) if p.startswith("model-"))[0]
    os.remove(dst / shard)
    with pytest.raises(CheckpointNotFoundError, match=shard):
        load(dst)


def test_unused_tensors_warn(folder):
    save_file({"extra.weight": np.zeros(3, np.float32)}, str(folder / "extra.safetensors"))
    index = {"weight_map": {"wte.weight": "model.safetensors", "extra.weight": "extra.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.warns(UserWarning, match="extra.weight"):
        load(folder)


def test_hub_id_without_huggingface_hub(monkeypatch):
    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(CheckpointNotFoundError, match=r"huggingface_hub is not installed.*xlagen\[hub\]"):
        load("openai-community/gpt2")


def test_errors_are_one_family():
    for cls in (CheckpointFormatError, CheckpointNotFoundError, UnsupportedModelError):
        assert issubclass(cls, XlagenError)
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)
    assert issubclass(CheckpointFormatError, ValueError)
