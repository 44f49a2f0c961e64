"""Padding-aware position ids.

A left-padded row starts counting at its first real token, so the same prompt gets
the same positions whatever padding the batch needs.
"""
import tensorflow as tf


def from_mask(attention_mask):
    """Position ids for a (left-)padded prompt.

    Args:
      attention_mask: [B, T] int, 1 for real tokens and 0 for padding.
    Returns:
      [B, T] int32: cumsum(mask) - 1 on real tokens; padding gets 0 (its value is never
      attended to, it only has to be a valid table index).
    """
    mask = tf.cast(attention_mask, tf.int32)
    return tf.maximum(tf.cumsum(mask, axis=1) - 1, 0) * mask


def next_position(attention_mask):
    """The position of the first token after the prompt: [B] int32 = number of real tokens."""
    return tf.reduce_sum(tf.cast(attention_mask, tf.int32), axis=1)
