"""Decode loops: pure functions over an explicit loop state, traced into one XLA program.

A loop never looks inside the model: it calls `model.prefill` once and then
`model.step` per token, threading the model's state (a dict of tensors) through a
`tf.while_loop` whose shapes never change.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, search


class Knobs(NamedTuple):
    """Numeric options, passed as tensors so that changing them never recompiles.

    eos_ids: [E] int32, padded with kernels.search.NO_TOKEN.
    pad_id: scalar int32, written after a row's EOS.
    min_new_tokens: scalar int32, EOS is suppressed before this many new tokens.
    """
    eos_ids: tf.Tensor
    pad_id: tf.Tensor
    min_new_tokens: tf.Tensor


class LoopState(NamedTuple):
    """What the greedy loop carries from one step to the next (B rows, N new tokens).

    step: scalar int32, new tokens chosen so far.
    tokens: [B, N] int32, chosen tokens; pad_id where not chosen yet.
    finished: [B] bool, the row has emitted an EOS.
    model: the model's decoding state (cache and positions), opaque here.
    """
    step: tf.Tensor
    tokens: tf.Tensor
    finished: tf.Tensor
    model: dict


def process(logits, step, knobs):
    """The logits processors every strategy applies. [B, V] float32 -> [B, V] float32."""
    return search.suppress(logits, knobs.eos_ids, step < knobs.min_new_tokens)


def greedy(model, input_ids, attention_mask, max_new_tokens, knobs):
    """Greedy decoding, prefill and loop.

    Args:
      model: an xlagen model module (prefill / step).
      input_ids, attention_mask: [B, P] int32, left padded.
      max_new_tokens: python int N >= 1.
      knobs: Knobs.
    Returns:
      [B, N] int32 new tokens, pad_id after a row's EOS.
    """
    batch = input_ids.shape[0]

    def choose(logits, state):
        token = tf.argmax(process(logits, state.step, knobs), axis=-1, output_type=tf.int32)
        token, finished = search.finish(token, state.finished, knobs.eos_ids, knobs.pad_id)
        tokens = cache.write_columns(state.tokens, token[:, None], state.step)
        return state._replace(step=state.step + 1, tokens=tokens, finished=finished), token

    logits, model_state = model.prefill(input_ids, attention_mask, max_new_tokens)
    empty = tf.fill([batch, max_new_tokens], knobs.pad_id)
    state, token = choose(logits, LoopState(tf.constant(0), empty, tf.zeros([batch], tf.bool), model_state))

    def cond(state, token):
        return tf.logical_and(state.step < max_new_tokens, tf.logical_not(tf.reduce_all(state.finished)))

    def body(state, token):
        logits, model_state = model.step(token, state.model)
        return choose(logits, state._replace(model=model_state))

    state, _ = tf.while_loop(cond, body, (state, token), maximum_iterations=max_new_tokens)
    return state.tokens
