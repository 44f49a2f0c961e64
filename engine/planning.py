"""Everything a call is checked against before anything compiles: the input ids and mask,
the model's positions, the memory limit, the assistant model; and the Plan that names the
program a call runs (its options, static Strategy and prompt bucket).

The functions take the Generator (`gen`: its config, model, tokenizer, path, memory_limit and
generation defaults) and raise GenerationArgumentError or MemoryLimitError naming the argument
at fault.
"""
import warnings
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from xlagen.kernels.errors import GenerationArgumentError, MemoryLimitError
from xlagen.models.base import CachedLM

from . import buckets, loops, options, stop_strings


def size_text(n):
    """Bytes as a short human figure: '1.50 GiB', '12.0 MiB'."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


_INT32 = np.iinfo(np.int32)


def as_ids(name, value):
    """A [B, T] int32 numpy array from a list, array or tensor; 1-D input is one row.

    Values are checked against the int32 range before the narrowing cast, so 2**32 + 5 is
    refused rather than read as 5."""
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    try:
        array = np.asarray(value)
    except ValueError:  # ragged lists
        raise GenerationArgumentError(f"{name} must be a rectangular [batch, length] array of ints; pad rows to one length") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise GenerationArgumentError(f"{name} must have shape [batch, length] with both >= 1, got shape {list(array.shape)}")
    if array.dtype == bool:
        array = array.astype(np.int32)
    if not np.issubdtype(array.dtype, np.integer):
        raise GenerationArgumentError(f"{name} must hold integers, got dtype {array.dtype}")
    outside = (array < _INT32.min) | (array > _INT32.max)
    if outside.any():
        raise GenerationArgumentError(f"{name} holds values outside the int32 range: {sorted(set(array[outside].tolist()))[:5]}; "
                                      f"token ids must lie in [0, vocab_size)")
    return array.astype(np.int32)


def check_jit_compile(value):
    """The jit_compile option, checked: a python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise GenerationArgumentError(f"jit_compile must be True (the compiled program, the default) or False "
                                      f"(the same functions run eagerly), got {value!r}")
    return bool(value)


class GenerateOutput(NamedTuple):
    """What generate(..., output_scores=True) returns, with transformers' names and meanings
    (R = B * num_return_sequences rows, N new tokens, V vocabulary).

    sequences: [R, W + N] int32, as generate returns without output_scores.
    scores: tuple of one [rows, V] float32 array per step the loop ran: the processed (and,
      when sampling, warped) scores the token was chosen from; rows are R (greedy, sampling)
      or B * num_beams (beam search: the beams as they stood at that step). transformers'
      `scores`.
    transition_scores: [R, N] float32, the score of each emitted token in its step's scores:
      what transformers' compute_transition_scores(sequences, scores, beam_indices) gives.
      Greedy and sampling: the processed logit (after EOS: that of the pad token, as
      transformers); beam search: the token's processed log-probability along the beam's own
      path, 0 after its end.
    sequences_scores: [R] float32 for beam search (summed log-probabilities / generated length
      ** length_penalty), None otherwise.
    accepted, drafted: [R, M] int32 with prompt_lookup_num_tokens or assistant_model (and
      output_scores=True, which gives this GenerateOutput), None otherwise: for each of
      the M model steps after the prompt's, how many draft tokens row r accepted and how many
      it was offered (-1 once the row had ended). A step emits accepted + 1 tokens. Tokens
      and scores as without drafts, except that scores and transition_scores hold 0 after a
      row's end.
    """
    sequences: np.ndarray
    scores: tuple
    transition_scores: np.ndarray
    sequences_scores: Optional[np.ndarray] = None
    accepted: Optional[np.ndarray] = None
    drafted: Optional[np.ndarray] = None


class Plan(NamedTuple):
    """One generate call (or export), checked: its options, the static strategy and the prompt width.

    opts: options.Options.  strategy: loops.Strategy.
    width: python int, the prompt width the program takes (the bucket; prompt_length for export).
    context: python int, the width of the sequence before the new tokens as transformers counts
      it (the prompt as given, or 1 for encoder-decoders).
    stop: engine.stop_strings.StopTables, or None without stop strings.
    """
    opts: options.Options
    strategy: loops.Strategy
    width: int
    context: int
    stop: object = None

    def knobs(self):
        """The call's Knobs, as tensors."""
        return loops.knob_tensors(self.opts, self.context, self.stop.arrays if self.stop else ())

    def knob_specs(self):
        """The program's Knobs, as TensorSpecs."""
        stop = [tf.TensorSpec(a.shape, tf.int32) for a in self.stop.arrays] if self.stop else ()
        return loops.knob_specs(self.strategy, tuple(stop))


class DecodeCall(NamedTuple):
    """A generate call, checked and prepared (Generator.decode_call).

    function: python callable (input_ids [B, S] int32, attention_mask [B, S] int32,
      knobs loops.Knobs) -> dict of tensors, loops.generate's outputs ("sequences"
      [B * R, S' + N] int32, ...), for this call's model, strategy and max_new_tokens.
    args: (input_ids, attention_mask, knobs) for it: the prompts left padded to their bucket
      S, as tf.Tensors, and the call's knobs.
    plan: Plan.
    """
    function: object
    args: tuple
    plan: Plan


def check_inputs(gen, input_ids, attention_mask, opts=None):
    """Validate ids and mask; returns (ids, mask), each [B, T] int32.

    Without a mask and with generate's options `opts`, the mask is inferred as transformers
    does (ids != pad_token_id where the pad id occurs and is no EOS id)."""
    ids = as_ids("input_ids", input_ids)
    if attention_mask is None:
        mask = infer_mask(ids, opts) if opts is not None else np.ones_like(ids)
    else:
        mask = as_ids("attention_mask", attention_mask)
    if mask.shape != ids.shape:
        raise GenerationArgumentError(f"attention_mask has shape {list(mask.shape)} but input_ids has {list(ids.shape)}; they must match")
    if not np.isin(mask, (0, 1)).all():
        raise GenerationArgumentError("attention_mask must hold only 0 (padding) and 1 (token)")
    if (mask.sum(axis=1) == 0).any():
        raise GenerationArgumentError(f"rows {np.flatnonzero(mask.sum(axis=1) == 0).tolist()} of attention_mask are all padding; every row needs a token")
    bad = ((ids < 0) | (ids >= gen.vocab_size)) & (mask == 1)
    if bad.any():
        raise GenerationArgumentError(f"input_ids holds token ids outside [0, {gen.vocab_size}): {sorted(set(ids[bad].tolist()))[:10]}")
    if gen.model.continues_prompt and (mask[:, -1] == 0).any():
        warnings.warn("a row of attention_mask ends in padding: decoder-only models need left padding "
                      "(tokenizer padding_side='left'); results for right-padded rows are not meaningful", stacklevel=3)
    return ids, mask


def infer_mask(ids, opts):
    """transformers' rule for a call without attention_mask: ids != pad_token_id when the pad
    id occurs in the input and is not an EOS id; otherwise no padding (with a warning when
    the pad id occurs but equals an EOS id, as the mask then cannot be told)."""
    pad = opts.pad_token_id
    if not (ids == pad).any():
        return np.ones_like(ids)
    if pad in opts.eos_token_ids:
        warnings.warn(f"input_ids holds pad_token_id={pad}, which is also an EOS id, so the attention mask cannot "
                      f"be inferred and every token is attended to; pass attention_mask", stacklevel=4)
        return np.ones_like(ids)
    return (ids != pad).astype(np.int32)


def pad_left(ids, mask, multiple, pad_id):
    """Left-pad [B, W] to the next multiple of `multiple`, so prompts of one bucket share a program."""
    width = ids.shape[1]
    extra = buckets.padded_width(width, multiple) - width
    if not extra:
        return ids, mask
    return (np.pad(ids, ((0, 0), (extra, 0)), constant_values=pad_id), np.pad(mask, ((0, 0), (extra, 0))))


def check_positions(gen, prompt, prompt_len, max_new_tokens=0):
    """Raise GenerationArgumentError when prompt_len + max_new_tokens exceeds the model's
    positions (models with relative positions have no limit); `prompt` names the prompt
    length in the message."""
    limit, total = gen.config.max_positions, prompt_len + max_new_tokens
    if limit is not None and total > limit:
        more = f" plus max_new_tokens={max_new_tokens} is {total}," if max_new_tokens else " is"
        raise GenerationArgumentError(
            f"{prompt}{more} beyond the model's {limit} positions; shorten the prompt"
            + (" or max_new_tokens" if max_new_tokens else ""))


def check_memory(gen, parts, limit, what, advice):
    """Raise MemoryLimitError, with the figures, when the estimated `parts` ({name: bytes})
    of a call exceed `limit` (None: the Generator's memory_limit)."""
    limit = gen.memory_limit if limit is None else limit
    total = sum(parts.values())
    if total > limit:
        detail = ", ".join(f"{name} {size_text(n)}" for name, n in parts.items())
        raise MemoryLimitError(
            f"this call needs about {size_text(total)} ({detail}; {what}), above the memory limit of {size_text(limit)}. "
            f"{advice}, or raise the limit for this call with memory_limit=BYTES or for the Generator with "
            f"load(..., memory_limit=BYTES)")


def prefix_width(gen, prompt_width):
    """Width of what generate's output holds before the new tokens: the prompt, or the start token."""
    return prompt_width if gen.model.continues_prompt else 1


def options_for(gen, kwargs, width):
    """generate's keyword options for prompts `width` ids wide, resolved against the checkpoint's defaults."""
    return options.parse(kwargs, gen.generation_config, gen.config, prefix_width(gen, width), gen.vocab_size,
                         gen.model.supports_extend)


def memory_parts(gen, opts, strategy, batch, padded):
    """The estimated bytes of a generate call, {part: bytes} (model.memory_estimate, and the scores)."""
    # prompt lookup's cache has room for K positions past the last new token
    parts = gen.model.memory_estimate(batch, padded, strategy.group, opts.max_new_tokens + strategy.draft_tokens)
    if strategy.assistant is not None:
        parts["assistant kv cache"] = strategy.assistant.memory_estimate(
            batch, padded, strategy.group, opts.max_new_tokens + strategy.draft_tokens)["kv cache"]
    if strategy.output_scores:  # multi-token steps keep a spare slot for the positions they drop
        slots = opts.max_new_tokens + (1 if strategy.draft_tokens else 0)
        parts["scores"] = slots * batch * strategy.group * gen.vocab_size * 4
    return parts


def check_assistant(gen, assistant):
    """Refuse an assistant_model that cannot draft for this model (GenerationArgumentError)."""
    if not isinstance(getattr(assistant, "model", None), CachedLM) or not hasattr(assistant, "decode_call"):
        raise GenerationArgumentError(f"assistant_model must be an xlagen Generator (xlagen.engine.load(...)), "
                                      f"got {type(assistant).__name__}")
    if not assistant.model.supports_extend:
        raise GenerationArgumentError(f"assistant_model {assistant.path} is an encoder-decoder; the assistant "
                                      f"must be a decoder-only model (GPT-2, OPT)")
    if assistant.vocab_size != gen.vocab_size:
        raise GenerationArgumentError(
            f"assistant_model {assistant.path} has a vocabulary of {assistant.vocab_size} tokens and this model "
            f"{gen.vocab_size}; the assistant must share the model's vocabulary")
    if assistant in gen.checked_assistants:
        return
    if (gen.tokenizer is not None and assistant.tokenizer is not None
            and gen.tokenizer.get_vocab() != assistant.tokenizer.get_vocab()):
        raise GenerationArgumentError(f"assistant_model {assistant.path} has another tokenizer than {gen.path}; "
                                      f"the assistant must share the model's vocabulary, token for token")
    gen.checked_assistants.add(assistant)  # checked once: comparing 50k-entry vocabularies is not free


def plan(gen, opts, batch, width, longest, bucket=True):
    """Check a call before anything compiles and choose its program: the one preparation
    path of generate and export.

    Args:
      opts: options.Options (options_for).  batch: python int, or None (any; export).
      width: python int, the prompt width given.  longest: python int, the longest real prompt.
      bucket: pad the width up to pad_to_multiple_of (generate) or keep it (export).
    Returns:
      Plan.
    """
    check_positions(gen, f"the longest prompt ({longest} tokens)", longest, opts.max_new_tokens)
    stop = None
    if opts.controls.stop_strings:
        if gen.tokenizer is None:
            raise GenerationArgumentError(f"stop_strings needs a tokenizer, and {gen.path} has no tokenizer.json; "
                                          f"stop on token ids with eos_token_id instead")
        stop = stop_strings.stop_string_tables(gen.tokenizer, opts.controls.stop_strings)
    if opts.assistant_model is not None:
        check_assistant(gen, opts.assistant_model)
    strategy = loops.strategy_for(opts, stop.key if stop else ())
    padded = buckets.padded_width(width, opts.pad_to_multiple_of) if bucket else width
    if batch is not None:
        parts = memory_parts(gen, opts, strategy, batch, padded)
        rows = f"batch {batch} x {strategy.group} {'beams' if strategy.loop == 'beam' else 'rows'} per prompt"
        check_memory(gen, parts, opts.memory_limit,
                     f"{rows}, {gen.model.num_cache_layers} layers, {padded} + {opts.max_new_tokens} positions",
                     "Lower the batch, num_beams / num_return_sequences or max_new_tokens")
    return Plan(opts, strategy, padded, prefix_width(gen, width), stop)

