"""The exceptions xlagen raises for bad files and bad arguments: one module that every package
(engine, models, kernels) imports, at the bottom of the dependency order.

Each message names the file, tensor or argument at fault and says what was expected,
so a caller never has to read a TensorFlow traceback to find a typo.
"""


class XlagenError(Exception):
    """Base class of every error xlagen raises on purpose."""


class CheckpointNotFoundError(XlagenError, FileNotFoundError):
    """A model folder, or a file it must hold, does not exist."""


class CheckpointFormatError(XlagenError, ValueError):
    """A checkpoint file exists but is malformed or does not fit its config."""


class UnsupportedModelError(XlagenError, ValueError):
    """config.json names a model type or option xlagen does not implement."""


class GenerationArgumentError(XlagenError, ValueError):
    """An argument to generate / logits is out of range or inconsistent."""


class MemoryLimitError(GenerationArgumentError):
    """A generate call would allocate more memory than the caller allowed (memory_limit)."""


class BatchFileError(XlagenError, ValueError):
    """A batch job's input file has a bad line, or its output file holds lines of another job."""
