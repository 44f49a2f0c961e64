"""Model configs, Hub-format weight loading and forward passes with a KV cache.

A model module exposes `parse_config(dict, source)`, `hub_shapes(config)` and
`build(config, tensors, source)`; the built tf.Module offers the decoding interface of
models/base.py (`prefill`, `step`, `reorder`, `logits`, `continues_prompt`), the same for every model.
"""
import os

from . import gpt2, opt, t5
from .checkpoint import read_json, read_tensors, resolve, weight_files
from .errors import (CheckpointFormatError, CheckpointNotFoundError, GenerationArgumentError, MemoryLimitError,
                     UnsupportedModelError, XlagenError)

MODEL_TYPES = {"gpt2": gpt2, "opt": opt, "t5": t5}


def load_config(folder):
    """Parse folder/config.json into the config dataclass of its model_type."""
    path = os.path.join(folder, "config.json")
    data = read_json(path)
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise UnsupportedModelError(
            f"{path}: model_type {model_type!r} is not supported; supported: {', '.join(sorted(MODEL_TYPES))}")
    return MODEL_TYPES[model_type].parse_config(data, path)


def load_model(folder):
    """Config and model module for a local checkpoint folder in Hub layout.

    Returns (config, module). Raises a subclass of XlagenError naming the file or
    tensor at fault when the folder is incomplete or does not fit its config.
    """
    config = load_config(folder)
    paths = weight_files(folder)
    source = paths[0] if len(paths) == 1 else f"the {len(paths)} shards in {folder}"
    return config, MODEL_TYPES[config.model_type].build(config, read_tensors(paths), source)


__all__ = ["MODEL_TYPES", "load_config", "load_model", "read_json", "resolve", "XlagenError",
           "CheckpointFormatError", "CheckpointNotFoundError", "GenerationArgumentError", "MemoryLimitError",
           "UnsupportedModelError"]
