"""How fast XLA:CPU streams a weight matrix through a few-row product, by matrix size.

    python tools/bench_gemv.py [--batch 1] [--reps 20]

A greedy decode step is a chain of one-row products (x @ W^T through kernels.layers.dense),
so its speed is bounded by the bandwidth these products reach; a beam-4 step's products have
4 rows (--batch 4: XLA:CPU runs them as Eigen calls instead of its matrix-vector kernel). Each
size runs as one jit-compiled program of several independent products over distinct matrices
(so no matrix is still in cache), best of --reps calls, and prints ms per product and GB/s of
weights read.
GPT-2 small's sizes: 2304x768 (q, k, v), 768x768 (attention output), 3072x768 (MLP, both
directions have that many weights), 50257x768 (LM head); 61440x768 for comparison.
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import best_seconds  # noqa: E402  (tools/bench.py)
from xlagen.kernels import layers  # noqa: E402

SIZES = ((2304, 40), (768, 40), (3072, 40), (50257, 3), (61440, 3))  # (rows, products)


def time_products(rows, count, reps, x_rows=1):
    """(seconds per product, GB/s) for `count` products of [x_rows, 768] @ [rows, 768]^T."""
    rng = np.random.RandomState(0)
    kernels = [tf.Variable(rng.randn(rows, 768).astype(np.float32)) for _ in range(count)]
    x = tf.constant(rng.randn(x_rows, 768).astype(np.float32))

    @tf.function(jit_compile=True)
    def products(x):
        return tf.add_n([tf.reduce_sum(layers.dense(x, kernel)) for kernel in kernels])

    products(x).numpy()
    seconds = best_seconds(lambda: products(x).numpy(), reps) / count
    return seconds, rows * 768 * 4 / seconds / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1, help="rows of x: 1 for greedy, 4 for 4 beams")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)
    for rows, count in SIZES:
        seconds, rate = time_products(rows, count, args.reps, args.batch)
        print(f"{args.batch} x [{rows:5d}, 768] x {count:2d}: {seconds * 1e3:6.3f} ms per product, {rate:5.1f} GB/s")


if __name__ == "__main__":
    main()
