"""Low-precision weights: bfloat16 storage and weight-only int8 with one scale per output row.

A decode step reads every weight once, so its speed is set by the bytes per weight. Weights
are stored narrow and widened to float32 inside the product (kernels.layers.dense) or the
embedding gather (embed); all arithmetic, the KV cache and the logits stay float32.

A weight is one of
  a float32 or bfloat16 tensor/variable [out, in] (or [V, E] for a table);
  Int8(values [out, in] int8, scale [out] float32): w[o, i] ~ values[o, i] * scale[o].
Int8Weight is the tf.Module that holds an Int8's two variables in a model.
"""
import collections

import numpy as np
import tensorflow as tf

DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16}
QUANTIZE = ("int8",)

Int8 = collections.namedtuple("Int8", "values scale")


class Int8Weight(tf.Module):
    """One int8-quantized weight: values [out, in] int8 and scale [out] float32 variables."""

    def __init__(self, values, scale, name):
        super().__init__(name=name)
        self.values = tf.Variable(values, trainable=False, name="values")
        self.scale = tf.Variable(scale, trainable=False, name="scale")

    @property
    def shape(self):
        return self.values.shape

    def read(self):
        """Int8 of the two variables' current values."""
        return Int8(self.values.value(), self.scale.value())

    def numpy(self):
        """The dequantized weight, np.ndarray float32 [out, in]."""
        return self.values.numpy().astype(np.float32) * self.scale.numpy()[:, None]


def quantize_int8(weight):
    """Symmetric per-row int8 of a float matrix: (values [R, C] int8, scale [R] float32) with
    weight[r] ~ values[r] * scale[r] and max |values[r]| = 127 (a zero row gets scale 1)."""
    weight = np.asarray(weight, np.float32)
    peak = np.abs(weight).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    values = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
    return values, scale


def read(weight):
    """A weight as tensors: a Variable's value, an Int8Weight's Int8, anything else itself."""
    if isinstance(weight, tf.Variable):
        return weight.value()
    if isinstance(weight, Int8Weight):
        return weight.read()
    return weight


def is_low(weight):
    """True when `weight` (read or not) is stored narrower than float32. Reads nothing: the
    memory estimate asks this of every weight on every call."""
    return stored_dtype(weight) != tf.float32


def stored_dtype(weight):
    """The dtype a weight (read or not) stores its values in, without reading a variable."""
    return weight.values.dtype if isinstance(weight, (Int8, Int8Weight)) else weight.dtype


def split(weight):
    """A read weight as (stored values [R, C] float32/bfloat16/int8, scale [R] float32 or None)."""
    return (weight.values, weight.scale) if isinstance(weight, Int8) else (weight, None)


def embed(table, ids):
    """Rows of an embedding table: table [V, E] (any weight form), ids [...] int32 -> [..., E] float32."""
    values, scale = split(read(table))
    rows = tf.cast(tf.gather(values, ids), tf.float32)
    return rows if scale is None else rows * tf.gather(scale, ids)[..., None]


def check(dtype, quantize):
    """Validate load's dtype and quantize arguments; returns (dtype name, quantize) normalised."""
    dtype = "float32" if dtype is None else (tf.as_dtype(dtype).name if isinstance(dtype, tf.DType) else dtype)
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not a weight dtype xlagen stores; use one of {', '.join(DTYPES)} (None: float32)")
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r} is not supported; use {' or '.join(map(repr, QUANTIZE))} or None")
    if quantize is not None and dtype != "float32":
        raise ValueError(f"quantize={quantize!r} stores the matrices as int8 with float32 scales; it does not combine "
                         f"with dtype={dtype!r}: pass one of them")
    return dtype, quantize


def lower(weight, dtype, quantize, name):
    """A float32 matrix (np.ndarray [R, C]) stored as load(dtype=, quantize=) asks: a Variable
    (float32 or bfloat16) or an Int8Weight."""
    if quantize == "int8":
        return Int8Weight(*quantize_int8(weight), name=name)
    return tf.Variable(tf.cast(weight, DTYPES[dtype]), trainable=False, name=name)


def nbytes(weight):
    """Resident bytes of a weight (Variable or Int8Weight)."""
    return sum(v.shape.num_elements() * v.dtype.size for v in (weight.variables if isinstance(weight, Int8Weight) else [weight]))
