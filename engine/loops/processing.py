"""What happens to one step's scores before a token is chosen: transformers' logits processors
and warpers, in transformers 4.57's order, with their values as tensors.

The order (transformers' GenerationMixin._get_logits_processor), each only when switched on:

     1. sequence_bias                  2. encoder_repetition_penalty
     3. repetition_penalty             4. no_repeat_ngram_size
     5. encoder_no_repeat_ngram_size   6. bad_words_ids
     7. min_length / min_new_tokens    8. forced_bos_token_id
     9. forced_eos_token_id           10. remove_invalid_values
    11. exponential_decay_length_penalty
    12. suppress_tokens               13. begin_suppress_tokens
    14. your logits_processor functions, in the order given
    sampling only: 15. temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff
    16. renormalize_logits (a log-softmax)

In beam search the scores entering step 1 are log-probabilities, as in transformers.

Two kinds of values: static ones (Controls: which processors run and the sizes of their
tables, part of the program key) and numeric ones (Knobs: tensor arguments of the program,
so that new values, or a new list of the same size bucket, never compile again).
"""
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from xlagen.kernels import processors, sampling, search
from xlagen.kernels.errors import GenerationArgumentError

from ..buckets import list_slots

class Controls(NamedTuple):
    """The static side of the processors: which run, and their table sizes (python values).

    sequence_bias, bad_words: (M, L), the table of M sequences with prefixes of up to L tokens
      ((0, 0): off).
    suppress, begin_suppress, forced_eos: slots of the id lists (0: off).
    forced_bos, encoder_repetition, remove_invalid, length_decay, typical, epsilon, eta,
      renormalize: python bools.
    encoder_ngram: python int, encoder_no_repeat_ngram_size (0: off).
    stop: the stop-string tables' static key (engine.stop_strings), () when off.
    custom: tuple of the user's logits_processor functions (compared by identity).
    """
    sequence_bias: tuple = (0, 0)
    bad_words: tuple = (0, 0)
    suppress: int = 0
    begin_suppress: int = 0
    forced_bos: bool = False
    forced_eos: int = 0
    encoder_repetition: bool = False
    encoder_ngram: int = 0
    remove_invalid: bool = False
    length_decay: bool = False
    typical: bool = False
    epsilon: bool = False
    eta: bool = False
    renormalize: bool = False
    stop: tuple = ()
    custom: tuple = ()


def _sequence_table(sequences):
    """[(ids tuple, bias float), ...] -> the (M, L) table bucket and its numpy arrays:
    prefixes [M, L] int32 right-aligned (ANY_TOKEN before), lengths [M], last [M] int32, bias [M] float32."""
    if not sequences:
        return (0, 0), (np.zeros([0, 0], np.int32), np.zeros([0], np.int32), np.zeros([0], np.int32),
                        np.zeros([0], np.float32))
    rows = list_slots(len(sequences))
    longest = max(len(ids) for ids, _ in sequences) - 1
    width = list_slots(max(longest, 1), smallest=4)  # one bucket for sequences of 1 to 5 tokens
    prefixes = np.full([rows, width], processors.ANY_TOKEN, np.int32)
    lengths, last, bias = np.zeros([rows], np.int32), np.zeros([rows], np.int32), np.zeros([rows], np.float32)
    for m, (ids, value) in enumerate(sequences):
        if len(ids) > 1:
            prefixes[m, width - (len(ids) - 1):] = ids[:-1]
        lengths[m], last[m], bias[m] = len(ids), ids[-1], value
    return (rows, width), (prefixes, lengths, last, bias)


def _bad_words(opts):
    return tuple((ids, 0.0) for ids in opts.bad_words_ids)


def _id_list(ids):
    """A token id list padded with NO_TOKEN to its bucket: [K] int32."""
    return np.array(list(ids) + [search.NO_TOKEN] * (list_slots(len(ids)) - len(ids)), np.int32)


def controls_for(opts, stop_key=()):
    """The Controls of a call's engine.options.ControlOptions."""
    return Controls(
        sequence_bias=_sequence_table(opts.sequence_bias)[0], bad_words=_sequence_table(_bad_words(opts))[0],
        suppress=list_slots(len(opts.suppress_tokens)), begin_suppress=list_slots(len(opts.begin_suppress_tokens)),
        forced_bos=opts.forced_bos_token_id is not None, forced_eos=list_slots(len(opts.forced_eos_token_ids)),
        encoder_repetition=opts.encoder_repetition_penalty != 1.0, encoder_ngram=opts.encoder_no_repeat_ngram_size,
        remove_invalid=opts.remove_invalid_values, length_decay=opts.exponential_decay_length_penalty is not None,
        typical=opts.typical_p < 1.0, epsilon=opts.epsilon_cutoff > 0.0, eta=opts.eta_cutoff > 0.0,
        renormalize=opts.renormalize_logits, stop=stop_key, custom=opts.logits_processor)


class ControlKnobs(NamedTuple):
    """The numeric side of the processors, tensors of a program (shapes from Controls).

    context_width: scalar int32, the width transformers' input_ids has before the new tokens
      (the prompt as given, or 1 for encoder-decoders); processors that count the sequence length use it.
    bias_prefixes [M, L], bias_lengths [M], bias_last [M] int32, bias_values [M] float32: sequence_bias.
    bad_prefixes [M, L], bad_lengths [M], bad_last [M] int32: bad_words_ids.
    suppress_ids [K], begin_suppress_ids [K'] int32 (NO_TOKEN padded); begin_index: scalar int32,
      the sequence length at which begin_suppress_tokens apply.
    forced_bos_id: scalar int32.  forced_eos_ids: [K''] int32.
    encoder_penalty_inverse: scalar float32, 1 / encoder_repetition_penalty.
    length_decay_start: scalar int32.  length_decay_factor: scalar float64.
    typical_p, epsilon_cutoff, eta_cutoff: scalar float32.
    stop: tuple of the stop-string tables (engine.stop_strings), () when off.
    """
    context_width: tf.Tensor
    bias_prefixes: tf.Tensor
    bias_lengths: tf.Tensor
    bias_last: tf.Tensor
    bias_values: tf.Tensor
    bad_prefixes: tf.Tensor
    bad_lengths: tf.Tensor
    bad_last: tf.Tensor
    suppress_ids: tf.Tensor
    begin_suppress_ids: tf.Tensor
    begin_index: tf.Tensor
    forced_bos_id: tf.Tensor
    forced_eos_ids: tf.Tensor
    encoder_penalty_inverse: tf.Tensor
    length_decay_start: tf.Tensor
    length_decay_factor: tf.Tensor
    typical_p: tf.Tensor
    epsilon_cutoff: tf.Tensor
    eta_cutoff: tf.Tensor
    stop: tuple


def control_values(opts, context_width, stop_arrays=()):
    """The ControlKnobs of a call as numpy values (engine.options.ControlOptions; context_width a python int)."""
    _, (bias_prefixes, bias_lengths, bias_last, bias_values) = _sequence_table(opts.sequence_bias)
    _, (bad_prefixes, bad_lengths, bad_last, _) = _sequence_table(_bad_words(opts))
    # transformers: begin_suppress_tokens apply at the first new token, or the second when a forced
    # BOS takes the first place of a one-token sequence.
    begin = context_width + (1 if context_width == 1 and opts.forced_bos_token_id is not None else 0)
    start, factor = opts.exponential_decay_length_penalty or (0, 1.0)
    return ControlKnobs(
        context_width=np.int32(context_width), bias_prefixes=bias_prefixes, bias_lengths=bias_lengths,
        bias_last=bias_last, bias_values=bias_values, bad_prefixes=bad_prefixes, bad_lengths=bad_lengths,
        bad_last=bad_last, suppress_ids=_id_list(opts.suppress_tokens),
        begin_suppress_ids=_id_list(opts.begin_suppress_tokens), begin_index=np.int32(begin),
        forced_bos_id=np.int32(search.NO_TOKEN if opts.forced_bos_token_id is None else opts.forced_bos_token_id),
        forced_eos_ids=_id_list(opts.forced_eos_token_ids),
        encoder_penalty_inverse=np.float32(1.0 / opts.encoder_repetition_penalty),
        length_decay_start=np.int32(start), length_decay_factor=np.float64(factor),
        typical_p=np.float32(opts.typical_p), epsilon_cutoff=np.float32(opts.epsilon_cutoff),
        eta_cutoff=np.float32(opts.eta_cutoff), stop=tuple(stop_arrays))


_CONTROL_DTYPES = dict(context_width=tf.int32, bias_values=tf.float32, encoder_penalty_inverse=tf.float32,
                       length_decay_factor=tf.float64, typical_p=tf.float32, epsilon_cutoff=tf.float32,
                       eta_cutoff=tf.float32)


def control_specs(controls, stop_specs=()):
    """The ControlKnobs of a program as TensorSpecs, shaped by its Controls."""
    bias_m, bias_l = controls.sequence_bias
    bad_m, bad_l = controls.bad_words
    shapes = dict(bias_prefixes=[bias_m, bias_l], bias_lengths=[bias_m], bias_last=[bias_m], bias_values=[bias_m],
                  bad_prefixes=[bad_m, bad_l], bad_lengths=[bad_m], bad_last=[bad_m],
                  suppress_ids=[controls.suppress], begin_suppress_ids=[controls.begin_suppress],
                  forced_eos_ids=[controls.forced_eos])
    specs = {name: tf.TensorSpec(shapes.get(name, []), _CONTROL_DTYPES.get(name, tf.int32), name=name)
             for name in ControlKnobs._fields if name != "stop"}
    return ControlKnobs(stop=tuple(stop_specs), **specs)


class Prepared(NamedTuple):
    """Per-call work of the processors, done once before the loop (see prepare).

    last_step: python int N - 1, the step forced_eos_token_id applies at.
    encoder_seen: [B, V] bool, the ids of each prompt's encoder input (None when off).
    encoder_windows: ([B, C, n] int32, [B, C] bool), its n-grams (None when off).
    """
    last_step: int
    encoder_seen: object = None
    encoder_windows: object = None


def prepare(input_ids, controls, max_new_tokens, vocab):
    """Args:
      input_ids: [B, P] int32, what generate was given (the encoder's input for encoder-decoders,
        the prompt for decoder-only models: transformers' encoder_input_ids, padding ids included);
        NO_TOKEN in bucket padding.
      controls: Controls.  max_new_tokens: python int N.  vocab: python int V.
    Returns:
      Prepared.
    """
    ids = tf.where(tf.logical_and(input_ids >= 0, input_ids < vocab), input_ids, search.NO_TOKEN)
    return Prepared(last_step=max_new_tokens - 1,
                    encoder_seen=processors.presence(ids, vocab) if controls.encoder_repetition else None,
                    encoder_windows=processors.ngram_windows(ids, controls.encoder_ngram)
                    if controls.encoder_ngram else None)


def _check_custom(f, scores, out):
    if not isinstance(out, tf.Tensor) or out.dtype != tf.float32 or not out.shape.is_compatible_with(scores.shape):
        got = f"{out.dtype.name} {out.shape}" if isinstance(out, tf.Tensor) else type(out).__name__
        raise GenerationArgumentError(
            f"logits_processor {getattr(f, '__name__', f)!r} must return a float32 tensor shaped like its logits "
            f"{scores.shape}, got {got}")
    return tf.ensure_shape(out, scores.shape)


def scores(logits, history, length, step, knobs, strategy, prepared, group):
    """One step's scores, processed (and warped when sampling) in transformers' order (see the
    module docstring).

    Args:
      logits: [B*G, V] float32 (log-probabilities in beam search), G rows per prompt.
      history: [B*G, S + N] int32, prefix then chosen tokens, NO_TOKEN where there is none.
      length: scalar int32, filled history slots (the next token goes at `length`).
      step: scalar int32, new tokens chosen so far.
      (Multi-token steps give length and step per row, [B*G] int32; the caller's processors
      and stop strings, which take one step for all rows, are refused there.)
      knobs: loops.Knobs (its .controls is a ControlKnobs).
      strategy: loops.Strategy (its .controls is a Controls).
      prepared: Prepared.  group: python int G.
    Returns:
      [B*G, V] float32.
    """
    c, controls = knobs.controls, strategy.controls
    context = c.context_width + step  # transformers' input_ids.shape[-1]
    if controls.sequence_bias[0]:
        hit = processors.sequence_matches(history, length, context, c.bias_prefixes, c.bias_lengths)
        logits = processors.add_sequence_bias(logits, hit, c.bias_last, c.bias_values)
    if controls.encoder_repetition:
        seen = tf.repeat(prepared.encoder_seen, group, axis=0)
        logits = processors.encoder_repetition_penalty(logits, seen, c.encoder_penalty_inverse)
    logits = processors.repetition_penalty(logits, history, knobs.repetition_penalty)
    if strategy.no_repeat_ngram_size:
        logits = processors.no_repeat_ngram(logits, history, length, strategy.no_repeat_ngram_size)
    if controls.encoder_ngram:
        windows, valid = prepared.encoder_windows
        logits = processors.ban_ngram_continuations(logits, history, length, windows, valid, group)
    if controls.bad_words[0]:
        hit = processors.sequence_matches(history, length, context, c.bad_prefixes, c.bad_lengths)
        logits = processors.ban_sequences(logits, hit, c.bad_last)
    logits = search.suppress(logits, knobs.eos_ids, step < knobs.min_new_tokens)
    if controls.forced_bos:
        logits = processors.force(logits, c.forced_bos_id[None], tf.equal(context, 1))
    if controls.forced_eos:
        logits = processors.force(logits, c.forced_eos_ids, tf.equal(step, prepared.last_step))
    if controls.remove_invalid:
        logits = processors.remove_invalid(logits)
    if controls.length_decay:
        eos = search.is_any_of(tf.range(logits.shape[-1]), knobs.eos_ids)
        logits = processors.exponential_decay(logits, eos, step, c.length_decay_start, c.length_decay_factor)
    if controls.suppress:
        logits = search.suppress(logits, c.suppress_ids, True)
    if controls.begin_suppress:
        logits = search.suppress(logits, c.begin_suppress_ids, tf.equal(context, c.begin_index))
    for f in controls.custom:
        logits = _check_custom(f, logits, f(logits, history, step))
    if strategy.draws:
        logits = sampling.temperature(logits, knobs.temperature)
        logits = sampling.top_k(logits, knobs.top_k)
        logits = sampling.top_p(logits, knobs.top_p)
        logits = sampling.min_p(logits, knobs.min_p)
        if controls.typical:
            logits = sampling.typical_p(logits, c.typical_p)
        if controls.epsilon:
            logits = sampling.epsilon_cutoff(logits, c.epsilon_cutoff)
        if controls.eta:
            logits = sampling.eta_cutoff(logits, c.eta_cutoff)
    if controls.renormalize:
        logits = tf.nn.log_softmax(logits, axis=-1)
    return logits
