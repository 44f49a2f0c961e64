"""Decode loops: pure functions over an explicit loop state, traced into one XLA program.

A loop never looks inside the model: it calls `model.prefill` once, then `model.step`
per token (and `model.reorder` when beams swap), threading the model's state through a
`tf.while_loop` whose shapes never change. See models/base.py for that interface.

Shapes: B prompts, G rows per prompt (samples or beams), P prompt slots (the bucket),
N new tokens, V vocabulary.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, processors, sampling, search
from xlagen.kernels.shapes import dim

# transformers' stand-in for "impossible" in beam search: finite, so sums stay ordered.
_NEVER = -1.0e9


class Knobs(NamedTuple):
    """Numeric options, passed as tensors so that changing them never recompiles.

    eos_ids: [E] int32, padded with kernels.search.NO_TOKEN.
    pad_id: scalar int32, written after a row's EOS.
    min_new_tokens: scalar int32, EOS is suppressed before this many new tokens.
    repetition_penalty: scalar float32, 1.0 is off.
    temperature: scalar float32 > 0.   top_k: scalar int32, 0 is off.
    top_p: scalar float64 in (0, 1], 1.0 is off.   min_p: scalar float32, 0.0 is off.
    seed: [2] int32, the stateless RNG seed of the call.
    length_penalty: scalar float64, beam scores are divided by length ** length_penalty.
    decoder_start_id: scalar int32, the first decoder token of encoder-decoders.
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
    length_penalty: tf.Tensor
    decoder_start_id: tf.Tensor


class Strategy(NamedTuple):
    """The static choices of a program (a new program when they change).

    kind: "greedy", "sample" or "beam".
    group: G, rows decoded per prompt (num_return_sequences when sampling, num_beams in beam search).
    returns: sequences returned per prompt (num_return_sequences).
    no_repeat_ngram_size: python int, 0 is off.
    beams_to_keep: beam candidates kept per step, (1 + number of EOS ids) * num_beams as transformers.
    early_stopping: True, False or "never" (beam search).
    """
    kind: str = "greedy"
    group: int = 1
    returns: int = 1
    no_repeat_ngram_size: int = 0
    beams_to_keep: int = 0
    early_stopping: object = False


# Must follow the field order of Knobs.
KNOB_SPECS = [tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
              tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32),
              tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int32),
              tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.int32)]
EOS_SLOTS = 8  # EOS id vectors are padded with NO_TOKEN to a multiple of this: fewer programs


def knob_tensors(opts):
    """The numeric options of a call (engine.options.Options) as tensors, in Knobs order."""
    eos = list(opts.eos_token_ids)
    eos += [search.NO_TOKEN] * (EOS_SLOTS * max(1, -(-len(eos) // EOS_SLOTS)) - len(eos))
    values = [eos, opts.pad_token_id, opts.min_new_tokens, opts.repetition_penalty, opts.temperature,
              opts.top_k, opts.top_p, opts.min_p, list(opts.seed), opts.length_penalty, opts.decoder_start_token_id]
    return [tf.constant(v, spec.dtype) for v, spec in zip(values, KNOB_SPECS)]


def strategy_for(opts):
    """The static part of a call's options (engine.options.Options) as a Strategy."""
    if opts.num_beams > 1:
        keep = max(2, 1 + len(opts.eos_token_ids)) * opts.num_beams  # as transformers' beam search
        return Strategy("beam", opts.num_beams, opts.num_return_sequences, opts.no_repeat_ngram_size, keep,
                        opts.early_stopping)
    return Strategy("sample" if opts.do_sample else "greedy", opts.num_return_sequences,
                    opts.num_return_sequences, opts.no_repeat_ngram_size)


class Output(NamedTuple):
    """tokens [B*R, N] int32 (pad_id after EOS); scores [B*R, N] float32, each token's processed
    log-probability (0 after EOS); sequence_scores [B*R] float32 (beam search: the final,
    length-penalised score; otherwise the sum of scores); sequences [B*R, S + N] int32 for
    decoder-only models (input_ids, then tokens) or [B*R, 1 + N] for encoder-decoders (the
    decoder start token, then tokens)."""
    tokens: tf.Tensor
    scores: tf.Tensor
    sequence_scores: tf.Tensor
    sequences: tf.Tensor = None


def process(logits, history, length, step, knobs, strategy):
    """transformers' logits processors, in its order: repetition penalty, no-repeat n-gram,
    min new tokens. logits [R, V] float32, history [R, S] int32 -> [R, V] float32."""
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


def _flat(x):
    """[B, G, ...] -> [B*G, ...]"""
    return tf.reshape(x, [-1] + x.shape[2:].as_list())


def _grouped(x, group):
    """[B*G, ...] -> [B, G, ...]"""
    return tf.reshape(x, [-1, group] + x.shape[1:].as_list())


def _prompt_history(input_ids, group, max_new_tokens):
    """[B, P] prompt ids -> [B, G, P + N] histories with the new slots empty (NO_TOKEN)."""
    b, p = dim(input_ids, 0), input_ids.shape[1]
    future = tf.fill([b, max_new_tokens], search.NO_TOKEN)
    return tf.broadcast_to(tf.concat([input_ids, future], 1)[:, None], [b, group, p + max_new_tokens])


def generate(model, input_ids, attention_mask, max_new_tokens, knobs, strategy):
    """Decode with the strategy's loop, prefill included, as one traceable function.

    Args:
      model: an xlagen model (models/base.py interface).
      input_ids: [B, S] int32, the prompts as given (left padded for decoder-only models, padded
        anywhere for encoder-decoders); padding slots may hold any id, NO_TOKEN included.
      attention_mask: [B, S] int32, 1 for real tokens.
      max_new_tokens: python int N >= 1.
      knobs: Knobs.  strategy: Strategy.
      B may be unknown (None) at trace time; every other size is static.
    Returns:
      Output.
    """
    embed_ids = tf.where(attention_mask == 1, input_ids, 0)
    if model.config.is_encoder_decoder:
        history = tf.fill([dim(input_ids, 0), 1], knobs.decoder_start_id)
        logits, model_state = model.prefill(embed_ids, attention_mask, max_new_tokens, strategy.group,
                                            decoder_input_ids=history)
    else:
        # The processors see what transformers' do: the prompt as given, valid padding ids included.
        valid = tf.logical_and(input_ids >= 0, input_ids < model.vocab_size)
        history = tf.where(valid, input_ids, search.NO_TOKEN)
        logits, model_state = model.prefill(embed_ids, attention_mask, max_new_tokens, strategy.group)
    loop = beam_search if strategy.kind == "beam" else sample_or_greedy
    out = loop(model, logits, model_state, history, max_new_tokens, knobs, strategy)
    prefix = history if model.config.is_encoder_decoder else input_ids
    return out._replace(sequences=tf.concat([tf.repeat(prefix, strategy.returns, axis=0), out.tokens], axis=1))


class RowState(NamedTuple):
    """The greedy / sampling loop state.

    step: scalar int32, new tokens chosen so far.
    history: [B*G, P + N] int32, prompt then chosen tokens; NO_TOKEN where there is none.
    finished: [B*G] bool, the row has emitted an EOS.
    scores: [B*G, N] float32, log-probability of each chosen token under the processed distribution.
    model: the model's decoding state.
    """
    step: tf.Tensor
    history: tf.Tensor
    finished: tf.Tensor
    scores: tf.Tensor
    model: dict


def sample_or_greedy(model, logits, model_state, history, max_new_tokens, knobs, strategy):
    """Greedy decoding (argmax) or sampling, G independent rows per prompt. See generate."""
    batch, prompt_len = dim(history, 0), history.shape[1]
    group = strategy.group

    def choose(logits, state):
        length = prompt_len + state.step
        scores = process(logits, state.history, length, state.step, knobs, strategy)
        if strategy.kind == "sample":
            scores = warp(scores, knobs)
            token = sampling.sample(scores, tf.random.experimental.stateless_fold_in(knobs.seed, state.step))
        else:
            token = tf.argmax(scores, axis=-1, output_type=tf.int32)
        logprob = tf.where(state.finished, 0.0, tf.gather(tf.nn.log_softmax(scores), token, batch_dims=1))
        token, finished = search.finish(token, state.finished, knobs.eos_ids, knobs.pad_id)
        return state._replace(
            step=state.step + 1, finished=finished,
            history=cache.write_columns(state.history, token[:, None], length),
            scores=cache.write_columns(state.scores, logprob[:, None], state.step)), token

    rows = batch * group
    state = RowState(step=tf.constant(0), history=_flat(_prompt_history(history, group, max_new_tokens)),
                     finished=tf.zeros([rows], tf.bool), scores=tf.zeros([rows, max_new_tokens]), model=model_state)
    state, token = choose(_flat(tf.broadcast_to(logits[:, None], [batch, group, logits.shape[-1]])), state)

    def cond(state, token):
        return tf.logical_and(state.step < max_new_tokens, tf.logical_not(tf.reduce_all(state.finished)))

    def body(state, token):
        logits, model_state = model.step(_grouped(token, group), state.model)
        return choose(_flat(logits), state._replace(model=model_state))

    state, _ = tf.while_loop(cond, body, (state, token), maximum_iterations=max_new_tokens)
    tokens = state.history[:, prompt_len:]
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    return Output(tokens, state.scores, tf.reduce_sum(state.scores, axis=-1))


class BeamState(NamedTuple):
    """The beam search loop state (transformers' vectorised beam search, B prompts, G beams).

    step: scalar int32, new tokens chosen so far.
    running: [B, G, P + N] int32 histories of the live beams;  running_scores: [B, G] float32
      summed log-probabilities;  running_logprobs: [B, G, N] float32, per token.
    finished: [B, G, P + N] int32 best finished hypotheses;  finished_scores: [B, G] float32
      length-penalised scores (-1e9 for empty slots);  finished_logprobs: [B, G, N];
      is_finished: [B, G] bool, the slot holds a hypothesis.
    improvable: [B] bool, a live beam may still beat the worst finished hypothesis.
    tokens: [B, G] int32, the live beams' last tokens (fed to the model next).
    model: the model's decoding state.
    """
    step: tf.Tensor
    running: tf.Tensor
    running_scores: tf.Tensor
    running_logprobs: tf.Tensor
    finished: tf.Tensor
    finished_scores: tf.Tensor
    finished_logprobs: tf.Tensor
    is_finished: tf.Tensor
    improvable: tf.Tensor
    tokens: tf.Tensor
    model: dict


def _length_factor(length, length_penalty):
    """length ** length_penalty, computed in float64 as transformers does in Python, as float32."""
    return tf.cast(tf.pow(tf.cast(length, tf.float64), length_penalty), tf.float32)


def beam_search(model, logits, model_state, history, max_new_tokens, knobs, strategy):
    """transformers' (PyTorch, 4.5x) beam search, vectorised over prompts and beams. See generate.

    Each step keeps the top K = beams_to_keep continuations of all beams; the best G that did
    not just end continue, and those among the top G that ended (EOS, or the last step) may
    enter the finished set, scored as sum of log-probs / generated length ** length_penalty.
    """
    batch, prompt_len = dim(history, 0), history.shape[1]
    beams, keep, vocab = strategy.group, strategy.beams_to_keep, logits.shape[-1]
    early_true = strategy.early_stopping is True
    top_beams = tf.range(keep) < beams  # only the top G candidates may finish

    def gather(x, index):
        return tf.gather(x, index, batch_dims=1)

    def choose(logits, state):
        length = prompt_len + state.step
        logprobs = tf.nn.log_softmax(_flat(logits))
        logprobs = _grouped(process(logprobs, _flat(state.running), length, state.step, knobs, strategy), beams)
        total = tf.reshape(logprobs + state.running_scores[:, :, None], [batch, beams * vocab])
        top_scores, top_index = tf.math.top_k(total, k=keep)
        parent, token = top_index // vocab, top_index % vocab  # [B, K]
        token_logprob = tf.gather(tf.reshape(logprobs, [batch, beams * vocab]), top_index, batch_dims=1)
        candidates = _grouped(cache.write_columns(_flat(gather(state.running, parent)), tf.reshape(token, [-1, 1]),
                                                  length), keep)
        candidate_logprobs = _grouped(cache.write_columns(_flat(gather(state.running_logprobs, parent)),
                                                          tf.reshape(token_logprob, [-1, 1]), state.step), keep)
        ends = tf.logical_or(search.is_any_of(token, knobs.eos_ids), state.step + 1 >= max_new_tokens)

        # The live beams: the best G candidates that did not end.
        live_scores = top_scores + tf.cast(ends, tf.float32) * _NEVER
        live_scores, live = tf.math.top_k(live_scores, k=beams)

        # The finished set: merge the candidates that just ended among the top G.
        just = tf.logical_and(ends, top_beams[None, :])
        done_scores = top_scores / _length_factor(state.step + 1, knobs.length_penalty)
        full = tf.logical_and(tf.reduce_all(state.is_finished, axis=-1, keepdims=True), early_true)
        blocked = tf.logical_or(full, tf.logical_not(state.improvable)[:, None])
        done_scores += tf.cast(tf.logical_or(blocked, tf.logical_not(just)), tf.float32) * _NEVER
        merged_scores, best = tf.math.top_k(tf.concat([state.finished_scores, done_scores], 1), k=beams)
        state = state._replace(
            step=state.step + 1,
            running=gather(candidates, live), running_scores=live_scores,
            running_logprobs=gather(candidate_logprobs, live), tokens=gather(token, live),
            finished=gather(tf.concat([state.finished, candidates], 1), best), finished_scores=merged_scores,
            finished_logprobs=gather(tf.concat([state.finished_logprobs, candidate_logprobs], 1), best),
            is_finished=gather(tf.concat([state.is_finished, just], 1), best),
            model=model.reorder(state.model, gather(parent, live)))

        # Can a live beam still beat the worst finished hypothesis? (transformers' heuristic)
        never = tf.logical_and(tf.constant(strategy.early_stopping == "never"), knobs.length_penalty > 0)
        best_length = tf.where(never, max_new_tokens, state.step)
        best_live = state.running_scores[:, :1] / _length_factor(best_length, knobs.length_penalty)
        worst_done = tf.where(state.is_finished, tf.reduce_min(state.finished_scores, -1, keepdims=True), _NEVER)
        return state._replace(improvable=tf.logical_and(state.improvable, tf.reduce_any(best_live > worst_done, -1)))

    history = _prompt_history(history, beams, max_new_tokens)
    first = tf.concat([tf.zeros([batch, 1]), tf.fill([batch, beams - 1], _NEVER)], axis=1)  # one live beam at first
    zeros = tf.zeros([batch, beams, max_new_tokens])
    state = BeamState(step=tf.constant(0), running=history, running_scores=first, running_logprobs=zeros,
                      finished=history, finished_scores=tf.fill([batch, beams], _NEVER), finished_logprobs=zeros,
                      is_finished=tf.zeros([batch, beams], tf.bool), improvable=tf.ones([batch], tf.bool),
                      tokens=tf.zeros([batch, beams], tf.int32), model=model_state)
    state = choose(tf.broadcast_to(logits[:, None], [batch, beams, vocab]), state)

    def cond(state):
        open_beams = tf.logical_not(tf.logical_and(tf.reduce_all(state.is_finished), early_true))
        return tf.logical_and(state.step < max_new_tokens, tf.logical_and(tf.reduce_any(state.improvable), open_beams))

    def body(state):
        logits, model_state = model.step(state.tokens, state.model)
        return (choose(logits, state._replace(model=model_state)),)

    state = tf.while_loop(cond, body, (state,), maximum_iterations=max_new_tokens)[0]
    returns = strategy.returns
    tokens = _flat(state.finished[:, :returns, prompt_len:])
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    return Output(tokens, _flat(state.finished_logprobs[:, :returns]), _flat(state.finished_scores[:, :returns]))
