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
  generate-<case>/*           more generate references (CASES), with the keys of generate/ above
                              (options: every keyword given to generate besides the mask; the batch
                              is that fixture's, as tools/make_generation_fixtures.batch makes it):
    generate-beam             gpt2-tiny beam search, num_beams=3, num_return_sequences=2,
                              output_scores=True, one stop string that ends some returned beams (at
                              different lengths) and not others; also sequences_scores [rows] float32
                              and plain_scores (the same without the stop string)
    generate-two              gpt2-tiny greedy with two stop strings, the first split across tokens
                              (its own encoding is several tokens, and so are its matches); each
                              stops a row, at different steps, and some row runs on
    generate-opt-tiny, generate-t5-v1_1-tiny   greedy with one or two stop strings on OPT and T5
                              that stop rows at different steps and leave some row running
  generate-<case>/stopped     [rows] int32: the step (0 = first new token) whose token completed a stop
                              string in each row, -1 for rows that ran on or ended with EOS
where <tok> is gpt2-tiny, opt-tiny, t5-v1_1-tiny and <set> a name in SETS (plus "token", a whole
token of each tokenizer). The stop strings of the generate cases are chosen by the script from
what the model generates without them (see choose_greedy, choose_beam).

Timing the table build (needs neither torch nor transformers):

    python tools/make_stop_fixtures.py --bench [TOKENIZER_JSON] [--impl OTHER_stop_strings.py]

times clean_token_strings and the tables of a few stop string lists on a tokenizer.json; without
one, on a GPT-2-sized (50257 tokens) byte-level BPE trained once on this Python's standard library
(cached in $TMPDIR/xlagen-stop-bench). --impl times another version of engine/stop_strings.py, e.g.
an earlier one: git show <commit>:engine/stop_strings.py > /tmp/old_stop_strings.py
"""
import argparse
import importlib.util
import json
import os
import random
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")  # as make_fixtures


def _peers():
    """torch, transformers and the fixture helpers: imported only to record (not for --bench)."""
    global torch, PreTrainedTokenizerFast, StopStringCriteria, StoppingCriteriaList, batch, load
    import torch
    from transformers import PreTrainedTokenizerFast
    from transformers.generation.stopping_criteria import StopStringCriteria, StoppingCriteriaList

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


def record_generate(out):
    """Greedy generate on gpt2-tiny with a stop string that its output holds split over two tokens,
    chosen so that some rows stop early and others do not."""
    torch.set_grad_enabled(False)
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


# -- more generate references ------------------------------------------------------------------

NEW_TOKENS = 12
# generate-<case>: (fixture, kind). "beam": one stop string in beam search; "two": greedy with two
# stop strings, the first split across tokens; "greedy": greedy with one or two stop strings.
CASES = {"beam": ("gpt2-tiny", "beam"), "two": ("gpt2-tiny", "two"),
         "opt-tiny": ("opt-tiny", "greedy"), "t5-v1_1-tiny": ("t5-v1_1-tiny", "greedy")}
BEAM = dict(num_beams=3, num_return_sequences=2)
BEAM_TRIES = 80  # candidate stop strings run through beam search, most frequent first
LATE = 2  # stops in the last LATE steps leave too little padding to see: not chosen


class Fixture:
    """A fixture model with its tokenizer, the prompt batch, and the ids generate gets."""

    def __init__(self, name):
        self.name = name
        self.model, backend = load(name)
        self.tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(ROOT, name, "tokenizer.json"))
        self.ids, self.mask = batch(name, self.model, backend)
        config = self.model.generation_config
        self.pad = 0 if config.pad_token_id is None else int(config.pad_token_id)  # gpt2-tiny: 0, as generate/
        self.eos = int(config.eos_token_id)
        self.start = 1 if self.model.config.is_encoder_decoder else self.ids.shape[1]  # first new token's column
        texts, indices = StopStringCriteria.clean_tokenizer_vocab(self.tok)
        self.clean = dict(zip(indices, texts))

    def options(self, strings, **extra):
        return dict(stop_strings=list(strings), max_new_tokens=NEW_TOKENS, pad_token_id=self.pad,
                    eos_token_id=self.eos, do_sample=False, **extra)

    def generate(self, options, scores=False):
        options = dict(options)
        strings = options.pop("stop_strings", None)
        if strings and self.model.config.is_encoder_decoder:
            # transformers 4.57 hands generate's `tokenizer` on to the model's forward, which T5's
            # refuses (GPT-2's and OPT's take **kwargs); the criterion stop_strings would add, given directly:
            options["stopping_criteria"] = StoppingCriteriaList([StopStringCriteria(self.tok, strings)])
        elif strings:
            options.update(stop_strings=strings, tokenizer=self.tok)
        res = self.model.generate(torch.tensor(self.ids), attention_mask=torch.tensor(self.mask),
                                  return_dict_in_generate=True, **options)
        seqs = res.sequences.numpy().astype(np.int32)
        return (seqs, res.sequences_scores.numpy().astype(np.float32)) if scores else seqs

    def eos_steps(self, seqs):
        """[rows]: the step of each row's first EOS, NEW_TOKENS without one."""
        new = seqs[:, self.start:]
        return np.where((new == self.eos).any(1), (new == self.eos).argmax(1), NEW_TOKENS)

    def first_hits(self, seqs, strings):
        """[rows]: the first step at which StopStringCriteria(strings) holds for each row's tokens
        so far (prompt included), NEW_TOKENS where it never does."""
        criteria = StopStringCriteria(self.tok, list(strings))
        hits = np.full(len(seqs), NEW_TOKENS)
        for step in range(seqs.shape[1] - self.start):
            got = criteria(torch.tensor(seqs[:, :self.start + step + 1]), None).numpy()
            hits = np.where(got & (hits == NEW_TOKENS), step, hits)
        return hits

    def split(self, text):
        """Whether the tokenizer encodes `text` into several tokens."""
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) > 1


def candidates(f, seqs):
    """Short printable strings that end inside a generated token and start one or two tokens
    earlier (so they are split across tokens there), most frequent first; tokens from a row's EOS
    on are left out."""
    found = {}
    for row, end in zip(seqs[:, f.start:], f.eos_steps(seqs)):
        pieces = [f.clean.get(int(t), "") for t in row[:end]]
        for t in range(1, len(pieces)):
            for u in (t - 1, t - 2):
                for k in (1, 2, 3):
                    for j in (1, 2):
                        if u < 0 or k > len(pieces[u]) or j > len(pieces[t]):
                            continue
                        s = pieces[u][-k:] + "".join(pieces[u + 1:t]) + pieces[t][:j]
                        if (2 <= len(s) <= 8 and len(s.strip()) >= 2 and s.isprintable()
                                and "\ufffd" not in s and "<" not in s):
                            found[s] = found.get(s, 0) + 1
    return sorted(found, key=lambda s: -found[s])  # stable: first seen first among equals


def spanned(f, row, step, text):
    """How many tokens of `row`, back from the one at `step`, the first match of `text` spans."""
    pieces = [f.clean.get(int(t), "") for t in row[:step + 1]]
    return next(k for k in range(1, step + 2) if text in "".join(pieces[step + 1 - k:]))


def choose_greedy(f, plain, two, split_first, exclude=()):
    """Stop strings (two, or one or two) for greedy decoding that stop rows at different steps
    (none at the first new token, none in the last LATE steps) and leave at least one row running
    to max_new_tokens (so that the output keeps its width), replayed on the plain greedy output
    (greedy rows are independent: with stop strings a row is its plain output, cut). With
    split_first the first string is one the tokenizer splits, and the rows it stops match it
    across tokens.
    Preferred: more distinct stop steps, more rows stopped, the first string's match spanning
    more tokens, a later first stop. Returns (strings, stop step per row or -1)."""
    eos = f.eos_steps(plain)
    pool = [s for s in candidates(f, plain) if s not in exclude]
    hits = {s: f.first_hits(plain, [s]) for s in pool}
    new = plain[:, f.start:]
    best = None
    for a in pool:
        if split_first and not f.split(a):
            continue
        for b in ([None] if not two else []) + [b for b in pool if b != a]:
            ha = hits[a]
            hb = hits[b] if b is not None else np.full_like(ha, NEW_TOKENS)
            h = np.minimum(ha, hb)
            stopped = h < eos
            by_a, by_b = stopped & (ha < hb), stopped & (hb < ha)
            if (not by_a.any() or (b is not None and not by_b.any()) or (stopped | (eos < NEW_TOKENS)).all()
                    or (h[stopped] == 0).any() or (h[stopped] >= NEW_TOKENS - LATE).any()
                    or ((h == eos) & (h < NEW_TOKENS)).any()):
                continue
            span = min(spanned(f, new[r], h[r], a) for r in np.flatnonzero(by_a))
            if split_first and span < 2:
                continue  # a single token holds it there
            score = (len(set(h[stopped].tolist())), int(stopped.sum()), span, int(h[stopped].min()))
            if score[0] >= 2 and (best is None or score > best[0]):
                best = score, [a] if b is None else [a, b], np.where(stopped, h, -1)
    assert best is not None, f"{f.name}: no stop strings stop rows at different steps"
    return best[1], best[2].astype(np.int32)


def stop_ends(f, seqs, strings):
    """[rows]: the step at which each returned row ended with a stop string (its last real token,
    pad after it), -1 for rows that ran to the end or ended with EOS."""
    criteria = StopStringCriteria(f.tok, list(strings))
    out = np.full(len(seqs), -1, np.int32)
    for r, seq in enumerate(seqs):
        real = np.flatnonzero(seq[f.start:] != f.pad)
        if not len(real) or real[-1] == NEW_TOKENS - 1 or seq[f.start + real[-1]] == f.eos:
            continue
        if criteria(torch.tensor(seq[None, :f.start + real[-1] + 1]), None)[0]:
            out[r] = real[-1]
    return out


def choose_beam(f, plain):
    """A stop string that ends some returned beams, at different lengths, and not all of them
    (and some returned beam runs to max_new_tokens, so the output keeps its width): tried through
    beam search itself (stop strings change which beams survive)."""
    best = None
    for s in candidates(f, plain)[:BEAM_TRIES]:
        seqs, scores = f.generate(f.options([s], **BEAM, output_scores=True), scores=True)
        ends = stop_ends(f, seqs, [s])
        stopped = ends >= 0
        score = (len(set(ends[stopped].tolist())), int(stopped.sum()))
        full = seqs.shape[1] == f.start + NEW_TOKENS
        usable = full and score[0] >= 2 and (ends < NEW_TOKENS - LATE).all() and not stopped.all()
        if usable and (best is None or score > best[0]):
            best = score, [s], seqs, scores, ends
    assert best is not None, f"{f.name}: no stop string ends beams at different lengths"
    return best[1:]


def record_cases(out):
    torch.set_grad_enabled(False)
    fixtures = {}
    for case, (name, kind) in CASES.items():
        f = fixtures.get(name) or fixtures.setdefault(name, Fixture(name))
        key = f"generate-{case}"
        extra = dict(BEAM, output_scores=True) if kind == "beam" else {}
        plain = f.generate(f.options([], **extra), scores=kind == "beam")
        if kind == "beam":
            plain, plain_scores = plain
            strings, seqs, scores, stopped = choose_beam(f, plain)
            out[f"{key}/sequences_scores"] = scores
            out[f"{key}/plain_scores"] = plain_scores
        else:
            exclude = json.loads(str(out["generate/options"]))["stop_strings"] if name == "gpt2-tiny" else ()
            strings, stopped = choose_greedy(f, plain, two=kind == "two", split_first=kind == "two",
                                             exclude=exclude)
            seqs = f.generate(f.options(strings))
            replay = plain.copy()
            for r in np.flatnonzero(stopped >= 0):
                replay[r, f.start + stopped[r] + 1:] = f.pad
            np.testing.assert_array_equal(seqs, replay, err_msg=f"{key}: generate differs from the replay")
        options = f.options(strings, **extra)
        out[f"{key}/options"] = np.array(json.dumps(options))
        out[f"{key}/input_ids"] = f.ids.astype(np.int32)
        out[f"{key}/attention_mask"] = f.mask.astype(np.int32)
        out[f"{key}/sequences"] = seqs
        out[f"{key}/plain"] = plain
        out[f"{key}/stopped"] = stopped
        print(key, name, "stop strings", strings, "stop steps per row", stopped.tolist(),
              "changed rows", int((seqs != plain).any(1).sum()), "of", len(seqs))


# -- timing ------------------------------------------------------------------------------------

BENCH_STRINGS = [["6 t"], [" the"], ["\n\n"], ["e"], [" the", " statement", "\n\n"], SETS["many"],
                 [TOKEN_TEXT]]


def bench_tokenizer():
    """A GPT-2-sized byte-level BPE (50257 tokens, GPT-2's pre-tokenizer and decoder) trained on
    this Python's standard library, cached in the temp folder."""
    import glob
    import sysconfig

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    path = os.path.join(tempfile.gettempdir(), "xlagen-stop-bench", "bpe50257.json")
    if os.path.exists(path):
        return path
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(f for f in glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True) if "site-packages" not in f)

    def texts():
        for name in files:
            try:
                with open(name, encoding="utf-8") as fh:
                    yield fh.read()
            except (OSError, UnicodeDecodeError):
                pass

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=50257, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    print(f"training a 50257-token BPE on {len(files)} files of {stdlib} ...")
    tok.train_from_iterator(texts(), trainer)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tok.save(path)
    return path


def bench(path, impl, repeats=3):
    from tokenizers import Tokenizer
    if impl:
        spec = importlib.util.spec_from_file_location("stop_strings_under_test", impl)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        from xlagen.engine import stop_strings as module
    path = path or bench_tokenizer()
    tok = Tokenizer.from_file(path)
    print(f"{module.__file__} on {path} ({tok.get_vocab_size(with_added_tokens=True)} tokens), best of {repeats}")
    start = time.perf_counter()
    module.stop_string_tables(tok, BENCH_STRINGS[0])
    print(f"  first stop_string_tables call, {BENCH_STRINGS[0]!r}: {(time.perf_counter() - start) * 1e3:8.1f} ms"
          " (clean token strings, vocabulary arrays and tables)")
    fresh = Tokenizer.from_file(path)
    start = time.perf_counter()
    clean = module.clean_token_strings(fresh)
    print(f"  clean_token_strings (cached per tokenizer afterwards): {(time.perf_counter() - start) * 1e3:8.1f} ms")
    prepared = clean
    if hasattr(module, "_prepared"):
        start = time.perf_counter()
        prepared = module._prepared(fresh)
        print(f"  vocabulary arrays (cached per tokenizer afterwards):   {(time.perf_counter() - start) * 1e3:8.1f} ms")
    for strings in BENCH_STRINGS:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            module._build(prepared, tuple(strings))
            best = min(best, time.perf_counter() - start)
        print(f"  tables for {strings!r}: {best * 1e3:8.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", nargs="?", const="", metavar="TOKENIZER_JSON",
                        help="time the table build instead of recording (default tokenizer: a 50257-token BPE)")
    parser.add_argument("--impl", help="with --bench: the stop_strings.py to time (default: xlagen's)")
    args = parser.parse_args()
    if args.bench is not None:
        bench(args.bench, args.impl)
        return
    _peers()
    rng = random.Random(0)
    out = {}
    for name in TOKENIZERS:
        record_tokenizer(name, out, rng)
    record_generate(out)
    record_cases(out)
    path = os.path.join(ROOT, "reference", "stop_strings.npz")
    np.savez_compressed(path, **out)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
