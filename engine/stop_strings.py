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
"""
import collections
import threading
import typing
import weakref

import numpy as np

from xlagen.models import GenerationArgumentError

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


def _bucket(size, floor):
    """The smallest power of two >= size, at least `floor`."""
    return max(floor, 1 << max(size - 1, 0).bit_length())


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
    tables = _build(clean_token_strings(tokenizer), strings)
    with _LOCK:
        entry = _entry(tokenizer)
        entry.tables[(size, strings)] = tables
        while len(entry.tables) > _PER_TOKENIZER:
            entry.tables.popitem(last=False)
    return tables


class _Entry:
    def __init__(self):
        self.clean = None  # (vocab size, {id: clean string})
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


def _matches(token, stop):
    """transformers' _stop_string_get_matching_positions for one token and one stop string,
    written forwards: (valid positions, end overlaps), both in transformers' order."""
    size, length = len(stop), len(token)
    # A token with a character can only sit inside the string if its last character occurs
    # before the string's last one, and only overlap the end if it holds the last character.
    if length and token[-1] not in stop[:-1] and stop[-1] not in token:
        return [], []
    # Token ending `i` characters before the string's end (1 <= i < len(stop)); the part of the
    # string it covers may be cut at the string's start.
    positions = [i for i in range(1, size) if token.endswith(stop[max(0, size - i - length):size - i])]
    # The token's first m characters end where the string ends: they cover its last min(m, size).
    overlaps = [min(m, size) for m in range(1, length + 1) if token[:m].endswith(stop[size - min(m, size):])]
    return positions, overlaps


def _build(clean, strings):
    vocab = max(clean) + 2  # a dummy last row, as transformers: out-of-range ids read it
    found = [[_matches(token, s) for s in strings] for token in (clean.get(v) for v in range(vocab - 1))
             if token is not None]
    ids = [v for v in range(vocab - 1) if v in clean]
    max_positions = max((len(p) for row in found for p, _ in row if p), default=1)
    max_overlaps = max((len(e) for row in found for _, e in row if e), default=0)
    if not max_overlaps:
        raise GenerationArgumentError(
            f"stop_strings {list(strings)!r}: no token of the vocabulary can end any of them (transformers "
            "raises here too); they most likely hold characters the tokenizer cannot produce")
    longest = max(len(s) for s in strings)
    key = (vocab, _bucket(len(strings), _MIN_STRINGS), _bucket(longest, _MIN_CHARS),
           _bucket(max_positions, _MIN_POSITIONS), _bucket(max_overlaps, _MIN_OVERLAPS))
    _, n, chars, p, e = key
    positions = np.full((vocab, n, p), -1, np.int32)
    overlaps = np.full((vocab, n, e), -1, np.int32)
    token_lengths = np.full((vocab,), -1, np.int32)
    for v, row in zip(ids, found):
        token_lengths[v] = len(clean[v])
        for j, (pos, ends) in enumerate(row):
            positions[v, j, :len(pos)] = pos
            overlaps[v, j, :len(ends)] = ends
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
