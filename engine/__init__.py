"""xlagen's public API: `load` a checkpoint, then `generate`, `generate_text` or `logits`.

    from xlagen.engine import load
    gen = load("path/to/checkpoint")
    gen.generate_text(["TensorFlow is"], max_new_tokens=20)

Names are imported on first use, so that `xlagen.engine.jobs.cli` can quiet TensorFlow's
start-up logging before TensorFlow is imported.
"""
import importlib

_EXPORTS = {
    "load": ".generator", "Generator": ".generator", "enable_compile_cache": ".compile_cache",
    "XlagenError": "xlagen.kernels.errors", "CheckpointFormatError": "xlagen.kernels.errors",
    "CheckpointNotFoundError": "xlagen.kernels.errors", "GenerationArgumentError": "xlagen.kernels.errors",
    "UnsupportedModelError": "xlagen.kernels.errors", "MemoryLimitError": "xlagen.kernels.errors",
    "BatchFileError": "xlagen.kernels.errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'xlagen.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
