"""Record what transformers' generate does on the existing fixture checkpoints, for the cases
tools/make_fixtures.py does not cover: attention-mask inference, several EOS ids in beam search,
per-step and transition scores, and where the generation defaults come from.

Needs transformers (4.x) and torch; the test suite needs neither. Run from the repo root after
tools/make_fixtures.py (it reads the checkpoints that script writes and changes none of them):

    python tools/make_generation_fixtures.py

Writes tests/fixtures/reference/generation.npz, keys "<fixture>/<case>" (numeric arrays, and
0-d strings holding JSON):
  <opt-tiny|t5-v1_1-tiny>/nomask_*   generate without attention_mask (transformers infers it)
  <gpt2-tiny|opt-tiny|t5-v1_1-tiny>/beam_eos2_*   beam search with two EOS ids
  <gpt2-tiny|t5-v1_1-tiny>/scores_*  output_scores: per-step scores and compute_transition_scores
  legacy/*                            gpt2-tiny with legacy generation keys in config.json, in three
                                      folder variants (see LEGACY)
"""
import json
import os
import tempfile

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, T5ForConditionalGeneration

from legacy_folders import LEGACY, legacy_folder
from make_fixtures import NEW_TOKENS, PROMPTS, ROOT, left_pad


def load(name):
    path = os.path.join(ROOT, name)
    cls = T5ForConditionalGeneration if name.startswith("t5") else AutoModelForCausalLM
    model = cls.from_pretrained(path, attn_implementation="eager").eval()
    return model, Tokenizer.from_file(os.path.join(path, "tokenizer.json"))


def batch(name, model, tok):
    """The fixtures' batch of PROMPTS: left padded with the pad id (decoder-only), right padded with 0 (T5)."""
    rows = [tok.encode(p).ids for p in PROMPTS]
    if model.config.is_encoder_decoder:
        width = max(len(r) for r in rows)
        return (np.array([r + [0] * (width - len(r)) for r in rows]),
                np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows]))
    return left_pad(rows, pad=model.config.pad_token_id or 0)


def emitted(model, ids, mask, count):
    """`count` distinct token ids the greedy continuation of the batch emits (new tokens only)."""
    out = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                         max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=1).numpy()
    new = out[:, 1 if model.config.is_encoder_decoder else ids.shape[1]:]
    seen = []
    for token in new[:, 3:].T.ravel():  # a few tokens in, so that beams stop at different lengths
        if int(token) not in seen and token > 3:
            seen.append(int(token))
    return seen[:count]


@torch.no_grad()
def mask_inference(name, out):
    model, tok = load(name)
    ids, mask = batch(name, model, tok)
    t_ids = torch.tensor(ids)
    greedy = model.generate(t_ids, do_sample=False, max_new_tokens=NEW_TOKENS).numpy()
    masked = model.generate(t_ids, attention_mask=torch.tensor(mask), do_sample=False, max_new_tokens=NEW_TOKENS).numpy()
    ones = model.generate(t_ids, attention_mask=torch.ones_like(t_ids), do_sample=False, max_new_tokens=NEW_TOKENS).numpy()
    assert (greedy == masked).all(), f"{name}: transformers did not infer the mask"
    assert (greedy != ones).any(), f"{name}: padding changes nothing here; the case would not test inference"
    out[f"{name}/nomask_input_ids"] = ids
    out[f"{name}/nomask_greedy"] = greedy
    out[f"{name}/nomask_beam"] = model.generate(t_ids, do_sample=False, num_beams=3, max_new_tokens=NEW_TOKENS).numpy()


@torch.no_grad()
def two_eos_beams(name, out):
    model, tok = load(name)
    ids, mask = batch(name, model, tok)
    common = dict(attention_mask=torch.tensor(mask), do_sample=False, num_beams=4, num_return_sequences=2,
                  pad_token_id=1, max_new_tokens=NEW_TOKENS)
    # Two ids that end some returned beams each: tried among the beams' most frequent new tokens.
    new = model.generate(torch.tensor(ids), eos_token_id=None, **common).numpy()
    new = new[:, 1 if model.config.is_encoder_decoder else ids.shape[1]:, ][:, 2:].ravel()
    frequent = [int(t) for t in np.argsort(-np.bincount(new))[:6]]
    for eos in ([a, b] for i, a in enumerate(frequent) for b in frequent[i + 1:]):
        res = model.generate(torch.tensor(ids), eos_token_id=eos, output_scores=True, return_dict_in_generate=True,
                             **common)
        seqs = res.sequences.numpy()
        ended = [int((seqs == e).any(1).sum()) for e in eos]
        if all(ended):
            break
    print(name, "two EOS ids", eos, "rows ending in each:", ended)
    assert all(ended), f"{name}: an EOS id is never emitted"
    out[f"{name}/beam_eos2_ids"] = np.array(eos)
    out[f"{name}/beam_eos2_sequences"] = seqs
    out[f"{name}/beam_eos2_scores"] = res.sequences_scores.numpy()


@torch.no_grad()
def scores(name, out):
    model, tok = load(name)
    ids, mask = batch(name, model, tok)
    eos = emitted(model, ids, mask, 1)[0]
    common = dict(attention_mask=torch.tensor(mask), do_sample=False, eos_token_id=eos, pad_token_id=1,
                  max_new_tokens=NEW_TOKENS, output_scores=True, return_dict_in_generate=True)
    greedy = model.generate(torch.tensor(ids), repetition_penalty=1.3, **common)
    beam = model.generate(torch.tensor(ids), num_beams=3, num_return_sequences=2, length_penalty=1.0, **common)
    out[f"{name}/scores_eos"] = np.array(eos)
    out[f"{name}/scores_greedy_sequences"] = greedy.sequences.numpy()
    out[f"{name}/scores_greedy_scores"] = torch.stack(greedy.scores).numpy()
    out[f"{name}/scores_greedy_transition"] = model.compute_transition_scores(
        greedy.sequences, greedy.scores, normalize_logits=False).numpy()
    out[f"{name}/scores_beam_sequences"] = beam.sequences.numpy()
    out[f"{name}/scores_beam_scores"] = torch.stack(beam.scores).numpy()
    out[f"{name}/scores_beam_sequences_scores"] = beam.sequences_scores.numpy()
    out[f"{name}/scores_beam_transition"] = model.compute_transition_scores(
        beam.sequences, beam.scores, beam.beam_indices, normalize_logits=False).numpy()
    print(name, "scores: greedy steps", len(greedy.scores), "beam steps", len(beam.scores),
          "rows stopped by eos", int((greedy.sequences.numpy() == eos).any(1).sum()))


@torch.no_grad()
def legacy(out):
    ids, mask = left_pad([[5, 6, 7], [9, 10, 11, 12, 13]], pad=0)
    out["legacy/recipe"] = np.array(json.dumps(LEGACY))
    out["legacy/input_ids"], out["legacy/attention_mask"] = ids, mask
    with tempfile.TemporaryDirectory() as root:
        for variant in LEGACY["variants"]:
            folder = legacy_folder(os.path.join(ROOT, "gpt2-tiny"), variant, os.path.join(root, variant))
            model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
            seqs = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask)).numpy()
            out[f"legacy/{variant}_sequences"] = seqs
            print("legacy", variant, "output width", seqs.shape[1], "num_beams used:", model.generation_config.num_beams)


def main():
    out = {}
    for name in ("opt-tiny", "t5-v1_1-tiny"):
        mask_inference(name, out)
    for name in ("gpt2-tiny", "opt-tiny", "t5-v1_1-tiny"):
        two_eos_beams(name, out)
    for name in ("gpt2-tiny", "t5-v1_1-tiny"):
        scores(name, out)
    legacy(out)
    np.savez_compressed(os.path.join(ROOT, "reference", "generation.npz"), **out)
    for key, value in sorted(out.items()):
        print(key, value.shape, value.dtype)


if __name__ == "__main__":
    main()
