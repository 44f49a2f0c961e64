"""Multi-head attention over a fresh block or a preallocated cache."""
import tensorflow as tf


def split_heads(x, heads):
    """[B, T, H*D] -> [B, H, T, D]."""
    b, t = tf.shape(x)[0], tf.shape(x)[1]
    d = x.shape[-1] // heads
    return tf.transpose(tf.reshape(x, [b, t, heads, d]), [0, 2, 1, 3])


def merge_heads(x):
    """[B, H, T, D] -> [B, T, H*D]."""
    b, t = tf.shape(x)[0], tf.shape(x)[2]
    return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [b, t, x.shape[1] * x.shape[3]])


def bias_from_mask(allowed, dtype=tf.float32):
    """Additive attention bias: 0 where allowed, the dtype's minimum where not.

    A finite minimum (as transformers uses) keeps a fully masked row (a padding query)
    from turning into NaN.

    Args:
      allowed: [B, T, S] bool, query t may attend to key s.
    Returns:
      [B, 1, T, S] float, broadcast over heads.
    """
    return tf.where(allowed, tf.constant(0.0, dtype), tf.constant(dtype.min, dtype))[:, None]


def causal_allowed(key_mask, query_offset, num_queries):
    """Which keys each query may see: the key is real and not in the query's future.

    Args:
      key_mask: [B, S] int or bool, 1 for keys that hold real tokens.
      query_offset: scalar int32, the key slot of the first query.
      num_queries: python int T.
    Returns:
      [B, T, S] bool.
    """
    s = tf.shape(key_mask)[1]
    q_slot = query_offset + tf.range(num_queries, dtype=tf.int32)
    causal = tf.range(s, dtype=tf.int32)[None, :] <= q_slot[:, None]  # [T, S]
    return tf.logical_and(causal[None], tf.cast(key_mask, tf.bool)[:, None, :])


def attend(q, k, v, bias, scale):
    """Scaled dot-product attention.

    Args:
      q: [B, H, T, D]; k, v: [B, H, S, D] float.
      bias: [B, 1, T, S] additive float bias (see bias_from_mask).
      scale: python float or scalar tensor multiplying the scores.
    Returns:
      [B, H, T, D] float.
    """
    scores = tf.linalg.matmul(q, k, transpose_b=True) * scale + bias
    return tf.linalg.matmul(tf.nn.softmax(scores, axis=-1), v)
