"""Model configs, Hub-format weight loading and forward passes with a KV cache.

A model module exposes `parse_config(dict, source)`, `hub_shapes(config)`,
`build(config, tensors, source)` and LAYER_FIELDS (the config fields that count layers); the
built tf.Module offers the decoding interface of models/base.py (`prefill`, `step`, `reorder`,
`logits`, `continues_prompt`), the same for every model.

The model modules (and TensorFlow with them) are imported on first use, so that finding and
fetching a checkpoint (`resolve`) and reading its files need no TensorFlow.
"""
import importlib
import os

from .checkpoint import read_json, read_tensors, resolve, weight_files
from xlagen.kernels.errors import (BatchFileError, CheckpointFormatError, CheckpointNotFoundError, GenerationArgumentError, MemoryLimitError,
                     UnsupportedModelError, XlagenError)

FAMILIES = ("gpt2", "opt", "t5")  # config.json model_type -> the module of that name


def _module(family):
    """The model module of a model_type in FAMILIES, imported on first use."""
    return importlib.import_module("." + family, __name__)


def __getattr__(name):
    """gpt2, opt, t5: the model modules; MODEL_TYPES: {model_type: module}."""
    if name in FAMILIES:
        return _module(name)
    if name == "MODEL_TYPES":
        return {family: _module(family) for family in FAMILIES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_config(folder):
    """Parse folder/config.json into the config dataclass of its model_type."""
    path = os.path.join(folder, "config.json")
    data = read_json(path)
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"{path}: model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}")
    return _module(model_type).parse_config(data, path)


def load_model(folder, dtype=None, quantize=None):
    """Config and model module for a local checkpoint folder in Hub layout, its matrices stored
    as `dtype` ("float32", "bfloat16"; None: float32) or `quantize`d ("int8"; see
    models.base.CachedLM.store) whatever dtype the files hold.

    Returns (config, module). Raises a subclass of XlagenError naming the file or
    tensor at fault when the folder is incomplete or does not fit its config.
    """
    config = load_config(folder)
    paths = weight_files(folder)
    source = paths[0] if len(paths) == 1 else f"the {len(paths)} shards in {folder}"
    module, tensors = _module(config.model_type), read_tensors(paths)
    # A layer holds at least one tensor: a larger count cannot fit the files, and checked later
    # it would first list the expected names of every layer (2**31 layers: tens of GB).
    for field in module.LAYER_FIELDS:
        count = getattr(config, field)
        if count is not None and count > len(tensors):
            raise CheckpointFormatError(
                f"{os.path.join(folder, 'config.json')}: {field}={count}, but {source} holds only {len(tensors)} "
                f"tensors, fewer than one per layer; set {field} to the checkpoint's layer count")
    return config, module.build(config, tensors, source).store(dtype, quantize)


__all__ = ["FAMILIES", "MODEL_TYPES", "load_config", "load_model", "read_json", "resolve", "XlagenError",
           "CheckpointFormatError", "CheckpointNotFoundError", "GenerationArgumentError", "MemoryLimitError",
           "UnsupportedModelError", "BatchFileError"]
