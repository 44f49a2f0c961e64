"""Lesson 9: greedy's argmax from a quarter of the LM head.

A one-row decode step reads every weight once, so its time is set by bytes, and the LM head is
the largest matrix (GPT-2-small: 154 MB of about 500 in float32). Greedy decoding uses one
number from it, the index of the largest logit. An int8 copy of the head (one byte per weight)
gives every logit within a radius known in advance: |x . row - x . int8 row| <= |x| |row - int8
row| (Cauchy-Schwarz). Only the tokens whose upper bound reaches the best exact logit can win,
and those few are computed exactly from their float32 rows (kernels/screen.py). The token is
the float32 argmax; the step reads about a quarter of the head's bytes.

This lesson loads one checkpoint with and without the screen (load(head_screen=...)), checks
that greedy gives the same tokens, times a token both ways, and counts, at every step of the
prompt's greedy continuation, how many tokens the bound could not rule out.

    python tools/lessons/09_head_screen.py [--model PATH | --random gpt2|opt|t5] [--tokens N] [--quick]
                                           [--plot FILE.png]

The bundled model's head is 2.4 MB, small enough to stay in cache: the screen saves it
nothing, and load() gives it none unless asked (head_screen=True, as here). --random gpt2 writes (once) and uses tools/bench.py's random GPT-2-small-shaped
checkpoint, where the head is the 154 MB of the paragraph above.
"""
import os
import tempfile

import numpy as np

import common


def undecided(gen, ids, sequence):
    """At each greedy step that chose a token of `sequence` (the output for prompt ids [1, P]),
    how many tokens the screen's bound could not rule out (upper bound >= the largest exact
    logit, the winner included); python list of ints."""
    import tensorflow as tf
    model = gen.model
    if model.config.is_encoder_decoder:  # the decoder's hidden states, one step at a time
        start = tf.constant(sequence[0, 0])
        _, state, _, hidden = model.prefill(tf.constant(ids), tf.ones_like(ids), start, sequence.shape[1], 1,
                                            hidden=True)
        states = [hidden[:, -1]]
        for token in sequence[0, 1:-1]:
            _, state, hidden = model.step(tf.constant([[token]]), state, hidden=True)
            states.append(hidden[:, -1])
        hidden = tf.concat(states, 0)
    else:  # every position at once: the one before each new token
        fed = sequence[:, :-1]
        hidden = model.prefill(tf.constant(fed), tf.ones_like(fed), tf.constant(0), 1, 1, hidden=True)[3][0]
        hidden = hidden[ids.shape[1] - 1:]
    x = model.head_input(hidden).numpy().astype(np.float64)
    screen = model.screen
    approx = x @ (screen.values.numpy() * screen.scale.numpy()[:, None].astype(np.float64)).T
    upper = approx + np.linalg.norm(x, axis=1, keepdims=True) * screen.radius.numpy()
    best = (x @ model.head_table.numpy().astype(np.float64).T).max(axis=1, keepdims=True)
    return (upper >= best).sum(axis=1).tolist()


def main(argv=None):
    args = common.arguments(__doc__, argv, options=[
        ("--random", dict(choices=["gpt2", "opt", "t5"], default=None,
                          help="random weights shaped like this model (tools/bench.py's checkpoint) instead of --model")),
        ("--tokens", dict(type=int, default=32, help="new tokens per timed call"))])
    from xlagen.engine import load
    import bench
    path = args.model
    if args.random:
        path = bench.write_checkpoint(args.random, os.path.join(tempfile.gettempdir(), "xlagen-bench", args.random))
    gens = {"screen": load(path, head_screen=True), "whole head": load(path, head_screen=False)}
    tokens = 8 if args.quick else args.tokens
    ids = common.prompt(gens["screen"])
    out = {name: np.asarray(g.generate(ids, max_new_tokens=tokens)) for name, g in gens.items()}
    same = bool(np.array_equal(out["screen"], out["whole head"]))
    reps = 3 if args.quick else 10
    ms = {name: common.best_seconds(lambda: g.generate(ids, max_new_tokens=tokens), reps) / tokens * 1e3
          for name, g in gens.items()}
    model = gens["screen"].model
    head = model.head_table
    vocab, width = head.shape
    left = undecided(gens["screen"], ids, out["screen"])
    radius = model.screen.radius.numpy() / np.maximum(np.linalg.norm(head.numpy(), axis=1), 1e-30)

    print(f"LM head {vocab} x {width}: {head.shape.num_elements() * 4 / 1e6:.1f} MB float32, "
          f"screen {model.screen.nbytes / 1e6:.1f} MB (int8, a scale and a radius per row)")
    print(f"radius / |row|: median {np.median(radius):.4f}, max {radius.max():.4f}\n")
    common.table(["head", "ms per token", "tokens"], [[name, ms[name], "same" if same else "differ"] for name in gens])
    counts = np.bincount(np.minimum(left, 5))[1:]
    print(f"\ntokens the bound left per step, over {len(left)} steps: "
          + ", ".join(f"{n if n < 5 else '5+'}: {c}" for n, c in enumerate(counts, start=1) if c))
    print(f"greedy tokens with and without the screen are the same: {same}")
    if args.plot:
        common.plot(args.plot, f"Greedy step, {vocab} x {width} head", "", "ms per token",
                    {"ms per token": (list(ms), list(ms.values()))}, bars=True)
    return {"same_tokens": same, "ms": ms, "undecided": left}


if __name__ == "__main__":
    main()
