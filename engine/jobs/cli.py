"""The `xlagen` command line.

    xlagen generate [--model PATH] [--max-new-tokens N] [--do-sample ...] [--bad-words W] [--stop TEXT]
                    [--assistant-model PATH [--assistant-dtype D] [--assistant-quantize int8]] [--eager] PROMPT...
    xlagen export [--model PATH] --out DIR --prompt-length P [--max-new-tokens N] [--batch-size B] [--do-sample ...]
    xlagen batch [--model PATH] --input FILE --output FILE [--batch-size B] [--on-error stop|skip] [--quiet]
                 [--runner DirectRunner [Beam options...]] [generation options...]

Both keep compiled programs in the persistent compile cache (--compile-cache) and keep
TensorFlow's C++ log lines off stderr unless --verbose.
"""
import argparse
import logging
import os
import re
import sys
import tempfile
import time
import warnings

# TensorFlow's C++ log lines ("I0000 00:00:... cudart_stub.cc:31] ...") and absl's notice before them.
_TF_LOG_LINE = re.compile(rb"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before absl::)")

# Generation options passed on only when given, so the checkpoint's defaults apply: (flag, type).
OPTIONS = [("min-new-tokens", int), ("temperature", float), ("top-k", int), ("top-p", float), ("num-beams", int),
           ("num-return-sequences", int), ("length-penalty", float), ("repetition-penalty", float),
           ("no-repeat-ngram-size", int), ("seed", int), ("typical-p", float), ("epsilon-cutoff", float),
           ("eta-cutoff", float), ("penalty-alpha", float), ("prompt-lookup-num-tokens", int),
           ("max-matching-ngram-size", int), ("num-assistant-tokens", int)]


def _add_options(parser):
    parser.add_argument("--model", default=None, help="checkpoint folder in Hub layout, or a Hub id (needs "
                                                      "huggingface_hub); default: the small GPT-2 bundled with xlagen")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    for flag, kind in OPTIONS:
        parser.add_argument("--" + flag, type=kind)
    parser.add_argument("--do-sample", action="store_true", default=None, help="sample instead of greedy decoding")
    parser.add_argument("--bad-words", action="append", metavar="WORD", default=None,
                        help="never generate WORD (repeatable): bans its tokens as written and after a space")
    parser.add_argument("--stop", action="append", metavar="TEXT", default=None,
                        help="end a completion at the token that completes TEXT (repeatable; stop_strings)")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit to load (Hub ids only)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="store the weight matrices as this dtype (default float32; computation stays float32)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="store the weight matrices as int8 with one scale per output row (load(quantize=...))")
    screen = parser.add_mutually_exclusive_group()
    screen.add_argument("--no-head-screen", dest="head_screen", action="store_const", const=False, default=None,
                        help="keep no int8 copy of a large float32 LM head for greedy steps to read "
                             "(load(head_screen=False)): the same tokens, a slower step, a quarter of the head less memory")
    screen.add_argument("--head-screen", dest="head_screen", action="store_const", const=True,
                        help="keep the int8 head screen however small the head (load(head_screen=True))")
    parser.add_argument("--compile-cache", metavar="DIR", default=None,
                        help="keep compiled programs in DIR for later runs (default: $XLAGEN_CACHE_DIR, else "
                             "~/.cache/xlagen/xla; an empty DIR turns the cache off)")
    parser.add_argument("--verbose", action="store_true", help="let TensorFlow's own log lines through to stderr")
    parser.add_argument("--progress", action="store_true",
                        help="say on stderr what compiles and how long it took even when stderr is not a terminal")


def bad_words_ids(tokenizer, words):
    """Token id sequences that spell each word as written and after a space (byte-level BPE
    tokenizes the two differently): transformers' bad_words_ids. Returns list[list[int]]."""
    sequences = []
    for word in words:
        for text in (word, " " + word):
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            if ids and ids not in sequences:
                sequences.append(ids)
    return sequences


def _options(args, tokenizer=None):
    """The generation options given on the command line (export also has --output-scores)."""
    names = ["max_new_tokens", "do_sample", "output_scores"] + [f.replace("-", "_") for f, _ in OPTIONS]
    given = {n: getattr(args, n, None) for n in names if getattr(args, n, None) is not None}
    if args.stop:
        given["stop_strings"] = args.stop
    if args.bad_words:
        if tokenizer is None:
            from xlagen.kernels.errors import GenerationArgumentError
            raise GenerationArgumentError("--bad-words needs the checkpoint's tokenizer.json")
        given["bad_words_ids"] = bad_words_ids(tokenizer, args.bad_words)
    return given


def _parser():
    parser = argparse.ArgumentParser(prog="xlagen", description="XLA decoding for GPT-2, OPT and T5 checkpoints in Hub layout.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="print a completion for each prompt")
    gen.add_argument("prompts", nargs="+", metavar="PROMPT")
    _add_options(gen)
    gen.add_argument("--assistant-model", metavar="PATH", default=None,
                     help="a small checkpoint (folder or Hub id) with the model's vocabulary that drafts tokens for "
                          "the model to check (assisted decoding; --num-assistant-tokens per step, default 3)")
    gen.add_argument("--assistant-dtype", choices=["float32", "bfloat16"], default=None,
                     help="store the assistant's weight matrices as this dtype (without --assistant-dtype and "
                          "--assistant-quantize the assistant is stored as the model is: --dtype, --quantize)")
    gen.add_argument("--assistant-quantize", choices=["int8"], default=None,
                     help="store the assistant's weight matrices as int8 (default: as the model, see "
                          "--assistant-dtype): a draft then reads a quarter of the bytes, and the model's check keeps "
                          "the model's own tokens")
    gen.add_argument("--eager", action="store_true",
                     help="run the decode functions op by op without XLA (jit_compile=False): slow, for debugging")
    export = sub.add_parser("export", help="write the whole generate program as a SavedModel (TF Serving ready)")
    export.add_argument("--out", required=True, help="new or empty directory for the SavedModel")
    export.add_argument("--prompt-length", type=int, required=True, help="width of input_ids the SavedModel takes")
    export.add_argument("--batch-size", type=int, default=None, help="fixed batch size (default: any)")
    export.add_argument("--output-scores", action="store_true", default=None,
                        help="also output sequence_scores and scores")
    _add_options(export)
    batch = sub.add_parser("batch", help="generate for every prompt of a file, into a JSON Lines file (resumable)",
                           epilog="With --runner, every option xlagen does not know goes to Apache Beam "
                                  "(--direct-num-workers 2, --project ..., ...).")
    batch.add_argument("--input", required=True, metavar="FILE",
                       help='prompts: JSON Lines ({"prompt": ..., "id": ...} a line) for a name ending in .jsonl, '
                            "else plain text, one prompt a line")
    batch.add_argument("--output", required=True, metavar="FILE",
                       help="JSON Lines results; a rerun skips the ids it already holds")
    batch.add_argument("--batch-size", type=int, default=None,
                       help="prompts per generate call (default: the largest power of two up to 32 that fits "
                            "the memory limit)")
    batch.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                       help="a bad input line stops the job before anything is generated (stop), or gets an "
                            "error line in the output (skip)")
    batch.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stderr")
    batch.add_argument("--runner", default=None,
                       help="run as an Apache Beam pipeline on this runner (DirectRunner, DataflowRunner, ...; "
                            "needs the beam extra)")
    batch.add_argument("--staging", default=None, metavar="DIR",
                       help="with --runner: where workers write their results (a gs:// folder on Dataflow; "
                            "default: a local temporary folder)")
    _add_options(batch)
    return parser


def _import_tensorflow(verbose):
    """Import TensorFlow; unless verbose, with its C++ start-up lines kept off stderr.

    TF_CPP_MIN_LOG_LEVEL quiets TensorFlow once absl logging is set up, but the lines logged
    while its libraries load (cudart_stub's "Could not find cuda drivers", ...) come before that
    and go straight to file descriptor 2: catch them there, pass on anything else."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True) if not _TF_LOG_LINE.match(line)]
            if kept:
                sys.stderr.buffer.write(b"".join(kept))
                sys.stderr.flush()


class _StatusLine(logging.Handler):
    """The "xlagen" logger's compile messages as one line on a terminal: what is compiling, then
    the seconds it took, on the same line."""

    def __init__(self, stream):
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record):
        status = getattr(record, "xlagen_status", None)
        if status == "start":
            self.stream.write(record.getMessage() + "\u2026")
        elif status == "done":
            self.stream.write(f" {record.seconds:.1f} s{record.cache_note}\n")
        else:
            self.stream.write(record.getMessage() + "\n")
        self.stream.flush()


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"xlagen: warning: {message}", file=sys.stderr)


def main(argv=None):
    """Entry point of the `xlagen` console script. Returns the process exit code."""
    parser = _parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not (args.command == "batch" and args.runner):
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    args.beam_args = beam_args
    if args.command == "generate" and not args.assistant_model and (args.assistant_dtype or args.assistant_quantize):
        parser.error("--assistant-dtype and --assistant-quantize set how --assistant-model is stored; "
                     "pass --assistant-model PATH too")
    _import_tensorflow(args.verbose)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _run(args)


class _Bar:
    """The batch job's progress bar on stderr (tqdm): prompts done of total, new tokens per
    second, ETA; compile messages of the "xlagen" logger show beside it."""

    def __init__(self, show):
        self.show, self.bar, self.tokens, self.start = show, None, 0, None

    def __call__(self, done, new, total):
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="prompt", desc="generating", file=sys.stderr, disable=not self.show,
                            dynamic_ncols=True)
            self.start = time.perf_counter()
        self.tokens += new
        self.bar.set_postfix_str(f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):.0f} tokens/s",
                                 refresh=False)
        self.bar.update(done)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _BarStatus(logging.Handler):
    """Compile messages as the bar's postfix, so that a long compile does not look hung."""

    def __init__(self, bar):
        super().__init__(logging.INFO)
        self.bar = bar

    def emit(self, record):
        if self.bar.bar is not None and getattr(record, "xlagen_status", None) == "start":
            self.bar.bar.set_postfix_str(record.getMessage() + "\u2026")


def _beam_options(argv):
    """Beam's own flags as given, with --dashed-names spelled as Beam's --underscored_names
    (--direct-num-workers 2 -> --direct_num_workers 2); values are left alone."""
    spelled = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + eq + value
        spelled.append(arg)
    return spelled


def _batch(args, gen):
    """xlagen batch: the job on this machine, or with --runner as a Beam pipeline."""
    from . import batch
    options = _options(args, gen.tokenizer)
    show = not args.quiet and (args.progress or sys.stderr.isatty())
    start = time.perf_counter()
    generate = None
    if args.runner:
        beam_args = _beam_options(args.beam_args)
        if not args.verbose:  # Beam's notes on import ("apitools not found", ...) and its workers' INFO lines
            logging.getLogger().setLevel(logging.ERROR)
            if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
                beam_args.append("--default_sdk_harness_log_level=ERROR")
        try:
            from . import beam_pipeline
        except ImportError as e:
            from xlagen.kernels.errors import XlagenError
            raise XlagenError(f"--runner needs Apache Beam ({e}): pip install 'xlagen[beam]'") from None

        def generate(todo, options):
            return beam_pipeline.generate(todo, ["--runner", args.runner] + beam_args, model=args.model, revision=args.revision,
                                          batch_size=args.batch_size, compile_cache=args.compile_cache, options=options,
                                          staging=args.staging, load_kwargs={"dtype": args.dtype, "quantize": args.quantize,
                                                                            "head_screen": args.head_screen})
    bar = _Bar(show and not args.runner)
    logger = logging.getLogger("xlagen")
    status = _BarStatus(bar)
    logger.addHandler(status)
    if show:
        logger.setLevel(logging.INFO)
    try:
        done = batch.run(gen, args.input, args.output, options, args.batch_size, args.on_error, progress=bar,
                         generate=generate)
    finally:
        logger.removeHandler(status)
        bar.close()
    if not args.quiet:
        seconds = time.perf_counter() - start
        print(f"xlagen: {done['prompts']} prompts: {done['generated']} generated now, {done['earlier']} by an earlier "
              f"run, {done['bad']} bad; {done['tokens']} new tokens in {seconds:.1f} s "
              f"({done['tokens'] / max(seconds, 1e-9):.0f} tokens/s); wrote {args.output}", file=sys.stderr)
    return 0


def _run(args):
    from xlagen.engine.compile_cache import enable_compile_cache
    from xlagen.engine.generator import load
    from xlagen.kernels.errors import XlagenError
    if not getattr(args, "eager", False):
        enable_compile_cache(args.compile_cache)
    logger = logging.getLogger("xlagen")
    if (args.progress or sys.stderr.isatty()) and not logger.handlers and args.command != "batch":
        logger.addHandler(_StatusLine(sys.stderr))
        logger.setLevel(logging.INFO)
    try:
        gen = load(args.model, revision=args.revision, dtype=args.dtype, quantize=args.quantize,
                   head_screen=args.head_screen)
        if args.command == "batch":
            return _batch(args, gen)
        if args.command == "export":
            gen.export(args.out, prompt_length=args.prompt_length, batch_size=args.batch_size,
                       **_options(args, gen.tokenizer))
            print(f"wrote {args.out}: serving_default takes input_ids, attention_mask [batch, {args.prompt_length}] int32")
            return 0
        options = _options(args, gen.tokenizer)
        if args.assistant_model:
            # Either assistant flag sets the assistant's storage alone; without them it is the model's.
            own = args.assistant_dtype is not None or args.assistant_quantize is not None
            options["assistant_model"] = load(
                args.assistant_model, revision=args.revision,
                dtype=args.assistant_dtype if own else args.dtype,
                quantize=args.assistant_quantize if own else args.quantize, head_screen=args.head_screen)
        texts = gen.generate_text(args.prompts, jit_compile=not args.eager, **options)
    except XlagenError as e:
        print(f"xlagen: error: {e}", file=sys.stderr)
        return 2
    for text in texts:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
