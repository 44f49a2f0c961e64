"""Decode loops: pure functions over an explicit loop state, traced into one XLA program.

A loop never looks inside the model, nor asks what kind it is: it calls `model.prefill`
once, then `model.step` per token (and `model.reorder` when beams swap), threading the
model's state through a `tf.while_loop` whose shapes never change. See models/base.py for
that interface.

Shapes: B prompts, G rows per prompt (samples or beams), S prefix slots (the prompt bucket,
or 1 for an encoder-decoder's start token), N new tokens, V vocabulary, E EOS slots.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import cache, sampling, screen, search, stopping
from xlagen.kernels.shapes import dim

from . import processing

# transformers' stand-in for an impossible score in beam search: finite, so sums stay ordered.
_IMPOSSIBLE = -1.0e9


class Knobs(NamedTuple):
    """Numeric options, passed as tensors so that changing them never recompiles.

    eos_ids: [E] int32, padded with kernels.search.NO_TOKEN (E: a multiple of EOS_SLOTS).
    pad_id: scalar int32, written after a row's EOS.
    min_new_tokens: scalar int32, EOS is suppressed before this many new tokens.
    repetition_penalty: scalar float32, 1.0 is off.
    temperature: scalar float32 > 0.   top_k: scalar int32, 0 is off.
    top_p: scalar float64 in (0, 1], 1.0 is off.   min_p: scalar float32, 0.0 is off.
    seed: [2] int32, the stateless RNG seed of the call.
    length_penalty: scalar float64, beam scores are divided by length ** length_penalty.
    early_stopping: scalar int32, beam search's stopping rule: EARLY_STOPPING[True | False | "never"].
    decoder_start_id: scalar int32, the first decoder token of encoder-decoders.
    penalty_alpha: scalar float32, contrastive search's degeneration penalty.
    controls: processing.ControlKnobs, the numeric side of the other processors.
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
    early_stopping: tf.Tensor
    decoder_start_id: tf.Tensor
    penalty_alpha: tf.Tensor
    controls: processing.ControlKnobs


# Each knob's dtype, and its shape when it is not a scalar (the EOS vector's length is the
# program's Strategy.eos_slots).
KNOB_DTYPES = Knobs(eos_ids=tf.int32, pad_id=tf.int32, min_new_tokens=tf.int32, repetition_penalty=tf.float32,
                    temperature=tf.float32, top_k=tf.int32, top_p=tf.float64, min_p=tf.float32, seed=tf.int32,
                    length_penalty=tf.float64, early_stopping=tf.int32, decoder_start_id=tf.int32,
                    penalty_alpha=tf.float32, controls=None)
EARLY_STOPPING = {False: 0, True: 1, "never": 2}
# EOS id vectors are padded with NO_TOKEN to a multiple of this: up to 8 EOS ids share a program.
EOS_SLOTS = 8


def knob_specs(strategy, stop_specs=()):
    """The Knobs of a program (its decode.Strategy) as TensorSpecs, built from the Knobs fields
    themselves; stop_specs: the stop-string tables' specs (engine.stop_strings), () without."""
    shapes = {"eos_ids": [strategy.eos_slots], "seed": [2]}
    scalars = {name: tf.TensorSpec(shapes.get(name, []), dtype, name=name)
               for name, dtype in zip(Knobs._fields, KNOB_DTYPES) if name != "controls"}
    return Knobs(controls=processing.control_specs(strategy.controls, stop_specs), **scalars)


def eos_slots(eos_ids):
    """The padded length E of an EOS id list: the next multiple of EOS_SLOTS (at least one)."""
    return EOS_SLOTS * max(1, -(-len(eos_ids) // EOS_SLOTS))


def knob_tensors(opts, context_width, stop_arrays=()):
    """The numeric options of a call (engine.options.Options) as a Knobs of tensors.

    context_width: python int, the width of the sequence before the new tokens (the prompt as
    given, or 1 for encoder-decoders). stop_arrays: the stop-string tables' arrays, () without."""
    eos = list(opts.eos_token_ids)
    eos += [search.NO_TOKEN] * (eos_slots(eos) - len(eos))
    values = Knobs(eos_ids=eos, pad_id=opts.pad_token_id, min_new_tokens=opts.min_new_tokens,
                   repetition_penalty=opts.repetition_penalty, temperature=opts.temperature, top_k=opts.top_k,
                   top_p=opts.top_p, min_p=opts.min_p, seed=list(opts.seed), length_penalty=opts.length_penalty,
                   early_stopping=EARLY_STOPPING[opts.early_stopping], decoder_start_id=opts.decoder_start_token_id,
                   penalty_alpha=opts.penalty_alpha, controls=None)
    controls = processing.control_values(opts.controls, context_width, stop_arrays)
    return Knobs(*(tf.constant(v, dtype) for v, dtype in zip(values[:-1], KNOB_DTYPES[:-1])),
                 controls=tf.nest.map_structure(tf.constant, controls))


class Strategy(NamedTuple):
    """The static choices of a program (a new program when they change).

    kind: "greedy", "sample", "beam", "contrastive", "lookup" (prompt lookup drafts, greedy or
      sampled) or "assisted" (an assistant model's drafts, greedy or speculative sampling).
    group: G, rows decoded per prompt (num_return_sequences when sampling, num_beams in beam search,
      top_k in contrastive search: its candidates are the rows of the group).
    returns: sequences returned per prompt (num_return_sequences).
    no_repeat_ngram_size: python int, 0 is off.
    eos_slots: E, the length of the padded EOS id vector (a multiple of EOS_SLOTS).
    output_scores: python bool, also return per-step and transition scores.
    controls: processing.Controls, which other processors run and their table sizes.
    draft_tokens: K, drafts per model step (kinds "lookup" and "assisted"; 0 otherwise).
    max_ngram: the longest n-gram prompt lookup matches (max_matching_ngram_size).
    assistant: the assistant's model (kind "assisted"; None otherwise), compared by identity.
    do_sample: python bool, tokens are drawn (kind "sample", and "lookup" or "assisted" with do_sample).
    """
    kind: str = "greedy"
    group: int = 1
    returns: int = 1
    no_repeat_ngram_size: int = 0
    eos_slots: int = EOS_SLOTS
    output_scores: bool = False
    controls: processing.Controls = processing.Controls()
    draft_tokens: int = 0
    max_ngram: int = 0
    assistant: object = None
    do_sample: bool = False


def strategy_for(opts, stop_key=()):
    """The static part of a call's options (engine.options.Options) as a Strategy; stop_key:
    the stop-string tables' static key (engine.stop_strings), () without."""
    kind = ("beam" if opts.num_beams > 1 else "lookup" if opts.prompt_lookup_num_tokens
            else "assisted" if opts.assistant_model is not None else "sample" if opts.do_sample
            else "contrastive" if opts.penalty_alpha > 0 else "greedy")
    group = {"beam": opts.num_beams, "contrastive": opts.top_k}.get(kind, opts.num_return_sequences)
    drafts = {"lookup": (opts.prompt_lookup_num_tokens, opts.max_matching_ngram_size, None),
              "assisted": (opts.num_assistant_tokens, 0, getattr(opts.assistant_model, "model", None))}
    return Strategy(kind, group, opts.num_return_sequences, opts.no_repeat_ngram_size,
                    eos_slots(opts.eos_token_ids), opts.output_scores, processing.controls_for(opts.controls, stop_key),
                    *drafts.get(kind, (0, 0, None)), do_sample=opts.do_sample)


def stopped(history, length, knobs, strategy):
    """Which rows end with a stop string once `length` history slots are filled: [R] bool
    (all False without stop strings). history: [R, S + N] int32."""
    if not strategy.controls.stop:
        return tf.zeros([dim(history, 0)], tf.bool)
    return stopping.stop_string_hits(history, length, knobs.controls.stop)


def _ranked(scores, strategy):
    """The scores greedy and beam search rank. exponential_decay_length_penalty makes NaN where
    an earlier processor set an EOS logit to -inf (-inf + inf), and so may the caller's
    processors; transformers (torch) then ranks the NaN first, and so do these programs. Without
    those processors nothing can be NaN and the scores are ranked as they are."""
    if strategy.controls.length_decay or strategy.controls.custom:
        return search.nan_first(scores)
    return scores


def _flat(x):
    """[B, G, ...] -> [B*G, ...]"""
    return tf.reshape(x, [-1] + x.shape[2:].as_list())


def _grouped(x, group):
    """[B*G, ...] -> [B, G, ...]"""
    return tf.reshape(x, [-1, group] + x.shape[1:].as_list())


def _prompt_history(prefix, group, max_new_tokens):
    """[B, S] prefix ids -> [B, G, S + N] histories with the new slots empty (NO_TOKEN)."""
    b, s = dim(prefix, 0), prefix.shape[1]
    future = tf.fill([b, max_new_tokens], search.NO_TOKEN)
    return tf.broadcast_to(tf.concat([prefix, future], 1)[:, None], [b, group, s + max_new_tokens])


def _score_buffer(rows, vocab, max_new_tokens, strategy):
    """The [N, R, V] per-step scores, or an empty placeholder without output_scores."""
    return tf.zeros([max_new_tokens, rows, vocab] if strategy.output_scores else [0])


def _transition_buffer(rows, max_new_tokens, strategy):
    """The [R, N] chosen tokens' scores, or an empty [R, 0] placeholder without output_scores.

    Never a loop-invariant [R, N] constant: TensorFlow copies such constants into the loop body
    under names whose numbering follows Python's hash seed, which would give every process a
    different program and defeat the persistent compile cache."""
    return tf.zeros([rows, max_new_tokens if strategy.output_scores else 0])


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
      {"sequences": [B*R, S' + N] int32}: the model's prefix (the prompt as given, or the
      decoder start token: S' = 1), then the new tokens, pad_id after EOS; R returns per prompt.
      With strategy.output_scores also (transformers' meanings):
        "scores": [N, rows, V] float32, the processed (and warped) scores of each step, rows
          B*R (greedy, sampling) or B*G (beam search: the beams as they stood at that step);
          steps the loop did not run hold 0;
        "transition_scores": [B*R, N] float32, each chosen token's entry of the step's scores
          (beam search: along the returned beam's own path, 0 after its end);
        "steps": scalar int32, the steps the loop ran (with draft tokens: the most new tokens
          of a row, the length of "scores");
        "sequences_scores": [B*R] float32, beam search only: the length-penalised score;
        "accepted", "drafted": [B, M] int32, prompt lookup and assisted decoding: per model step after the prefill,
          the drafts each row accepted and offered (-1 once the row has ended); M = N.
    """
    contrastive = strategy.kind == "contrastive"
    # Multi-token steps write up to K positions past the last new token.
    room = max_new_tokens + strategy.draft_tokens
    logits, model_state, prefix, *hidden = model.prefill(input_ids, attention_mask, knobs.decoder_start_id,
                                                         room, strategy.group,
                                                         **({"hidden": True} if contrastive else {}))
    # The processors see what transformers' do: the prefix as given, valid padding ids included.
    valid = tf.logical_and(prefix >= 0, prefix < logits.shape[-1])
    history = tf.where(valid, prefix, search.NO_TOKEN)
    prepared = processing.prepare(input_ids, strategy.controls, max_new_tokens, logits.shape[-1])
    if contrastive:
        from .contrastive import contrastive_search  # it builds on this module's helpers
        # hidden: [B, S, E], the prefix's final hidden states (the context the candidates are compared with)
        tokens, extra = contrastive_search(model, logits, model_state, history, max_new_tokens, knobs, strategy,
                                           prepared, hidden[0])
    elif strategy.kind == "lookup":
        from .lookup import prompt_lookup_search  # it builds on this module's helpers
        tokens, extra = prompt_lookup_search(model, logits, model_state, history, attention_mask, max_new_tokens,
                                             knobs, strategy, prepared)
    elif strategy.kind == "assisted":
        from .assisted import assisted_search
        tokens, extra = assisted_search(model, strategy.assistant, logits, model_state, history, input_ids,
                                        attention_mask, max_new_tokens, knobs, strategy, prepared)
    else:
        loop = beam_search if strategy.kind == "beam" else sample_or_greedy
        tokens, extra = loop(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared)
    out = {"sequences": tf.concat([tf.repeat(prefix, strategy.returns, axis=0), tokens], axis=1)}
    if strategy.output_scores:
        out.update(extra)
    return out


def screened(model, strategy, rows):
    """Whether a program's greedy steps pick their token from the model's head screen
    (kernels.screen) instead of the whole float32 head: traced for XLA (eagerly, the plain head
    is what a reader steps through), greedy decoding (engine.assisted asks it of its
    assistant's drafts as greedy steps), with a screen, of at most kernels.screen.MAX_ROWS
    rows known at trace time, without output_scores, and without a processor that changes a
    logit other than the two checked inside the program (min_new_tokens' EOS ban, which the
    screen applies too, and a repetition_penalty other than 1, which reads the whole head).
    Stop strings change no logit. rows: python int, or a tensor when unknown."""
    return (model.screen is not None and strategy.kind == "greedy" and not strategy.do_sample
            and not strategy.output_scores
            and not strategy.no_repeat_ngram_size and strategy.controls._replace(stop=()) == processing.Controls()
            and isinstance(rows, int) and rows <= screen.MAX_ROWS and not tf.executing_eagerly())


def screened_token(model, hidden, history, length, step, knobs, strategy, prepared, group):
    """Greedy's token from the model's head screen (where screened() holds): hidden [R, E]
    float32, the final hidden states; history, length, step as for processing.scores (step a
    scalar or [R] int32). Returns [R] int32, the argmax of the processed logits."""
    def whole_head():
        scores = processing.scores(model.head(hidden), history, length, step, knobs, strategy, prepared, group)
        return tf.argmax(scores, axis=-1, output_type=tf.int32)

    # The processors left are min_new_tokens' EOS ban, which the screen applies, and the
    # repetition penalty: not 1, the whole head is read (the screen's token is not used).
    banned = search.suppressed(model.screen.values.shape[0], knobs.eos_ids, step < knobs.min_new_tokens)
    token, decided = screen.argmax(model.head_input(hidden), model.head_table, model.screen, banned)
    return tf.cond(tf.logical_and(decided, tf.equal(knobs.repetition_penalty, 1.0)), lambda: token, whole_head)


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
        if strategy.kind == "sample":
            token = sampling.sample(scores, knobs.seed, state.step)
        else:
            token = tf.argmax(_ranked(scores, strategy), axis=-1, output_type=tf.int32)
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
    state = RowState(step=tf.constant(0), history=_flat(_prompt_history(history, group, max_new_tokens)),
                     done=tf.zeros([rows], tf.bool), transition=_transition_buffer(rows, max_new_tokens, strategy),
                     scores=_score_buffer(rows, vocab, max_new_tokens, strategy), model=model_state)
    state, token = choose(_flat(tf.broadcast_to(logits[:, None], [batch, group, vocab])), state)

    def cond(state, token):
        return tf.logical_and(state.step < max_new_tokens, tf.logical_not(tf.reduce_all(state.done)))

    def body(state, token):
        if screened(model, strategy, rows):
            _, model_state, hidden = model.step(_grouped(token, group), state.model, hidden=True)
            return choose_screened(_flat(hidden), state._replace(model=model_state))
        logits, model_state = model.step(_grouped(token, group), state.model)
        return choose(_flat(logits), state._replace(model=model_state))

    state, _ = tf.while_loop(cond, body, (state, token), maximum_iterations=max_new_tokens)
    tokens = state.history[:, prompt_len:]
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    return tokens, {"scores": state.scores, "transition_scores": state.transition, "steps": state.step}


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
    """transformers' (PyTorch, 4.5x) beam search, vectorised over prompts and beams. See generate.
    Returns (tokens [B*R, N] int32, {"scores", "transition_scores", "steps", "sequences_scores"}).

    Each step keeps the top K continuations of all beams; the best G that did not just end
    continue, and those among the top G that ended (EOS, or the last step) may enter the kept
    set, scored as sum of log-probs / generated length ** length_penalty. transformers takes
    K = (1 + number of EOS ids) * G, enough for G candidates that do not end; K here is
    (1 + E) * G for the padded EOS vector's length E, which gives the same beams (the extra
    candidates rank below them) and keeps K out of the program key within an EOS bucket. The
    larger top-k measured within noise: GPT-2 beam-4 step 30.1-30.7 ms with K = 2G, 30.6-31.0
    with K = 9G; T5 9.9-10.9 against 10.1-11.4.
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
        logprobs = processing.scores(tf.nn.log_softmax(_flat(logits)), _flat(state.running), length, state.step, knobs,
                                     strategy, prepared, beams)
        state = state._replace(scores=cache.write_rows(state.scores, logprobs[None], state.step)
                               if strategy.output_scores else state.scores)
        logprobs = _grouped(logprobs, beams)
        total = tf.reshape(logprobs + state.running_scores[:, :, None], [batch, beams * vocab])
        top_scores, top_index = tf.math.top_k(_ranked(total, strategy), k=keep)
        parent, token = top_index // vocab, top_index % vocab  # [B, K]
        token_logprob = tf.gather(tf.reshape(logprobs, [batch, beams * vocab]), top_index, batch_dims=1)
        candidates = _grouped(cache.write_columns(_flat(gather(state.running, parent)), tf.reshape(token, [-1, 1]),
                                                  length), keep)
        candidate_logprobs = _grouped(cache.write_columns(_flat(gather(state.running_logprobs, parent)),
                                                          tf.reshape(token_logprob, [-1, 1]), state.step), keep)
        ends = tf.logical_or(search.is_any_of(token, knobs.eos_ids), state.step + 1 >= max_new_tokens)
        ends = tf.logical_or(ends, _grouped(stopped(_flat(candidates), length + 1, knobs, strategy), keep))

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

    history = _prompt_history(history, beams, max_new_tokens)
    first = tf.concat([tf.zeros([batch, 1]), tf.fill([batch, beams - 1], _IMPOSSIBLE)], axis=1)  # one live beam at first
    zeros = tf.zeros([batch, beams, max_new_tokens])
    state = BeamState(step=tf.constant(0), running=history, running_scores=first, running_logprobs=zeros,
                      kept=history, kept_scores=tf.fill([batch, beams], _IMPOSSIBLE), kept_logprobs=zeros,
                      is_kept=tf.zeros([batch, beams], tf.bool), improvable=tf.ones([batch], tf.bool),
                      tokens=tf.zeros([batch, beams], tf.int32),
                      scores=_score_buffer(batch * beams, vocab, max_new_tokens, strategy), model=model_state)
    state = choose(tf.broadcast_to(logits[:, None], [batch, beams, vocab]), state)

    def cond(state):
        all_kept = tf.logical_and(tf.reduce_all(state.is_kept), early_true)
        return tf.logical_and(state.step < max_new_tokens,
                              tf.logical_and(tf.reduce_any(state.improvable), tf.logical_not(all_kept)))

    def body(state):
        logits, model_state = model.step(state.tokens, state.model)
        return (choose(logits, state._replace(model=model_state)),)

    state = tf.while_loop(cond, body, (state,), maximum_iterations=max_new_tokens)[0]
    returns = strategy.returns
    tokens = _flat(state.kept[:, :returns, prompt_len:])
    tokens = tf.where(tokens == search.NO_TOKEN, knobs.pad_id, tokens)
    return tokens, {"scores": state.scores, "transition_scores": _flat(state.kept_logprobs[:, :returns]),
                    "steps": state.step, "sequences_scores": _flat(state.kept_scores[:, :returns])}
