"""Time top-k / top-p thresholding under XLA on CPU: bisection (ours) against sorting.

    python tools/bench_warpers.py [--vocab 50257] [--batch 1 16]

Prints best-of-5 microseconds per call for each method. The sort-based versions are the
obvious alternatives (transformers sorts the whole vocabulary; tf.math.top_k needs a static k).
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from xlagen.kernels import sampling  # noqa: E402


def top_p_sort(logits, p):
    """Top-p by a full descending sort and cumulative sum (the textbook way)."""
    probs = tf.nn.softmax(logits, -1)
    sorted_probs = tf.sort(probs, axis=-1, direction="DESCENDING")
    cum = tf.cumsum(sorted_probs, axis=-1, exclusive=True)
    kept = tf.reduce_sum(tf.cast(cum < tf.cast(p, tf.float32), tf.int32), -1, keepdims=True)
    floor = tf.gather(sorted_probs, kept - 1, batch_dims=1)
    return tf.where(probs < floor, -float("inf"), logits)


def top_k_sort(logits, k):
    """Top-k through a full sort (k is a tensor, so tf.math.top_k cannot be used under XLA)."""
    kth = tf.gather(tf.sort(logits, axis=-1, direction="DESCENDING"), tf.fill([tf.shape(logits)[0], 1], k - 1), batch_dims=1)
    return tf.where(logits < kth, -float("inf"), logits)


def bench(fn, *args, reps=200):
    f = tf.function(fn, jit_compile=True)
    f(*args)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            out = f(*args)
        out.numpy()
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    for batch in args.batch:
        logits = tf.constant(np.random.RandomState(0).randn(batch, args.vocab).astype(np.float32) * 3)
        p, k = tf.constant(0.9, tf.float64), tf.constant(50)
        rows = {"top-p bisection": bench(sampling.top_p, logits, p), "top-p sort": bench(top_p_sort, logits, p),
                "top-k bisection": bench(sampling.top_k, logits, k), "top-k sort": bench(top_k_sort, logits, k)}
        for name, us in rows.items():
            print(f"B={batch:3d} V={args.vocab} {name:16s} {us:9.1f} us")


if __name__ == "__main__":
    main()
