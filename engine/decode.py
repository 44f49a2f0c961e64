"""Decode loops: pure functions over an explicit loop state, traced into one XLA program.

A loop never looks inside the model: it calls `model.prefill` once and then
`model.step` per token, threading the model's state (a dict of tensors) through a
`tf.while_loop` whose shapes never change.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, processors, sampling, search


class Knobs(NamedTuple):
    """Numeric options, passed as tensors so that changing them never recompiles.

    eos_ids: [E] int32, padded with kernels.search.NO_TOKEN.
    pad_id: scalar int32, written after a row's EOS.
    min_new_tokens: scalar int32, EOS is suppressed before this many new tokens.
    repetition_penalty: scalar float32, 1.0 is off.
    temperature: scalar float32 > 0.   top_k: scalar int32, 0 is off.
    top_p: scalar float64 in (0, 1], 1.0 is off.   min_p: scalar float32, 0.0 is off.
    seed: [2] int32, the stateless RNG seed of the call.
    """
    eos_ids: tf.Tensor
    pad_id: tf.Tensor
    min_new_tokens: tf.Tensor
    repetition_penalty: tf.Tensor
    temperature: tf.Tensor
    top_k: tf.Tensor
    top_p: tf.Tensor
    min_p: tf.Tensor
    seed: tf.Tensor


class Strategy(NamedTuple):
    """The static choices of a program (a new program when they change).

    sample: draw from the warped distribution instead of taking the argmax.
    no_repeat_ngram_size: python int, 0 is off.
    """
    sample: bool = False
    no_repeat_ngram_size: int = 0


class LoopState(NamedTuple):
    """What the loop carries from one step to the next (B rows, P prompt slots, N new tokens).

    step: scalar int32, new tokens chosen so far.
    history: [B, P + N] int32, the prompt then the chosen tokens; NO_TOKEN in bucket padding
      and in slots not chosen yet.
    finished: [B] bool, the row has emitted an EOS.
    scores: [B, N] float32, log-probability of each chosen token under the processed distribution.
    model: the model's decoding state (cache and positions), opaque here.
    """
    step: tf.Tensor
    history: tf.Tensor
    finished: tf.Tensor
    scores: tf.Tensor
    model: dict


def process(logits, history, length, step, knobs, strategy):
    """transformers' logits processors, in its order: repetition penalty, no-repeat n-gram,
    min new tokens. [B, V] float32 -> [B, V] float32."""
    logits = processors.repetition_penalty(logits, history, knobs.repetition_penalty)
    if strategy.no_repeat_ngram_size:
        logits = processors.no_repeat_ngram(logits, history, length, strategy.no_repeat_ngram_size)
    return search.suppress(logits, knobs.eos_ids, step < knobs.min_new_tokens)


def warp(logits, knobs):
    """transformers' sampling warpers, in its order: temperature, top-k, top-p, min-p."""
    logits = sampling.temperature(logits, knobs.temperature)
    logits = sampling.top_k(logits, knobs.top_k)
    logits = sampling.top_p(logits, knobs.top_p)
    return sampling.min_p(logits, knobs.min_p)


def generate(model, input_ids, attention_mask, max_new_tokens, knobs, strategy):
    """Greedy or sampled decoding, prefill and loop, as one traceable function.

    Args:
      model: an xlagen model module (prefill / step).
      input_ids: [B, P] int32, left padded: the ids as given (the processors count given
        padding ids, as transformers does), NO_TOKEN in padding added for the bucket.
      attention_mask: [B, P] int32, 1 for real tokens.
      max_new_tokens: python int N >= 1.
      knobs: Knobs.  strategy: Strategy.
    Returns:
      (tokens [B, N] int32 with pad_id after a row's EOS,
       scores [B, N] float32 log-probabilities of the chosen tokens, 0 after EOS).
    """
    batch, prompt_len = input_ids.shape

    def choose(logits, state):
        length = prompt_len + state.step
        scores = process(logits, state.history, length, state.step, knobs, strategy)
        if strategy.sample:
            scores = warp(scores, knobs)
            token = sampling.sample(scores, tf.random.experimental.stateless_fold_in(knobs.seed, state.step))
        else:
            token = tf.argmax(scores, axis=-1, output_type=tf.int32)
        logprob = tf.gather(tf.nn.log_softmax(scores), token, batch_dims=1)
        logprob = tf.where(state.finished, 0.0, logprob)
        token, finished = search.finish(token, state.finished, knobs.eos_ids, knobs.pad_id)
        return state._replace(
            step=state.step + 1, finished=finished,
            history=cache.write_columns(state.history, token[:, None], length),
            scores=cache.write_columns(state.scores, logprob[:, None], state.step)), token

    embed_ids = tf.where(attention_mask == 1, input_ids, 0)  # padding slots may hold NO_TOKEN
    logits, model_state = model.prefill(embed_ids, attention_mask, max_new_tokens)
    future = tf.fill([batch, max_new_tokens], search.NO_TOKEN)
    state = LoopState(step=tf.constant(0), history=tf.concat([input_ids, future], axis=1),
                      finished=tf.zeros([batch], tf.bool), scores=tf.zeros([batch, max_new_tokens]), model=model_state)
    state, token = choose(logits, state)

    def cond(state, token):
        return tf.logical_and(state.step < max_new_tokens, tf.logical_not(tf.reduce_all(state.finished)))

    def body(state, token):
        logits, model_state = model.step(token, state.model)
        return choose(logits, state._replace(model=model_state))

    state, _ = tf.while_loop(cond, body, (state, token), maximum_iterations=max_new_tokens)
    tokens = state.history[:, prompt_len:]
    return tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens), state.scores
