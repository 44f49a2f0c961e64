"""In-place writes into a preallocated key/value cache.

The cache is allocated once for prompt + max_new_tokens and written at a step index
with XLA's DynamicUpdateSlice, which XLA performs in place on a while-loop buffer:
nothing grows or is copied as decoding proceeds.
"""
import tensorflow as tf
# DynamicUpdateSlice is the op XLA updates in place; TF exposes it only here.
from tensorflow.compiler.tf2xla.python import xla


def allocate(batch, heads, length, head_dim, dtype=tf.float32):
    """A zero cache for one layer's keys or values: [batch, heads, length, head_dim]."""
    return tf.zeros([batch, heads, length, head_dim], dtype)


def write(cache, update, index):
    """Write `update` into `cache` along the length axis starting at `index`.

    Args:
      cache: [B, H, L, D] float.
      update: [B, H, T, D] float, T <= L.
      index: scalar int32, first length slot to write; index + T <= L.
    Returns:
      [B, H, L, D], the cache with slots index..index+T-1 replaced.
    """
    zero = tf.constant(0, tf.int32)
    return xla.dynamic_update_slice(cache, update, tf.stack([zero, zero, tf.cast(index, tf.int32), zero]))


def write_columns(buffer, update, index):
    """Write `update` [B, T] into `buffer` [B, L] at columns index..index+T-1 (any dtype)."""
    return xla.dynamic_update_slice(buffer, update, tf.stack([tf.constant(0, tf.int32), tf.cast(index, tf.int32)]))
