"""The `xlagen` command line.

    xlagen generate [--model PATH] [--max-new-tokens N] [--do-sample ...] [--bad-words W] [--stop TEXT] [--eager] PROMPT...
    xlagen export [--model PATH] --out DIR --prompt-length P [--max-new-tokens N] [--batch-size B] [--do-sample ...]
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: keep its start-up chatter off

# Generation options passed on only when given, so the checkpoint's defaults apply: (flag, type).
OPTIONS = [("min-new-tokens", int), ("temperature", float), ("top-k", int), ("top-p", float), ("num-beams", int),
           ("num-return-sequences", int), ("length-penalty", float), ("repetition-penalty", float),
           ("no-repeat-ngram-size", int), ("seed", int), ("typical-p", float), ("epsilon-cutoff", float),
           ("eta-cutoff", float), ("penalty-alpha", float)]


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
            from xlagen.models import GenerationArgumentError
            raise GenerationArgumentError("--bad-words needs the checkpoint's tokenizer.json")
        given["bad_words_ids"] = bad_words_ids(tokenizer, args.bad_words)
    return given


def _parser():
    parser = argparse.ArgumentParser(prog="xlagen", description="XLA decoding for GPT-2, OPT and T5 checkpoints in Hub layout.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="print a completion for each prompt")
    gen.add_argument("prompts", nargs="+", metavar="PROMPT")
    _add_options(gen)
    gen.add_argument("--eager", action="store_true",
                     help="run the decode functions op by op without XLA (jit_compile=False): slow, for debugging")
    export = sub.add_parser("export", help="write the whole generate program as a SavedModel (TF Serving ready)")
    export.add_argument("--out", required=True, help="new or empty directory for the SavedModel")
    export.add_argument("--prompt-length", type=int, required=True, help="width of input_ids the SavedModel takes")
    export.add_argument("--batch-size", type=int, default=None, help="fixed batch size (default: any)")
    export.add_argument("--output-scores", action="store_true", default=None,
                        help="also output sequence_scores and scores")
    _add_options(export)
    return parser


def main(argv=None):
    """Entry point of the `xlagen` console script. Returns the process exit code."""
    args = _parser().parse_args(argv)
    from xlagen.engine import load
    from xlagen.models import XlagenError
    try:
        gen = load(args.model)
        if args.command == "export":
            gen.export(args.out, prompt_length=args.prompt_length, batch_size=args.batch_size,
                       **_options(args, gen.tokenizer))
            print(f"wrote {args.out}: serving_default takes input_ids, attention_mask [batch, {args.prompt_length}] int32")
            return 0
        texts = gen.generate_text(args.prompts, jit_compile=not args.eager, **_options(args, gen.tokenizer))
    except XlagenError as e:
        print(f"xlagen: error: {e}", file=sys.stderr)
        return 2
    for text in texts:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
