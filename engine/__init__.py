"""xlagen's public API: `load` a checkpoint, then `generate`, `generate_text` or `logits`.

    from xlagen.engine import load
    gen = load("path/to/checkpoint")
    gen.generate_text(["TensorFlow is"], max_new_tokens=20)
"""
from xlagen.models.errors import (CheckpointFormatError, CheckpointNotFoundError, GenerationArgumentError,
                                  UnsupportedModelError, XlagenError)

from .generator import Generator, load

__all__ = ["load", "Generator", "XlagenError", "CheckpointFormatError", "CheckpointNotFoundError",
           "GenerationArgumentError", "UnsupportedModelError"]
