"""Dimension sizes for code that serves both fixed-shape and batch-polymorphic programs.

Generate programs are traced with every shape known; an exported SavedModel may leave the
batch unknown, and XLA then compiles it per batch size when it is called. `dim` keeps a size a
Python int whenever it is known, so fixed-shape programs trace exactly as before.
"""
import tensorflow as tf


def dim(x, axis):
    """Size of x along `axis`: a Python int when static, else a scalar int32 tensor."""
    size = x.shape[axis]
    return size if size is not None else tf.shape(x)[axis]
