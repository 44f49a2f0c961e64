"""A KV cache laid out for decoding G rows per prompt (G samples or G beams) without moving it.

Per attention layer (LayerKV):
  prompt_k, prompt_v: [B, H, P, D]     the prompt's keys/values, computed once and shared by
                                        the G rows of that prompt (never copied per row)
  new_k, new_v:       [B*H, N*G, D]    keys/values of generated tokens, one slot per row and
                                        position (slot n*G + g), written in place with
                                        DynamicUpdateSlice

Shared by all layers (Layout):
  prompt_mask: [B, P] int32, 1 for real prompt tokens
  ancestry:    [B, G, N] int32, for each row and generated position, the row of the group whose
               new_k/new_v slot holds that position's key and value (the row itself for
               positions not written yet)
  step:        scalar int32, generated positions filled so far

When beam search reorders its beams it only gathers `ancestry` ([B, G, N] ints); the keys and
values stay where they were written. Attention reads each row's history through `ancestry`
(see attention.attend_step), so a beam step moves no more cache memory than a greedy step.

Why [B*H, N*G, D]: attention reads the cache with one batched matmul whose single batch axis
is B*H, so XLA feeds the cache buffer to the dot as it is. With [B, G, H, N, D] it reshaped the
freshly written buffer for the dot, which made it write the cache twice and copy every
layer's cache every step. And one step's G new rows are adjacent (slots step*G .. step*G+G-1),
so they are written by one DynamicUpdateSlice.
"""
from typing import NamedTuple

import tensorflow as tf
# DynamicUpdateSlice is the op XLA updates in place; TF exposes it only here.
from tensorflow.compiler.tf2xla.python import xla

from .shapes import dim


class LayerKV(NamedTuple):
    prompt_k: tf.Tensor
    prompt_v: tf.Tensor
    new_k: tf.Tensor
    new_v: tf.Tensor


class Layout(NamedTuple):
    prompt_mask: tf.Tensor
    ancestry: tf.Tensor
    step: tf.Tensor


def start(prompt_k, prompt_v, group, max_new_tokens):
    """A LayerKV holding a prompt's keys/values ([B, H, P, D]) and room for N new tokens per row."""
    b, h, d = dim(prompt_k, 0), prompt_k.shape[1], prompt_k.shape[3]
    empty = tf.zeros([b * h, max_new_tokens * group, d], prompt_k.dtype)
    return LayerKV(prompt_k, prompt_v, empty, empty)


def start_layout(prompt_mask, group, max_new_tokens):
    """The Layout before the first generated token: every row owns its slots."""
    b = dim(prompt_mask, 0)
    own = tf.broadcast_to(tf.range(group, dtype=tf.int32)[None, :, None], [b, group, max_new_tokens])
    return Layout(tf.cast(prompt_mask, tf.int32), own, tf.constant(0, tf.int32))


def as_rows(x):
    """[B, G, H, D] per-row vectors -> [B*H, G, D], the cache's batch axis first."""
    return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [-1, x.shape[1], x.shape[3]])


def append(kv, k, v, step):
    """Write one new key/value per row at generated position `step`.

    Args: kv: LayerKV; k, v: [B, G, H, D]; step: scalar int32. Returns LayerKV.
    """
    zero = tf.constant(0, tf.int32)
    index = tf.stack([zero, tf.cast(step, tf.int32) * k.shape[1], zero])
    return kv._replace(new_k=update_slice(kv.new_k, as_rows(k), index), new_v=update_slice(kv.new_v, as_rows(v), index))


def write_tokens(kv, k, v, filled):
    """Write T new keys/values per row at the row's own generated positions filled..filled+T-1
    (a multi-token step, where rows have accepted different numbers of tokens; beams never
    reorder there, so every row owns its slots).

    Args: kv: LayerKV; k, v: [B, G, T, H, D]; filled: [B, G] int32, positions the row holds.
    The cache needs room for filled + T positions. Returns LayerKV.
    Rows write at different offsets, so this is a scatter (XLA updates the buffer in place)
    rather than one DynamicUpdateSlice.
    """
    b, group, count, heads = dim(k, 0), k.shape[1], k.shape[2], k.shape[3]
    slot = (filled[:, :, None] + tf.range(count)) * group + tf.range(group)[None, :, None]  # [B, G, T]
    slot = tf.reshape(tf.broadcast_to(slot[:, None], [b, heads, group, count]), [-1, group * count])
    row = tf.broadcast_to(tf.range(dim(slot, 0))[:, None], tf.shape(slot))
    index = tf.stack([row, slot], axis=-1)  # [B*H, G*T, 2]

    def rows(x):  # [B, G, T, H, D] -> [B*H, G*T, D]
        return tf.reshape(tf.transpose(x, [0, 3, 1, 2, 4]), [-1, group * count, x.shape[4]])

    return kv._replace(new_k=tf.tensor_scatter_nd_update(kv.new_k, index, rows(k)),
                       new_v=tf.tensor_scatter_nd_update(kv.new_v, index, rows(v)))


def advance(layout):
    """Every row has written generated position `step` into its own slot: move on."""
    return layout._replace(step=layout.step + 1)


def reorder(layout, parents):
    """Row g continues the history of row parents[b, g] (beam search). parents: [B, G] int32.

    Only positions already written are inherited; later ones stay with the row itself, which
    writes them into its own slots.
    """
    group, length = layout.ancestry.shape[1], layout.ancestry.shape[2]
    own = tf.broadcast_to(tf.range(group, dtype=tf.int32)[None, :, None], tf.shape(layout.ancestry))
    inherited = tf.gather(layout.ancestry, parents, batch_dims=1)
    written = tf.range(length, dtype=tf.int32)[None, None, :] < layout.step
    return layout._replace(ancestry=tf.where(written, inherited, own))


def update_slice(buffer, update, start):
    """`buffer` with `update` written at offset `start`, as XLA's DynamicUpdateSlice: the
    offset is clamped so that the update fits.

    Args: buffer: any dtype and shape; update: the same dtype and rank, each dimension at most
    the buffer's; start: [rank] int32. Returns a tensor like buffer.
    Traced (the compiled programs), this is the op XLA performs in place. Executed eagerly
    (generate(..., jit_compile=False)) it is TensorFlow's own strided-slice update, which copies
    the buffer (fine for stepping through, not for speed), so that no op of the eager path is
    handed to XLA; both write the same values.
    """
    if not tf.executing_eagerly():
        return xla.dynamic_update_slice(buffer, update, start)
    start = tf.clip_by_value(tf.cast(start, tf.int32), 0, tf.shape(buffer) - tf.shape(update))
    return tf.raw_ops.TensorStridedSliceUpdate(input=buffer, begin=start, end=start + tf.shape(update),
                                               strides=tf.ones_like(start), value=update)


def write_columns(buffer, update, index):
    """Write `update` [B, T] into `buffer` [B, L] at columns index..index+T-1 (any dtype)."""
    return update_slice(buffer, update, tf.stack([tf.constant(0, tf.int32), tf.cast(index, tf.int32)]))


def write_rows(buffer, update, index):
    """Write `update` [T, ...] into `buffer` [L, ...] at rows index..index+T-1 (any dtype)."""
    zeros = [tf.constant(0, tf.int32)] * (buffer.shape.rank - 1)
    return update_slice(buffer, update, tf.stack([tf.cast(index, tf.int32)] + zeros))


def write_at(buffer, values, start, count=None):
    """buffer [R, L] with values[r, :count[r]] written at columns start[r].. (any dtype).

    values: [R, T]; start: [R] int32; count: [R] int32 (None: all T). Rows write at their own
    offsets (multi-token steps), so this selects per column rather than slicing: the buffers it
    serves (token histories, per-token scores) are small."""
    width = values.shape[1]
    offset = tf.range(buffer.shape[1])[None, :] - start[:, None]  # [R, L]
    limit = width if count is None else count[:, None]
    inside = tf.logical_and(offset >= 0, offset < limit)
    taken = tf.gather(values, tf.clip_by_value(offset, 0, width - 1), batch_dims=1)
    return tf.where(inside, taken, buffer)
