"""load() and the Generator: a loaded checkpoint, and generate, logits, decode_call and export
over its compiled programs. The work is done elsewhere: planning.py checks a call and chooses
its program, loops/ decodes, programs.py keeps the compiled programs, text.py handles text."""
import os
import warnings
import weakref

import numpy as np
import tensorflow as tf

from xlagen import models
from xlagen.kernels import precision
from xlagen.kernels.errors import GenerationArgumentError
from xlagen.kernels.search import NO_TOKEN

from . import buckets, compile_cache, defaults, export as export_lib, loops, options, planning, text
from .limits import default_memory_limit
from .planning import DecodeCall, GenerateOutput, Plan  # noqa: F401  (public names of this module)
from .programs import MAX_PROGRAMS, Programs
from .text import MAX_BATCH, left_pad  # noqa: F401  (public names of this module)

if os.environ.get(compile_cache.ENV):  # opt-in from Python: the variable set before xlagen.engine is used
    compile_cache.enable_compile_cache()


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
        self.checked_assistants = weakref.WeakSet()  # assistant Generators whose vocabulary was checked
        self.max_programs = max_programs  # checked by the setter
        self._warn_unapplied()

    def _warn_unapplied(self):
        """Warn, once at load, about each generation default of the checkpoint that changes
        tokens in transformers and that xlagen does not apply."""
        given = defaults.checkpoint_defaults(self.generation_config, self.config)
        source = "generation_config.json" if given is self.generation_config else "config.json"
        for name, value in defaults.unapplied(given).items():
            warnings.warn(f"{os.path.join(self.path, source)} sets {name}={value!r}: xlagen does not apply {name}; "
                          f"its tokens will differ from transformers'", stacklevel=3)

    @property
    def vocab_size(self):
        """The model's vocabulary size V (python int)."""
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
        options.int_option("max_programs", limit, 1)
        self._programs.limit = limit


    # -- generate ---------------------------------------------------------------------------

    def options_for(self, kwargs, width):
        """generate's keyword options (a dict) for prompts `width` ids wide, resolved against the
        checkpoint's defaults and checked: engine.options.Options."""
        return planning.options_for(self, kwargs, width)

    def _run_program(self, call):
        """Run a DecodeCall's compiled program, tracing and compiling it on first use.
        Returns its dict of output tensors."""
        plan, batch = call.plan, len(call.args[0])
        strategy = plan.strategy
        group = {"beam": f", {strategy.group} beams", "contrastive": f", {strategy.group} candidates"}.get(
            strategy.loop, f", {strategy.group} rows per prompt" if strategy.group > 1 else "")
        what = (f"{strategy.name} program for batch {batch}{group}, prompt {plan.width}, "
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
        given = planning.as_ids("input_ids", input_ids)
        opts = planning.options_for(self, kwargs, given.shape[1])  # before the mask: its inference needs the pad and EOS ids
        given, mask = planning.check_inputs(self, given, attention_mask, opts)
        plan = planning.plan(self, opts, len(given), given.shape[1], int(mask.sum(axis=1).max()))
        # Bucket padding holds NO_TOKEN, which the processors ignore; the output drops it again.
        inputs, padded_mask = planning.pad_left(given, mask, plan.opts.pad_to_multiple_of, NO_TOKEN)
        model, strategy, new = self.model, plan.strategy, plan.opts.max_new_tokens

        def function(input_ids, attention_mask, knobs):
            return loops.generate(model, input_ids, attention_mask, new, knobs, strategy)

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
            (see engine/loops/processing.py for the order); seed (an int or a pair of
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
        jit_compile = planning.check_jit_compile(kwargs.pop("jit_compile", True))
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
        return export_lib.export(self, directory, prompt_length=prompt_length, max_new_tokens=max_new_tokens,
                      batch_size=batch_size, **kwargs)

    # -- text -------------------------------------------------------------------------------

    def require_tokenizer(self):
        """The checkpoint's tokenizers.Tokenizer; GenerationArgumentError when it has no tokenizer.json."""
        return text.require_tokenizer(self)

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
        return text.generate_text(self, prompts, return_full_text, **kwargs)

    def encode_prompts(self, prompts):
        """Token ids of each text prompt (list of str -> list of list of int); a prompt that
        encodes to no tokens raises GenerationArgumentError naming its index."""
        return text.encode_prompts(self, prompts)

    def batch_size_for(self, width, **kwargs):
        """The largest batch (a power of two, at most MAX_BATCH) of prompts `width` tokens wide
        whose generate call fits the memory limit with these options (python int >= 1)."""
        return text.batch_size_for(self, width, **kwargs)

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
        return text.generate_many(self, prompts, batch_size, return_full_text, progress, **kwargs)

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
        jit_compile = planning.check_jit_compile(jit_compile)
        ids, mask = planning.check_inputs(self, input_ids, attention_mask)
        multiple = options.int_option("pad_to_multiple_of", pad_to_multiple_of, 1)
        if memory_limit is not None:
            memory_limit = options.float_option("memory_limit", memory_limit, 0.0, float("inf"), low_open=True)
        if self.model.continues_prompt:
            if decoder_input_ids is not None:
                raise GenerationArgumentError(f"decoder_input_ids is only for encoder-decoder models, not {self.config.model_type}")
            decoder, scored = None, ids.shape[1]
        else:
            if decoder_input_ids is None:
                raise GenerationArgumentError("encoder-decoder models need decoder_input_ids for logits(); "
                                              "start them with decoder_start_token_id")
            decoder, _ = planning.check_inputs(self, decoder_input_ids, None)
            if len(decoder) != len(ids):
                raise GenerationArgumentError(f"decoder_input_ids has {len(decoder)} rows but input_ids has {len(ids)}")
            scored = decoder.shape[1]
            # The decoder is causal: padding on the right changes none of the scored positions.
            decoder = np.pad(decoder, ((0, 0), (0, buckets.padded_width(scored, multiple) - scored)))
        longest = int(mask.sum(axis=1).max())
        planning.check_positions(self, f"the longest input ({longest} tokens)", longest)
        ids, mask = planning.pad_left(ids, mask, multiple, 0)
        batch, width = ids.shape
        parts = self.model.forward_memory_estimate(batch, width, None if decoder is None else decoder.shape[1])
        planning.check_memory(self, parts, memory_limit, f"batch {batch}, {width} positions",
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
