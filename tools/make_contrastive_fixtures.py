"""Record transformers' contrastive search (penalty_alpha > 0, top_k > 1) on the fixture checkpoints.

transformers 4.57 moved its PyTorch contrastive search to a Hub repository; its TF version
(TFGenerationMixin.contrastive_search) is still in the package, so the reference is TF
transformers, with the PyTorch fixture weights loaded into the TF models (from_pt=True).
Needs transformers 4.57, torch, tensorflow and tf-keras (TF transformers' Keras 2), e.g.

    pip install "transformers<5" torch "tensorflow==2.21.*" "tf-keras==2.21.*"
    python tools/make_contrastive_fixtures.py

It first checks that each TF model's greedy tokens equal the recorded PyTorch greedy tokens
(reference/<name>.npz, tools/make_fixtures.py), so the weights loaded right. Then, for each
prompt of make_fixtures.PROMPTS run alone (batch 1, no padding: TF transformers does not mask
padding out of the degeneration penalty) and each of CASES, it runs TF generate eagerly with
max_new_tokens=NEW_TOKENS and explicit EOS and pad ids.

Writes tests/fixtures/reference/contrastive.npz (np.load(..., allow_pickle=False)):
  cases:                    0-d JSON string: the list of CASES (generate options)
  eos, pad:                 the EOS id (a token the first case emits, so some rows stop early)
                            and the pad id, the same for every case
  <name>_prompts:           [5, P] int64 prompt ids, right-padded with -1 (lengths in <name>_lengths)
  <name>_lengths:           [5] int64
  <name>_case<i>:           [5, NEW_TOKENS] int64 new tokens (pad after EOS)
  <name>_case<i>_transition: [5, NEW_TOKENS] float32 each chosen token's processed score (0
                            after the row's last step)
  <name>_case0_scores:      [5, NEW_TOKENS, V] float32 the first case's processed scores per step
                            (0 after the row's last step)
  <name>_greedy:            [5, NEW_TOKENS] int64 greedy new tokens of the same prompts alone
"""
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TF transformers needs Keras 2 (tf-keras)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from transformers import TFGPT2LMHeadModel, TFOPTForCausalLM, TFT5ForConditionalGeneration  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import NEW_TOKENS, PROMPTS, ROOT  # noqa: E402

MODELS = {"gpt2-tiny": TFGPT2LMHeadModel, "opt-tiny": TFOPTForCausalLM, "t5-v1_1-tiny": TFT5ForConditionalGeneration}
# (penalty_alpha, top_k) pairs, one with processors TF transformers applies in contrastive search.
CASES = [dict(penalty_alpha=0.6, top_k=4), dict(penalty_alpha=0.3, top_k=2), dict(penalty_alpha=0.9, top_k=6),
         dict(penalty_alpha=0.5, top_k=3, repetition_penalty=1.3, no_repeat_ngram_size=2)]
PAD = 1


def prompts(name):
    """The fixture prompts as make_fixtures tokenized them, each without its padding."""
    ref = np.load(os.path.join(ROOT, "reference", name + ".npz"), allow_pickle=False)
    return [row[mask == 1] for row, mask in zip(ref["input_ids"], ref["attention_mask"])], ref


def new_tokens(model, ids, **options):
    """TF generate on one prompt, eagerly: (new tokens [NEW_TOKENS], processed scores [steps, V])."""
    out = model.generate(tf.constant(ids[None], tf.int32), attention_mask=tf.ones([1, len(ids)], tf.int32),
                         max_new_tokens=NEW_TOKENS, output_scores=True, return_dict_in_generate=True, **options)
    start = 1 if model.config.is_encoder_decoder else len(ids)
    tokens = out.sequences.numpy()[0, start:]
    width = NEW_TOKENS
    tokens = np.concatenate([tokens, np.full(width - len(tokens), options.get("pad_token_id", PAD))])
    return tokens.astype(np.int64), np.stack([s.numpy()[0] for s in out.scores])


def main():
    loaded = {}
    for name, cls in MODELS.items():
        rows, ref = prompts(name)
        model = cls.from_pretrained(os.path.join(ROOT, name), from_pt=True)
        model.generation_config.eos_token_id = None  # eos_token_id=None then means none, as in PyTorch's generate
        greedy = np.stack([new_tokens(model, r, do_sample=False, eos_token_id=None, pad_token_id=int(ref["pad"]))[0]
                           for r in rows])
        start = 1 if model.config.is_encoder_decoder else ref["input_ids"].shape[1]
        recorded = ref["greedy"][:, start:]
        assert (greedy == recorded).all(), f"{name}: TF greedy {greedy} != recorded PyTorch greedy {recorded}"
        print(name, "TF greedy equals the recorded PyTorch greedy on every prompt", file=sys.stderr)
        loaded[name] = (model, rows, greedy)

    # The EOS id: the 6th new token of the first prompt in the first case, so that rows stop early.
    model, rows, _ = loaded["gpt2-tiny"]
    eos = int(new_tokens(model, rows[0], eos_token_id=None, pad_token_id=PAD, **CASES[0])[0][5])
    out = {"cases": np.array(json.dumps(CASES)), "eos": np.array(eos), "pad": np.array(PAD)}
    for name, (model, rows, greedy) in loaded.items():
        width = max(len(r) for r in rows)
        out[f"{name}_prompts"] = np.stack([np.concatenate([r, np.full(width - len(r), -1)]) for r in rows])
        out[f"{name}_lengths"] = np.array([len(r) for r in rows])
        out[f"{name}_greedy"] = greedy
        differs = 0
        for i, case in enumerate(CASES):
            tokens, transition, scores = [], [], []
            for r in rows:
                t, s = new_tokens(model, r, eos_token_id=eos, pad_token_id=PAD, **case)
                tokens.append(t)
                steps = np.zeros([NEW_TOKENS, s.shape[1]], np.float32)
                steps[:len(s)] = s
                scores.append(steps)
                transition.append(np.array([steps[n, t[n]] if n < len(s) else 0.0 for n in range(NEW_TOKENS)],
                                           np.float32))
            out[f"{name}_case{i}"] = np.stack(tokens)
            out[f"{name}_case{i}_transition"] = np.stack(transition)
            if i == 0:
                out[f"{name}_case0_scores"] = np.stack(scores)
            # Compare with greedy up to the first EOS (greedy here ran without one).
            first = [np.concatenate([t[:list(t).index(eos) + 1] if eos in t else t]) for t in tokens]
            changed = sum(not np.array_equal(f, g[:len(f)]) for f, g in zip(first, greedy))
            differs += changed
            ended = sum(eos in t for t in tokens)
            print(name, case, "rows differing from greedy:", changed, "ending in EOS:", ended, "row 0:",
                  tokens[0].tolist(), file=sys.stderr)
        assert differs > 0, f"{name}: contrastive search gave greedy's tokens on every row of every case"
    np.savez_compressed(os.path.join(ROOT, "reference", "contrastive.npz"), **out)


if __name__ == "__main__":
    main()
