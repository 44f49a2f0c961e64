"""The public Generator: load a checkpoint, generate token ids or text, compute logits."""
import os
import threading
import warnings
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from xlagen import models
from xlagen.kernels.search import NO_TOKEN
from xlagen.models import GenerationArgumentError, MemoryLimitError

from . import decode, options

def default_memory_limit():
    """Half the machine's physical memory, in bytes (8 GiB where that cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def load(name_or_path=None, memory_limit=None):
    """Load a checkpoint folder in Hub layout, a Hub id (with huggingface_hub installed), or,
    with no argument or "default", the small GPT-2 trained on Python's documentation that
    ships inside the package.

    Reads config.json, model.safetensors or a sharded model.safetensors.index.json, and
    generation_config.json and tokenizer.json when present.
    memory_limit: bytes one generate call may allocate (KV cache and working memory), checked
    before anything is compiled; None means half the physical memory. Also settable later as
    `gen.memory_limit`, or per call with generate(..., memory_limit=...).
    Returns a Generator. Raises a subclass of xlagen.models.XlagenError naming the file at fault.
    """
    folder = models.resolve(name_or_path)
    config, model = models.load_model(folder)
    if model.unused:
        warnings.warn(f"{folder}: tensors not used by {config.model_type}: {', '.join(model.unused[:10])}"
                      + (" ..." if len(model.unused) > 10 else ""), stacklevel=2)
    generation_config = models.read_json(os.path.join(folder, "generation_config.json"), required=False)
    tokenizer = None
    tokenizer_path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(tokenizer_path):
        from tokenizers import Tokenizer
        try:
            tokenizer = Tokenizer.from_file(tokenizer_path)
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise models.CheckpointFormatError(f"{tokenizer_path} is not a readable tokenizers file: {e}") from None
    return Generator(folder, config, model, generation_config, tokenizer, memory_limit)


def left_pad(rows, pad_id=0):
    """Token id lists of different lengths -> (ids, attention_mask), [B, max length] int32, left padded."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def _size(n):
    """Bytes as a short human figure: '1.50 GiB', '12.0 MiB'."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _as_ids(name, value):
    """A [B, T] int32 numpy array from a list, array or tensor; 1-D input is one row."""
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
    return array.astype(np.int32)


class GenerateOutput(NamedTuple):
    """What generate(..., output_scores=True) returns (R = B * num_return_sequences rows).

    sequences: [R, W + N] int32, as generate returns without output_scores.
    scores: [R, N] float32, each new token's log-probability under the processed (warped)
      distribution, 0 after EOS.
    sequences_scores: [R] float32 for beam search (transformers' sequences_scores: summed
      log-probabilities / generated length ** length_penalty), None otherwise.
    """
    sequences: np.ndarray
    scores: np.ndarray
    sequences_scores: Optional[np.ndarray] = None


class Generator:
    """A loaded checkpoint plus its compiled generate programs.

    Attributes:
      config: the model config dataclass (models.gpt2.GPT2Config, ...).
      generation_config: dict from generation_config.json, or None.
      tokenizer: tokenizers.Tokenizer from tokenizer.json, or None.
      path: the local folder the files were read from.
      trace_count: how many generate programs have been traced so far.
      memory_limit: bytes one generate call may allocate; larger calls raise MemoryLimitError.
    """

    def __init__(self, path, config, model, generation_config=None, tokenizer=None, memory_limit=None):
        self.path, self.config, self.model = path, config, model
        self.memory_limit = default_memory_limit() if memory_limit is None else memory_limit
        self.generation_config, self.tokenizer = generation_config, tokenizer
        self._programs = {}  # static signature -> tf.function(jit_compile=True)
        self._logit_programs = {}
        self._lock = threading.Lock()
        self.trace_count = 0

    @property
    def vocab_size(self):
        return self.config.vocab_size

    # -- inputs -----------------------------------------------------------------------------

    def _check_inputs(self, input_ids, attention_mask):
        """Validate ids and mask; returns (ids as given, ids safe to embed, mask), each [B, T] int32."""
        ids = _as_ids("input_ids", input_ids)
        mask = np.ones_like(ids) if attention_mask is None else _as_ids("attention_mask", attention_mask)
        if mask.shape != ids.shape:
            raise GenerationArgumentError(f"attention_mask has shape {list(mask.shape)} but input_ids has {list(ids.shape)}; they must match")
        if not np.isin(mask, (0, 1)).all():
            raise GenerationArgumentError("attention_mask must hold only 0 (padding) and 1 (token)")
        if (mask.sum(axis=1) == 0).any():
            raise GenerationArgumentError(f"rows {np.flatnonzero(mask.sum(axis=1) == 0).tolist()} of attention_mask are all padding; every row needs a token")
        bad = ((ids < 0) | (ids >= self.vocab_size)) & (mask == 1)
        if bad.any():
            raise GenerationArgumentError(f"input_ids holds token ids outside [0, {self.vocab_size}): {sorted(set(ids[bad].tolist()))[:10]}")
        if not self.config.is_encoder_decoder and (mask[:, -1] == 0).any():
            warnings.warn("a row of attention_mask ends in padding: decoder-only models need left padding "
                          "(tokenizer padding_side='left'); results for right-padded rows are not meaningful", stacklevel=3)
        # Padding slots may hold anything (-100, say); the model only ever sees a valid id there.
        return ids, np.where(mask == 1, ids, 0).astype(np.int32), mask

    @staticmethod
    def _pad_left(ids, mask, multiple, pad_id):
        """Left-pad [B, W] to the next multiple of `multiple`, so prompts of one bucket share a program."""
        width = ids.shape[1]
        extra = -width % multiple
        if not extra:
            return ids, mask
        return (np.pad(ids, ((0, 0), (extra, 0)), constant_values=pad_id), np.pad(mask, ((0, 0), (extra, 0))))

    def _check_positions(self, prompt, prompt_len, max_new_tokens):
        """Raise GenerationArgumentError when prompt_len + max_new_tokens exceeds the model's
        positions; `prompt` names the prompt length in the message."""
        limit, total = self.config.max_positions, prompt_len + max_new_tokens
        if limit is not None and total > limit:
            raise GenerationArgumentError(
                f"{prompt} plus max_new_tokens={max_new_tokens} is {total}, beyond the model's {limit} positions; "
                f"shorten the prompt or max_new_tokens")

    def _check_memory(self, batch, prompt_len, strategy, opts):
        """Raise MemoryLimitError, with the figures, when a call would allocate more than its
        memory limit (opts.memory_limit, else the Generator's)."""
        limit = self.memory_limit if opts.memory_limit is None else opts.memory_limit
        max_new_tokens = opts.max_new_tokens
        parts = self.model.memory_estimate(batch, prompt_len, strategy.group, max_new_tokens)
        total = sum(parts.values())
        if total > limit:
            detail = ", ".join(f"{name} {_size(n)}" for name, n in parts.items())
            rows = f"batch {batch} x {strategy.group} {'beams' if strategy.kind == 'beam' else 'rows'} per prompt"
            raise MemoryLimitError(
                f"this call needs about {_size(total)} ({detail}; {rows}, {self.model.num_cache_layers} layers, "
                f"{prompt_len} + {max_new_tokens} positions), above the memory limit of {_size(limit)}. "
                f"Lower the batch, num_beams / num_return_sequences or max_new_tokens, or raise the limit with "
                f"generate(..., memory_limit=BYTES) or load(..., memory_limit=BYTES)")

    # -- generate ---------------------------------------------------------------------------

    def _program(self, batch, input_len, max_new_tokens, strategy):
        key = (batch, input_len, max_new_tokens, strategy)
        with self._lock:
            if key not in self._programs:
                model = self.model

                def run(input_ids, attention_mask, *knobs):
                    self.trace_count += 1  # runs once per trace, never in the compiled program
                    return decode.generate(model, input_ids, attention_mask, max_new_tokens, decode.Knobs(*knobs),
                                           strategy)

                ids = tf.TensorSpec([batch, input_len], tf.int32)
                self._programs[key] = tf.function(run, jit_compile=True, reduce_retracing=False, autograph=False,
                                                  input_signature=[ids, ids, *decode.KNOB_SPECS])
            return self._programs[key]

    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Generate tokens after a batch of prompts: greedy, sampling (do_sample=True) or beam
        search (num_beams > 1).

        Args:
          input_ids: [B, W] ints (list, numpy or tf); left padded for decoder-only models, padded on
            either side for encoder-decoders; a 1-D sequence is one row.
          attention_mask: [B, W] of 0/1, or None for no padding.
          **kwargs: transformers' generation options (max_new_tokens, max_length, min_new_tokens,
            do_sample, temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size,
            num_beams, length_penalty, early_stopping, num_return_sequences, eos_token_id,
            pad_token_id, decoder_start_token_id, output_scores, ...), defaults from
            generation_config.json then config.json; seed (an int or a pair of int32: the same seed
            and inputs give the same tokens); pad_to_multiple_of (default 8), the prompt bucket;
            memory_limit (bytes) for this call, instead of the Generator's.
        Returns:
          np.ndarray int32 [B * num_return_sequences, W + max_new_tokens] for decoder-only models:
          the prompt as given, then the new tokens; [B * num_return_sequences, 1 + max_new_tokens]
          for encoder-decoders: decoder_start_token_id, then the new tokens. pad_token_id after a
          row's EOS; the returns of prompt 0 first.
          With output_scores=True, a GenerateOutput (see there).
        """
        given, ids, mask = self._check_inputs(input_ids, attention_mask)
        encoder_decoder = self.config.is_encoder_decoder
        opts = options.resolve(kwargs, self.generation_config, self.config, 1 if encoder_decoder else ids.shape[1],
                               self.vocab_size)
        longest = int(mask.sum(axis=1).max())
        self._check_positions(f"the longest prompt ({longest} tokens)", longest, opts.max_new_tokens)
        # Bucket padding holds NO_TOKEN, which the processors ignore; the output drops it again.
        inputs, padded_mask = self._pad_left(given, mask, opts.pad_to_multiple_of, NO_TOKEN)
        strategy = decode.strategy_for(opts)
        self._check_memory(len(ids), inputs.shape[1], strategy, opts)
        program = self._program(len(ids), inputs.shape[1], opts.max_new_tokens, strategy)
        out = program(tf.constant(inputs), tf.constant(padded_mask), *decode.knob_tensors(opts))
        sequences = out.sequences.numpy()
        if not encoder_decoder:
            sequences = sequences[:, inputs.shape[1] - given.shape[1]:]
        if not opts.output_scores:
            return sequences
        return GenerateOutput(sequences, out.scores.numpy(), out.sequence_scores.numpy() if opts.num_beams > 1 else None)

    # -- export -----------------------------------------------------------------------------

    def export(self, directory, *, prompt_length, max_new_tokens, batch_size=None, **kwargs):
        """Write this model's whole generate program, weights inside, as a SavedModel that
        `tf.saved_model.load` serves without xlagen installed (and TensorFlow Serving, with XLA
        enabled). One strategy per export: greedy, sampling (do_sample=True) or beam search.

        Args:
          directory: a new or empty folder.
          prompt_length: python int P, the width of input_ids (left pad prompts to it).
          max_new_tokens: python int N.
          batch_size: python int, or None to accept any batch (XLA compiles once per batch size).
          **kwargs: generation options as for generate; fixed in the SavedModel, except the
            strategy's knobs, which become scalar inputs of the signature: temperature (float32),
            top_k (int32), top_p (float64), seed (int64) when sampling; length_penalty (float64)
            in beam search. output_scores=True adds sequence_scores and scores to the outputs.
        Signature `serving_default`:
          input_ids, attention_mask: [batch, P] int32 -> sequences: [batch * R, P + N] int32
          ([batch * R, 1 + N] for encoder-decoders), the same tokens generate() returns.
        Returns:
          directory.
        """
        from .export import export
        return export(self, directory, prompt_length=prompt_length, max_new_tokens=max_new_tokens,
                      batch_size=batch_size, **kwargs)

    # -- text -------------------------------------------------------------------------------

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise GenerationArgumentError(f"{self.path} has no tokenizer.json; pass token ids to generate() instead")
        return self.tokenizer

    def generate_text(self, prompts, return_full_text=True, **kwargs):
        """Generate from text prompts with the checkpoint's tokenizer.

        Args:
          prompts: a str or a list of str.
          return_full_text: True returns prompt + completion (as transformers' pipeline does),
            False only the completion; encoder-decoders always return only their output.
          **kwargs: as for generate.
        Returns:
          list[str], num_return_sequences per prompt (those of prompt 0 first), special tokens removed.
        """
        tokenizer = self._require_tokenizer()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise GenerationArgumentError("prompts must be a str or a non-empty list of str")
        encoded = [tokenizer.encode(p).ids for p in prompts]
        if any(not e for e in encoded):
            raise GenerationArgumentError("a prompt encodes to no tokens; give every prompt some text")
        ids, mask = left_pad(encoded)
        width = ids.shape[1]
        out = self.generate(ids, attention_mask=mask, **kwargs)
        sequences = out.sequences if isinstance(out, GenerateOutput) else out
        returns = len(sequences) // len(encoded)  # rows of prompt 0 first
        if self.config.is_encoder_decoder:  # the output is a new text, not a continuation
            return [tokenizer.decode(row[1:].tolist(), skip_special_tokens=True) for row in sequences]
        return [tokenizer.decode((encoded[row // returns] if return_full_text else []) + sequences[row, width:].tolist(),
                                 skip_special_tokens=True) for row in range(len(sequences))]

    # -- logits -----------------------------------------------------------------------------

    def logits(self, input_ids, attention_mask=None, decoder_input_ids=None):
        """Logits of every position in one forward pass.

        Args:
          input_ids: [B, T] ints (left padded for decoder-only models).
          attention_mask: [B, T] of 0/1, or None.
          decoder_input_ids: [B, T_dec] ints, required for encoder-decoders (teacher forcing:
            usually decoder_start_token_id followed by target tokens), refused otherwise.
        Returns:
          np.ndarray float32 [B, T, V] (decoder-only; values at padding positions are meaningless)
          or [B, T_dec, V] (encoder-decoder).
        """
        _, ids, mask = self._check_inputs(input_ids, attention_mask)
        args = [tf.constant(ids), tf.constant(mask)]
        if self.config.is_encoder_decoder:
            if decoder_input_ids is None:
                raise GenerationArgumentError("encoder-decoder models need decoder_input_ids for logits(); "
                                              "start them with decoder_start_token_id")
            _, dec, _ = self._check_inputs(decoder_input_ids, None)
            if len(dec) != len(ids):
                raise GenerationArgumentError(f"decoder_input_ids has {len(dec)} rows but input_ids has {len(ids)}")
            args.append(tf.constant(dec))
        elif decoder_input_ids is not None:
            raise GenerationArgumentError(f"decoder_input_ids is only for encoder-decoder models, not {self.config.model_type}")
        key = tuple(a.shape for a in args)
        if key not in self._logit_programs:
            self._logit_programs[key] = tf.function(self.model.logits, jit_compile=True, autograph=False)
        return self._logit_programs[key](*args).numpy()
