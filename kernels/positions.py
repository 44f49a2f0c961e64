"""Padding-aware position ids.

A left-padded row starts counting at its first real token, so the same prompt gets
the same positions whatever padding the batch needs.
"""
import math

import numpy as np
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


def relative_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """T5's relative position buckets (key position - query position -> bucket id).

    Half the buckets (per direction when bidirectional) are exact distances, the rest grow
    logarithmically up to max_distance; the float32 arithmetic follows transformers'.

    Args:
      relative_position: int32 tensor of any shape.
      bidirectional: python bool (encoder True; decoder False: future keys share bucket 0).
      num_buckets, max_distance: python ints from the config.
    Returns:
      int32 tensor of the same shape, values in [0, num_buckets).
    """
    buckets = tf.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += tf.cast(relative_position > 0, tf.int32) * num_buckets
        relative_position = tf.abs(relative_position)
    else:
        relative_position = -tf.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    # Clamp before the log only to keep the unused branch finite; small distances take is_small.
    scaled = tf.math.log(tf.cast(tf.maximum(relative_position, 1), tf.float32) / max_exact)
    scaled = scaled / np.float32(math.log(max_distance / max_exact)) * (num_buckets - max_exact)
    large = tf.minimum(max_exact + tf.cast(scaled, tf.int32), num_buckets - 1)
    return buckets + tf.where(is_small, relative_position, large)
