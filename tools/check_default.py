"""Check the shipped default model (models/default) against transformers.

Needs transformers, torch and xlagen in one environment (e.g. the /tmp/ref venv). From the repo root:

    python tools/check_default.py [--model models/default] [--new-tokens 30]

Checks, on a handful of prompts (prose, indented Python, non-ASCII, an "<|endoftext|>" in the text):
  files      the four Hub files are there and total at most 10 MB; the safetensors keys carry no
             prefix, no lm_head (tied), metadata {"format": "pt"}; transformers loads every tensor
  tokenizer  GPT2TokenizerFast (from_pretrained and tokenizer_file=) gives the ids `tokenizers`
             gives, and both decode back to the text
  logits     xlagen's logits match GPT2LMHeadModel's within 1e-4 on each prompt alone and on a
             left-padded batch (transformers with position_ids = cumsum(mask) - 1)
  greedy     transformers' generate(do_sample=False) and xlagen's generate give identical tokens
             for --new-tokens new tokens, per prompt and as a left-padded batch, with EOS off, with
             the checkpoint's EOS, and with an EOS id the model emits (so rows stop early)
Prints one line per check and exits 1 on any mismatch.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from xlagen.engine import load  # noqa: E402
from xlagen.engine.generator import left_pad  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")
MAX_BYTES = 10_000_000
TOLERANCE = 1e-4
PROMPTS = ["The for statement", "A class", "The import system",
           "If the syntax **expressions is used in the function call,",
           "    def __init__(self, x):\n        self.x = x\n",
           "Unicode: naïve café — “quoted” π≈3.14 ✓",
           "first part<|endoftext|>second part"]


class Report:
    def __init__(self):
        self.failures = 0

    def check(self, ok, what, detail=""):
        self.failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else ""), flush=True)
        return ok




def check_files(folder, report):
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in FILES if os.path.isfile(os.path.join(folder, f))}
    total = sum(sizes.values())
    report.check(len(sizes) == len(FILES), "files present", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
    report.check(total <= MAX_BYTES, "total size <= 10 MB", f"{total / 1e6:.2f} MB")
    with safe_open(os.path.join(folder, "model.safetensors"), framework="numpy") as f:
        keys, metadata = list(f.keys()), f.metadata()
        dtypes = {str(f.get_tensor(k).dtype) for k in keys}
    report.check(not any(k.startswith("transformer.") or k.startswith("lm_head") for k in keys),
                 "safetensors keys", f"{len(keys)} tensors without prefix or lm_head, dtypes {sorted(dtypes)}")
    report.check(metadata == {"format": "pt"}, "safetensors metadata", str(metadata))
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    shown = {k: config.get(k) for k in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size", "bos_token_id",
                                        "eos_token_id", "activation_function")}
    report.check(config.get("model_type") == "gpt2" and config.get("architectures") == ["GPT2LMHeadModel"],
                 "config.json", str(shown))


def check_tokenizer(folder, report):
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    hf = GPT2TokenizerFast.from_pretrained(folder)
    hf_file = GPT2TokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"))
    ok = True
    for p in PROMPTS:
        ids = tok.encode(p).ids
        same = ids == hf(p)["input_ids"] == hf_file(p)["input_ids"]
        round_trip = tok.decode(ids, skip_special_tokens=False) == p == hf.decode(ids)
        if not (same and round_trip):
            print(f"     {p!r}: tokenizers {ids} transformers {hf(p)['input_ids']} decode {hf.decode(ids)!r}")
        ok &= same and round_trip
    special = (hf.eos_token_id, hf.bos_token_id, tok.token_to_id("<|endoftext|>"))
    report.check(ok and special == (0, 0, 0), "tokenizer ids and decoding identical",
                 f"{len(PROMPTS)} prompts, vocab {tok.get_vocab_size()}, <|endoftext|> id {special[2]} (bos/eos of GPT2TokenizerFast)")
    return tok


@torch.no_grad()
def check_model(folder, tok, new_tokens, report):
    model, info = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager", output_loading_info=True)
    model = model.eval()
    missing = [k for k in info["missing_keys"] if k != "lm_head.weight"]
    report.check(not missing and not info["unexpected_keys"] and not info["mismatched_keys"],
                 "transformers loads every tensor", str({k: v for k, v in info.items() if v}) if missing else "")
    gen = load(folder)
    rows = [tok.encode(p).ids for p in PROMPTS]

    # Logits: each prompt alone, then all as one left-padded batch.
    worst = 0.0
    for r in rows:
        ref = model(torch.tensor([r])).logits.numpy()
        worst = max(worst, float(np.abs(gen.logits([r]) - ref).max()))
    ids, mask = left_pad(rows)
    t_ids, t_mask = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    positions = (t_mask.cumsum(-1) - 1).clamp(min=0)
    ref = model(t_ids, attention_mask=t_mask, position_ids=positions).logits.numpy()
    batch_worst = float(np.abs(gen.logits(ids, attention_mask=mask) - ref)[mask == 1].max())
    report.check(worst < TOLERANCE and batch_worst < TOLERANCE, f"logits within {TOLERANCE:g}",
                 f"max |diff| {worst:.2e} single prompts, {batch_worst:.2e} left-padded batch of {len(rows)}")

    # Greedy: each prompt alone and the padded batch, with EOS off, with the checkpoint's EOS (0),
    # and with an EOS id the batch really emits (the first prompt's 5th new token), so rows stop early.
    first = model.generate(torch.tensor([rows[0]]), do_sample=False, max_new_tokens=5, eos_token_id=None, pad_token_id=0)
    for eos in (None, 0, int(first[0, -1])):
        same, stopped = True, 0
        cases = [(np.array([r]), np.ones((1, len(r)), np.int64)) for r in rows] + [(ids, mask)]
        for c_ids, c_mask in cases:
            ref = model.generate(torch.tensor(c_ids), attention_mask=torch.tensor(c_mask), do_sample=False,
                                 max_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=0).numpy()
            # transformers stops when every row has ended; xlagen keeps the fixed width, padded with pad_token_id.
            ref = np.pad(ref, ((0, 0), (0, c_ids.shape[1] + new_tokens - ref.shape[1])), constant_values=0)
            out = gen.generate(c_ids, attention_mask=c_mask, max_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=0)
            ok = out.shape == ref.shape and bool((out == ref).all())
            if not ok:
                print(f"     prompt {c_ids.tolist()}:\n       transformers {ref.tolist()}\n       xlagen       {out.tolist()}")
            same &= ok
            if eos is not None:
                stopped += int((ref[:, c_ids.shape[1]:] == eos).any(axis=1).sum())
        report.check(same, f"greedy tokens identical (eos_token_id {eos})",
                     f"{len(rows)} single prompts + a left-padded batch, {new_tokens} new tokens"
                     + (f", {stopped} rows emitted EOS" if eos is not None else ""))
    sample = gen.generate_text([PROMPTS[0]], max_new_tokens=new_tokens)[0]
    print(f"     greedy sample: {sample!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    parser.add_argument("--new-tokens", type=int, default=30)
    args = parser.parse_args()
    report = Report()
    print(f"checking {os.path.abspath(args.model)}")
    check_files(args.model, report)
    tok = check_tokenizer(args.model, report)
    check_model(args.model, tok, args.new_tokens, report)
    print("all checks passed" if not report.failures else f"{report.failures} check(s) FAILED")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
