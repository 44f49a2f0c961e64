"""Throughput of generation over many prompts: Generator.generate_many (bucketed batches)
against one generate_text call per prompt, in one process, on the same prompts.

    python tools/bench_batch.py [--model PATH] [--prompts 1000] [--single 100] [--max-new-tokens 32]
                                [--write prompts.jsonl]

The prompts are the first 2-40 words of paragraphs of Python's own documentation
(pydoc_data.topics), so their lengths span several buckets. One call per prompt runs on the
first --single of them (it is the slow side); both sides are timed after a warm-up that
compiles their programs, and reported as prompts/s and new tokens/s. --write also saves all
the prompts as JSON Lines, the input of `xlagen batch`.
"""
import argparse
import json
import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_prompts(count):
    """`count` prompts (str) of 2-40 words, from pydoc_data.topics paragraphs, the same every run."""
    from pydoc_data.topics import topics
    paragraphs = [re.sub(r"\s+", " ", p).strip() for name in sorted(topics) for p in topics[name].split("\n\n")]
    paragraphs = [p for p in paragraphs if len(p.split()) >= 40]
    return [" ".join(paragraphs[n % len(paragraphs)].split()[:2 + (n * 7) % 39]) for n in range(count)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="prompts timed one call each (0: none)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--write", metavar="FILE.jsonl", default=None)
    args = parser.parse_args(argv)
    prompts = make_prompts(args.prompts)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps({"id": n, "prompt": p}) + "\n" for n, p in enumerate(prompts)))
    from xlagen.engine import load
    gen = load(args.model)
    options = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)  # every row: N tokens

    def batched(texts):
        return dict(gen.generate_many(texts, batch_size=args.batch_size, **options))

    def single(texts):
        return [gen.generate_text(t, return_full_text=False, **options) for t in texts]

    rows = []
    sides = [("generate_many", batched, prompts)] + ([("one call per prompt", single, prompts[:args.single])]
                                                      if args.single else [])
    for name, run, texts in sides:
        start = time.perf_counter()
        run(texts)  # compiles every program the run needs
        first = time.perf_counter() - start
        start = time.perf_counter()
        run(texts)
        seconds = time.perf_counter() - start
        rows.append((name, len(texts), first, seconds, len(texts) / seconds, len(texts) * args.max_new_tokens / seconds))
    print(f"{'':22s} {'prompts':>8s} {'first run s':>12s} {'again s':>8s} {'prompts/s':>10s} {'tokens/s':>9s}")
    for name, n, first, seconds, rate, tokens in rows:
        print(f"{name:22s} {n:8d} {first:12.1f} {seconds:8.1f} {rate:10.1f} {tokens:9.0f}")
    if len(rows) > 1:
        print(f"generate_many: {rows[0][4] / rows[1][4]:.1f}x the prompts per second of one call per prompt")


if __name__ == "__main__":
    main()
