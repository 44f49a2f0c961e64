"""Contrastive search (transformers' penalty_alpha > 0 with top_k > 1), vectorised over prompts.

Each step takes the top-k tokens of the prompt's next-token distribution as candidates, runs
all of them through the model at once, and keeps the one with the best

    (1 - alpha) * probability - alpha * max cosine similarity of its hidden state with the
                                        hidden states of the context (prefix and chosen tokens)

(Su et al., "A Contrastive Framework for Neural Text Generation", 2022; transformers'
contrastive_search / _ranking_fast). The K candidates of a prompt are the K rows of its group
in the cache layout of kernels/cache.py: candidate g is fed to row g with model.step, which
writes its key and value into row g's slot; after the choice of row j, model.reorder makes
every row continue row j's history (the [B, K, N] ancestry table is gathered; no key or value
moves), and row j's logits are the next step's. So a step costs one K-row model step, as
sampling K sequences per prompt does, where transformers' TF version copies the whole cache
K-fold and gathers it back every step.

The context's hidden states live in a preallocated [B, S + N, E] buffer, normalised once when
written; padding slots of a left-padded prompt and slots not written yet take no part in the
maximum, so a padded row chooses what it chooses alone (transformers does not mask padding).

Shapes: B prompts, K candidates (Strategy.group = top_k), S prefix slots, N new tokens,
V vocabulary, E hidden width.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, search
from xlagen.kernels.shapes import dim

from . import processing
from .common import flat, prompt_history, score_buffer, stopped, transition_buffer


class ContrastiveState(NamedTuple):
    """The contrastive search loop state.

    step: scalar int32, new tokens chosen so far.
    history: [B, S + N] int32, prefix then chosen tokens; NO_TOKEN where there is none.
    done: [B] bool, the row has emitted an EOS.
    logits: [B, V] float32, the chosen sequence's logits for its next token.
    context: [B, S + N, E] float32, unit-length hidden states of the prefix (0 under padding)
      and of the chosen tokens (0 where none is chosen yet).
    transition: [B, N] float32, each chosen token's processed score (with output_scores).
    scores: [N, B, V] float32, each step's processed scores (with output_scores; else [0]).
    model: the model's decoding state (K rows per prompt).
    """
    step: tf.Tensor
    history: tf.Tensor
    done: tf.Tensor
    logits: tf.Tensor
    context: tf.Tensor
    transition: tf.Tensor
    scores: tf.Tensor
    model: dict


def unit(hidden):
    """[..., E] -> [..., E] scaled to length 1 (transformers' hidden / tf.norm(hidden))."""
    return hidden / tf.norm(hidden, axis=-1, keepdims=True)


def degeneration_penalty(candidates, context, valid):
    """Each candidate's largest cosine similarity with the valid context slots.

    Args:
      candidates: [B, K, E] unit vectors.  context: [B, L, E] unit vectors.  valid: [B, L] bool.
    Returns:
      [B, K] float32 (-inf for a prompt without a valid slot, which never happens: the prefix
      has at least one real token).
    """
    cosine = tf.einsum("bke,ble->bkl", candidates, context)
    return tf.reduce_max(tf.where(valid[:, None, :], cosine, tf.constant(-float("inf"))), axis=-1)


def rank(probs, penalty, alpha):
    """The best candidate of each prompt: argmax of (1 - alpha) * probs - alpha * penalty.

    probs, penalty: [B, K] float32.  alpha: scalar float32.  Returns [B] int32 (the first of ties)."""
    score = (1.0 - alpha) * probs - alpha * penalty
    return tf.argmax(score, axis=-1, output_type=tf.int32)


def contrastive_search(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared, hidden):
    """transformers' contrastive search with K = strategy.group candidates. See loops.decode.generate.

    Args:
      model: an xlagen model (models/base.py), prefilled with group K.
      logits: [B, V] float32, the first new token's logits.  model_state: from prefill.
      history: [B, S] int32, the prefix (NO_TOKEN for invalid ids).
      max_new_tokens: python int N.  knobs: loops.Knobs (penalty_alpha, EOS, processors).
      strategy: loops.Strategy, loop "contrastive", group K >= 2.
      prepared: processing.Prepared, the processors' per-call tables.
      hidden: [B, S, E] float32, the prefix's final hidden states (prefill with hidden=True);
        its valid slots are model_state["layout"].prompt_mask.
    Returns:
      (tokens [B, N] int32, {"scores": [N, B, V] processed scores of each step (0 for steps not
      run; [0] without output_scores), "transition_scores": [B, N] the chosen tokens' entries of
      them, "steps": scalar int32}). Rows that ended hold pad_id.
    """
    batch, prompt_len, vocab = dim(history, 0), history.shape[1], logits.shape[-1]
    group, width = strategy.group, hidden.shape[-1]
    alpha = tf.cast(knobs.penalty_alpha, tf.float32)
    prompt_valid = tf.cast(model_state["layout"].prompt_mask, tf.bool)  # [B, S]
    context = tf.where(prompt_valid[:, :, None], unit(hidden), tf.zeros_like(hidden))
    context = tf.concat([context, tf.zeros([batch, max_new_tokens, width], hidden.dtype)], axis=1)

    def body(state):
        length = prompt_len + state.step
        scores = processing.scores(state.logits, state.history, length, state.step, knobs, strategy, prepared, 1)
        top_probs, candidates = tf.math.top_k(tf.nn.softmax(scores, axis=-1), k=group)  # [B, K]
        logits, model_state, states = model.step(candidates, state.model, hidden=True)
        states = unit(states)  # [B, K, E]
        valid = tf.concat([prompt_valid, tf.broadcast_to(tf.range(max_new_tokens) < state.step,
                                                         [batch, max_new_tokens])], axis=1)
        best = rank(top_probs, degeneration_penalty(states, state.context, valid), alpha)  # [B]
        token, done = search.finish(tf.gather(candidates, best, batch_dims=1), state.done, knobs.eos_ids,
                                    knobs.pad_id)
        history = cache.write_columns(state.history, token[:, None], length)
        done = tf.logical_or(done, stopped(history, length + 1, knobs, strategy))
        chosen = tf.gather(states, best, batch_dims=1)[:, None]  # [B, 1, E]
        zero = tf.constant(0, tf.int32)
        state = state._replace(
            step=state.step + 1, done=done,
            history=history,
            logits=tf.gather(logits, best, batch_dims=1),
            context=cache.update_slice(state.context, chosen, tf.stack([zero, length, zero])),
            model=model.reorder(model_state, tf.broadcast_to(best[:, None], [batch, group])))
        if strategy.output_scores:  # transformers' compute_transition_scores: the emitted token's score
            state = state._replace(
                transition=cache.write_columns(state.transition, tf.gather(scores, token, batch_dims=1)[:, None],
                                               state.step - 1),
                scores=cache.write_rows(state.scores, scores[None], state.step - 1))
        return (state,)

    def cond(state):
        return tf.logical_and(state.step < max_new_tokens, tf.logical_not(tf.reduce_all(state.done)))

    state = ContrastiveState(step=tf.constant(0), history=flat(prompt_history(history, 1, max_new_tokens)),
                             done=tf.zeros([batch], tf.bool), logits=logits, context=context,
                             transition=transition_buffer(batch, max_new_tokens, strategy),
                             scores=score_buffer(batch, vocab, max_new_tokens, strategy), model=model_state)
    state = tf.while_loop(cond, body, (state,), maximum_iterations=max_new_tokens)[0]
    tokens = state.history[:, prompt_len:]
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    return tokens, {"scores": state.scores, "transition_scores": state.transition, "steps": state.step}
