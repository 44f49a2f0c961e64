"""Lesson 5: what does the KV cache save?

To choose token t+1 a decoder needs every earlier token's keys and values in every layer.
Without a cache each new token runs the whole prefix through the model again: t positions of
work for token t, so a sequence of n tokens costs ~n^2/2 positions. xlagen computes the prompt's
keys and values once (prefill), then writes one new key and value per token into a buffer
allocated once for the whole call (kernels/cache.py), so a step runs one position through the
layers and only attention reads the growing history.

Measured here, at each prompt length L:
  with the cache   ms per new token inside generate() (a compiled program of many steps, the
                   prefill's time taken off)
  recomputing      ms of one forward pass over all L positions (logits()), what a new token
                   costs without a cache
and, as proof that the cache changes nothing, greedy tokens chosen by recomputing the prefix for
every token equal generate()'s.

    python tools/lessons/05_kv_cache.py [--model PATH] [--quick] [--plot FILE.png]
"""
import numpy as np

import common


def recompute_greedy(gen, ids, new):
    """Greedy decoding without a cache: the whole sequence through the model for every token.
    ids: [1, T] int32 -> [1, T + new] int32."""
    for _ in range(new):
        ids = np.concatenate([ids, gen.logits(ids)[:, -1].argmax(-1)[:, None].astype(np.int32)], axis=1)
    return ids


def main(argv=None):
    args = common.arguments(__doc__, argv)
    gen = common.load(args.model)
    steps = 8 if args.quick else 32
    limit = (gen.config.max_positions or 1024) - steps
    lengths = [L for L in ([8, 16] if args.quick else [16, 32, 64, 128, 256, 512]) if L <= limit]
    repeat = 2 if args.quick else 3
    # Plain greedy steps: no processor, no EOS, so every call runs all its steps.
    options = dict(max_new_tokens=steps, repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=None)
    rows, cached, recomputed = [], [], []
    for length in lengths:  # multiples of 8: no bucket padding
        ids = np.random.default_rng(length).integers(1, gen.vocab_size, size=(1, length)).astype(np.int32)
        out, _ = gen.generate(ids, **options), gen.logits(ids)  # compile both first
        if length == lengths[0]:
            first = (ids, out)
        forward = common.best_seconds(lambda: gen.logits(ids), repeat) * 1e3
        whole = common.best_seconds(lambda: gen.generate(ids, **options), repeat) * 1e3
        step = max(whole - forward, 0.0) / steps  # the prefill is one forward pass over the prompt
        cached.append(step)
        recomputed.append(forward)
        rows.append([length, step, forward, forward / step if step else float("inf")])

    check_new = 4
    ids, out = first
    same = np.array_equal(recompute_greedy(gen, ids, check_new), out[:, :ids.shape[1] + check_new])
    print(f"{gen.config.model_type}, ms per new token after L tokens (best of {repeat}):\n")
    common.table(["L", "with the cache", "recomputing the prefix", "ratio"], rows)
    print(f"\ngreedy tokens with the cache equal those from recomputing the prefix each step: {same}")
    print("The cached step grows slowly with L (attention reads L keys); the recomputation grows with L "
          "in every layer, and a sequence of n tokens pays it n times.")
    if args.plot:
        common.plot(args.plot, "Cost of one new token", "tokens so far (L)", "ms", logx=True, logy=True,
                    series={"with the KV cache": (lengths, cached), "recomputing the prefix": (lengths, recomputed)})
    return {"lengths": lengths, "cached_ms": cached, "recomputed_ms": recomputed, "same_tokens": same}


if __name__ == "__main__":
    main()
