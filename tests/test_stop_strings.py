"""Stop strings: engine/stop_strings.py's tables and kernels/stopping.py's matcher against what
transformers' StopStringCriteria gave on the fixture tokenizers (tools/make_stop_fixtures.py)."""
import functools
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tokenizers import Tokenizer

from conftest import FIXTURES, fixture_path, generator
from xlagen.engine.stop_strings import StopArrays, clean_token_strings, stop_string_tables
from xlagen.kernels.search import NO_TOKEN
from xlagen.kernels.stopping import stop_string_hits
from xlagen.models import GenerationArgumentError

TOKENIZERS = ("gpt2-tiny", "opt-tiny", "t5-v1_1-tiny")
SLOTS = 64  # history width S
FUTURE = 5  # empty slots after the newest token


@functools.lru_cache(maxsize=None)
def recorded():
    with np.load(os.path.join(FIXTURES, "reference", "stop_strings.npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@functools.lru_cache(maxsize=None)
def tokenizer(name):
    return Tokenizer.from_file(os.path.join(fixture_path(name), "tokenizer.json"))


def sets(name):
    """{set name: (strings, raises)} recorded for a tokenizer."""
    ref, prefix = recorded(), name + "/"
    names = sorted({k[len(prefix):].split("/")[0] for k in ref if k.startswith(prefix) and k.count("/") == 2})
    return {s: (json.loads(str(ref[f"{prefix}{s}/strings"])), bool(ref[f"{prefix}{s}/raises"])) for s in names}


def matchable(name):
    return {s: strings for s, (strings, raises) in sets(name).items() if not raises}


def histories(ids, length, future=None):
    """Recorded sequences [K, T] (left padded with -1) right-aligned to end at slot length-1 of a
    [K, SLOTS] history: NO_TOKEN before them, `future` (default NO_TOKEN) after."""
    k, t = ids.shape
    history = np.full((k, SLOTS), NO_TOKEN, np.int32)
    history[:, length - t:length] = np.where(ids < 0, NO_TOKEN, ids)
    if future is not None:
        history[:, length:] = future[:, :SLOTS - length]
    return history


def padded(arrays, shapes):
    """StopArrays padded up to larger shapes with the values that never match."""
    fills = StopArrays(positions=-1, end_lengths=-1, token_lengths=-1, string_lengths=0, strings=-1)
    return StopArrays(*(np.pad(a, [(0, s - n) for n, s in zip(a.shape, shape)], constant_values=fill)
                        for a, shape, fill in zip(arrays, shapes, fills)))


@pytest.mark.parametrize("name", TOKENIZERS)
def test_clean_tokens_and_tables_match_transformers(name):
    ref = recorded()
    clean = clean_token_strings(tokenizer(name))
    expected = json.loads(str(ref[f"{name}/clean"]))
    assert [clean.get(i) for i in range(len(expected))] == expected
    for set_name, strings in matchable(name).items():
        tables = stop_string_tables(tokenizer(name), strings)
        a, key = tables.arrays, f"{name}/{set_name}"
        p, e = int(ref[key + "/max_positions"]), int(ref[key + "/max_end_lengths"])
        assert (tables.max_positions, tables.max_end_lengths) == (p, e), key
        n = len(strings)
        # transformers' embedding vector: positions of each string, end overlaps of each, token length.
        vec = np.concatenate([a.positions[:, :n, :p].reshape(-1, n * p), a.end_lengths[:, :n, :e].reshape(-1, n * e),
                              a.token_lengths[:, None]], axis=1)
        np.testing.assert_array_equal(vec, ref[key + "/embedding"], err_msg=key)
        assert tables.key == (a.positions.shape[0], *a.positions.shape[1:2], a.strings.shape[1],
                              a.positions.shape[2], a.end_lengths.shape[2])
        assert tables.max_tokens == max(len(s) for s in strings)
        assert all(x.dtype == np.int32 for x in a)


TRACES = []


@functools.lru_cache(maxsize=None)
def compiled():
    """One XLA program for every recorded set of every tokenizer: (function, table shapes, rows).
    The tables are padded to the largest shapes among them, which must change nothing."""
    arrays = [stop_string_tables(tokenizer(name), strings).arrays
              for name in TOKENIZERS for strings in matchable(name).values()]
    shapes = StopArrays(*(tuple(np.max([a[i].shape for a in arrays], axis=0)) for i in range(len(StopArrays._fields))))
    rows = max(v.shape[0] for k, v in recorded().items() if k.endswith("/ids"))
    spec = StopArrays(*(tf.TensorSpec(s, tf.int32) for s in shapes))

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, SLOTS], tf.int32),
                                                    tf.TensorSpec([], tf.int32), spec])
    def hits(history, length, tables):
        TRACES.append(1)
        return stop_string_hits(history, length, tables)

    return hits, shapes, rows


@pytest.mark.parametrize("name", TOKENIZERS)
def test_hits_match_transformers_compiled(name):
    ref = recorded()
    hits, shapes, rows = compiled()
    rng = np.random.default_rng(0)
    for set_name, strings in matchable(name).items():
        ids, expected = ref[f"{name}/{set_name}/ids"], ref[f"{name}/{set_name}/hits"]
        tables = padded(stop_string_tables(tokenizer(name), strings).arrays, shapes)
        # Future slots empty, then filled with random tokens the match must not read.
        for length, future in ((SLOTS - FUTURE, None), (ids.shape[1] + 3, rng.integers(0, 384, (len(ids), SLOTS)))):
            history = histories(ids, length, future)
            # Rows padded to one count, so that XLA compiles one executable (the batch is unknown to the trace).
            history = np.concatenate([history, np.full((rows - len(ids), SLOTS), NO_TOKEN, np.int32)])
            got = hits(history, np.int32(length), tables).numpy()
            assert not got[len(ids):].any()
            wrong = np.flatnonzero(got[:len(ids)] != expected)
            assert not len(wrong), (f"{name}/{set_name} {len(wrong)} of {len(ids)} differ, e.g. ids "
                                    f"{ids[wrong[0]][ids[wrong[0]] >= 0].tolist()} transformers {expected[wrong[0]]}")
    assert len(TRACES) == 1


@pytest.mark.parametrize("name", TOKENIZERS)
def test_hits_match_transformers_eager(name):
    ref = recorded()
    for set_name, strings in matchable(name).items():
        ids, expected = ref[f"{name}/{set_name}/ids"], ref[f"{name}/{set_name}/hits"]
        tables = stop_string_tables(tokenizer(name), strings).arrays  # its own bucket
        got = stop_string_hits(tf.constant(histories(ids, SLOTS - FUTURE)), tf.constant(SLOTS - FUTURE), tables)
        assert got.dtype == tf.bool and got.shape == (len(ids),)
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{name}/{set_name}")


def test_no_token_and_short_histories_never_match():
    tables = stop_string_tables(tokenizer("gpt2-tiny"), ["e", ":"]).arrays
    e = tokenizer("gpt2-tiny").token_to_id("e")
    history = np.full((3, 8), NO_TOKEN, np.int32)
    history[1, 0] = e
    history[2, :] = e
    for length, expected in ((0, [False, False, False]), (1, [False, True, True]), (2, [False, False, True])):
        got = stop_string_hits(tf.constant(history), tf.constant(length), tables).numpy()
        assert got.tolist() == expected, length


def test_generate_with_stop_string_stops_where_transformers_does():
    """transformers' greedy generate with stop_strings, replayed on its own tokens without them: a
    row finishes at EOS or at the first step whose history ends with the stop string."""
    ref = recorded()
    options = json.loads(str(ref["generate/options"]))
    ids, mask = ref["generate/input_ids"], ref["generate/attention_mask"]
    plain, expected = ref["generate/plain"], ref["generate/sequences"]
    tables = stop_string_tables(tokenizer("gpt2-tiny"), options["stop_strings"]).arrays
    width, steps = ids.shape[1], options["max_new_tokens"]
    history = np.where(mask > 0, ids, NO_TOKEN).astype(np.int32)
    history = np.concatenate([history, plain[:, width:]], axis=1)
    finished = np.zeros(len(ids), bool)
    out = plain.copy()
    for step in range(steps):
        out[finished, width + step] = options["pad_token_id"]
        done = stop_string_hits(tf.constant(history), tf.constant(width + step + 1), tables).numpy()
        finished |= done | (plain[:, width + step] == options["eos_token_id"])
    np.testing.assert_array_equal(out, expected)
    assert (expected != plain).any()


def test_same_bucket_same_shapes():
    tok = tokenizer("gpt2-tiny")
    a = stop_string_tables(tok, ["the", "for"])
    b = stop_string_tables(tok, ["if", " in"])
    assert a.key == b.key
    assert [x.shape for x in a.arrays] == [x.shape for x in b.arrays]
    assert [x.dtype for x in a.arrays] == [x.dtype for x in b.arrays]
    c = stop_string_tables(tok, ["the", "for", "if"])  # 3 strings: the next bucket
    assert c.key != a.key and c.arrays.positions.shape[1] == 2 * a.arrays.positions.shape[1]
    d = stop_string_tables(tok, "a much longer stop string")
    assert d.arrays.strings.shape[1] > a.arrays.strings.shape[1]
    assert stop_string_tables(tok, ("the", "for")) is a  # cached on the tokenizer and the strings
    assert stop_string_tables(tok, "the").stop_strings == ("the",)


@pytest.mark.parametrize("bad", [[], "", ["the", ""], [1], ["the", None], 5, None, {"the"}, b"the"])
def test_bad_stop_strings(bad):
    with pytest.raises(GenerationArgumentError, match="stop_strings"):
        stop_string_tables(tokenizer("gpt2-tiny"), bad)


def test_bad_tokenizer_and_unreachable_strings():
    with pytest.raises(GenerationArgumentError, match="stop_strings.*tokenizer"):
        stop_string_tables(None, ["the"])
    for name in TOKENIZERS:
        for strings, raises in sets(name).values():
            if raises:  # transformers raised ValueError: no token can end any of the strings
                with pytest.raises(GenerationArgumentError, match="stop_strings"):
                    stop_string_tables(tokenizer(name), strings)
    assert any(raises for name in TOKENIZERS for _, raises in sets(name).values())


# -- the vectorised table build against a straightforward one ------------------------------------

def reference_tables(clean, strings):
    """The tables of {id: clean string}, token by token and string by string, written as directly
    as transformers' _stop_string_get_matching_positions states them (the slow original build).
    Returns StopTables fields (arrays, key, max_positions, max_end_lengths), or None where
    stop_string_tables must raise (no token can end any string)."""
    found = {}
    for v, token in clean.items():
        row = []
        for stop in strings:
            size, length = len(stop), len(token)
            # Token ending i characters before the string's end; the part it covers may be cut at the start.
            positions = [i for i in range(1, size) if token.endswith(stop[max(0, size - i - length):size - i])]
            # Its first m characters end where the string ends, covering the string's last min(m, size).
            overlaps = [min(m, size) for m in range(1, length + 1) if token[:m].endswith(stop[size - min(m, size):])]
            row.append((positions, overlaps))
        found[v] = row
    max_positions = max((len(p) for row in found.values() for p, _ in row if p), default=1)
    max_overlaps = max((len(e) for row in found.values() for _, e in row if e), default=0)
    if not max_overlaps:
        return None
    bucket = lambda size, floor: max(floor, 1 << max(size - 1, 0).bit_length())  # noqa: E731
    vocab, longest = max(clean) + 2, max(len(s) for s in strings)
    key = (vocab, bucket(len(strings), 1), bucket(longest, 8), bucket(max_positions, 2), bucket(max_overlaps, 2))
    _, n, chars, p, e = key
    positions, overlaps = np.full((vocab, n, p), -1, np.int32), np.full((vocab, n, e), -1, np.int32)
    token_lengths = np.full((vocab,), -1, np.int32)
    for v, row in found.items():
        token_lengths[v] = len(clean[v])
        for j, (pos, ends) in enumerate(row):
            positions[v, j, :len(pos)] = pos
            overlaps[v, j, :len(ends)] = ends
    string_lengths = np.zeros((n,), np.int32)
    string_lengths[:len(strings)] = [len(s) for s in strings]
    codes = np.full((n, chars), -1, np.int32)
    for j, s in enumerate(strings):
        codes[j, :len(s)] = [ord(c) for c in s]
    return StopArrays(positions, overlaps, token_lengths, string_lengths, codes), key, max_positions, max_overlaps


def random_stop_strings(clean, rng, count):
    """Stop string lists drawn around a vocabulary: pieces of joined tokens (split across tokens),
    whole tokens, their ends, runs of one character, characters no token has, and mixes."""
    tokens = [t for t in clean.values() if t]
    alphabet = sorted(set("".join(tokens)))
    out = []
    for _ in range(count):
        strings = []
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(6))
            if kind == 0:  # a piece of a few joined tokens
                text = "".join(tokens[i] for i in rng.integers(0, len(tokens), int(rng.integers(1, 5))))
                at = int(rng.integers(len(text)))
                s = text[at:at + int(rng.integers(1, 14))]
            elif kind == 1:  # a whole token
                s = tokens[int(rng.integers(len(tokens)))]
            elif kind == 2:  # a token's start or end
                t = tokens[int(rng.integers(len(tokens)))]
                s = t[:int(rng.integers(1, len(t) + 1))] if rng.integers(2) else t[-int(rng.integers(1, len(t) + 1)):]
            elif kind == 3:  # repeats: several positions and end overlaps per token
                s = str(rng.choice(list("= -\ne_6"))) * int(rng.integers(1, 6))
            elif kind == 4:  # random characters of the vocabulary
                s = "".join(str(c) for c in rng.choice(alphabet, int(rng.integers(1, 5))))
            else:  # with a character no token holds
                s = "".join(str(c) for c in rng.choice(alphabet, int(rng.integers(0, 3)))) + "\u2603"
            strings.append(s)
        out.append(tuple(dict.fromkeys(strings)))
    return out


def assert_tables_equal(got, expected, what):
    arrays, key, max_positions, max_overlaps = expected
    assert (got.key, got.max_positions, got.max_end_lengths) == (key, max_positions, max_overlaps), what
    for field, a, b in zip(StopArrays._fields, got.arrays, arrays):
        assert a.dtype == b.dtype, (what, field)
        np.testing.assert_array_equal(a, b, err_msg=f"{what} {field}")


@pytest.mark.parametrize("name", TOKENIZERS + ("default",))
def test_vectorised_tables_match_reference(name):
    """stop_string_tables against reference_tables on random stop strings, on the fixture tokenizers
    and the shipped default model's (3072 tokens)."""
    tok = (Tokenizer.from_file(os.path.join(os.path.dirname(FIXTURES), "..", "models", "default", "tokenizer.json"))
           if name == "default" else tokenizer(name))
    clean = clean_token_strings(tok)
    rng = np.random.default_rng(sum(map(ord, name)))
    cases = random_stop_strings(clean, rng, 12 if name == "default" else 80)
    raised = 0
    for strings in cases:
        expected = reference_tables(clean, strings)
        if expected is None:
            raised += 1
            with pytest.raises(GenerationArgumentError, match="stop_strings"):
                stop_string_tables(tok, strings)
            continue
        assert_tables_equal(stop_string_tables(tok, strings), expected, f"{name} {strings!r}")
    assert raised < len(cases)


def test_vectorised_tables_edge_vocabularies():
    """Vocabularies no tokenizer here has: empty tokens (they fit every position), holes in the ids,
    NUL and astral characters, long runs of one character (many end overlaps inside one token),
    tokens that hold the string several times, overlapping itself."""
    from xlagen.engine.stop_strings import _build
    clean = {0: "", 1: "a", 2: "ab", 3: "aaaa", 4: "\x00", 5: "b\x00a", 7: "ba", 9: "", 10: "\U0001F600a",
             11: "abababab", 12: "  ", 13: "=" * 40, 14: "xab", 15: "abx", 20: "aab\U0001F600", 21: "b"}
    strings_list = [("a",), ("ab",), ("aa", "b"), ("aba",), ("\x00a",), ("b\x00",), ("\U0001F600a", "ab"),
                    ("==",), ("=" * 5, " "), ("abab", "ba", "aab", "x"), ("zz",), ("z", "a"), ("bab\U0001F600",)]
    for strings in strings_list:
        expected = reference_tables(clean, strings)
        if expected is None:
            with pytest.raises(GenerationArgumentError, match="stop_strings"):
                _build(clean, strings)
        else:
            assert_tables_equal(_build(clean, strings), expected, repr(strings))


# -- generate(stop_strings=...) against transformers' generate -----------------------------------

# Recorded by tools/make_stop_fixtures.py: key prefix -> fixture.
GENERATE_CASES = {"generate": "gpt2-tiny", "generate-beam": "gpt2-tiny", "generate-two": "gpt2-tiny",
                  "generate-opt-tiny": "opt-tiny", "generate-t5-v1_1-tiny": "t5-v1_1-tiny"}


@pytest.mark.parametrize("case", GENERATE_CASES)
def test_generate_stops_as_transformers(case):
    """gen.generate with stop_strings, on the model's own tokenizer: transformers 4.57's sequences
    (rows end at the token that completes a string, pad_token_id after it) and, in beam search,
    its sequences_scores."""
    ref = recorded()
    options = json.loads(str(ref[f"{case}/options"]))
    gen = generator(GENERATE_CASES[case])
    # One compiled program (and test_export's stop strings in a SavedModel); the other cases run the
    # same functions eagerly (tests/test_eager.py): how rows stop is their question.
    eager = {} if case == "generate" else {"jit_compile": False}
    out = gen.generate(ref[f"{case}/input_ids"], attention_mask=ref[f"{case}/attention_mask"], **options, **eager)
    expected = ref[f"{case}/sequences"]
    if options.get("output_scores"):
        np.testing.assert_array_equal(out.sequences, expected, err_msg=case)
        np.testing.assert_allclose(out.sequences_scores, ref[f"{case}/sequences_scores"], atol=1e-4, rtol=1e-5,
                                   err_msg=case)
    else:
        np.testing.assert_array_equal(out, expected, err_msg=case)


@pytest.mark.parametrize("case", [c for c in GENERATE_CASES if c != "generate"])
def test_generate_references_stop_rows_at_different_steps(case):
    """What the recorded cases are meant to show: some rows stop at a stop string, at different
    steps, with pad after the completing token, and some row runs on."""
    ref = recorded()
    options = json.loads(str(ref[f"{case}/options"]))
    seqs, plain, stopped = ref[f"{case}/sequences"], ref[f"{case}/plain"], ref[f"{case}/stopped"]
    start = seqs.shape[1] - options["max_new_tokens"]
    rows = np.flatnonzero(stopped >= 0)
    assert len(set(stopped[rows].tolist())) >= 2 and len(rows) < len(seqs), case
    for r in rows:
        end = start + stopped[r] + 1
        pad = options["pad_token_id"]
        assert (seqs[r, end:] == pad).all() and seqs[r, end - 1] != pad, (case, r)
    if not options.get("num_beams"):  # greedy rows are their plain rows, cut
        for r in range(len(seqs)):
            end = start + stopped[r] + 1 if stopped[r] >= 0 else seqs.shape[1]
            np.testing.assert_array_equal(seqs[r, :end], plain[r, :end], err_msg=f"{case} row {r}")
            assert (stopped[r] >= 0) == (seqs[r] != plain[r]).any(), (case, r)
    if case == "generate-two":  # its first string is split across tokens by the tokenizer
        first = options["stop_strings"][0]
        assert len(tokenizer("gpt2-tiny").encode(first, add_special_tokens=False).ids) > 1
