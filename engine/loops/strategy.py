"""What a decode program is: its static Strategy (a new program when it changes) and its
numeric Knobs (tensor arguments, so new values never recompile).

A Strategy names the loop that runs (`loop`) and how that loop picks a token (`choice`) as
two fields; the other fields are the static sizes the loop needs.
"""
from typing import NamedTuple

import tensorflow as tf

from xlagen.kernels import search

from ..buckets import EOS_SLOTS, eos_slots
from . import processing

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


def knob_specs(strategy, stop_specs=()):
    """The Knobs of a program (its Strategy) as TensorSpecs, built from the Knobs fields
    themselves; stop_specs: the stop-string tables' specs (engine.stop_strings), () without."""
    shapes = {"eos_ids": [strategy.eos_slots], "seed": [2]}
    scalars = {name: tf.TensorSpec(shapes.get(name, []), dtype, name=name)
               for name, dtype in zip(Knobs._fields, KNOB_DTYPES) if name != "controls"}
    return Knobs(controls=processing.control_specs(strategy.controls, stop_specs), **scalars)


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


LOOPS = ("rows", "beam", "contrastive", "multi_token")
CHOICES = ("argmax", "draw")


class Strategy(NamedTuple):
    """The static choices of a program (a new program when they change).

    loop: which decode loop runs: "rows" (G independent rows per prompt, engine/loops/rows.py),
      "beam" (beam search), "contrastive" (contrastive search) or "multi_token" (steps that
      check drafted tokens, engine/loops/multi_token.py; `drafter` says who drafts).
    choice: how a token is picked from the processed scores: "argmax", or "draw" (sampling,
      after the warpers).
    group: G, rows decoded per prompt (num_return_sequences when sampling, num_beams in beam search,
      top_k in contrastive search: its candidates are the rows of the group).
    returns: sequences returned per prompt (num_return_sequences).
    no_repeat_ngram_size: python int, 0 is off.
    eos_slots: E, the length of the padded EOS id vector (a multiple of buckets.EOS_SLOTS).
    output_scores: python bool, also return per-step and transition scores.
    controls: processing.Controls, which other processors run and their table sizes.
    drafter: "lookup" (prompt lookup) or "assisted" (an assistant model) for the loop
      "multi_token"; None otherwise.
    draft_tokens: K, drafts per model step (loop "multi_token"; 0 otherwise).
    max_ngram: the longest n-gram prompt lookup matches (max_matching_ngram_size).
    assistant: the assistant's model (drafter "assisted"; None otherwise), compared by identity.
    """
    loop: str = "rows"
    choice: str = "argmax"
    group: int = 1
    returns: int = 1
    no_repeat_ngram_size: int = 0
    eos_slots: int = EOS_SLOTS
    output_scores: bool = False
    controls: processing.Controls = processing.Controls()
    drafter: object = None
    draft_tokens: int = 0
    max_ngram: int = 0
    assistant: object = None

    @property
    def draws(self):
        """Tokens are drawn (python bool): the sampling warpers run and the token is a draw."""
        return self.choice == "draw"

    @property
    def name(self):
        """The strategy as a user calls it, for messages: "greedy", "sample", "beam",
        "contrastive", "lookup" or "assisted"."""
        if self.loop == "rows":
            return "sample" if self.draws else "greedy"
        return self.drafter if self.loop == "multi_token" else self.loop


def strategy_for(opts, stop_key=()):
    """The static part of a call's options (engine.options.Options) as a Strategy; stop_key:
    the stop-string tables' static key (engine.stop_strings), () without."""
    beams = opts.num_beams > 1  # beam search takes no drafts
    drafter = (None if beams else "lookup" if opts.prompt_lookup_num_tokens
               else "assisted" if opts.assistant_model is not None else None)
    loop = ("beam" if beams else "multi_token" if drafter
            else "contrastive" if not opts.do_sample and opts.penalty_alpha > 0 else "rows")
    group = {"beam": opts.num_beams, "contrastive": opts.top_k}.get(loop, opts.num_return_sequences)
    drafts = {"lookup": (opts.prompt_lookup_num_tokens, opts.max_matching_ngram_size, None),
              "assisted": (opts.num_assistant_tokens, 0, getattr(opts.assistant_model, "model", None))}
    return Strategy(loop, "draw" if opts.do_sample else "argmax", group, opts.num_return_sequences,
                    opts.no_repeat_ngram_size, eos_slots(opts.eos_token_ids), opts.output_scores,
                    processing.controls_for(opts.controls, stop_key), drafter, *drafts.get(drafter, (0, 0, None)))
