"""Dense layers, normalisation and activation functions."""
import contextlib
import math
import threading

import tensorflow as tf

from . import precision

try:  # TensorFlow's own wrapper of XLA's opt-barrier; absent only from very old releases.
    from tensorflow.compiler.tf2xla.python.xla import optimization_barrier as _opt_barrier
except ImportError:  # pragma: no cover
    def _opt_barrier(*args):
        return list(args)


# Up to this many rows (a decode step's batch x beams), the product is computed as
# kernel @ x^T: XLA:CPU's Eigen call then streams the kernel without packing it, which is
# faster for a decode step's few rows. For a prefill's many rows x @ kernel^T is as fast or
# faster (BENCHMARKS.md, "Measurements behind the code").
_STREAMED_ROWS = 64

# The largest float32 kernel (elements) a one-row product runs as _row_product's loop fusion; a
# larger one runs as XLA's matrix-vector call. Of the benchmarked shapes only the LM heads pass
# it; larger models' MLP kernels pass it too. On a large head the loop streams slower than the
# call; on the smaller kernels the two are about even. The whole greedy call was faster with the
# heads on the call, and lower limits were no better
# (BENCHMARKS.md, "Measurements behind the code").
_ROW_LOOP_ELEMENTS = 8 << 20


def _barrier(x):
    """x behind an XLA optimization barrier when traced; x itself when executed eagerly (the
    barrier only steers XLA's passes before it drops the barrier, and eagerly it would be handed
    to XLA as an op)."""
    return x if tf.executing_eagerly() else _opt_barrier(x)[0]


def _padded_rows(count):
    """The row count a streamed product runs at: Eigen's kernel @ x^T is much slower for some
    column counts than for a larger one (3072x768 fp32, 12 kernels in a loop, ms per product:
    1 row 0.45; 2-4 0.60; 5-7 0.91-0.94 but 8 0.74; 9-13 3.05-3.20 but 16 1.20; 20 1.54), so
    counts of 5-15 are padded with zero rows to 8 or 16 (multi-token steps feed K + 1 rows,
    beams and batches any number). Larger counts, prefills included, are left as they are."""
    return count if count <= 4 or count >= 16 else -(-count // 8) * 8


def _product(rows, kernel):
    """rows [M, in] @ kernel[out, in]^T -> [M, out], behind an XLA optimization barrier.

    When the barrier went in, XLA:CPU without it fused a few-row product with what follows (the
    bias or residual add, and the transpose of kernel @ x^T) and emitted the fusion as a
    single-threaded loop, which streamed the kernel slower than the bare dot on every core (one
    row: XLA's tiled matrix-vector kernel in work groups; more: an Eigen call). Since then the
    after-optimizations HLO was found to hold none of these barriers (XLA:CPU drops them before
    its fusion passes), so what they still steer is the passes before that, loop-invariant code
    motion among them. Not re-measured without the barrier since
    (BENCHMARKS.md, "Measurements behind the code").

    With M unknown at trace time (a SavedModel with an open batch) the order is chosen by
    tf.cond on the row count, which XLA folds once it compiles for a batch size: the same
    product, so the same floats, as a program traced for that size.
    """
    def many():
        return _barrier(tf.linalg.matmul(rows, kernel, transpose_b=True))

    def few():
        count = rows.shape[0]
        small = tf.TensorShape(kernel.shape).num_elements() <= _ROW_LOOP_ELEMENTS
        if count == 1 and small and not tf.executing_eagerly():
            return _row_product(rows, kernel)
        padded = _padded_rows(count) if count is not None else None
        if padded is None or padded == count:
            return tf.transpose(_barrier(tf.linalg.matmul(kernel, rows, transpose_b=True)))
        wide = tf.pad(rows, [[0, padded - count], [0, 0]])
        return tf.transpose(_barrier(tf.linalg.matmul(kernel, wide, transpose_b=True)))[:count]

    if rows.shape[0] is None:
        return tf.cond(tf.shape(rows)[0] > _STREAMED_ROWS, many, few)
    return many() if rows.shape[0] > _STREAMED_ROWS else few()


# Up to this many rows (by stored dtype) a low-precision kernel is widened inside one-row products,
# one per row: XLA:CPU's matrix-vector loop then reads 1 (int8) or 2 (bfloat16) bytes per weight.
# 3072x768, 24 distinct kernels in an 8-step while loop, best of 5, ms per product:
#   rows   fp32   int8 looped   bf16 looped   widened to a float32 copy
#   1      0.35   0.08          0.12
#   2      0.38   0.15          0.23
#   4      0.38   0.26          0.36          0.75 (widened every step)
#   8      0.46   0.51          0.58
# and the 50257x768 LM head: 1 row fp32 5.5, int8 1.3, bf16 2.2; 4 rows fp32 5.7, int8 5.1,
# bf16 9.0. Past the limit, inside a decode step (decode_step()), the widening is left loop
# invariant: XLA hoists it out of the loop and every step runs fp32's product on one float32 copy
# made per call (the memory estimate's "widened weights"); elsewhere (a prompt) each kernel is
# widened where it is used, one float32 copy alive at a time.
_LOOPED_ROWS = {tf.int8: 4, tf.bfloat16: 2}
_STEP = threading.local()


def looped_rows(weight):
    """How many rows a product with this low-precision weight (read or not) runs as one-row
    products. Reads no variable: the memory estimate asks this on every call."""
    return _LOOPED_ROWS[precision.stored_dtype(weight)]


@contextlib.contextmanager
def decode_step():
    """Trace a model's decode step under this: low-precision products of more rows than
    looped_rows() then share one float32 copy of the weights per call."""
    before, _STEP.on = getattr(_STEP, "on", False), True
    try:
        yield
    finally:
        _STEP.on = before


def _tie(rows, weight):
    """(rows, weight) behind one barrier: the weight then depends on the rows, so XLA can neither
    hoist its widening out of the loop nor widen every kernel of the model at once."""
    if tf.executing_eagerly():
        return rows, weight
    return tuple(_opt_barrier(rows, weight))


def _materialized(row):
    """row [1, in], computed once into its own buffer before a matrix-vector product reads it.

    XLA:CPU fuses the widening of a narrow kernel into its matrix-vector product as a loop
    fusion, and then fuses the row's elementwise producers (the layer norm, GELU, the
    attention heads' transpose) into the same loop, where they are recomputed for every output
    row and keep the loop from vectorizing. A reduction cannot be fused into that loop, so the
    row is passed through one: the sum of [row, 0] over its 2 rows, the row itself. GPT-2-small
    shape, int8, one-row greedy step: 13.9 -> 6.2 ms (fp32 14.5-15.7 in the same run). The
    barriers do not do this: XLA:CPU removes them before fusion.
    """
    if tf.executing_eagerly():
        return row
    return tf.reduce_sum(tf.stack([row, tf.zeros_like(row)]), axis=0)


def _row_product(row, values):
    """row [1, in] float32 @ values[out, in]^T (float32, bfloat16 or int8) -> [1, out] float32,
    as one XLA:CPU loop fusion that reads each stored weight once.

    For a float32 kernel the loop streams at least as fast as XLA's matrix-vector call on the
    smaller kernels, but slower on a large head, so float32 kernels past _ROW_LOOP_ELEMENTS take
    the call (BENCHMARKS.md, "Measurements behind the code").
    XLA fuses a matrix-vector product into a loop only from a producer of its matrix: a
    narrow kernel has its widening; a float32 one is multiplied by a 1 that XLA cannot fold
    (it depends on the row), exact for every finite weight. The product is multiplied by the
    same 1 so that XLA does not fuse it with a following bias add instead (an output fusion,
    after which the kernel's producer is computed into a full copy every step). With every
    product in this loop the whole float32 greedy step was faster on each benchmarked shape.
    """
    row, tied = _tie(_materialized(row), values)
    one = 1.0 + 0.0 * row[0, 0]
    if values.dtype == tf.float32:
        tied = tied * one
    return tf.transpose(tf.linalg.matmul(tf.cast(tied, tf.float32), row, transpose_b=True)) * one


def _low_product(rows, kernel):
    """rows [M, in] float32 @ kernel^T for a bfloat16 or Int8 kernel -> [M, out] float32."""
    m = rows.shape[0]
    values, scale = precision.split(kernel)
    if m is not None and m <= looped_rows(kernel):
        y = tf.concat([_row_product(rows[r:r + 1], values) for r in range(m)], 0)
    elif getattr(_STEP, "on", False):
        y = _product(rows, tf.cast(values, tf.float32))
    else:
        rows, tied = _tie(rows, values)
        y = _product(rows, tf.cast(tied, tf.float32))
    return y if scale is None else y * scale


def dense(x, kernel, bias=None):
    """Affine map over the last axis.

    Args:
      x: [..., in] float32.
      kernel: [out, in], torch Linear's layout: float32, bfloat16 or a kernels.precision
        Int8 (or the variables holding one). XLA's CPU matmul streams a kernel stored this way
        about 15% faster than [in, out] for the few rows of a decode step.
      bias: [out] float32 or None.
    Returns:
      [..., out] float32.
    """
    kernel = precision.read(kernel)
    product = _low_product if precision.is_low(kernel) else _product
    # As a 2-D matmul: tf.einsum would transpose the whole kernel first. Static shapes where
    # known keep the traced graph small (tracing is a third of a program's first call).
    if x.shape.rank == 2:
        y = product(x, kernel)
    else:
        lead = x.shape[:-1].as_list() if x.shape[:-1].is_fully_defined() else tf.shape(x)[:-1]
        count = math.prod(lead) if isinstance(lead, list) else -1
        out, width = precision.split(kernel)[0].shape
        rows = product(tf.reshape(x, [count, width]), kernel)
        y = tf.reshape(rows, tf.concat([lead, [out]], 0) if tf.is_tensor(lead) else lead + [out])
    return y if bias is None else y + bias


def stack(block, x, inputs):
    """Run block(x, *inputs[i]) -> (x, output_i) for each layer i, traced once for all layers.

    A model's layers differ only in their weights (and caches), so `block` is traced once as a
    nested tf.function that takes them as arguments; the layers then call that one trace.
    Inside a while loop (the decode step) tf2xla also converts the call once ("_noinline":
    keep it a call) and XLA inlines it again, so the compiled program is the unrolled one.
    Tracing and converting one layer instead of each cuts a program's first call (BENCHMARKS.md,
    "Measurements behind the code").

    Args:
      block: python function (x, *args) -> (x, output); output any nest of tensors, or None.
      x: the hidden state, float tensor.
      inputs: a sequence over layers of argument tuples: nests of tensors, variables or python
        values; a python value that differs between layers gets its own trace.
    Returns:
      (x after the last layer, [output_i for each layer]).
    """
    # Executed eagerly (jit_compile=False) the block runs as the plain function it is, so a
    # breakpoint or print inside it sees each layer's real values.
    traced = block if tf.executing_eagerly() else tf.function(block, autograph=False,
                                                              experimental_attributes={"_noinline": True})
    outputs = []
    for args in inputs:
        # Variables are read here: as resources they make tf2xla convert every call anew.
        args = tf.nest.map_structure(precision.read, args)
        x, out = traced(x, *args)
        outputs.append(out)
    return x, outputs


def layer_norm(x, scale, bias, eps):
    """LayerNorm over the last axis, as torch.nn.LayerNorm (biased variance).

    Args:
      x: [..., E] float.  scale, bias: [E] float, or None for no affine part.
      eps: python float added to the variance.
    Returns:
      [..., E] float.
    """
    centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    y = centred * tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True) + eps)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y


def rms_norm(x, scale, eps):
    """T5's LayerNorm: scale * x / sqrt(mean(x**2) + eps), no mean subtraction, no bias.

    Args: x [..., E] float; scale [E] float; eps python float. Returns [..., E].
    """
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + eps) * scale


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3.0))))


def _gelu_fast(x):
    return 0.5 * x * (1.0 + tf.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


# Names as transformers' ACT2FN spells them in config.json.
ACTIVATIONS = {
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_fast,
    "quick_gelu": lambda x: x * tf.sigmoid(1.702 * x),
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "mish": lambda x: x * tf.tanh(tf.nn.softplus(x)),
    "linear": tf.identity,
}


def activation(name):
    """The activation function called `name` in a Hub config.json.

    Returns a function mapping a float tensor to one of the same shape.
    Raises KeyError naming the supported names when `name` is unknown.
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(f"unsupported activation_function {name!r}; supported: {', '.join(sorted(ACTIVATIONS))}") from None
