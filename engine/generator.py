"""The public Generator: load a checkpoint, generate token ids or text, compute logits."""
import collections
import logging
import os
import threading
import time
import warnings
import weakref
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from xlagen import models
from xlagen.kernels.search import NO_TOKEN
from xlagen.models import GenerationArgumentError, MemoryLimitError

from . import compile_cache, decode, options, stop_strings
from .limits import default_memory_limit

log = logging.getLogger("xlagen")

if os.environ.get(compile_cache.ENV):  # opt-in from Python: the variable set before xlagen.engine is used
    compile_cache.enable_compile_cache()

# Compiled programs a Generator keeps (generate and logits together) before it drops the least
# recently used: a server that sees many shapes must not grow without bound.
MAX_PROGRAMS = 32
# The largest batch generate_many chooses by itself (README, "Generate over a file").
MAX_BATCH = 32


def load(name_or_path=None, memory_limit=None, max_programs=MAX_PROGRAMS, revision=None, dtype=None, quantize=None,
         head_screen=None):
    """Load a checkpoint folder in Hub layout, a Hub id (with huggingface_hub installed), or,
    with no argument or "default", the small GPT-2 trained on Python's documentation that
    ships inside the package.

    Reads config.json, model.safetensors or a sharded model.safetensors.index.json, and
    generation_config.json and tokenizer.json when present.
    memory_limit: bytes one generate call may allocate (KV cache and working memory), checked
    before anything is compiled; None means half the memory available to this process (the
    container's cgroup limit when one is set). Also settable later as `gen.memory_limit`, or
    per call with generate(..., memory_limit=...).
    max_programs: compiled programs (generate and logits) kept at once; beyond it the least
    recently used is dropped and compiles again if it is needed again.
    revision: for a Hub id, the branch, tag or commit to load (None: the default branch).
    dtype: how the weight matrices are stored, "float32" (None) or "bfloat16", whatever the
      files hold (float32, float16 and bfloat16 checkpoints all load).
    quantize: "int8" stores every matrix (embeddings and LM head included) as int8 with one
      float32 scale per output row, computed here from the checkpoint's weights; vectors (norms,
      biases) stay float32. Computation, the KV cache and the logits stay float32 either way.
      README, "Low-precision weights", has the measured speed and quality.
    head_screen: keep an int8 copy of a float32 LM head (a quarter of its size: 39 MB for
      GPT-2-small) from which greedy steps of up to 4 rows pick their token exactly, reading
      the float32 head only for the few rows that could win (kernels.screen; README, "The head
      screen"). None (the default): for heads of at least 4M weights (kernels.screen.MIN_ELEMENTS),
      where it pays; True: for any float32 head; False: never. No effect with dtype= or quantize=.
    Returns a Generator. Raises a subclass of xlagen.models.XlagenError naming the file at fault.
    """
    from xlagen.kernels import precision
    try:
        precision.check(dtype, quantize)
    except ValueError as e:
        raise GenerationArgumentError(f"load(): {e}") from None
    folder = models.resolve(name_or_path, revision)
    if head_screen is not None and not isinstance(head_screen, (bool, np.bool_)):
        raise GenerationArgumentError(f"load(): head_screen must be None (for large heads), True or False, "
                                      f"got {head_screen!r}")
    config, model = models.load_model(folder, dtype, quantize)
    if head_screen is not False:
        model.add_screen(small=bool(head_screen))
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
    return Generator(folder, config, model, generation_config, tokenizer, memory_limit, max_programs)


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


_INT32 = np.iinfo(np.int32)


def _as_ids(name, value):
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


def _jit_compile(value):
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

    opts: options.Options.  strategy: decode.Strategy.
    width: python int, the prompt width the program takes (the bucket; prompt_length for export).
    context: python int, the width of the sequence before the new tokens as transformers counts
      it (the prompt as given, or 1 for encoder-decoders).
    stop: engine.stop_strings.StopTables, or None without stop strings.
    """
    opts: options.Options
    strategy: decode.Strategy
    width: int
    context: int
    stop: object = None

    def knobs(self):
        """The call's Knobs, as tensors."""
        return decode.knob_tensors(self.opts, self.context, self.stop.arrays if self.stop else ())

    def knob_specs(self):
        """The program's Knobs, as TensorSpecs."""
        stop = [tf.TensorSpec(a.shape, tf.int32) for a in self.stop.arrays] if self.stop else ()
        return decode.knob_specs(self.strategy, tuple(stop))


class DecodeCall(NamedTuple):
    """A generate call, checked and prepared (Generator.decode_call).

    function: python callable (input_ids [B, S] int32, attention_mask [B, S] int32,
      knobs decode.Knobs) -> dict of tensors, decode.generate's outputs ("sequences"
      [B * R, S' + N] int32, ...), for this call's model, strategy and max_new_tokens.
    args: (input_ids, attention_mask, knobs) for it: the prompts left padded to their bucket
      S, as tf.Tensors, and the call's knobs.
    plan: Plan.
    """
    function: object
    args: tuple
    plan: Plan


class Programs:
    """Compiled programs by static key, at most `limit` of them, the least recently used dropped
    first. Thread-safe; a program built here counts in `traces` when it is traced.

    A program's first call traces and compiles it (or loads it from the persistent compile
    cache), and says so on the "xlagen" logger at INFO level, as it starts and when it is done.
    """

    def __init__(self, limit):
        self.limit = limit
        self._programs = collections.OrderedDict()
        self._lock = threading.Lock()
        self.traces = 0

    def __len__(self):
        return len(self._programs)

    def _get(self, key, build, fresh=False):
        """(program, new): the program for `key`, built by build(count_trace) -> tf.function when
        missing (or when `fresh`); new when it was built by this call."""
        with self._lock:
            if key in self._programs and not fresh:
                self._programs.move_to_end(key)
                return self._programs[key], False
            program = self._programs[key] = build(self._count)
            # Every program is its own tf.function, traced once. TensorFlow counts the traces of all
            # functions made from one piece of Python code, and from the sixth shape on (a batch job
            # over several buckets) it would warn of "retracing" that is by design here.
            if hasattr(program, "_omit_frequent_tracing_warning"):
                program._omit_frequent_tracing_warning = True
            self._programs.move_to_end(key)
            while len(self._programs) > max(1, self.limit):
                self._programs.popitem(last=False)
            return program, True

    def run(self, key, build, args, what):
        """Call the program for `key` on `args` (a tuple of tensors), building it with
        build(count_trace) when missing; the function must call count_trace() once per trace.
        what: str, the program for the log, "greedy program for batch 1, prompt 8, 32 new tokens".
        Returns the program's outputs."""
        program, new = self._get(key, build)
        if not new:
            return program(*args)
        log.info("compiling %s", what, extra={"xlagen_status": "start"})
        cached, start = compile_cache.entries(), time.perf_counter()
        try:
            out = program(*args)
        except tf.errors.OpError as error:
            if compile_cache.folder() is None:
                raise
            # A cache entry that cannot be loaded fails the call. A new tf.function has new names,
            # so it misses the cache and compiles; if it fails too, the fault was not the cache's.
            out = self._get(key, build, fresh=True)[0](*args)
            compile_cache.discard_unloadable(error)
        seconds = time.perf_counter() - start
        how = "" if compile_cache.folder() is None else (
            " (saved to the compile cache)" if compile_cache.entries() - cached else " (from the compile cache)")
        log.info("compiled %s in %.1f s%s", what, seconds, how,
                 extra={"xlagen_status": "done", "seconds": seconds, "cache_note": how})
        return out

    def _count(self):
        with self._lock:
            self.traces += 1


class Generator:
    """A loaded checkpoint plus its compiled generate and logits programs.

    Attributes:
      config: the model config dataclass (models.gpt2.GPT2Config, ...).
      generation_config: dict from generation_config.json, or None.
      tokenizer: tokenizers.Tokenizer from tokenizer.json, or None.
      path: the local folder the files were read from.
      trace_count: how many programs (generate and logits) have been traced so far; each trace
        is one XLA compilation, as every program has fully static input shapes.
      memory_limit: bytes one call may allocate; larger calls raise MemoryLimitError.
      max_programs: compiled programs kept at once (least recently used dropped first).
    """

    def __init__(self, path, config, model, generation_config=None, tokenizer=None, memory_limit=None,
                 max_programs=MAX_PROGRAMS):
        self.path, self.config, self.model = path, config, model
        self.memory_limit = default_memory_limit() if memory_limit is None else memory_limit
        self.generation_config, self.tokenizer = generation_config, tokenizer
        self._programs = Programs(MAX_PROGRAMS)
        self._assistants = weakref.WeakSet()  # assistant Generators whose vocabulary was checked
        self.max_programs = max_programs  # checked by the setter
        self._warn_unapplied()

    def _warn_unapplied(self):
        """Warn, once at load, about each generation default of the checkpoint that changes
        tokens in transformers and that xlagen does not apply."""
        defaults = options.checkpoint_defaults(self.generation_config, self.config)
        source = "generation_config.json" if defaults is self.generation_config else "config.json"
        for name, value in options.unapplied(defaults).items():
            warnings.warn(f"{os.path.join(self.path, source)} sets {name}={value!r}: xlagen does not apply {name}; "
                          f"its tokens will differ from transformers'", stacklevel=3)

    @property
    def vocab_size(self):
        return self.config.vocab_size

    @property
    def weight_bytes(self):
        """Resident bytes of the model's weights as stored (python int): float32 4 per weight,
        bfloat16 2, int8 1 plus a float32 scale per row (load(dtype=, quantize=))."""
        return self.model.weight_bytes

    @property
    def trace_count(self):
        return self._programs.traces

    @property
    def max_programs(self):
        return self._programs.limit

    @max_programs.setter
    def max_programs(self, limit):
        options._int("max_programs", limit, 1)
        self._programs.limit = limit

    # -- inputs -----------------------------------------------------------------------------

    def _check_inputs(self, input_ids, attention_mask, opts=None):
        """Validate ids and mask; returns (ids, mask), each [B, T] int32.

        Without a mask and with generate's options `opts`, the mask is inferred as transformers
        does (ids != pad_token_id where the pad id occurs and is no EOS id)."""
        ids = _as_ids("input_ids", input_ids)
        if attention_mask is None:
            mask = self._infer_mask(ids, opts) if opts is not None else np.ones_like(ids)
        else:
            mask = _as_ids("attention_mask", attention_mask)
        if mask.shape != ids.shape:
            raise GenerationArgumentError(f"attention_mask has shape {list(mask.shape)} but input_ids has {list(ids.shape)}; they must match")
        if not np.isin(mask, (0, 1)).all():
            raise GenerationArgumentError("attention_mask must hold only 0 (padding) and 1 (token)")
        if (mask.sum(axis=1) == 0).any():
            raise GenerationArgumentError(f"rows {np.flatnonzero(mask.sum(axis=1) == 0).tolist()} of attention_mask are all padding; every row needs a token")
        bad = ((ids < 0) | (ids >= self.vocab_size)) & (mask == 1)
        if bad.any():
            raise GenerationArgumentError(f"input_ids holds token ids outside [0, {self.vocab_size}): {sorted(set(ids[bad].tolist()))[:10]}")
        if self.model.continues_prompt and (mask[:, -1] == 0).any():
            warnings.warn("a row of attention_mask ends in padding: decoder-only models need left padding "
                          "(tokenizer padding_side='left'); results for right-padded rows are not meaningful", stacklevel=3)
        return ids, mask

    @staticmethod
    def _infer_mask(ids, opts):
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

    @staticmethod
    def _pad_left(ids, mask, multiple, pad_id):
        """Left-pad [B, W] to the next multiple of `multiple`, so prompts of one bucket share a program."""
        width = ids.shape[1]
        extra = -width % multiple
        if not extra:
            return ids, mask
        return (np.pad(ids, ((0, 0), (extra, 0)), constant_values=pad_id), np.pad(mask, ((0, 0), (extra, 0))))

    def _check_positions(self, prompt, prompt_len, max_new_tokens=0):
        """Raise GenerationArgumentError when prompt_len + max_new_tokens exceeds the model's
        positions (models with relative positions have no limit); `prompt` names the prompt
        length in the message."""
        limit, total = self.config.max_positions, prompt_len + max_new_tokens
        if limit is not None and total > limit:
            more = f" plus max_new_tokens={max_new_tokens} is {total}," if max_new_tokens else " is"
            raise GenerationArgumentError(
                f"{prompt}{more} beyond the model's {limit} positions; shorten the prompt"
                + (" or max_new_tokens" if max_new_tokens else ""))

    def _check_memory(self, parts, limit, what, advice):
        """Raise MemoryLimitError, with the figures, when the estimated `parts` ({name: bytes})
        of a call exceed `limit` (None: the Generator's memory_limit)."""
        limit = self.memory_limit if limit is None else limit
        total = sum(parts.values())
        if total > limit:
            detail = ", ".join(f"{name} {_size(n)}" for name, n in parts.items())
            raise MemoryLimitError(
                f"this call needs about {_size(total)} ({detail}; {what}), above the memory limit of {_size(limit)}. "
                f"{advice}, or raise the limit for this call with memory_limit=BYTES or for the Generator with "
                f"load(..., memory_limit=BYTES)")

    # -- generate ---------------------------------------------------------------------------

    def _prefix_width(self, prompt_width):
        """Width of what generate's output holds before the new tokens: the prompt, or the start token."""
        return prompt_width if self.model.continues_prompt else 1

    def _options(self, kwargs, width):
        """generate's keyword options for prompts `width` ids wide, resolved against the checkpoint's defaults."""
        return options.parse(kwargs, self.generation_config, self.config, self._prefix_width(width), self.vocab_size,
                             self.model.supports_extend)

    def _memory_parts(self, opts, strategy, batch, padded):
        """The estimated bytes of a generate call, {part: bytes} (model.memory_estimate, and the scores)."""
        # prompt lookup's cache has room for K positions past the last new token
        parts = self.model.memory_estimate(batch, padded, strategy.group, opts.max_new_tokens + strategy.draft_tokens)
        if strategy.assistant is not None:
            parts["assistant kv cache"] = strategy.assistant.memory_estimate(
                batch, padded, strategy.group, opts.max_new_tokens + strategy.draft_tokens)["kv cache"]
        if strategy.output_scores:  # multi-token steps keep a spare slot for the positions they drop
            slots = opts.max_new_tokens + (1 if strategy.draft_tokens else 0)
            parts["scores"] = slots * batch * strategy.group * self.vocab_size * 4
        return parts

    def _check_assistant(self, assistant):
        """Refuse an assistant_model that cannot draft for this model (GenerationArgumentError)."""
        if not isinstance(assistant, Generator):
            raise GenerationArgumentError(f"assistant_model must be an xlagen Generator (xlagen.engine.load(...)), "
                                          f"got {type(assistant).__name__}")
        if not assistant.model.supports_extend:
            raise GenerationArgumentError(f"assistant_model {assistant.path} is an encoder-decoder; the assistant "
                                          f"must be a decoder-only model (GPT-2, OPT)")
        if assistant.vocab_size != self.vocab_size:
            raise GenerationArgumentError(
                f"assistant_model {assistant.path} has a vocabulary of {assistant.vocab_size} tokens and this model "
                f"{self.vocab_size}; the assistant must share the model's vocabulary")
        if assistant in self._assistants:
            return
        if (self.tokenizer is not None and assistant.tokenizer is not None
                and self.tokenizer.get_vocab() != assistant.tokenizer.get_vocab()):
            raise GenerationArgumentError(f"assistant_model {assistant.path} has another tokenizer than {self.path}; "
                                          f"the assistant must share the model's vocabulary, token for token")
        self._assistants.add(assistant)  # checked once: comparing 50k-entry vocabularies is not free

    def _plan(self, opts, batch, width, longest, bucket=True):
        """Check a call before anything compiles and choose its program: the one preparation
        path of generate and export.

        Args:
          opts: options.Options (see _options).  batch: python int, or None (any; export).
          width: python int, the prompt width given.  longest: python int, the longest real prompt.
          bucket: pad the width up to pad_to_multiple_of (generate) or keep it (export).
        Returns:
          Plan.
        """
        self._check_positions(f"the longest prompt ({longest} tokens)", longest, opts.max_new_tokens)
        stop = None
        if opts.controls.stop_strings:
            if self.tokenizer is None:
                raise GenerationArgumentError(f"stop_strings needs a tokenizer, and {self.path} has no tokenizer.json; "
                                              f"stop on token ids with eos_token_id instead")
            stop = stop_strings.stop_string_tables(self.tokenizer, opts.controls.stop_strings)
        if opts.assistant_model is not None:
            self._check_assistant(opts.assistant_model)
        strategy = decode.strategy_for(opts, stop.key if stop else ())
        padded = width + (-width % opts.pad_to_multiple_of if bucket else 0)
        if batch is not None:
            parts = self._memory_parts(opts, strategy, batch, padded)
            rows = f"batch {batch} x {strategy.group} {'beams' if strategy.kind == 'beam' else 'rows'} per prompt"
            self._check_memory(parts, opts.memory_limit,
                               f"{rows}, {self.model.num_cache_layers} layers, {padded} + {opts.max_new_tokens} positions",
                               "Lower the batch, num_beams / num_return_sequences or max_new_tokens")
        return Plan(opts, strategy, padded, self._prefix_width(width), stop)

    def _run_program(self, call):
        """Run a DecodeCall's compiled program, tracing and compiling it on first use.
        Returns its dict of output tensors."""
        plan, batch = call.plan, len(call.args[0])
        strategy = plan.strategy
        group = {"beam": f", {strategy.group} beams", "contrastive": f", {strategy.group} candidates"}.get(
            strategy.kind, f", {strategy.group} rows per prompt" if strategy.group > 1 else "")
        what = (f"{strategy.kind} program for batch {batch}{group}, prompt {plan.width}, "
                f"{plan.opts.max_new_tokens} new tokens")

        def build(count_trace):
            def run(input_ids, attention_mask, knobs):
                count_trace()  # runs once per trace, never in the compiled program
                return call.function(input_ids, attention_mask, knobs)

            ids = tf.TensorSpec([batch, plan.width], tf.int32)
            return tf.function(run, jit_compile=True, reduce_retracing=False, autograph=False,
                               input_signature=[ids, ids, plan.knob_specs()])

        return self._programs.run(("generate", batch, plan.width, plan.opts.max_new_tokens, strategy), build,
                                  call.args, what)

    def decode_call(self, input_ids, attention_mask=None, **kwargs):
        """Check a generate call and prepare it without running it: the plain decode function
        and the tensors it takes. generate() runs it compiled (or eagerly); lessons and
        experiments can run it eagerly, wrap it in tf.function with or without XLA, or change a
        knob (`call.args[2]._replace(temperature=...)`) and call it again.

        Args:
          input_ids, attention_mask, **kwargs: as for generate (jit_compile excepted).
        Returns:
          DecodeCall.
        """
        if "jit_compile" in kwargs:
            raise GenerationArgumentError("decode_call returns the plain function, neither compiled nor run; call it "
                                          "eagerly or wrap it in tf.function yourself, and drop jit_compile")
        given = _as_ids("input_ids", input_ids)
        opts = self._options(kwargs, given.shape[1])  # before the mask: its inference needs the pad and EOS ids
        given, mask = self._check_inputs(given, attention_mask, opts)
        plan = self._plan(opts, len(given), given.shape[1], int(mask.sum(axis=1).max()))
        # Bucket padding holds NO_TOKEN, which the processors ignore; the output drops it again.
        inputs, padded_mask = self._pad_left(given, mask, plan.opts.pad_to_multiple_of, NO_TOKEN)
        model, strategy, new = self.model, plan.strategy, plan.opts.max_new_tokens

        def function(input_ids, attention_mask, knobs):
            return decode.generate(model, input_ids, attention_mask, new, knobs, strategy)

        return DecodeCall(function, (tf.constant(inputs), tf.constant(padded_mask), plan.knobs()), plan)

    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Generate tokens after a batch of prompts: greedy, sampling (do_sample=True) or beam
        search (num_beams > 1).

        Args:
          input_ids: [B, W] ints (list, numpy or tf); left padded for decoder-only models, padded on
            either side for encoder-decoders; a 1-D sequence is one row.
          attention_mask: [B, W] of 0/1, or None: then, as in transformers, ids equal to
            pad_token_id are padding when that id occurs and is no EOS id, else nothing is.
          **kwargs: transformers' generation options (max_new_tokens, max_length, min_new_tokens,
            do_sample, temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size,
            num_beams, length_penalty, early_stopping, num_return_sequences, eos_token_id,
            pad_token_id, decoder_start_token_id, output_scores, penalty_alpha (contrastive search),
            prompt_lookup_num_tokens and max_matching_ngram_size (decoding that checks up to K
            tokens copied from the row's own history per model step: the tokens of plain greedy,
            or samples from the same distribution, in fewer steps when the output repeats its
            input; decoder-only models),
            assistant_model (another xlagen Generator with the same vocabulary, which drafts
            num_assistant_tokens tokens (default 3) per model step for the model to check:
            greedy, the tokens of plain greedy; with do_sample, speculative sampling, whose
            tokens are distributed as plain sampling's),
            bad_words_ids, sequence_bias, suppress_tokens, begin_suppress_tokens,
            forced_bos_token_id, forced_eos_token_id, typical_p, epsilon_cutoff, eta_cutoff,
            renormalize_logits, encoder_repetition_penalty, encoder_no_repeat_ngram_size,
            remove_invalid_values, exponential_decay_length_penalty, stop_strings (with the
            checkpoint's tokenizer)), defaults from generation_config.json (or config.json when
            there is none); logits_processor: a list of functions f(logits [R, V] float32,
            history [R, S + N] int32 (-1 in empty slots), step int32 scalar) -> [R, V] float32,
            traced into the program after xlagen's processors and before the sampling warpers
            (see engine/processing.py for the order); seed (an int or a pair of
            int32: the same seed and inputs give the same tokens); pad_to_multiple_of (default 8),
            the prompt bucket; memory_limit (bytes) for this call, instead of the Generator's;
            jit_compile (default True): False runs the very same decode functions eagerly, op
            by op, without tf.function or XLA, so that a breakpoint or print inside a model or
            a decode loop sees real values (slow: for reading and debugging, not serving); the
            tokens are the compiled program's (up to float ties: XLA orders some float sums
            differently), and trace_count does not move.
        Returns:
          np.ndarray int32 [B * num_return_sequences, W + max_new_tokens] for decoder-only models:
          the prompt as given, then the new tokens; [B * num_return_sequences, 1 + max_new_tokens]
          for encoder-decoders: decoder_start_token_id, then the new tokens. pad_token_id after a
          row's EOS; the returns of prompt 0 first.
          With output_scores=True, a GenerateOutput (see there).
        """
        jit_compile = _jit_compile(kwargs.pop("jit_compile", True))
        call = self.decode_call(input_ids, attention_mask, **kwargs)
        if jit_compile:
            out = self._run_program(call)
        else:  # the same function, run op by op: nothing is traced or compiled
            out = call.function(*call.args)
        out = {k: v.numpy() for k, v in out.items()}
        opts = call.plan.opts
        sequences = out["sequences"][:, -(call.plan.context + opts.max_new_tokens):]
        if not opts.output_scores:
            return sequences
        lookup = {}
        if "accepted" in out:
            ran = int((out["accepted"] >= 0).any(axis=0).sum())
            lookup = {"accepted": out["accepted"][:, :ran], "drafted": out["drafted"][:, :ran]}
        return GenerateOutput(sequences, tuple(out["scores"][:int(out["steps"])]), out["transition_scores"],
                              out.get("sequences_scores"), **lookup)

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
            in beam search. output_scores=True adds generate's GenerateOutput fields to the
            outputs: scores ([N, rows, V] float32, generate's tuple stacked, 0 for steps not
            run), steps (int32), transition_scores ([batch * R, N] float32) and, in beam
            search, sequences_scores ([batch * R] float32).
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
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise GenerationArgumentError("prompts must be a str or a non-empty list of str")
        encoded = self.encode_prompts(prompts)
        texts, _ = self._complete(encoded, return_full_text, kwargs)
        return [text for group in texts for text in group]

    def encode_prompts(self, prompts):
        """Token ids of each text prompt (list of str -> list of list of int); a prompt that
        encodes to no tokens raises GenerationArgumentError naming its index."""
        tokenizer = self._require_tokenizer()
        encoded = [e.ids for e in tokenizer.encode_batch(list(prompts))]
        for index, ids in enumerate(encoded):
            if not ids:
                raise GenerationArgumentError(f"prompt {index} ({prompts[index]!r}) encodes to no tokens; "
                                              f"give every prompt some text")
        return encoded

    def _complete(self, encoded, return_full_text, kwargs):
        """Generate after one batch of encoded prompts and decode: ([[str] * R per prompt],
        [new tokens of each prompt's R rows, up to and including each row's EOS: python int])."""
        tokenizer = self._require_tokenizer()
        ids, mask = left_pad(encoded)
        out = self.generate(ids, attention_mask=mask, **kwargs)
        sequences = out.sequences if isinstance(out, GenerateOutput) else out
        returns = len(sequences) // len(encoded)  # rows of prompt 0 first
        start = self._prefix_width(ids.shape[1])
        new = sequences[:, start:]
        eos = self._options({k: v for k, v in kwargs.items() if k != "jit_compile"}, ids.shape[1]).eos_token_ids
        ended = np.isin(new, eos) if eos else np.zeros(new.shape, bool)
        # A row's tokens: those up to its first EOS (included), or all of them.
        counts = np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, new.shape[1])
        # A continuation is decoded together with its prompt, so tokens that join across the seam decode as one.
        keep = return_full_text and self.model.continues_prompt
        texts = [tokenizer.decode((encoded[row // returns] if keep else []) + new[row].tolist(),
                                  skip_special_tokens=True) for row in range(len(sequences))]
        return ([texts[i:i + returns] for i in range(0, len(texts), returns)],
                counts.reshape(len(encoded), returns).sum(axis=1).tolist())

    def batch_size_for(self, width, **kwargs):
        """The largest batch (a power of two, at most MAX_BATCH) of prompts `width` tokens wide
        whose generate call fits the memory limit with these options (python int >= 1)."""
        opts = self._options(kwargs, width)
        strategy = decode.strategy_for(opts)
        padded = width + (-width % opts.pad_to_multiple_of)
        limit = self.memory_limit if opts.memory_limit is None else opts.memory_limit
        batch = MAX_BATCH
        while batch > 1 and sum(self._memory_parts(opts, strategy, batch, padded).values()) > limit:
            batch //= 2
        return batch

    def generate_many(self, prompts, batch_size=None, return_full_text=False, progress=None, **kwargs):
        """Generate after many text prompts, batched by length: yields (index, completions) as
        each batch finishes, in the order of the batches (not of the prompts).

        Prompts are grouped by their token length's bucket (pad_to_multiple_of, default 8) and
        each group is cut into batches of batch_size; a group's last, smaller batch is filled
        up, by repeating one of its prompts (those rows are dropped), to batch_size when the
        group had full batches and else to a power of two: a whole job compiles about one
        program per bucket, never one per prompt.
        Args:
          prompts: a sequence of str.
          batch_size: python int, prompts per generate call; None: the largest power of two up
            to MAX_BATCH (32) that fits the memory limit, per bucket (batch_size_for).
          return_full_text: as for generate_text (default False: the completion only).
          progress: None, or a function called after each batch with (prompts done in that
            batch, new tokens generated in it), e.g. to update a progress bar.
          **kwargs: generation options, as for generate (the same for every prompt).
        Yields:
          (index: python int into prompts, completions: list of num_return_sequences str).
        """
        prompts = list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise GenerationArgumentError("prompts must be a sequence of str")
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                                       or batch_size < 1):
            raise GenerationArgumentError(f"batch_size must be a positive int or None, got {batch_size!r}")
        encoded = self.encode_prompts(prompts)
        multiple = self._options(kwargs, 1).pad_to_multiple_of
        buckets = collections.defaultdict(list)
        for index, ids in enumerate(encoded):
            buckets[-(-len(ids) // multiple) * multiple].append(index)
        for width in sorted(buckets):
            indices = buckets[width]
            size = batch_size or self.batch_size_for(width, **kwargs)
            for first in range(0, len(indices), size):
                chunk = indices[first:first + size]
                # The last batch of a bucket that had full ones reuses their program; a bucket
                # smaller than one batch takes the next power of two.
                rows = size if len(indices) >= size else min(stop_strings._bucket(len(chunk), 1), size)
                filled = chunk + chunk[-1:] * (rows - len(chunk))
                texts, tokens = self._complete([encoded[i] for i in filled], return_full_text, kwargs)
                if progress is not None:
                    progress(len(chunk), sum(tokens[:len(chunk)]))
                yield from zip(chunk, texts)

    # -- logits -----------------------------------------------------------------------------

    def logits(self, input_ids, attention_mask=None, decoder_input_ids=None, pad_to_multiple_of=8, memory_limit=None,
               jit_compile=True):
        """Logits of every position in one forward pass.

        Args:
          input_ids: [B, T] ints (left padded for decoder-only models).
          attention_mask: [B, T] of 0/1, or None for no padding.
          decoder_input_ids: [B, T_dec] ints, required for encoder-decoders (teacher forcing:
            usually decoder_start_token_id followed by target tokens), refused otherwise.
          pad_to_multiple_of: python int, inputs are padded up to a multiple of it, so that
            lengths of one bucket share a compiled program (as generate's prompts).
          memory_limit: bytes for this call, instead of the Generator's.
          jit_compile: python bool; False runs the model's forward pass eagerly, op by op (see
            generate).
        Returns:
          np.ndarray float32 [B, T, V] (decoder-only; values at padding positions are meaningless)
          or [B, T_dec, V] (encoder-decoder).
        """
        jit_compile = _jit_compile(jit_compile)
        ids, mask = self._check_inputs(input_ids, attention_mask)
        multiple = options._int("pad_to_multiple_of", pad_to_multiple_of, 1)
        if memory_limit is not None:
            memory_limit = options._float("memory_limit", memory_limit, 0.0, float("inf"), low_open=True)
        if self.model.continues_prompt:
            if decoder_input_ids is not None:
                raise GenerationArgumentError(f"decoder_input_ids is only for encoder-decoder models, not {self.config.model_type}")
            decoder, scored = None, ids.shape[1]
        else:
            if decoder_input_ids is None:
                raise GenerationArgumentError("encoder-decoder models need decoder_input_ids for logits(); "
                                              "start them with decoder_start_token_id")
            decoder, _ = self._check_inputs(decoder_input_ids, None)
            if len(decoder) != len(ids):
                raise GenerationArgumentError(f"decoder_input_ids has {len(decoder)} rows but input_ids has {len(ids)}")
            scored = decoder.shape[1]
            # The decoder is causal: padding on the right changes none of the scored positions.
            decoder = np.pad(decoder, ((0, 0), (0, -scored % multiple)))
        longest = int(mask.sum(axis=1).max())
        self._check_positions(f"the longest input ({longest} tokens)", longest)
        ids, mask = self._pad_left(ids, mask, multiple, 0)
        batch, width = ids.shape
        parts = self.model.forward_memory_estimate(batch, width, None if decoder is None else decoder.shape[1])
        self._check_memory(parts, memory_limit, f"batch {batch}, {width} positions",
                           "Lower the batch or the length")
        args = [tf.constant(ids), tf.constant(mask)] + ([] if decoder is None else [tf.constant(decoder)])

        def build(count_trace):
            def run(*args):
                count_trace()
                return self.model.logits(*args)
            return tf.function(run, jit_compile=True, reduce_retracing=False, autograph=False,
                               input_signature=[tf.TensorSpec(a.shape, tf.int32) for a in args])

        if jit_compile:
            key = ("logits",) + tuple(tuple(a.shape) for a in args)
            logits = self._programs.run(key, build, args, f"logits program for batch {batch}, {width} positions").numpy()
        else:
            logits = self.model.logits(*args).numpy()
        # Decoder-only: the bucket padding is on the left; encoder-decoder: on the decoder's right.
        return logits[:, logits.shape[1] - scored:] if decoder is None else logits[:, :scored]
