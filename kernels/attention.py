"""Multi-head attention: over a whole prompt, and for one new token per row over the cache."""
import tensorflow as tf

from . import cache


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
    from turning into NaN. allowed: bool of any shape. Returns float of the same shape.
    """
    return tf.where(allowed, tf.constant(0.0, dtype), tf.constant(dtype.min, dtype))


def causal_allowed(key_mask, num_queries):
    """Which prompt keys each prompt query may see: the key is real and not in its future.

    Args:
      key_mask: [B, T] int or bool, 1 for real tokens.
      num_queries: python int T.
    Returns:
      [B, T, T] bool.
    """
    causal = tf.range(num_queries)[None, :] <= tf.range(num_queries)[:, None]  # [T(query), T(key)]
    return tf.logical_and(causal[None], tf.cast(key_mask, tf.bool)[:, None, :])


def attend(q, k, v, bias, scale):
    """Scaled dot-product attention over a block (a prompt).

    Args:
      q: [B, H, T, D]; k, v: [B, H, S, D] float.
      bias: [B, 1, T, S] additive float bias (see bias_from_mask).
      scale: python float multiplying the scores.
    Returns:
      [B, H, T, D] float.
    """
    scores = tf.linalg.matmul(q, k, transpose_b=True) * scale + bias
    return tf.linalg.matmul(tf.nn.softmax(scores, axis=-1), v)


def attend_shared(q, k, v, key_mask, scale):
    """G rows per prompt attend to keys/values shared by the prompt (e.g. T5's encoder output).

    Args:
      q: [B, G, H, D] float.  k, v: [B, H, S, D] float.  key_mask: [B, S] int, 1 for real keys.
      scale: python float.
    Returns:
      [B, G, H, D] float.
    """
    scores = tf.einsum("bghd,bhsd->bghs", q, k) * scale
    scores += bias_from_mask(tf.cast(key_mask, tf.bool), q.dtype)[:, None, None, :]
    return tf.einsum("bghs,bhsd->bghd", tf.nn.softmax(scores, axis=-1), v)


def attend_step(q, k, v, kv, layout, scale, prompt_bias=None, new_bias=None):
    """One new token per row attends to its prompt and its own generated history.

    The new key/value is written into the row's slot at position layout.step first. Row g of
    prompt b reads generated position n from row layout.ancestry[b, g, n] of its group, so
    beams that were reordered read their inherited history where it was written.

    Args:
      q, k, v: [B, G, H, D] float, the new token's query, key and value per row.
      kv: cache.LayerKV.  layout: cache.Layout.  scale: python float.
      prompt_bias, new_bias: optional additive score biases (e.g. T5's relative positions),
        broadcastable to [B, G, H, P] and [B, G, H, N].
    Returns:
      (out [B, G, H, D] float, the LayerKV with k, v written).
    """
    kv = cache.append(kv, k, v, layout.step)
    group, steps = q.shape[1], kv.new_k.shape[3]
    prompt_scores = tf.einsum("bghd,bhpd->bghp", q, kv.prompt_k) * scale
    prompt_scores += bias_from_mask(tf.cast(layout.prompt_mask, tf.bool), q.dtype)[:, None, None, :]
    # Scores against every row's slots, then each row keeps those on its own ancestry.
    select = tf.transpose(tf.one_hot(layout.ancestry, group, dtype=q.dtype), [0, 1, 3, 2])[:, :, None]  # [B,G,1,G,N]
    new_scores = tf.reduce_sum(tf.einsum("bghd,bjhnd->bghjn", q, kv.new_k) * select, axis=3) * scale
    new_scores += bias_from_mask(tf.range(steps) <= layout.step, q.dtype)
    if prompt_bias is not None:
        prompt_scores += prompt_bias
    if new_bias is not None:
        new_scores += new_bias
    probs = tf.nn.softmax(tf.concat([prompt_scores, new_scores], axis=-1), axis=-1)
    prompt_probs, new_probs = probs[..., :prompt_scores.shape[-1]], probs[..., prompt_scores.shape[-1]:]
    out = tf.einsum("bghp,bhpd->bghd", prompt_probs, kv.prompt_v)
    out += tf.einsum("bghjn,bjhnd->bghd", new_probs[:, :, :, None, :] * select, kv.new_v)
    return out, kv
