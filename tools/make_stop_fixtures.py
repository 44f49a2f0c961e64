"""Record what transformers' StopStringCriteria (and generate with stop_strings) does on the
fixture tokenizers, for tests/test_stop_strings.py.

Needs transformers (4.x) and torch; the test suite needs neither. Run from the repo root after
tools/make_fixtures.py (it reads the tokenizers and the gpt2-tiny checkpoint and changes nothing):

    python tools/make_stop_fixtures.py

Writes tests/fixtures/reference/stop_strings.npz (numeric arrays, and 0-d strings holding JSON):
  <tok>/clean                 JSON list: transformers' clean token string of every id (None for holes)
  <tok>/<set>/strings         JSON list: the stop strings
  <tok>/<set>/raises          bool: StopStringCriteria raised (no token can end any string); then no more keys
  <tok>/<set>/ids             [K, T] int32 token sequences, left padded with -1 (not part of the sequence)
  <tok>/<set>/hits            [K] bool, StopStringCriteria(tok, strings)(ids, None)
  <tok>/<set>/embedding       transformers' embedding_vec, [V, N * (P + E) + 1] int32
  <tok>/<set>/max_positions, <tok>/<set>/max_end_lengths   its P and E
  generate/options            JSON: the generate keywords (stop_strings, max_new_tokens, pad and eos ids)
  generate/input_ids, generate/attention_mask   tools/make_generation_fixtures.batch for gpt2-tiny
  generate/sequences          transformers' greedy generate with those options and tokenizer=tok
  generate/plain              the same without stop_strings (to see which rows stopped)
where <tok> is gpt2-tiny, opt-tiny, t5-v1_1-tiny and <set> a name in SETS (plus "token", a whole
token of each tokenizer).
"""
import json
import os
import random

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast
from transformers.generation.stopping_criteria import StopStringCriteria

from make_fixtures import ROOT
from make_generation_fixtures import batch, load

TOKENIZERS = ("gpt2-tiny", "opt-tiny", "t5-v1_1-tiny")
SETS = {
    "split": ["bundling", "functionality"],          # split across several tokens
    "spaces": [" the", " statement", "\n\n"],          # leading spaces, whitespace only
    "short": ["e", ":"],                               # shorter than most tokens: overhangs on both sides
    "overlap": ["ation", "tion", "on t", "ss"],        # suffixes of each other, across a word boundary
    "repeat": ["===", "  "],                           # several positions and end overlaps per token
    "unicode": ["’s", "e’", "…"],                      # bytes split over tokens in byte-level BPE: never match there
    "many": ["if", "else", "for", "while", "def", "class", "return", "import", "with"],  # 9 strings: N bucket 16
    "unreachable": ["’"],                              # byte-level BPE: no token ends it, transformers raises
}
# The whole token that the "token" set holds: the longest token of this text.
TOKEN_TEXT = "the corresponding object attribute"
PREFIXES = ["", "The value of ", "x = 1\n"]
SUFFIXES = ["", "s", "ing", "ed x", " and more"]
RANDOM = 48
SEGMENTATIONS = 3
MAX_PER_SET = 320


def segment(text, clean, rng):
    """A random tokenization of `text` into tokens whose clean strings concatenate to it, or None."""
    by_text = {}
    for i, s in enumerate(clean):
        if s:
            by_text.setdefault(s, []).append(i)
    n = len(text)
    reach = [False] * (n + 1)  # reach[i]: text[i:] can be segmented
    reach[n] = True
    for i in range(n - 1, -1, -1):
        reach[i] = any(reach[j] and text[i:j] in by_text for j in range(i + 1, n + 1))
    if not reach[0]:
        return None
    ids, i = [], 0
    while i < n:
        j = rng.choice([j for j in range(i + 1, n + 1) if reach[j] and text[i:j] in by_text])
        ids.append(rng.choice(by_text[text[i:j]]))
        i = j
    return ids


def sequences(tok, clean, strings, rng):
    """Token sequences around each stop string: the text's own encoding and random tokenizations
    of prefix + string + suffix, each also cut after several of its last tokens, and random ones."""
    out = []
    for s in strings:
        for prefix in PREFIXES:
            for suffix in SUFFIXES:
                text = prefix + s + suffix
                variants = [tok(text, add_special_tokens=False)["input_ids"],
                            tok(prefix + s, add_special_tokens=False)["input_ids"]
                            + tok(suffix, add_special_tokens=False)["input_ids"]]
                variants += [v for v in (segment(text, clean, rng) for _ in range(SEGMENTATIONS)) if v]
                for ids in variants:
                    for cut in range(max(1, len(ids) - len(s) - 3), len(ids) + 1):
                        out.append(ids[:cut])
    out = [list(x) for x in dict.fromkeys(tuple(x) for x in out if x)]  # distinct, in order
    rng.shuffle(out)
    out = out[:MAX_PER_SET]
    relevant = sorted({t for x in out for t in x})
    vocab = len(clean) + 2  # a few ids past transformers' table (it clamps them)
    for i in range(RANDOM):
        pool = relevant if i % 2 else range(vocab)
        out.append([rng.choice(pool) for _ in range(rng.randint(1, 24))])
    return out


def left_pad(rows):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), -1, np.int32)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
    return ids


def record_tokenizer(name, out, rng):
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(ROOT, name, "tokenizer.json"))
    texts, indices = StopStringCriteria.clean_tokenizer_vocab(tok)
    clean = [None] * (max(indices) + 1)
    for t, i in zip(texts, indices):
        clean[i] = t
    out[f"{name}/clean"] = np.array(json.dumps(clean))
    whole = max((clean[i] for i in tok(TOKEN_TEXT, add_special_tokens=False)["input_ids"]), key=len)
    sets = dict(SETS, token=[whole])
    for set_name, strings in sets.items():
        key = f"{name}/{set_name}"
        out[f"{key}/strings"] = np.array(json.dumps(strings))
        try:
            criteria = StopStringCriteria(tok, strings)
        except ValueError as e:
            print(key, "raises:", e)
            out[f"{key}/raises"] = np.array(True)
            continue
        out[f"{key}/raises"] = np.array(False)
        rows = sequences(tok, [c or "" for c in clean], strings, rng)
        hits = [bool(criteria(torch.tensor([r]), None)[0]) for r in rows]
        out[f"{key}/ids"] = left_pad(rows)
        out[f"{key}/hits"] = np.array(hits)
        out[f"{key}/embedding"] = criteria.embedding_vec.numpy().astype(np.int32)
        out[f"{key}/max_positions"] = np.array(criteria.max_valid_positions, np.int32)
        out[f"{key}/max_end_lengths"] = np.array(criteria.max_valid_end_lens, np.int32)
        print(key, strings, "sequences", len(rows), "hits", sum(hits), "P, E",
              criteria.max_valid_positions, criteria.max_valid_end_lens)


@torch.no_grad()
def record_generate(out):
    """Greedy generate on gpt2-tiny with a stop string that its output holds split over two tokens,
    chosen so that some rows stop early and others do not."""
    model, backend = load("gpt2-tiny")
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(ROOT, "gpt2-tiny", "tokenizer.json"))
    ids, mask = batch("gpt2-tiny", model, backend)
    common = dict(attention_mask=torch.tensor(mask), do_sample=False, max_new_tokens=12, pad_token_id=0,
                  eos_token_id=0)
    plain = model.generate(torch.tensor(ids), **common).numpy()
    new = plain[:, ids.shape[1]:]
    clean = [tok.convert_tokens_to_string(["x", tok.convert_ids_to_tokens(int(t))])[1:] for t in new.ravel()]
    clean = np.array(clean, dtype=object).reshape(new.shape)
    candidates = []
    for row in range(new.shape[0]):
        for step in range(2, new.shape[1] - 3):  # stop well before the end
            a, b = clean[row, step], clean[row, step + 1]
            text = a[-2:] + b[:2]  # split over the two tokens; the second may run past it
            if all(c.isprintable() and c != "\ufffd" for c in a + b) and len(text.strip()) >= 3:
                candidates.append(text)
    best = None  # the string that stops the most rows, but not all
    for text in dict.fromkeys(candidates):
        seqs = model.generate(torch.tensor(ids), stop_strings=[text], tokenizer=tok, **common).numpy()
        stopped = int((seqs != plain).any(1).sum())
        if 0 < stopped < len(seqs) and (best is None or stopped > best[2]):
            best = text, seqs, stopped
    assert best is not None, "no stop string stops some rows but not all"
    s, seqs, stopped = best
    print("generate: stop string", repr(s), "stops", stopped, "of", len(seqs), "rows")
    out["generate/options"] = np.array(json.dumps(dict(stop_strings=[s], max_new_tokens=12, pad_token_id=0,
                                                       eos_token_id=0, do_sample=False)))
    out["generate/input_ids"] = ids.astype(np.int32)
    out["generate/attention_mask"] = mask.astype(np.int32)
    out["generate/sequences"] = seqs.astype(np.int32)
    out["generate/plain"] = plain.astype(np.int32)


def main():
    rng = random.Random(0)
    out = {}
    for name in TOKENIZERS:
        record_tokenizer(name, out, rng)
    record_generate(out)
    path = os.path.join(ROOT, "reference", "stop_strings.npz")
    np.savez_compressed(path, **out)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
