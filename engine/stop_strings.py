"""Stop strings as transformers 4.57's StopStringCriteria defines them, preprocessed for the kernel.

`stop_string_tables(tokenizer, stop_strings)` turns a `tokenizers.Tokenizer` and a list of stop
strings into the fixed-shape integer tables `xlagen.kernels.stopping.stop_string_hits` reads
inside the compiled decode loop. No string is compared at run time: as in transformers, every
vocabulary id gets, for every stop string,

  - the positions inside the string where the token can sit, counted in characters from the
    string's end to the token's end (a token may run off the string's start);
  - its "end overlaps": how many characters of the string's end its start covers (a token may
    run past the string's end; a token that holds the whole string has overlap len(string));
  - the length of its text.

The text of a token is transformers' "clean" token string (StopStringCriteria.clean_tokenizer_vocab):
the token decoded after the tokens of a fixed prefix ("abcdef"), with the prefix cut off. So
byte-level BPE tokens lose their byte mapping ('Ġthe' -> ' the'; a token holding part of a
UTF-8 character decodes to U+FFFD), Metaspace tokens turn '▁' into a space even at the front
('▁the' -> ' the', '▁' -> ' '), and special tokens keep their text ('</s>'). The tokenizer's own
decoder does this, as transformers' PreTrainedTokenizerFast does; without a decoder the tokens
are joined by spaces, as there.

Shapes are padded up to buckets so that stop string lists of similar size share one compiled
program: see `StopArrays` and `StopTables.key`.

The build is vectorised over the vocabulary: the clean strings are kept (per tokenizer) as one
array of code points with each token's start and length, and for every stop string and offset the
candidate tokens are narrowed one character at a time with numpy gathers, so the work follows the
tokens still in the running, not the vocabulary size times the string length squared. On a
50257-token byte-level BPE a short string takes a few milliseconds (the clean strings themselves,
once per tokenizer, take a few hundred: one decoder call per token); see
`python tools/make_stop_fixtures.py --bench`.
"""
import collections
import threading
import typing
import weakref

import numpy as np

from xlagen.kernels.errors import GenerationArgumentError

from .buckets import power_of_two

# transformers' static prefix for clean token strings (StopStringCriteria.clean_tokenizer_vocab).
_PREFIX = "abcdef"
# Bucket floors: most stop string lists are one or two short strings, and these keep them in
# one program; above a floor, sizes go up in powers of two.
_MIN_STRINGS, _MIN_CHARS, _MIN_POSITIONS, _MIN_OVERLAPS = 1, 8, 2, 2
# Table sets kept per tokenizer (most recently used first out of the door when full).
_PER_TOKENIZER = 16


class StopArrays(typing.NamedTuple):
    """The tables, numpy int32, read-only. V = the tokenizer's largest id + 2 (the last row is
    transformers' dummy row: ids past the vocabulary, and NO_TOKEN, read it); N, L, P, E are the
    bucketed number of strings, longest string, positions per token and overlaps per token.
    Slots past the real sizes hold -1 (0 in string_lengths), which never matches.

    positions:      [V, N, P] int32  valid positions of token v inside string n, ascending, -1 padded.
    end_lengths:    [V, N, E] int32  end overlaps of token v with string n, -1 padded.
    token_lengths:  [V] int32        length of each token's clean string; -1 for ids without a token.
    string_lengths: [N] int32        length of each stop string in characters; 0 in padded slots.
    strings:        [N, L] int32     the stop strings as Unicode code points, -1 padded. L is also
                                     the number of trailing history slots the kernel reads.
    """
    positions: np.ndarray
    end_lengths: np.ndarray
    token_lengths: np.ndarray
    string_lengths: np.ndarray
    strings: np.ndarray


class StopTables(typing.NamedTuple):
    """The preprocessed stop strings of one tokenizer.

    arrays:     StopArrays, the kernel's inputs.
    key:        (V, N, L, P, E), the static shape bucket: tables with equal keys have arrays of
                identical shapes (and serve one compiled program).
    max_tokens: the most trailing tokens a match can span: transformers' window, the length of the
                longest stop string (every token that advances a match covers at least a character).
    stop_strings: the strings, as given (a tuple).
    max_positions, max_end_lengths: transformers' unpadded P and E (its max_valid_positions and
                max_valid_end_lens), for comparison with its embedding vector.
    """
    arrays: StopArrays
    key: tuple
    max_tokens: int
    stop_strings: tuple
    max_positions: int
    max_end_lengths: int


def check_stop_strings(stop_strings):
    """transformers' argument: a str or a non-empty list (or tuple) of non-empty str -> tuple of str.

    Raises GenerationArgumentError otherwise.
    """
    if isinstance(stop_strings, str):
        stop_strings = [stop_strings]
    if not isinstance(stop_strings, (list, tuple)):
        raise GenerationArgumentError(
            f"stop_strings must be a str or a list of str, got {type(stop_strings).__name__}")
    if not stop_strings:
        raise GenerationArgumentError("stop_strings must hold at least one string, got an empty list")
    for i, s in enumerate(stop_strings):
        if not isinstance(s, str):
            raise GenerationArgumentError(
                f"stop_strings must hold only str, got {type(s).__name__} {s!r} at index {i}")
        if not s:
            raise GenerationArgumentError(f"stop_strings must hold non-empty strings, got '' at index {i}")
    return tuple(stop_strings)


def clean_token_strings(tokenizer):
    """transformers' clean token strings of every vocabulary id (added tokens included).

    Args:
      tokenizer: a tokenizers.Tokenizer.
    Returns:
      dict {id: str}, cached per tokenizer (and vocabulary size).
    """
    _check_tokenizer(tokenizer)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    with _LOCK:
        entry = _entry(tokenizer)
        if entry.clean is not None and entry.clean[0] == size:
            return entry.clean[1]
    clean = _clean(tokenizer)
    with _LOCK:
        _entry(tokenizer).clean = (size, clean)
    return clean


def stop_string_tables(tokenizer, stop_strings):
    """The fixed-shape tables that `kernels.stopping.stop_string_hits` matches stop strings with.

    Args:
      tokenizer: a tokenizers.Tokenizer (the model's tokenizer.json).
      stop_strings: a str or a list of str, transformers' `stop_strings`.
    Returns:
      StopTables (cached per tokenizer object and tuple of strings; its arrays are read-only).
    Raises:
      GenerationArgumentError: stop_strings is not a str or a non-empty list of non-empty str, the
        tokenizer is missing, or no token can end any of the strings (transformers' ValueError).
    """
    strings = check_stop_strings(stop_strings)
    _check_tokenizer(tokenizer)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    with _LOCK:
        entry = _entry(tokenizer)
        tables = entry.tables.get((size, strings))
        if tables is not None:
            entry.tables.move_to_end((size, strings))
            return tables
    tables = _build(_prepared(tokenizer), strings)
    with _LOCK:
        entry = _entry(tokenizer)
        entry.tables[(size, strings)] = tables
        while len(entry.tables) > _PER_TOKENIZER:
            entry.tables.popitem(last=False)
    return tables


class _Entry:
    def __init__(self):
        self.clean = None  # (vocab size, {id: clean string})
        self.vocabulary = None  # (vocab size, _Vocabulary of those clean strings)
        self.tables = collections.OrderedDict()  # (vocab size, strings) -> StopTables


# Keyed on the tokenizer object itself (identity hash), dropped with it: tokenizers' equality is
# not trusted here either, and the vocabulary size guards against tokens added later.
_CACHE = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _entry(tokenizer):
    entry = _CACHE.get(tokenizer)
    if entry is None:
        entry = _CACHE[tokenizer] = _Entry()
    return entry


def _prepared(tokenizer):
    """The _Vocabulary of the tokenizer's clean token strings, cached with them."""
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    with _LOCK:
        entry = _entry(tokenizer)
        if entry.vocabulary is not None and entry.vocabulary[0] == size:
            return entry.vocabulary[1]
    vocabulary = _vocabulary(clean_token_strings(tokenizer))
    with _LOCK:
        _entry(tokenizer).vocabulary = (size, vocabulary)
    return vocabulary


def _check_tokenizer(tokenizer):
    if tokenizer is None:
        raise GenerationArgumentError("stop_strings need the model's tokenizer (tokenizer.json), and there is none")
    for name in ("get_vocab", "encode", "id_to_token", "decoder"):
        if not hasattr(tokenizer, name):
            raise GenerationArgumentError(
                f"stop_strings need a tokenizers.Tokenizer, got {type(tokenizer).__name__}")


def _clean(tokenizer):
    """Each token decoded after the prefix's tokens, the prefix (and whatever the decoder put
    before it, such as a space) cut off: transformers' clean_tokenizer_vocab on a fast tokenizer."""
    base = [tokenizer.id_to_token(i) for i in tokenizer.encode(_PREFIX, add_special_tokens=False).ids]
    decoder = tokenizer.decoder
    clean = {}
    for token, index in tokenizer.get_vocab(with_added_tokens=True).items():
        text = decoder.decode(base + [token]) if decoder is not None else " ".join(base + [token])
        clean[index] = text[text.index(_PREFIX) + len(_PREFIX):]
    return clean


class _Vocabulary(typing.NamedTuple):
    """The clean token strings as flat numpy arrays, for the vectorised table build (cached with them).

    ids:     [K] int64   the ids that have a token (in the dict's order).
    lengths: [K] int64   each one's clean string length in characters.
    starts:  [K] int64   where it starts in `text` (ends = starts + lengths).
    text:    [C] int32   all clean strings concatenated, as Unicode code points.
    rows:    int         table rows: the largest id + 2 (transformers' dummy last row).
    """
    ids: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray
    text: np.ndarray
    rows: int


def _vocabulary(clean):
    """{id: clean string} -> _Vocabulary."""
    ids = np.fromiter(clean.keys(), np.int64, len(clean))
    tokens = list(clean.values())
    lengths = np.fromiter(map(len, tokens), np.int64, len(tokens))
    starts = np.cumsum(lengths) - lengths
    text = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int32)
    for a in (ids, lengths, starts, text):
        a.setflags(write=False)
    return _Vocabulary(ids, lengths, starts, text, int(ids.max()) + 2 if len(ids) else 1)


def _matches(vocab, stop):
    """transformers' _stop_string_get_matching_positions for every token and one stop string, over
    the vocabulary at once: (positions, overlaps), each a pair of arrays (token index k into
    vocab.ids, value), sorted by k and within a token in transformers' order.

    A token of length l sits at position i (1 <= i < len(stop)) when its last min(l, len - i)
    characters are those that end i characters before the string's end; its first m characters
    (1 <= m <= l) overlap the string's end when they end with the string's last min(m, len)
    characters, giving the overlap min(m, len). Candidates are narrowed one character at a time,
    so each step only reads the tokens still in the running.
    """
    size = len(stop)
    code = np.array([ord(c) for c in stop], np.int64)
    text, lengths, starts = vocab.text, vocab.lengths, vocab.starts
    ends = starts + lengths
    every = np.arange(len(lengths))
    empty = every[lengths == 0]  # an empty token fits every position (and overlaps nothing)
    nonempty = every[lengths > 0]
    last = text[ends[nonempty] - 1]
    first = text[starts[nonempty]]

    pos_k, pos_i = [empty.repeat(size - 1)], [np.tile(np.arange(1, size), len(empty))]
    for i in range(1, size):
        n = size - i  # the token ends after the string's first n characters
        alive = nonempty[last == code[n - 1]]
        done = []
        for q in range(1, n):  # the token's q-th character from its end against code[n - 1 - q]
            if not len(alive):
                break
            short = lengths[alive] <= q
            done.append(alive[short])
            alive = alive[~short]
            alive = alive[text[ends[alive] - 1 - q] == code[n - 1 - q]]
        done.append(alive)
        fit = np.concatenate(done)
        pos_k.append(fit)
        pos_i.append(np.full(len(fit), i, np.int64))

    over_k, over_m = [], []
    for m in range(1, size + 1):  # the token's first m characters are the string's last m
        alive = nonempty[first == code[size - m]]
        alive = alive[lengths[alive] >= m]
        for q in range(1, m):
            if not len(alive):
                break
            alive = alive[text[starts[alive] + q] == code[size - m + q]]
        over_k.append(alive)
        over_m.append(np.full(len(alive), m, np.int64))
    # m > size: the whole string occurs inside the token, starting after its first character.
    # Occurrences in the concatenated text, then kept when they lie inside one token.
    at = np.flatnonzero(text[:max(len(text) - size + 1, 0)] == code[0])
    for q in range(1, size):
        if not len(at):
            break
        at = at[text[at + q] == code[q]]
    if len(at):
        owner = np.searchsorted(starts, at, side="right") - 1
        inside = (at > starts[owner]) & (at + size <= ends[owner])
        over_k.append(owner[inside])
        over_m.append(at[inside] - starts[owner[inside]] + size)

    def ordered(ks, values, clip=None):
        k, v = np.concatenate(ks), np.concatenate(values)
        order = np.lexsort((v, k))
        k, v = k[order], v[order]
        return k, (v if clip is None else np.minimum(v, clip))

    return ordered(pos_k, pos_i), ordered(over_k, over_m, size)


def _ranks(k):
    """For sorted group labels k: each element's index within its group."""
    return np.arange(len(k)) - np.searchsorted(k, k, side="left")


def _build(clean, strings):
    """StopTables of {id: clean string} (or its _Vocabulary) and a tuple of stop strings."""
    vocab = clean if isinstance(clean, _Vocabulary) else _vocabulary(clean)
    rows = vocab.rows  # a dummy last row, as transformers: out-of-range ids read it
    found = [_matches(vocab, s) for s in strings]
    counts = [(np.bincount(p[0], minlength=len(vocab.ids)), np.bincount(e[0], minlength=len(vocab.ids)))
              for p, e in found]
    max_positions = max((int(p.max()) for p, _ in counts if len(p)), default=0) or 1
    max_overlaps = max((int(e.max()) for _, e in counts if len(e)), default=0)
    if not max_overlaps:
        raise GenerationArgumentError(
            f"stop_strings {list(strings)!r}: no token of the vocabulary can end any of them (transformers "
            "raises here too); they most likely hold characters the tokenizer cannot produce")
    longest = max(len(s) for s in strings)
    key = (rows, power_of_two(len(strings), _MIN_STRINGS), power_of_two(longest, _MIN_CHARS),
           power_of_two(max_positions, _MIN_POSITIONS), power_of_two(max_overlaps, _MIN_OVERLAPS))
    _, n, chars, p, e = key
    positions = np.full((rows, n, p), -1, np.int32)
    overlaps = np.full((rows, n, e), -1, np.int32)
    token_lengths = np.full((rows,), -1, np.int32)
    token_lengths[vocab.ids] = vocab.lengths
    for j, ((pk, pv), (ek, ev)) in enumerate(found):
        positions[vocab.ids[pk], j, _ranks(pk)] = pv
        overlaps[vocab.ids[ek], j, _ranks(ek)] = ev
    string_lengths = np.zeros((n,), np.int32)
    string_lengths[:len(strings)] = [len(s) for s in strings]
    codes = np.full((n, chars), -1, np.int32)
    for j, s in enumerate(strings):
        codes[j, :len(s)] = [ord(c) for c in s]
    arrays = StopArrays(positions, overlaps, token_lengths, string_lengths, codes)
    for a in arrays:
        a.setflags(write=False)  # shared through the cache
    return StopTables(arrays=arrays, key=key, max_tokens=longest, stop_strings=strings,
                      max_positions=max_positions, max_end_lengths=max_overlaps)
