"""ms per decode step for greedy, sampling and beam search on a GPT-2-small-shaped random checkpoint.

    python tools/bench_steps.py [--layers 12] [--reps 3]

Writes the checkpoint (random weights, Hub layout) to /tmp/xlagen-gpt2-small once. Each row is
the best of --reps timed calls after one warm-up call (which is reported as "first s":
tracing + XLA compile + one run), divided by the number of new tokens, as
../shared/bench/peers.py measures the peers.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

SCENARIOS = {
    "greedy": dict(B=1, P=8, N=32, kw=dict()),
    "beam4": dict(B=1, P=8, N=32, kw=dict(num_beams=4)),
    "topp": dict(B=1, P=8, N=32, kw=dict(do_sample=True, top_p=0.9, top_k=0)),
    "topk50": dict(B=1, P=8, N=32, kw=dict(do_sample=True, top_k=50)),
    "greedy_b16": dict(B=16, P=8, N=32, kw=dict()),
    "long": dict(B=1, P=128, N=128, kw=dict()),
    "beam4_long": dict(B=1, P=128, N=128, kw=dict(num_beams=4)),
}


def gpt2_small(folder, layers):
    """A random GPT-2-small-shaped checkpoint (n_embd 768, 12 heads, vocab 50257) in Hub layout."""
    if os.path.exists(os.path.join(folder, "model.safetensors")):
        return folder
    os.makedirs(folder, exist_ok=True)
    e, v, rng = 768, 50257, np.random.default_rng(0)
    t = {"wte.weight": (v, e), "wpe.weight": (1024, e), "ln_f.weight": (e,), "ln_f.bias": (e,)}
    for i in range(layers):
        p = f"h.{i}."
        t.update({p + "ln_1.weight": (e,), p + "ln_1.bias": (e,), p + "ln_2.weight": (e,), p + "ln_2.bias": (e,),
                  p + "attn.c_attn.weight": (e, 3 * e), p + "attn.c_attn.bias": (3 * e,),
                  p + "attn.c_proj.weight": (e, e), p + "attn.c_proj.bias": (e,),
                  p + "mlp.c_fc.weight": (e, 4 * e), p + "mlp.c_fc.bias": (4 * e,),
                  p + "mlp.c_proj.weight": (4 * e, e), p + "mlp.c_proj.bias": (e,)})
    tensors = {k: (rng.standard_normal(s, dtype=np.float32) * 0.02 if len(s) == 2 else
                   np.ones(s, np.float32) if "ln" in k and k.endswith("weight") else np.zeros(s, np.float32))
               for k, s in t.items()}
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "gpt2", "n_layer": layers, "n_embd": e, "n_head": 12, "vocab_size": v,
                   "n_positions": 1024, "bos_token_id": 50256, "eos_token_id": 50256}, f)
    return folder


def run(gen, sc, reps):
    ids = np.random.RandomState(0).randint(0, 50000, size=(sc["B"], sc["P"])).astype("int32")
    kw = dict(max_new_tokens=sc["N"], min_new_tokens=sc["N"], seed=(1, 2), **sc["kw"])
    t = time.perf_counter()
    gen.generate(ids, **kw)
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        gen.generate(ids, **kw)
        best = min(best, time.perf_counter() - t)
    return first, best / sc["N"] * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    from xlagen.engine import load
    gen = load(gpt2_small(f"/tmp/xlagen-gpt2-small-{args.layers}", args.layers))
    for name in args.scenarios:
        first, ms = run(gen, SCENARIOS[name], args.reps)
        print(json.dumps({"scenario": name, "first_s": round(first, 2), "ms_per_step": round(ms, 2)}), flush=True)


if __name__ == "__main__":
    main()
