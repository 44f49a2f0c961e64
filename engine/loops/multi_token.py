"""The loop of multi-token steps that prompt lookup and assisted decoding share.

Each step takes up to K drafted tokens per row from a drafter (loops/prompt_lookup.py copies
them from the row's own history, loops/assisted.py asks a small model), feeds the row's
last token and the K drafts through the model at once (model.extend: one read of the weights
for K + 1 positions), and chooses at every fed position as plain decoding would have at that point:
the processors see the history with the drafts before that position. The drafts up to the
first one the model did not choose are accepted, plus the model's own choice after them, so
a step emits between 1 and K + 1 tokens. Greedy, the tokens are exactly those of plain greedy
decoding (up to float ties); sampling (transformers' rule for drafts without probabilities), the
model draws at every position and a draft stays while it equals the draw, so every token is a
draw from the model's own distribution. Drafts that come with the probabilities they were
drawn from (an assistant model's) are checked by speculative sampling instead (kernels/drafts.py).

Rows accept different numbers of drafts, so each keeps its own count of new tokens (`step`
is [R]); the cache takes each row's tokens at the row's own positions (kernels/cache.py
write_tokens), and a rejected draft's key is hidden by the attention mask until the next
step writes over it. The cache has room for N + K positions.

Shapes: B prompts, G rows each (num_return_sequences when sampling), R = B*G rows, S prefix
slots, N new tokens, K draft tokens, V vocabulary.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, drafts, sampling, search
from xlagen.kernels.shapes import dim

from . import processing
from .common import flat, grouped, ranked


class LookupState(NamedTuple):
    """The prompt lookup loop state.

    step: [R] int32, new tokens each row has chosen.
    history: [R, S + N + K] int32, prefix then chosen tokens; NO_TOKEN where there is none.
    done: [R] bool, the row has emitted an EOS.
    steps: scalar int32, model steps run after the prefill.
    accepted: [R, N] int32, drafts accepted by row r at model step m (-1: the row had ended).
    drafted: [R, N] int32, drafts the row offered at model step m (-1: the row had ended).
    transition: [R, N] float32, each chosen token's processed score (with output_scores).
    scores: [N + 1, R, V] float32, the scores token n was chosen from, a spare last slot (with
      output_scores; else [0]).
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


def draw(state, j, strategy):
    """The sampling stream (sampling.sample's step) of draw j in the state's next model step.

    Stream 0 is the prefill's token; model step m (state.steps) owns K + 2 streams: the
    model's draws at its K + 1 fed positions (j = 0, one [R * (K + 1), V] draw), the acceptance
    uniforms (j = 1) and the assistant's K drafts (j = 2..K + 1)."""
    return 1 + state.steps * (strategy.draft_tokens + 2) + j


def pick(scores, knobs, strategy, stream):
    """The token chosen from processed scores [R, V] float32: the argmax, or with do_sample a
    draw of the stream's (sampling.sample). Returns [R] int32."""
    if strategy.draws:
        return sampling.sample(scores, knobs.seed, stream)
    return tf.argmax(ranked(scores, strategy), axis=-1, output_type=tf.int32)


def position_scores(logits, history, length, step, knobs, strategy, prepared):
    """The processed scores after each of T fed positions, as plain decoding would have them.

    Args:
      logits: [R, T, V] float32, after the row's last token then after each draft.
      history: [R, L] int32, the row's tokens with the drafts written after its last one
        (NO_TOKEN past them); length: [R] int32, the row's filled slots before the drafts;
        step: [R] int32, its new tokens so far.
    Returns:
      [R, T, V] float32: position t sees the history up to its own slot.
    """
    positions, vocab = logits.shape[1], logits.shape[2]
    # One pass over R * T rows (row r's position t at r * T + t), not T passes: a program holds
    # one copy of the processors, whatever K.
    at = length[:, None] + tf.range(positions)  # [R, T]
    seen = tf.where(tf.range(history.shape[1])[None, None, :] < at[:, :, None], history[:, None], search.NO_TOKEN)
    flat = processing.scores(tf.reshape(logits, [-1, vocab]), tf.reshape(seen, [-1, history.shape[1]]),
                             tf.reshape(at, [-1]), tf.reshape(step[:, None] + tf.range(positions), [-1]), knobs,
                             strategy, prepared, strategy.group * positions)
    return tf.reshape(flat, [-1, positions, vocab])


def draft_and_verify(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared, propose,
                     draft_state):
    """The loop of multi-token steps, whoever drafts (the module docstring).

    Args:
      model, logits, model_state: the model and what its prefill returned (logits [B, V], the
        state for B * G rows).
      history: [B, S] int32, the prefix as the processors see it.
      max_new_tokens: python int N.  knobs: loops.Knobs.  strategy: loops.Strategy (draft_tokens K,
        group G: num_return_sequences when sampling).
      prepared: processing.Prepared.
      propose: function(LookupState, length [R] int32 filled slots, last [R] int32 the row's
        last token) -> (drafts [R, K] int32,
        count [R] int32 valid drafts, q: [R, K, V] float32 the probabilities the drafts were
        drawn from (speculative sampling) or None, the drafter's new state); called once per
        model step, with state.step >= 1.
      draft_state: the drafter's state (a nest of tensors, {} for none), kept in LookupState.draft.
    Returns:
      (tokens [B*G, N] int32, {"scores", "transition_scores", "steps", "accepted", "drafted"}).
    """
    group, prompt_len, vocab = strategy.group, history.shape[1], logits.shape[-1]
    history, logits = tf.repeat(history, group, axis=0), tf.repeat(logits, group, axis=0)
    rows, k = dim(history, 0), strategy.draft_tokens

    def running(state):
        return tf.logical_and(tf.logical_not(state.done), state.step < max_new_tokens)

    def record(state, scores, chosen, count):
        """Write the first count[r] positions' scores [R, T, V] and their chosen tokens' scores."""
        transition = cache.write_at(state.transition, tf.gather(scores, chosen[:, :, None], batch_dims=2)[:, :, 0],
                                    state.step, count)
        # Positions past a row's count go to the spare last slot, which is never returned.
        at = state.step[:, None] + tf.range(scores.shape[1])
        at = tf.where(tf.range(scores.shape[1])[None, :] < count[:, None], at, max_new_tokens)  # [R, T]
        index = tf.stack([at, tf.broadcast_to(tf.range(rows)[:, None], tf.shape(at))], -1)  # [R, T, 2]
        scores = tf.tensor_scatter_nd_update(state.scores, tf.reshape(index, [-1, 2]), tf.reshape(scores, [-1, vocab]))
        return state._replace(transition=transition, scores=scores)

    def emit(state, chosen, count, scores):
        """Write chosen[r, :count[r]] (up to and including an EOS) and move each row on; with
        output_scores also the scores [R, T, V] they were chosen from."""
        active = running(state)
        eos = tf.logical_and(search.is_any_of(chosen, knobs.eos_ids), tf.range(chosen.shape[1]) < count[:, None])
        ends = tf.reduce_any(eos, axis=-1)
        count = tf.where(ends, tf.argmax(tf.cast(eos, tf.int32), axis=-1, output_type=tf.int32) + 1, count)
        count = tf.where(active, count, 0)
        state = record(state, scores, chosen, count) if strategy.output_scores else state
        history = cache.write_at(state.history, chosen, prompt_len + state.step, count)
        return state._replace(step=state.step + count, history=history,
                              done=tf.logical_or(state.done, tf.logical_and(active, ends)))

    history = tf.concat([history, tf.fill([rows, max_new_tokens + k], search.NO_TOKEN)], 1)
    none = tf.fill([rows, max_new_tokens], -1)
    scored = strategy.output_scores
    state = LookupState(step=tf.zeros([rows], tf.int32), history=history, done=tf.zeros([rows], tf.bool),
                        steps=tf.constant(0), accepted=none, drafted=none,
                        transition=tf.zeros([rows, max_new_tokens if scored else 0]),
                        scores=tf.zeros([max_new_tokens + 1, rows, vocab] if scored else [0]), model=model_state,
                        draft=draft_state)
    first = position_scores(logits[:, None], state.history, prompt_len + state.step, state.step, knobs, strategy,
                            prepared)
    chosen = pick(first[:, 0], knobs, strategy, 0)[:, None]
    state = emit(state, chosen, tf.ones([rows], tf.int32), first)

    def cond(state):
        return tf.reduce_any(running(state))

    def body(state):
        active = running(state)
        length = prompt_len + state.step
        last = tf.gather(state.history, length - 1, batch_dims=1)
        proposed, count, q, draft_state = propose(state, length, last)
        state = state._replace(draft=draft_state)
        # No draft past the last new token; a row that has ended offers none.
        count = tf.where(active, tf.minimum(count, max_new_tokens - state.step - 1), 0)
        fed = tf.concat([last[:, None], proposed], axis=1)  # [R, K + 1]
        out = model.extend(grouped(fed, group), state.model, grouped(state.step - 1, group))
        logits, model_state = out.logits, out.state
        scores = position_scores(flat(logits), cache.write_at(state.history, proposed, length), length,
                                 state.step, knobs, strategy, prepared)  # [R, K + 1, V]
        if q is not None:  # speculative sampling
            uniform = sampling.uniform(tf.shape(proposed), knobs.seed, draw(state, 1, strategy))
            chosen, taken = drafts.speculative(proposed, count, tf.nn.softmax(scores), q, uniform, knobs.seed,
                                               draw(state, 0, strategy))
        else:  # the choice after each position, as plain decoding would make it there
            chosen = tf.reshape(pick(tf.reshape(scores, [-1, vocab]), knobs, strategy, draw(state, 0, strategy)),
                                [-1, k + 1])
            taken = drafts.accepted(proposed, count, chosen)
        moved = emit(state._replace(model=model_state), chosen, taken + 1, scores)
        # Drafts the row kept: all it emitted but the model's own last token (none past an EOS).
        kept = tf.where(active, moved.step - state.step - 1, -1)
        return (moved._replace(accepted=cache.write_columns(state.accepted, kept[:, None], state.steps),
                               drafted=cache.write_columns(state.drafted, tf.where(active, count, -1)[:, None],
                                                           state.steps),
                               steps=state.steps + 1),)

    state = tf.while_loop(cond, body, (state,), maximum_iterations=max_new_tokens)[0]
    tokens = state.history[:, prompt_len:prompt_len + max_new_tokens]
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    scores = state.scores[:max_new_tokens] if scored else state.scores
    return tokens, {"scores": scores, "transition_scores": state.transition, "steps": tf.reduce_max(state.step),
                    "accepted": state.accepted, "drafted": state.drafted}
