"""Multi-head attention: over a whole prompt, and for one or a few new tokens per row over the cache."""
import tensorflow as tf

from . import cache
from .shapes import dim


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
    Internally rows are laid out [B*H, G, D], the cache's own batch axis (see kernels/cache.py).

    Args:
      q, k, v: [B, G, H, D] float, the new token's query, key and value per row.
      kv: cache.LayerKV.  layout: cache.Layout.  scale: python float.
      prompt_bias, new_bias: optional additive score biases shared by all rows (e.g. T5's
        relative positions): [H, P] and [H, N].
    Returns:
      (out [B, G, H, D] float, the LayerKV with k, v written).
    """
    b, group, heads, d = dim(q, 0), q.shape[1], q.shape[2], q.shape[3]
    prompt_len, steps = kv.prompt_k.shape[2], kv.new_k.shape[1] // group

    kv = cache.append(kv, k, v, layout.step)
    q = cache.as_rows(q)
    prompt_scores = tf.reshape(tf.einsum("xgd,xpd->xgp", q, tf.reshape(kv.prompt_k, [-1, prompt_len, d])) * scale,
                               [b, heads, group, prompt_len])
    prompt_scores += bias_from_mask(tf.cast(layout.prompt_mask, tf.bool), q.dtype)[:, None, None, :]
    slot_scores = tf.einsum("xgd,xmd->xgm", q, kv.new_k) * scale  # [B*H, G, N*G]: every row's slots
    if group == 1:  # no beams: every row reads its own slots
        new_scores = tf.reshape(slot_scores, [b, heads, 1, steps])
    else:  # each row keeps the slots on its own ancestry; select [B, 1, G, N, G(source row)]
        # Samples never reorder, yet take this path too: reading only each row's own slots
        # (multiply-reduce over new_k as [B*H, N, G, D]) measured the same speed, so one path
        # serves both (BENCHMARKS.md, "Measurements behind the code").
        select = tf.one_hot(layout.ancestry, group, dtype=q.dtype)[:, None]
        new_scores = tf.reduce_sum(tf.reshape(slot_scores, [b, heads, group, steps, group]) * select, axis=-1)
    new_scores += bias_from_mask(tf.range(steps) <= layout.step, q.dtype)
    if prompt_bias is not None:
        prompt_scores += prompt_bias[:, None, :]
    if new_bias is not None:
        new_scores += new_bias[:, None, :]
    probs = tf.nn.softmax(tf.concat([prompt_scores, new_scores], axis=-1), axis=-1)  # [B, H, G, P + N]
    prompt_probs, new_probs = probs[..., :prompt_len], probs[..., prompt_len:]
    if group > 1:
        new_probs = new_probs[..., None] * select
    out = tf.einsum("xgp,xpd->xgd", tf.reshape(prompt_probs, [-1, group, prompt_len]),
                    tf.reshape(kv.prompt_v, [-1, prompt_len, d]))
    out += tf.einsum("xgm,xmd->xgd", tf.reshape(new_probs, [-1, group, steps * group]), kv.new_v)
    return tf.transpose(tf.reshape(out, [b, heads, group, d]), [0, 2, 1, 3]), kv


def attend_tokens(q, k, v, kv, layout, filled, scale):
    """T new tokens per row attend to the prompt, the row's generated history and each other
    (causally): a multi-token step, which checks T draft positions with one read of the weights.

    Row g of prompt b holds filled[b, g] generated positions; its T tokens take the next T,
    and token t sees the row's positions up to filled + t. Rows never reorder here (no beams),
    so each reads its own slots. Slots past a row's fill level may hold keys of rejected
    drafts from an earlier step: the mask hides them, and the next write replaces them.

    Args:
      q, k, v: [B, G, T, H, D] float.  kv: cache.LayerKV with room for filled + T positions.
      layout: cache.Layout (its prompt_mask).  filled: [B, G] int32.  scale: python float.
    Returns:
      (out [B, G, T, H, D] float, the LayerKV with k, v written).
    """
    b, group, count, heads, d = dim(q, 0), q.shape[1], q.shape[2], q.shape[3], q.shape[4]
    prompt_len, slots = kv.prompt_k.shape[2], kv.new_k.shape[1]
    kv = cache.write_tokens(kv, k, v, filled)
    rows = tf.reshape(tf.transpose(q, [0, 3, 1, 2, 4]), [-1, group * count, d])  # [B*H, G*T, D]
    prompt_scores = tf.einsum("xqd,xpd->xqp", rows, tf.reshape(kv.prompt_k, [-1, prompt_len, d])) * scale
    prompt_scores = tf.reshape(prompt_scores, [b, heads, group * count, prompt_len])
    prompt_scores += bias_from_mask(tf.cast(layout.prompt_mask, tf.bool), q.dtype)[:, None, None, :]
    new_scores = tf.reshape(tf.einsum("xqd,xmd->xqm", rows, kv.new_k) * scale, [b, heads, group * count, slots])
    # Slot m holds position m // G of row m % G (kernels/cache.py).
    owner, position = tf.range(slots) % group, tf.range(slots) // group
    last = filled[:, :, None] + tf.range(count)  # [B, G, T], the newest position token t sees
    allowed = tf.logical_and(tf.equal(owner, tf.range(group)[:, None, None])[None],
                             position <= last[..., None])  # [B, G, T, slots]
    new_scores += bias_from_mask(tf.reshape(allowed, [b, 1, group * count, slots]), q.dtype)
    probs = tf.nn.softmax(tf.concat([prompt_scores, new_scores], axis=-1), axis=-1)
    prompt_probs = tf.reshape(probs[..., :prompt_len], [-1, group * count, prompt_len])
    new_probs = tf.reshape(probs[..., prompt_len:], [-1, group * count, slots])
    out = tf.einsum("xqp,xpd->xqd", prompt_probs, tf.reshape(kv.prompt_v, [-1, prompt_len, d]))
    out += tf.einsum("xqm,xmd->xqd", new_probs, kv.new_v)
    return tf.transpose(tf.reshape(out, [b, heads, group, count, d]), [0, 2, 3, 1, 4]), kv
