"""Logits warpers and the sampler, as transformers defines them, without sorting the vocabulary.

top-k and top-p need a threshold: the k-th largest logit, or the logit below which the
probability mass is at most 1 - p. Instead of sorting V values every step, we find the
threshold by bisection over the 2**32 float32 values in their order (as integer keys):
32 masked reductions over V give the exact threshold, for any k or p given as a tensor.
"""
import tensorflow as tf

_NEG_INF = -float("inf")


def ordered_key(x):
    """float32 -> int32 keys with the same order (negative floats have their bits flipped)."""
    bits = tf.bitcast(x, tf.int32)
    return tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.constant(0x7FFFFFFF, tf.int32)), bits)


def largest_key_where(keys, holds):
    """The largest int32 key t for which `holds(t)` is true, per row, by bisection.

    Args:
      keys: [B, V] int32 ordered keys (ordered_key of the logits).
      holds: maps [B, 1] int64 candidate keys to [B] bool; it must be monotone (true up to
        some key, false after), true below the row's smallest key and false above its largest.
    Returns:
      [B, 1] int32.
    """
    lo = tf.cast(tf.reduce_min(keys, axis=-1, keepdims=True), tf.int64) - 1  # holds(lo) is true
    hi = tf.cast(tf.reduce_max(keys, axis=-1, keepdims=True), tf.int64) + 1  # holds(hi) is false

    def body(lo, hi):
        mid = lo + (hi - lo) // 2
        ok = holds(mid)[:, None]
        return tf.where(ok, mid, lo), tf.where(ok, hi, mid)

    lo, _ = tf.while_loop(lambda lo, hi: tf.reduce_any(hi - lo > 1), body, (lo, hi), maximum_iterations=33)
    return tf.cast(lo, tf.int32)


def temperature(logits, t):
    """TemperatureLogitsWarper: logits / t, t a scalar float32 > 0."""
    return logits / t


def top_k(logits, k):
    """TopKLogitsWarper: keep the logits >= the k-th largest (ties kept), -inf elsewhere.

    Args: logits [B, V] float32; k scalar int32, 0 (or >= V) keeps everything. Returns [B, V].
    """
    vocab = logits.shape[-1]

    def cut():
        keys = ordered_key(logits)
        wide = tf.cast(keys, tf.int64)
        kth = largest_key_where(keys, lambda t: tf.reduce_sum(tf.cast(wide >= t, tf.int32), -1) >= k)
        return tf.where(keys >= kth, logits, _NEG_INF)

    return tf.cond(tf.logical_and(k > 0, k < vocab), cut, lambda: logits)


def top_p(logits, p):
    """TopPLogitsWarper: drop the least likely tokens whose total probability is at most 1 - p;
    the most likely token always stays.

    Args: logits [B, V] float32; p scalar float64 in (0, 1], 1 keeps everything. Returns [B, V].
    """
    def cut():
        # transformers compares float32 cumulative sums with float32(1 - p), p a Python double.
        budget = tf.cast(1.0 - p, tf.float32)
        probs = tf.nn.softmax(logits, axis=-1)
        keys = ordered_key(logits)
        wide = tf.cast(keys, tf.int64)
        below = largest_key_where(keys, lambda t: tf.reduce_sum(tf.where(wide <= t, probs, 0.0), -1) <= budget)
        top = tf.reduce_max(keys, axis=-1, keepdims=True)
        return tf.where(tf.logical_and(keys <= below, keys < top), _NEG_INF, logits)

    return tf.cond(p < 1.0, cut, lambda: logits)


def min_p(logits, m):
    """MinPLogitsWarper: drop tokens whose probability is below m times the top probability.

    Args: logits [B, V] float32; m scalar float32 in [0, 1], 0 keeps everything. Returns [B, V].
    """
    def cut():
        probs = tf.nn.softmax(logits, axis=-1)
        floor = m * tf.reduce_max(probs, axis=-1, keepdims=True)
        return tf.where(probs < floor, _NEG_INF, logits)

    return tf.cond(m > 0.0, cut, lambda: logits)


def sample(logits, seed):
    """Draw one token per row from softmax(logits), by the Gumbel-max trick.

    Args:
      logits: [B, V] float32 (-inf entries are never drawn).
      seed: [2] int32 stateless seed; the same seed gives the same draws, rows draw independently.
    Returns:
      [B] int32.
    """
    tiny = tf.constant(1e-20, logits.dtype)
    u = tf.random.stateless_uniform(tf.shape(logits), seed, minval=tiny, maxval=1.0, dtype=logits.dtype, alg="philox")
    return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)
