"""What low-precision weights cost in quality: load(dtype="bfloat16") and load(quantize="int8")
against float32 on the same checkpoint.

    python tools/quality_lowp.py [--prompts 50] [--gpt2-small /tmp/xlagen-bench/gpt2]

For the bundled model: held-out perplexity on its validation text (tools/train_default.py's
split: every 10th pydoc topic, never trained on), the largest logits difference against fp32
over that text, and for how many of N prompts (validation paragraphs' first 8 tokens) greedy
decoding of 32 tokens gives exactly fp32's tokens. For a GPT-2-small-shaped checkpoint with
random weights (tools/bench.py writes one): the logits difference and greedy agreement only
(its perplexity means nothing). Prints a markdown table (README, "Low-precision weights").
"""
import argparse
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import write_checkpoint  # noqa: E402
from train_default import eval_windows, split_corpus, token_stream  # noqa: E402
from xlagen.engine import load  # noqa: E402

VARIANTS = {"fp32": {}, "bf16": {"dtype": "bfloat16"}, "int8": {"quantize": "int8"}}


def perplexity_and_logits(gen, windows):
    """(perplexity over every weighted target, [K*B, T, V] logits float32) of gen on eval windows."""
    xs, ys, ws = windows
    total, count, logits = 0.0, 0.0, []
    for x, y, w in zip(xs, ys, ws):
        out = np.asarray(gen.logits(x, np.ones_like(x)), np.float64)
        logits.append(out.astype(np.float32))
        out -= out.max(-1, keepdims=True)
        logp = out - np.log(np.exp(out).sum(-1, keepdims=True))
        total -= (np.take_along_axis(logp, y[..., None], -1)[..., 0] * w).sum()
        count += w.sum()
    return math.exp(total / count), np.concatenate(logits)


def greedy(gen, prompts, new):
    """Greedy tokens [N, new] of each prompt (a list of id lists), one call per prompt."""
    return [np.asarray(gen.generate(np.asarray([p], np.int32), max_new_tokens=new, min_new_tokens=new))[0, len(p):]
            for p in prompts]


def measure(path, prompts, new, windows=None):
    """{variant: row dict} for one checkpoint."""
    rows, base = {}, {}
    for name, kwargs in VARIANTS.items():
        gen = load(path, **kwargs)
        row = {"weight MB": gen.weight_bytes / 1e6}
        if windows is not None:
            row["perplexity"], logits = perplexity_and_logits(gen, windows)
        else:
            logits = np.asarray(gen.logits(np.asarray([p + [1] * (8 - len(p)) for p in prompts], np.int32)))
        tokens = greedy(gen, prompts, new)
        if name == "fp32":
            base = {"logits": logits, "tokens": tokens, "perplexity": row.get("perplexity")}
        row["max |logits - fp32|"] = float(np.abs(logits - base["logits"]).max())
        row["greedy = fp32"] = sum(np.array_equal(a, b) for a, b in zip(tokens, base["tokens"]))
        if windows is not None:
            row["perplexity vs fp32"] = row["perplexity"] / base["perplexity"] - 1
        rows[name] = row
        print(name, row, flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gpt2-small", default="/tmp/xlagen-bench/gpt2", help="where the random GPT-2-small checkpoint is (written if absent)")
    args = parser.parse_args(argv)

    gen = load()
    _, val = split_corpus()
    paragraphs = [p for text in val for p in text.split("\n\n") if len(p) > 80]
    step = max(1, len(paragraphs) // args.prompts)
    prompts = [gen.tokenizer.encode(p).ids[:8] for p in paragraphs[::step][:args.prompts]]
    windows = eval_windows(token_stream(gen.tokenizer, val), gen.config.n_positions, 8)
    tables = {"bundled model": measure(gen.path, prompts, args.new_tokens, windows)}
    small = write_checkpoint("gpt2", args.gpt2_small)
    rng = np.random.RandomState(0)
    tables["GPT-2-small shape, random weights"] = measure(
        small, [rng.randint(0, 50000, size=8).tolist() for _ in range(args.prompts)], args.new_tokens)
    print(f"\n| checkpoint | weights | MB | perplexity (vs fp32) | max logits diff | greedy = fp32 (of {args.prompts}) |")
    print("|---|---|---|---|---|---|")
    for checkpoint, rows in tables.items():
        for name, r in rows.items():
            ppl = f"{r['perplexity']:.3f} ({100 * r['perplexity vs fp32']:+.2f}%)" if "perplexity" in r else "—"
            print(f"| {checkpoint} | {name} | {r['weight MB']:.1f} | {ppl} | {r['max |logits - fp32|']:.4f} | {r['greedy = fp32']} |")


if __name__ == "__main__":
    main()
