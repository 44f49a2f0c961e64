"""The `xlagen` command line.

    xlagen generate --model PATH [--max-new-tokens N] PROMPT...
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: keep its start-up chatter off


def _parser():
    parser = argparse.ArgumentParser(prog="xlagen", description="XLA decoding for GPT-2 checkpoints in Hub layout.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="print a completion for each prompt")
    gen.add_argument("prompts", nargs="+", metavar="PROMPT")
    gen.add_argument("--model", required=True, help="checkpoint folder in Hub layout, or a Hub id (needs huggingface_hub)")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--min-new-tokens", type=int, default=None)
    return parser


def main(argv=None):
    """Entry point of the `xlagen` console script. Returns the process exit code."""
    args = _parser().parse_args(argv)
    from xlagen.engine import load
    from xlagen.models import XlagenError
    try:
        gen = load(args.model)
        options = {"max_new_tokens": args.max_new_tokens}
        if args.min_new_tokens is not None:
            options["min_new_tokens"] = args.min_new_tokens
        texts = gen.generate_text(args.prompts, **options)
    except XlagenError as e:
        print(f"xlagen: error: {e}", file=sys.stderr)
        return 2
    for text in texts:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
