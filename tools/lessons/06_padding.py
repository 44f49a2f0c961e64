"""Lesson 6: why count positions from each row's first real token?

A batch needs one width, so shorter prompts are padded on the left; the padding is masked out
of attention. But a model with learned position embeddings (GPT-2, OPT) also adds an embedding
per position id. Counting ids from the left edge (0..T-1, the textbook arange) gives a row
padded by p the ids p..T-1 instead of 0..T-1-p: other embeddings, other hidden states, other
tokens than the same prompt alone. xlagen counts each row's positions from its first real token,
cumsum(attention_mask) - 1, and continues each row from its own length
(kernels/positions.py `from_mask`, `next_position`).

Here a left-padded batch decodes greedily with xlagen's positions and with the textbook ones
(swapped into kernels/positions.py below, run eagerly), and each row is compared with the same
prompt decoded alone, unpadded.

    python tools/lessons/06_padding.py [--model PATH] [--quick]
"""
import contextlib

import numpy as np

import common

PROMPTS = ["The for statement",
           "A class definition is an executable statement that first evaluates the inheritance list, if present",
           "If"]


@contextlib.contextmanager
def positions_from_the_left_edge():
    """Swap the textbook position ids into xlagen's models: 0..T-1 whatever the padding, and
    every row's next token at position T."""
    import tensorflow as tf
    from xlagen.kernels import positions
    saved = positions.from_mask, positions.next_position
    positions.from_mask = lambda mask: tf.broadcast_to(tf.range(tf.shape(mask)[1]), tf.shape(mask))
    positions.next_position = lambda mask: tf.fill(tf.shape(mask)[:1], tf.shape(mask)[1])
    try:
        yield
    finally:
        positions.from_mask, positions.next_position = saved


def main(argv=None):
    args = common.arguments(__doc__, argv, plot=False)
    from xlagen.engine.generator import left_pad
    gen = common.load(args.model)
    new = 8 if args.quick else 16
    rows = [common.prompt(gen, p)[0].tolist() for p in PROMPTS]
    if len({len(r) for r in rows}) == 1:  # no tokenizer: make the lengths differ
        rows = [r[:n] for r, n in zip(rows, (3, 8, 1))]
    ids, mask = left_pad(rows)
    # pad_to_multiple_of=1: no bucket padding, so a prompt alone has none at all.
    options = dict(max_new_tokens=new, pad_to_multiple_of=1, jit_compile=False)

    def decode():
        batch = gen.generate(ids, attention_mask=mask, **options)[:, ids.shape[1]:]
        alone = [gen.generate(np.array([r], np.int32), **options)[0, len(r):] for r in rows]
        return [np.array_equal(b, a) for b, a in zip(batch, alone)]

    ours = decode()
    with positions_from_the_left_edge():
        naive = decode()
    padding = [ids.shape[1] - len(r) for r in rows]
    relative = not gen.model.continues_prompt or gen.config.model_type == "t5"
    print(f"{gen.config.model_type}, {new} greedy tokens; does each batch row equal its prompt alone?\n")
    common.table(["row", "left padding", "positions from the first token (xlagen)", "positions from the left edge"],
                 [[i, p, o, n] for i, (p, o, n) in enumerate(zip(padding, ours, naive))])
    if relative:
        print("\nThis model has relative positions (T5): it takes no position ids, so both columns agree.")
    else:
        changed = [i for i, (p, n) in enumerate(zip(padding, naive)) if p and not n]
        print(f"\nWith positions from the left edge, padded rows {changed} decode differently from their prompts "
              f"alone; with xlagen's, {'every row matches' if all(ours) else 'rows differ: a bug'}.")
    return {"padding": padding, "ours": ours, "naive": naive, "relative": relative}


if __name__ == "__main__":
    main()
