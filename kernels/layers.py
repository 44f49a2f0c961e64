"""Dense layers, normalisation and activation functions."""
import math

import tensorflow as tf

try:  # TensorFlow's own wrapper of XLA's opt-barrier; absent only from very old releases.
    from tensorflow.compiler.tf2xla.python.xla import optimization_barrier as _opt_barrier
except ImportError:  # pragma: no cover
    def _opt_barrier(x):
        return [x]


# Up to this many rows (a decode step's batch x beams), the product is computed as
# kernel @ x^T: XLA:CPU's Eigen call then streams the kernel without packing it, 2x faster
# at 4-16 rows (GPT-2's LM head, 4 rows: 6.1 instead of 13.9 ms). From 128 rows (prefill)
# x @ kernel^T is as fast or faster.
_STREAMED_ROWS = 64


def _barrier(x):
    """x behind an XLA optimization barrier when traced; x itself when executed eagerly (the
    barrier only steers XLA's fusion, and eagerly it would be handed to XLA as an op)."""
    return x if tf.executing_eagerly() else _opt_barrier(x)[0]


def _product(rows, kernel):
    """rows [M, in] @ kernel[out, in]^T -> [M, out], behind an XLA optimization barrier.

    Without the barrier, XLA:CPU fuses a few-row product with what follows (the bias or
    residual add, and the transpose of kernel @ x^T) and emits the fusion as a single-threaded
    loop, which streams the kernel at ~20 GB/s here; the bare dot runs on every core (one
    row: XLA's tiled matrix-vector kernel in work groups; more: an Eigen call) at
    ~28 GB/s (4 rows of a 3072x768 kernel: 0.74 ms fused, 0.41 ms bare).

    With M unknown at trace time (a SavedModel with an open batch) the order is chosen by
    tf.cond on the row count, which XLA folds once it compiles for a batch size: the same
    product, so the same floats, as a program traced for that size.
    """
    def many():
        return _barrier(tf.linalg.matmul(rows, kernel, transpose_b=True))

    def few():
        return tf.transpose(_barrier(tf.linalg.matmul(kernel, rows, transpose_b=True)))

    if rows.shape[0] is None:
        return tf.cond(tf.shape(rows)[0] > _STREAMED_ROWS, many, few)
    return many() if rows.shape[0] > _STREAMED_ROWS else few()


def dense(x, kernel, bias=None):
    """Affine map over the last axis.

    Args:
      x: [..., in] float.
      kernel: [out, in] float, torch Linear's layout. XLA's CPU matmul streams a kernel
        stored this way about 15% faster than [in, out] for the few rows of a decode step.
      bias: [out] float or None.
    Returns:
      [..., out] float.
    """
    # As a 2-D matmul: tf.einsum would transpose the whole kernel first. Static shapes where
    # known keep the traced graph small (tracing is a third of a program's first call).
    if x.shape.rank == 2:
        y = _product(x, kernel)
    else:
        lead = x.shape[:-1].as_list() if x.shape[:-1].is_fully_defined() else tf.shape(x)[:-1]
        count = math.prod(lead) if isinstance(lead, list) else -1
        rows = _product(tf.reshape(x, [count, kernel.shape[1]]), kernel)
        y = tf.reshape(rows, tf.concat([lead, [kernel.shape[0]]], 0) if tf.is_tensor(lead) else lead + [kernel.shape[0]])
    return y if bias is None else y + bias


def stack(block, x, inputs):
    """Run block(x, *inputs[i]) -> (x, output_i) for each layer i, traced once for all layers.

    A model's layers differ only in their weights (and caches), so `block` is traced once as a
    nested tf.function that takes them as arguments; the layers then call that one trace.
    Inside a while loop (the decode step) tf2xla also converts the call once ("_noinline":
    keep it a call) and XLA inlines it again, so the compiled program is the unrolled one.
    GPT-2 greedy's first call: tracing 1.3 -> 0.4 s, tf2xla 1.15 -> 0.6 s.

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
        args = tf.nest.map_structure(lambda a: a.value() if isinstance(a, tf.Variable) else a, args)
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
