"""Greedy decoding and sampling: G independent rows per prompt, one token per row and step.

Shapes: B prompts, G rows per prompt (num_return_sequences), S prefix slots, N new tokens, V vocabulary.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, sampling, search
from xlagen.kernels.shapes import dim

from . import processing
from .common import flat, grouped, prompt_history, ranked, score_buffer, screened, screened_token, stopped, transition_buffer

class RowState(NamedTuple):
    """The greedy / sampling loop state.

    step: scalar int32, new tokens chosen so far.
    history: [B*G, S + N] int32, prefix then chosen tokens; NO_TOKEN where there is none.
    done: [B*G] bool, the row has emitted an EOS.
    transition: [B*G, N] float32, each chosen token's processed score (with output_scores).
    scores: [N, B*G, V] float32, each step's processed scores (with output_scores; else [0]).
    model: the model's decoding state.
    """
    step: tf.Tensor
    history: tf.Tensor
    done: tf.Tensor
    transition: tf.Tensor
    scores: tf.Tensor
    model: dict


def sample_or_greedy(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared):
    """Greedy decoding (argmax) or sampling, G independent rows per prompt. See generate.
    Returns (tokens [B*G, N] int32, {"scores", "transition_scores", "steps"})."""
    batch, prompt_len, vocab = dim(history, 0), history.shape[1], logits.shape[-1]
    group = strategy.group

    def choose(logits, state):
        scores = processing.scores(logits, state.history, prompt_len + state.step, state.step, knobs, strategy,
                                   prepared, group)
        if strategy.draws:
            token = sampling.sample(scores, knobs.seed, state.step)
        else:
            token = tf.argmax(ranked(scores, strategy), axis=-1, output_type=tf.int32)
        return advance(state, token, scores)

    def choose_screened(hidden, state):
        token = screened_token(model, hidden, state.history, prompt_len + state.step, state.step, knobs, strategy,
                               prepared, group)
        return advance(state, token, None)

    def advance(state, token, scores):
        length = prompt_len + state.step
        token, done = search.finish(token, state.done, knobs.eos_ids, knobs.pad_id)
        history = cache.write_columns(state.history, token[:, None], length)
        done = tf.logical_or(done, stopped(history, length + 1, knobs, strategy))
        if strategy.output_scores:  # transformers' compute_transition_scores: the emitted token's score
            state = state._replace(
                transition=cache.write_columns(state.transition, tf.gather(scores, token, batch_dims=1)[:, None],
                                               state.step),
                scores=cache.write_rows(state.scores, scores[None], state.step))
        return state._replace(step=state.step + 1, done=done, history=history), token

    rows = batch * group
    state = RowState(step=tf.constant(0), history=flat(prompt_history(history, group, max_new_tokens)),
                     done=tf.zeros([rows], tf.bool), transition=transition_buffer(rows, max_new_tokens, strategy),
                     scores=score_buffer(rows, vocab, max_new_tokens, strategy), model=model_state)
    state, token = choose(flat(tf.broadcast_to(logits[:, None], [batch, group, vocab])), state)

    def cond(state, token):
        return tf.logical_and(state.step < max_new_tokens, tf.logical_not(tf.reduce_all(state.done)))

    def body(state, token):
        if screened(model, strategy, rows):
            out = model.step(grouped(token, group), state.model, hidden=True)
            return choose_screened(flat(out.hidden), state._replace(model=out.state))
        out = model.step(grouped(token, group), state.model)
        return choose(flat(out.logits), state._replace(model=out.state))

    state, _ = tf.while_loop(cond, body, (state, token), maximum_iterations=max_new_tokens)
    tokens = state.history[:, prompt_len:]
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    return tokens, {"scores": state.scores, "transition_scores": state.transition, "steps": state.step}


