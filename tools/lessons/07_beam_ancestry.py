"""Lesson 7: how can beams swap histories without copying the cache?

Each beam-search step keeps the G best continuations, and a surviving beam may continue another
beam's history. The textbook way gathers the whole KV cache by parent row every step:
layers x 2 (keys, values) x G x heads x length x head_dim floats read and written, growing with
the length. xlagen never moves a key: every row writes its keys into its own slots, and a table
ancestry[b, g, n] (which row's slot holds row g's position n) is all that is gathered on a swap
(kernels/cache.py `reorder`); attention reads each row's history through it
(kernels/attention.py `attend_step`), at the price of scoring all G rows' slots.

Here both run N decode steps of attention with random parents each step, at the model's sizes:
xlagen's functions against a gathering variant written below. Same outputs; bytes moved per
step by the swap and measured ms per step over lengths N.

    python tools/lessons/07_beam_ancestry.py [--model PATH] [--quick] [--plot FILE.png]
"""
import numpy as np

import common

BEAMS = 4


def sizes(gen):
    """(layers, heads, head_dim) of the model's self-attention cache."""
    return gen.model.num_cache_layers, gen.model.num_heads, gen.model.head_dim


def ancestry_steps(qkv, parents, layers):
    """N steps of attention with xlagen's cache: keys stay where they were written, the
    ancestry table is reordered. qkv: [N, 3, 1, G, H, D] float32; parents: [N, 1, G] int32.
    Returns the last step's attention output [1, G, H, D] and each row's keys as it sees them
    [1, G, N, H, D]."""
    import tensorflow as tf
    from xlagen.kernels import attention, cache
    steps, _, b, group, heads, d = qkv.shape
    prompt = tf.zeros([b, heads, 1, d])  # a one-token prompt, masked out below
    kvs = tuple(cache.start(prompt, prompt, group, steps) for _ in range(layers))
    layout = cache.start_layout(tf.zeros([b, 1], tf.int32), group, steps)

    def step(t, kvs, layout, out):
        q, k, v = tf.unstack(qkv[t])
        new = []
        for kv in kvs:
            out, kv = attention.attend_step(q, k, v, kv, layout, d ** -0.5)
            new.append(kv)
        return t + 1, tuple(new), cache.reorder(cache.advance(layout), parents[t]), out

    _, kvs, layout, out = tf.while_loop(lambda t, *_: t < steps, step, (0, kvs, layout, tf.zeros([b, group, heads, d])))
    # Row g's key at position n lives in slot n * G + ancestry[g, n].
    return out, _own(tf.reshape(kvs[0].new_k, [b, heads, steps, group, d]), layout.ancestry)


def _own(keys, ancestry):
    """keys [1, H, N, G, D] by slot, ancestry [1, G, N] -> [1, G, N, H, D] as each row sees them."""
    import tensorflow as tf
    by_row = tf.transpose(keys, [0, 2, 3, 1, 4])  # [1, N, G(slot), H, D]
    index = tf.transpose(ancestry, [0, 2, 1])  # [1, N, G]: the slot row g reads at position n
    return tf.transpose(tf.gather(by_row, index, axis=2, batch_dims=2), [0, 2, 1, 3, 4])


def gathering_steps(qkv, parents, layers):
    """The textbook variant: a [G, H, N, D] cache per layer, gathered by parent every step.
    Same arguments and results as ancestry_steps."""
    import tensorflow as tf
    from xlagen.kernels import cache
    steps, _, b, group, heads, d = qkv.shape
    empty = tf.zeros([group, heads, steps, d])

    def step(t, keys, values, out):
        q, k, v = (x[0] for x in tf.unstack(qkv[t]))  # [G, H, D]
        new_keys, new_values = [], []
        for kk, vv in zip(keys, values):
            kk = cache.update_slice(kk, k[:, :, None], tf.stack([0, 0, t, 0]))
            vv = cache.update_slice(vv, v[:, :, None], tf.stack([0, 0, t, 0]))
            scores = tf.einsum("ghd,ghnd->ghn", q, kk) * d ** -0.5
            scores += tf.where(tf.range(steps) <= t, 0.0, -1e9)
            out = tf.einsum("ghn,ghnd->ghd", tf.nn.softmax(scores), vv)
            # The swap: every row copies its parent's whole cache.
            new_keys.append(tf.gather(kk, parents[t][0]))
            new_values.append(tf.gather(vv, parents[t][0]))
        return t + 1, new_keys, new_values, out[None]

    _, keys, _, out = tf.while_loop(lambda t, *_: t < steps, step,
                                    (0, [empty] * layers, [empty] * layers, tf.zeros([b, group, heads, d])))
    return out, tf.transpose(keys[0], [0, 2, 1, 3])[None]


def main(argv=None):
    args = common.arguments(__doc__, argv)
    import tensorflow as tf
    gen = common.load(args.model)
    layers, heads, d = sizes(gen)
    lengths = [16, 32] if args.quick else [32, 64, 128, 256, 512]
    variants = {"ancestry (xlagen)": ancestry_steps, "gather the cache": gathering_steps}
    programs = {name: tf.function(f, jit_compile=True, autograph=False) for name, f in variants.items()}
    rows, curves, agree = [], {name: ([], []) for name in variants}, []
    for steps in lengths:
        rng = np.random.default_rng(steps)
        qkv = tf.constant(rng.normal(size=(steps, 3, 1, BEAMS, heads, d)).astype(np.float32))
        parents = tf.constant(rng.integers(0, BEAMS, size=(steps, 1, BEAMS)).astype(np.int32))
        outs = {name: [x.numpy() for x in program(qkv, parents, layers)] for name, program in programs.items()}
        (a_out, a_keys), (g_out, g_keys) = outs.values()
        agree.append(np.allclose(a_out, g_out, atol=1e-5) and np.array_equal(a_keys, g_keys))
        ms = {name: common.best_seconds(lambda: program(qkv, parents, layers)[0].numpy(), 3) / steps * 1e3
              for name, program in programs.items()}
        table_bytes = 2 * BEAMS * steps * 4  # the [1, G, N] int32 table, read and written
        cache_bytes = layers * 2 * 2 * BEAMS * heads * steps * d * 4  # keys and values, read and written
        rows.append([steps, f"{table_bytes / 1024:.1f} KiB", f"{cache_bytes / 1024:.0f} KiB",
                     *ms.values()])
        for name in variants:
            curves[name][0].append(steps)
            curves[name][1].append(ms[name])

    print(f"{BEAMS} beams, {layers} layers x {heads} heads x {d} dims, N steps (best of 3):\n")
    common.table(["N", "swap moves: table", "swap moves: cache", *(f"ms/step {n}" for n in variants)], rows)
    print(f"\nboth variants give every row the same keys and attention output: {all(agree)}")
    if args.plot:
        common.plot(args.plot, f"Beam-search attention, {BEAMS} beams", "steps (N)", "ms per step", curves,
                    logx=True, logy=True)
    return {"agree": agree, "lengths": lengths, "ms": curves}


if __name__ == "__main__":
    main()
