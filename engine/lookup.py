"""Prompt lookup decoding: greedy decoding that checks K draft tokens with each model step.

Each step drafts up to K tokens per row by copying what followed the earliest earlier
occurrence of the row's last n tokens (kernels/drafts.py), feeds the row's last token and the
K drafts through the model at once (model.extend: one read of the weights for K + 1
positions), and chooses greedily at every fed position, as plain greedy decoding would have
at that point: the processors see the history with the drafts before that position. The
drafts up to the first one the model did not choose are accepted, plus the model's own
choice after them, so a step emits between 1 and K + 1 tokens and the tokens are exactly
those of plain greedy decoding (up to float ties).

Rows accept different numbers of drafts, so each keeps its own count of new tokens (`step`
is [R]); the cache takes each row's tokens at the row's own positions (kernels/cache.py
write_tokens), and a rejected draft's key is hidden by the attention mask until the next
step writes over it. The cache has room for N + K positions.

Shapes: B prompts (G = 1 row each, R = B rows), S prefix slots, N new tokens, K draft
tokens, V vocabulary.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, drafts, search
from xlagen.kernels.shapes import dim

from . import decode, processing


class LookupState(NamedTuple):
    """The prompt lookup loop state.

    step: [R] int32, new tokens each row has chosen.
    history: [R, S + N + K] int32, prefix then chosen tokens; NO_TOKEN where there is none.
    done: [R] bool, the row has emitted an EOS.
    steps: scalar int32, model steps run after the prefill.
    accepted: [R, N] int32, drafts accepted by row r at model step m (-1: the row had ended).
    drafted: [R, N] int32, drafts the row offered at model step m (-1: the row had ended).
    transition: [R, N + K + 1] float32, each chosen token's processed score (with output_scores).
    scores: [N + K + 1, R, V] float32, the scores token n was chosen from (with output_scores; else [0]).
    model: the model's decoding state.
    draft: the drafter's state ({} for prompt lookup; the assistant model's decoding state).
    """
    step: tf.Tensor
    history: tf.Tensor
    done: tf.Tensor
    steps: tf.Tensor
    accepted: tf.Tensor
    drafted: tf.Tensor
    transition: tf.Tensor
    scores: tf.Tensor
    model: dict
    draft: dict


def write_at(buffer, values, start, count=None):
    """buffer [R, L] with values[r, :count[r]] written at columns start[r].. (any dtype).

    values: [R, T]; start: [R] int32; count: [R] int32 (None: all T). Rows write at their own
    offsets, so this selects per column rather than slicing (the buffers are small)."""
    width = values.shape[1]
    offset = tf.range(buffer.shape[1])[None, :] - start[:, None]  # [R, L]
    limit = width if count is None else count[:, None]
    inside = tf.logical_and(offset >= 0, offset < limit)
    taken = tf.gather(values, tf.clip_by_value(offset, 0, width - 1), batch_dims=1)
    return tf.where(inside, taken, buffer)


def prompt_lookup_search(model, logits, model_state, history, attention_mask, max_new_tokens, knobs, strategy,
                         prepared):
    """Greedy decoding with prompt lookup drafts, G = 1. See decode.generate and the module docstring.

    Args:
      history: [B, S] int32, the prefix as the processors see it.  attention_mask: [B, S] int32
        (drafts never match across its padding).
      strategy: decode.Strategy of kind "lookup" (draft_tokens K, max_ngram).
    Returns:
      (tokens [B, N] int32, {"scores", "transition_scores", "steps", "accepted", "drafted"}).
    """
    rows, prompt_len = dim(history, 0), history.shape[1]
    width = prompt_len + max_new_tokens + strategy.draft_tokens
    matchable = tf.concat([tf.cast(attention_mask, tf.bool), tf.ones([rows, width - prompt_len], tf.bool)], 1)

    def propose(state):
        proposed, count = drafts.prompt_lookup(tf.where(matchable, state.history, search.NO_TOKEN),
                                               prompt_len + state.step, strategy.draft_tokens, strategy.max_ngram)
        return proposed, count, state.draft

    return draft_and_verify(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared,
                            propose, {})


def draft_and_verify(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared, propose,
                     draft_state):
    """The greedy loop of multi-token steps, whoever drafts (the module docstring), G = 1.

    Args:
      model, logits, model_state: the model and what its prefill returned (logits [B, V]).
      history: [B, S] int32, the prefix as the processors see it.
      max_new_tokens: python int N.  knobs: decode.Knobs.  strategy: decode.Strategy (draft_tokens K).
      prepared: processing.Prepared.
      propose: function(LookupState) -> (drafts [R, K] int32, count [R] int32 valid drafts,
        the drafter's new state); called once per model step, with state.step >= 1.
      draft_state: the drafter's state (a nest of tensors, {} for none), kept in LookupState.draft.
    Returns:
      (tokens [B, N] int32, {"scores", "transition_scores", "steps", "accepted", "drafted"}).
    """
    rows, prompt_len, vocab = dim(history, 0), history.shape[1], logits.shape[-1]
    k = strategy.draft_tokens
    width = prompt_len + max_new_tokens + k
    columns = tf.range(width)[None, :]

    def choose(logits, state, proposed):
        """The greedy choice after each of the T fed positions ([R, T, V] logits; proposed
        [R, T - 1], the drafts fed after the row's last token), and the state with their scores
        written (output_scores)."""
        length = prompt_len + state.step
        ahead = write_at(state.history, proposed, length) if proposed is not None else state.history
        chosen, transition, scores = [], state.transition, state.scores
        for t in range(logits.shape[1]):
            seen = tf.where(columns < (length + t)[:, None], ahead, search.NO_TOKEN)
            s = processing.scores(logits[:, t], seen, length + t, state.step + t, knobs, strategy, prepared, 1)
            token = tf.argmax(decode._ranked(s, strategy), axis=-1, output_type=tf.int32)
            chosen.append(token)
            if strategy.output_scores:
                at = state.step + t
                transition = write_at(transition, tf.gather(s, token, batch_dims=1)[:, None], at)
                scores = tf.tensor_scatter_nd_update(scores, tf.stack([at, tf.range(rows)], -1), s)
        return tf.stack(chosen, axis=1), state._replace(transition=transition, scores=scores)

    def emit(state, chosen, count):
        """Write chosen[r, :count[r]] (up to and including an EOS) and move each row on."""
        active = tf.logical_and(tf.logical_not(state.done), state.step < max_new_tokens)
        eos = tf.logical_and(search.is_any_of(chosen, knobs.eos_ids), tf.range(chosen.shape[1]) < count[:, None])
        ends = tf.reduce_any(eos, axis=-1)
        count = tf.where(ends, tf.argmax(tf.cast(eos, tf.int32), axis=-1, output_type=tf.int32) + 1, count)
        count = tf.where(active, count, 0)
        history = write_at(state.history, chosen, prompt_len + state.step, count)
        return state._replace(step=state.step + count, history=history,
                              done=tf.logical_or(state.done, tf.logical_and(active, ends)))

    history = tf.concat([history, tf.fill([rows, max_new_tokens + k], search.NO_TOKEN)], 1)
    none = tf.fill([rows, max_new_tokens], -1)
    slots = max_new_tokens + k + 1 if strategy.output_scores else 0
    state = LookupState(step=tf.zeros([rows], tf.int32), history=history, done=tf.zeros([rows], tf.bool),
                        steps=tf.constant(0), accepted=none, drafted=none,
                        transition=tf.zeros([rows, slots]),
                        scores=tf.zeros([slots, rows, vocab] if strategy.output_scores else [0]), model=model_state,
                        draft=draft_state)
    chosen, state = choose(logits[:, None], state, None)
    state = emit(state, chosen, tf.ones([rows], tf.int32))

    def cond(state):
        return tf.reduce_any(tf.logical_and(tf.logical_not(state.done), state.step < max_new_tokens))

    def body(state):
        active = tf.logical_and(tf.logical_not(state.done), state.step < max_new_tokens)
        length = prompt_len + state.step
        proposed, count, draft_state = propose(state)
        state = state._replace(draft=draft_state)
        # No draft past the last new token; a row that has ended offers none.
        count = tf.where(active, tf.minimum(count, max_new_tokens - state.step - 1), 0)
        last = tf.gather(state.history, length - 1, batch_dims=1)
        fed = tf.concat([last[:, None], proposed], axis=1)  # [R, K + 1]
        logits, model_state = model.extend(fed[:, None], state.model, (state.step - 1)[:, None])
        chosen, state = choose(logits[:, 0], state._replace(model=model_state), proposed)
        taken = drafts.accepted(proposed, count, chosen)
        state = state._replace(
            accepted=cache.write_columns(state.accepted, tf.where(active, taken, -1)[:, None], state.steps),
            drafted=cache.write_columns(state.drafted, tf.where(active, count, -1)[:, None], state.steps))
        return (emit(state, chosen, taken + 1)._replace(steps=state.steps + 1),)

    state = tf.while_loop(cond, body, (state,), maximum_iterations=max_new_tokens)[0]
    tokens = state.history[:, prompt_len:prompt_len + max_new_tokens]
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    scores, transition = state.scores, state.transition
    if strategy.output_scores:  # only each row's own tokens: later slots held rejected drafts' scores
        own = tf.range(slots)[None, :] < state.step[:, None]  # [R, N + K + 1]
        transition = tf.where(own, transition, 0.0)[:, :max_new_tokens]
        scores = tf.where(tf.transpose(own)[:, :, None], scores, 0.0)[:max_new_tokens]
    return tokens, {"scores": scores, "transition_scores": transition, "steps": tf.reduce_max(state.step),
                    "accepted": state.accepted, "drafted": state.drafted}
