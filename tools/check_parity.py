"""Check xlagen against transformers on random GPT-2 configs and file layouts the fixtures do not use.

Needs transformers, torch and xlagen in one environment:

    python tools/check_parity.py [--configs 12] [--seed 0]

For each drawn config it saves a random-weight GPT2LMHeadModel in a random layout (with or
without the `transformer.` prefix, sharded or not), then compares logits on a left-padded batch
(max abs difference, must be < 1e-4), greedy tokens and beam search tokens with a random
num_beams, early_stopping and length_penalty (must be identical). Exits 1 on any mismatch.
"""
import argparse
import os
import random
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from xlagen.engine import load  # noqa: E402

ACTIVATIONS = ["gelu_new", "gelu", "gelu_fast", "relu", "silu", "quick_gelu", "gelu_pytorch_tanh"]


def draw_config(rng):
    heads = rng.choice([1, 2, 3, 4, 8])
    return dict(vocab_size=rng.randint(50, 700), n_positions=rng.choice([40, 64, 100]), n_head=heads,
                n_embd=heads * rng.choice([8, 12, 16, 32]), n_layer=rng.randint(1, 4),
                n_inner=rng.choice([None, rng.randint(16, 160)]), activation_function=rng.choice(ACTIVATIONS),
                layer_norm_epsilon=rng.choice([1e-5, 1e-3, 1e-6]), scale_attn_weights=rng.random() < 0.8,
                scale_attn_by_inverse_layer_idx=rng.random() < 0.5, reorder_and_upcast_attn=rng.random() < 0.5,
                tie_word_embeddings=rng.random() < 0.7, initializer_range=rng.choice([0.1, 0.2, 0.4]),
                bos_token_id=0, eos_token_id=0)


def save(model, folder, layout):
    if layout == "sharded":
        model.save_pretrained(folder, max_shard_size="60KB")
    elif layout == "no-prefix":
        os.makedirs(folder)
        model.config.save_pretrained(folder)
        tensors = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            tensors.pop("lm_head.weight", None)
        save_file(tensors, os.path.join(folder, "model.safetensors"))
    else:
        model.save_pretrained(folder)


@torch.no_grad()
def check(config, layout, rng, tmp):
    torch.manual_seed(rng.randint(0, 1 << 30))
    model = GPT2LMHeadModel(GPT2Config(**config, attn_implementation="eager")).eval()
    folder = os.path.join(tmp, f"ckpt-{rng.randint(0, 1 << 30)}")
    save(model, folder, layout)
    batch, width, new = rng.randint(1, 4), rng.randint(2, 12), rng.randint(4, 16)
    new = min(new, config["n_positions"] - width)
    nprng = np.random.RandomState(rng.randint(0, 1 << 30))
    ids = nprng.randint(1, config["vocab_size"], size=(batch, width))
    mask = np.ones_like(ids)
    for row in range(1, batch):
        mask[row, : nprng.randint(0, width - 1)] = 0
    ids = np.where(mask == 1, ids, 0)
    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
    ref_logits = model(t_ids, attention_mask=t_mask, position_ids=(t_mask.cumsum(-1) - 1).clamp(min=0)).logits.numpy()
    ref_tokens = model.generate(t_ids, attention_mask=t_mask, max_new_tokens=new, do_sample=False,
                                eos_token_id=None, pad_token_id=0).numpy()
    # Beam search with an EOS id the greedy run emits, so that hypotheses end early.
    eos = int(ref_tokens[0, width + new // 2])
    beam = dict(num_beams=rng.randint(2, 4), early_stopping=rng.choice([True, False, "never"]),
                length_penalty=rng.choice([-1.0, 0.5, 1.0, 2.0]), eos_token_id=eos, pad_token_id=max(1, eos - 1))
    ref_beam = model.generate(t_ids, attention_mask=t_mask, max_new_tokens=new, do_sample=False, **beam).numpy()
    gen = load(folder)
    logits = gen.logits(ids, attention_mask=mask)
    tokens = gen.generate(ids, attention_mask=mask, max_new_tokens=new, eos_token_id=None, pad_token_id=0)
    beams = gen.generate(ids, attention_mask=mask, max_new_tokens=new, **beam)
    diff = float(np.abs(logits - ref_logits)[mask == 1].max())
    same = tokens.shape == ref_tokens.shape and bool((tokens == ref_tokens).all())
    same_beam = (bool((beams[:, :ref_beam.shape[1]] == ref_beam).all())
                 and bool((beams[:, ref_beam.shape[1]:] == beam["pad_token_id"]).all()))
    return diff, same, same_beam, (batch, width, new), beam


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.configs):
            config = draw_config(rng)
            layout = rng.choice(["prefix", "no-prefix", "sharded"])
            diff, same, same_beam, shape, beam = check(config, layout, rng, tmp)
            ok = diff < 1e-4 and same and same_beam
            failures += not ok
            flags = {k: v for k, v in config.items() if k not in ("bos_token_id", "eos_token_id")}
            print(f"{'ok  ' if ok else 'FAIL'} {layout:9s} B,W,N={shape} logits max|diff|={diff:.2e} "
                  f"greedy {'identical' if same else 'DIFFERENT'}, beam {'identical' if same_beam else 'DIFFERENT'} "
                  f"{beam} {flags}", flush=True)
    print(f"{args.configs - failures} passed, {failures} failed")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
