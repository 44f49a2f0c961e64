"""The `xlagen` command line.

    xlagen generate [--model PATH] [--max-new-tokens N] [--do-sample ...] PROMPT...
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: keep its start-up chatter off


def _parser():
    parser = argparse.ArgumentParser(prog="xlagen", description="XLA decoding for GPT-2, OPT and T5 checkpoints in Hub layout.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="print a completion for each prompt")
    gen.add_argument("prompts", nargs="+", metavar="PROMPT")
    gen.add_argument("--model", default=None, help="checkpoint folder in Hub layout, or a Hub id (needs huggingface_hub); "
                                                   "default: the small GPT-2 bundled with xlagen")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    # Options below are passed to generate only when given, so the checkpoint's defaults apply.
    gen.add_argument("--min-new-tokens", type=int)
    gen.add_argument("--do-sample", action="store_true", default=None, help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--num-beams", type=int)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--no-repeat-ngram-size", type=int)
    gen.add_argument("--seed", type=int)
    return parser


def main(argv=None):
    """Entry point of the `xlagen` console script. Returns the process exit code."""
    args = _parser().parse_args(argv)
    from xlagen.engine import load
    from xlagen.models import XlagenError
    try:
        gen = load(args.model)
        names = ("max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p", "num_beams",
                 "repetition_penalty", "no_repeat_ngram_size", "seed")
        options = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
        texts = gen.generate_text(args.prompts, **options)
    except XlagenError as e:
        print(f"xlagen: error: {e}", file=sys.stderr)
        return 2
    for text in texts:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
