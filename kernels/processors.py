"""Logits processors, as transformers defines them, over fixed-shape token histories.

A history is [B, S] int32: the prompt, then the tokens generated so far, with
kernels.search.NO_TOKEN in slots that hold no token (bucket padding, the future).
"""
import tensorflow as tf

from .search import NO_TOKEN
from .shapes import dim


def presence(history, vocab_size):
    """Which vocabulary ids occur in each row: [B, S] int32 -> [B, V] bool (NO_TOKEN ignored)."""
    batch, length = dim(history, 0), history.shape[1]
    valid = history != NO_TOKEN
    rows = tf.broadcast_to(tf.range(batch, dtype=tf.int32)[:, None], [batch, length])
    index = tf.stack([rows, tf.where(valid, history, 0)], axis=-1)
    hits = tf.tensor_scatter_nd_max(tf.zeros([batch, vocab_size], tf.int32), index, tf.cast(valid, tf.int32))
    return hits > 0


def repetition_penalty(logits, history, penalty):
    """transformers' RepetitionPenaltyLogitsProcessor: divide positive (multiply negative) logits
    of every token already in the history by `penalty` (scalar float32; 1.0 changes nothing).

    Args: logits [B, V] float32; history [B, S] int32. Returns [B, V] float32.
    """
    seen = presence(history, logits.shape[-1])
    penalized = tf.where(logits < 0, logits * penalty, logits / penalty)
    return tf.where(seen, penalized, logits)


def no_repeat_ngram(logits, history, length, n):
    """transformers' NoRepeatNGramLogitsProcessor: ban every token that would repeat an n-gram
    already in history[:, :length].

    Args:
      logits: [B, V] float32.  history: [B, S] int32.
      length: scalar int32, how many history slots are filled (the next token goes at `length`).
      n: python int >= 1, the n-gram size (static).
    Returns:
      [B, V] float32, banned tokens at -inf.
    """
    batch, size = dim(history, 0), history.shape[1]
    if n > size:
        return logits
    count = size - n + 1
    windows = tf.stack([history[:, k:k + count] for k in range(n)], axis=-1)  # [B, count, n]
    start = tf.maximum(length - (n - 1), 0)
    prefix = tf.slice(history, tf.stack([0, start]), [batch, n - 1])  # the last n-1 tokens
    complete = tf.range(count) + n - 1 < length  # the window's last token is already there
    match = tf.logical_and(tf.reduce_all(tf.equal(windows[..., :-1], prefix[:, None, :]), axis=-1), complete[None])
    match = tf.logical_and(match, tf.reduce_all(windows != NO_TOKEN, axis=-1))
    match = tf.logical_and(match, length >= n - 1)
    rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, count])
    index = tf.stack([rows, tf.where(match, windows[..., -1], 0)], axis=-1)
    banned = tf.tensor_scatter_nd_max(tf.zeros_like(logits, tf.int32), index, tf.cast(match, tf.int32))
    return tf.where(banned > 0, tf.constant(-float("inf"), logits.dtype), logits)
