"""Lesson 8: top-k and top-p without sorting the vocabulary.

top-p keeps the most likely tokens until their probability reaches p; top-k keeps the k most
likely. The textbook way sorts all V logits every step (transformers sorts 50,257 floats per row).
Both only need a threshold, though: the k-th largest logit, or the logit where the mass runs
out. Read as integers, float32 values keep their order (kernels/sampling.py `ordered_key`), so
the threshold can be found by bisection over the 2**32 keys: 33 passes of one masked reduction
over V (17 passes trying 3 keys for a single row), any k or p given as a tensor, and no sort
(kernels/sampling.py `top_p`, `top_k`, `largest_key_where`).

Here both are compiled by XLA over a 50,257-word vocabulary (GPT-2's): the kept sets are the
same, and the table gives microseconds per call.

    python tools/lessons/08_sort_free_top_p.py [--vocab 50257] [--batch 1 4 16] [--model PATH] [--quick]
                                               [--plot FILE.png]

Without --model the logits are random (V = --vocab); with it, the checkpoint's own next-token
logits for a prompt.
"""
import numpy as np

import common

VOCAB = 50257


def top_p_sort(logits, p):
    """Top-p by a full sort and cumulative sum, as transformers' TopPLogitsWarper does it: sort
    ascending, drop the tokens whose cumulative mass stays within 1 - p, never the last."""
    import tensorflow as tf
    order = tf.argsort(logits, axis=-1)  # ascending
    probs = tf.nn.softmax(tf.gather(logits, order, batch_dims=1), -1)
    drop = tf.cumsum(probs, axis=-1) <= tf.cast(1.0 - p, tf.float32)
    drop = tf.concat([drop[:, :-1], tf.zeros_like(drop[:, -1:])], axis=-1)  # the most likely token stays
    drop = tf.scatter_nd(tf.stack([tf.broadcast_to(tf.range(tf.shape(order)[0])[:, None], tf.shape(order)), order], -1),
                         drop, tf.shape(order))
    return tf.where(drop, -float("inf"), logits)


def top_k_sort(logits, k):
    """Top-k through a full sort (k is a tensor, so tf.math.top_k's static k cannot serve)."""
    import tensorflow as tf
    kth = tf.gather(tf.sort(logits, axis=-1, direction="DESCENDING"), tf.fill([tf.shape(logits)[0], 1], k - 1),
                    batch_dims=1)
    return tf.where(logits < kth, -float("inf"), logits)


def main(argv=None):
    args = common.arguments(__doc__, argv, options=[
        ("--vocab", dict(type=int, default=VOCAB, help="vocabulary size of the random logits (default: GPT-2's)")),
        ("--batch", dict(type=int, nargs="+", default=[1, 4, 16], help="rows per call"))])
    import tensorflow as tf
    from xlagen.kernels import sampling
    batches = args.batch[:1] if args.quick else args.batch
    if args.model is not None:  # a checkpoint's own next-token logits, repeated over rows
        gen = common.load(args.model)
        real = gen.logits(common.prompt(gen))[:, -1]
    budget = 0.05 if args.quick else 0.3  # seconds per timed run
    methods = {"top-p bisection": (sampling.top_p, tf.constant(0.9, tf.float64)),
               "top-p sort": (top_p_sort, tf.constant(0.9, tf.float64)),
               "top-k bisection": (sampling.top_k, tf.constant(50)),
               "top-k sort": (top_k_sort, tf.constant(50))}
    rows, same, curves = [], [], {name: ([], []) for name in methods}
    for batch in batches:
        if args.model is None:
            logits = np.random.default_rng(batch).standard_normal((batch, args.vocab)) * 3
        else:
            logits = np.repeat(real, batch, axis=0)
        logits = tf.constant(logits.astype(np.float32))
        us, kept = {}, {}
        for name, (warp, value) in methods.items():
            program = tf.function(warp, jit_compile=True, autograph=False)
            kept[name] = np.isfinite(program(logits, value).numpy())
            _, once = common.seconds(lambda: program(logits, value).numpy())
            reps = max(1, min(200, int(budget / max(once, 1e-6))))  # about `budget` seconds a run
            us[name] = common.best_seconds(lambda: [program(logits, value) for _ in range(reps)][-1].numpy(), 5) / reps * 1e6
            curves[name][0].append(batch)
            curves[name][1].append(us[name])
        same.append(bool(np.array_equal(kept["top-p bisection"], kept["top-p sort"])
                         and np.array_equal(kept["top-k bisection"], kept["top-k sort"])))
        rows.append([batch, *us.values(), us["top-p sort"] / us["top-p bisection"]])

    vocab = logits.shape[-1]
    print(f"V = {vocab}, microseconds per call (best of 5 runs of ~{budget} s each):\n")
    common.table(["rows", *methods, "top-p: sort / bisection"], rows)
    print(f"\nbisection and sorting keep the same tokens: {all(same)}")
    if args.plot:
        common.plot(args.plot, f"Thresholds over V = {vocab}", "rows", "microseconds per call", curves,
                    logx=True, logy=True)
    return {"same_kept": same, "batches": batches, "us": curves}


if __name__ == "__main__":
    main()
