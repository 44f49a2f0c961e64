"""Beam search: transformers' (PyTorch, 4.5x) vectorised beam search over prompts and beams.

Shapes: B prompts, G beams, S prefix slots, N new tokens, V vocabulary, E EOS slots.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, search
from xlagen.kernels.shapes import dim

from . import processing
from .common import flat, grouped, prompt_history, ranked, score_buffer, stopped
from .strategy import EARLY_STOPPING

# transformers' stand-in for an impossible score in beam search: finite, so sums stay ordered.
_IMPOSSIBLE = -1.0e9


class BeamState(NamedTuple):
    """The beam search loop state (transformers' vectorised beam search, B prompts, G beams).

    step: scalar int32, new tokens chosen so far.
    running: [B, G, S + N] int32 histories of the live beams;  running_scores: [B, G] float32
      summed log-probabilities;  running_logprobs: [B, G, N] float32, per token.
    kept: [B, G, S + N] int32 best finished hypotheses;  kept_scores: [B, G] float32
      length-penalised scores (-1e9 for empty slots);  kept_logprobs: [B, G, N];
      is_kept: [B, G] bool, the slot holds a hypothesis.
    improvable: [B] bool, a live beam may still beat the worst kept hypothesis.
    tokens: [B, G] int32, the live beams' last tokens (fed to the model next).
    scores: [N, B*G, V] float32, each step's processed log-probabilities (with output_scores; else [0]).
    model: the model's decoding state.
    """
    step: tf.Tensor
    running: tf.Tensor
    running_scores: tf.Tensor
    running_logprobs: tf.Tensor
    kept: tf.Tensor
    kept_scores: tf.Tensor
    kept_logprobs: tf.Tensor
    is_kept: tf.Tensor
    improvable: tf.Tensor
    tokens: tf.Tensor
    scores: tf.Tensor
    model: dict


def _length_factor(length, length_penalty):
    """length ** length_penalty, computed in float64 as transformers does in Python, as float32."""
    return tf.cast(tf.pow(tf.cast(length, tf.float64), length_penalty), tf.float32)


def beam_search(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared):
    """transformers' (PyTorch, 4.5x) beam search, vectorised over prompts and beams. See loops.decode.generate.
    Returns (tokens [B*R, N] int32, {"scores", "transition_scores", "steps", "sequences_scores"}).

    Each step keeps the top K continuations of all beams; the best G that did not just end
    continue, and those among the top G that ended (EOS, or the last step) may enter the kept
    set, scored as sum of log-probs / generated length ** length_penalty. transformers takes
    K = (1 + number of EOS ids) * G, enough for G candidates that do not end; K here is
    (1 + E) * G for the padded EOS vector's length E, which gives the same beams (the extra
    candidates rank below them) and keeps K out of the program key within an EOS bucket; the
    larger top-k costs nothing measurable (BENCHMARKS.md, "Beam search's top-k").
    """
    batch, prompt_len = dim(history, 0), history.shape[1]
    beams, vocab = strategy.group, logits.shape[-1]
    keep = min((1 + strategy.eos_slots) * beams, beams * vocab)
    early_true = tf.equal(knobs.early_stopping, EARLY_STOPPING[True])
    # early_stopping="never" with a positive length penalty: a live beam is judged at its longest.
    judge_at_max_length = tf.logical_and(tf.equal(knobs.early_stopping, EARLY_STOPPING["never"]),
                                         knobs.length_penalty > 0)
    top_beams = tf.range(keep) < beams  # only the top G candidates may finish

    def gather(x, index):
        return tf.gather(x, index, batch_dims=1)

    def choose(logits, state):
        length = prompt_len + state.step
        logprobs = processing.scores(tf.nn.log_softmax(flat(logits)), flat(state.running), length, state.step, knobs,
                                     strategy, prepared, beams)
        state = state._replace(scores=cache.write_rows(state.scores, logprobs[None], state.step)
                               if strategy.output_scores else state.scores)
        logprobs = grouped(logprobs, beams)
        total = tf.reshape(logprobs + state.running_scores[:, :, None], [batch, beams * vocab])
        top_scores, top_index = tf.math.top_k(ranked(total, strategy), k=keep)
        parent, token = top_index // vocab, top_index % vocab  # [B, K]
        token_logprob = tf.gather(tf.reshape(logprobs, [batch, beams * vocab]), top_index, batch_dims=1)
        candidates = grouped(cache.write_columns(flat(gather(state.running, parent)), tf.reshape(token, [-1, 1]),
                                                  length), keep)
        candidate_logprobs = grouped(cache.write_columns(flat(gather(state.running_logprobs, parent)),
                                                          tf.reshape(token_logprob, [-1, 1]), state.step), keep)
        ends = tf.logical_or(search.is_any_of(token, knobs.eos_ids), state.step + 1 >= max_new_tokens)
        ends = tf.logical_or(ends, grouped(stopped(flat(candidates), length + 1, knobs, strategy), keep))

        # The live beams: the best G candidates that did not end.
        live_scores = top_scores + tf.cast(ends, tf.float32) * _IMPOSSIBLE
        live_scores, live = tf.math.top_k(live_scores, k=beams)

        # The kept set: merge the candidates that just ended among the top G.
        just = tf.logical_and(ends, top_beams[None, :])
        done_scores = top_scores / _length_factor(state.step + 1, knobs.length_penalty)
        full = tf.logical_and(tf.reduce_all(state.is_kept, axis=-1, keepdims=True), early_true)
        blocked = tf.logical_or(full, tf.logical_not(state.improvable)[:, None])
        done_scores += tf.cast(tf.logical_or(blocked, tf.logical_not(just)), tf.float32) * _IMPOSSIBLE
        merged_scores, best = tf.math.top_k(tf.concat([state.kept_scores, done_scores], 1), k=beams)
        state = state._replace(
            step=state.step + 1,
            running=gather(candidates, live), running_scores=live_scores,
            running_logprobs=gather(candidate_logprobs, live), tokens=gather(token, live),
            kept=gather(tf.concat([state.kept, candidates], 1), best), kept_scores=merged_scores,
            kept_logprobs=gather(tf.concat([state.kept_logprobs, candidate_logprobs], 1), best),
            is_kept=gather(tf.concat([state.is_kept, just], 1), best),
            model=model.reorder(state.model, gather(parent, live)))

        # Can a live beam still beat the worst kept hypothesis? (transformers' heuristic)
        best_length = tf.where(judge_at_max_length, max_new_tokens, state.step)
        best_live = state.running_scores[:, :1] / _length_factor(best_length, knobs.length_penalty)
        worst_kept = tf.where(state.is_kept, tf.reduce_min(state.kept_scores, -1, keepdims=True), _IMPOSSIBLE)
        return state._replace(improvable=tf.logical_and(state.improvable, tf.reduce_any(best_live > worst_kept, -1)))

    history = prompt_history(history, beams, max_new_tokens)
    first = tf.concat([tf.zeros([batch, 1]), tf.fill([batch, beams - 1], _IMPOSSIBLE)], axis=1)  # one live beam at first
    zeros = tf.zeros([batch, beams, max_new_tokens])
    state = BeamState(step=tf.constant(0), running=history, running_scores=first, running_logprobs=zeros,
                      kept=history, kept_scores=tf.fill([batch, beams], _IMPOSSIBLE), kept_logprobs=zeros,
                      is_kept=tf.zeros([batch, beams], tf.bool), improvable=tf.ones([batch], tf.bool),
                      tokens=tf.zeros([batch, beams], tf.int32),
                      scores=score_buffer(batch * beams, vocab, max_new_tokens, strategy), model=model_state)
    state = choose(tf.broadcast_to(logits[:, None], [batch, beams, vocab]), state)

    def cond(state):
        all_kept = tf.logical_and(tf.reduce_all(state.is_kept), early_true)
        return tf.logical_and(state.step < max_new_tokens,
                              tf.logical_and(tf.reduce_any(state.improvable), tf.logical_not(all_kept)))

    def body(state):
        out = model.step(state.tokens, state.model)
        return (choose(out.logits, state._replace(model=out.state)),)

    state = tf.while_loop(cond, body, (state,), maximum_iterations=max_new_tokens)[0]
    returns = strategy.returns
    tokens = flat(state.kept[:, :returns, prompt_len:])
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    return tokens, {"scores": state.scores, "transition_scores": flat(state.kept_logprobs[:, :returns]),
                    "steps": state.step, "sequences_scores": flat(state.kept_scores[:, :returns])}

