"""Logits processors, as transformers defines them, over fixed-shape token histories.

A history is [B, S] int32: the prompt, then the tokens generated so far, with
kernels.search.NO_TOKEN in slots that hold no token (bucket padding, the future).
"""
import tensorflow as tf

from .search import NO_TOKEN
from .shapes import dim


def presence(history, vocab_size):
    """Which vocabulary ids occur in each row: [B, S] int32 -> [B, V] bool (NO_TOKEN ignored)."""
    batch, length = dim(history, 0), history.shape[1]
    valid = history != NO_TOKEN
    rows = tf.broadcast_to(tf.range(batch, dtype=tf.int32)[:, None], [batch, length])
    index = tf.stack([rows, tf.where(valid, history, 0)], axis=-1)
    hits = tf.tensor_scatter_nd_max(tf.zeros([batch, vocab_size], tf.int32), index, tf.cast(valid, tf.int32))
    return hits > 0


def repetition_penalty(logits, history, penalty):
    """transformers' RepetitionPenaltyLogitsProcessor: divide positive (multiply negative) logits
    of every token already in the history by `penalty` (scalar float32; 1.0 changes nothing).

    Args: logits [B, V] float32; history [B, S] int32. Returns [B, V] float32.
    """
    seen = presence(history, logits.shape[-1])
    penalized = tf.where(logits < 0, logits * penalty, logits / penalty)
    return tf.where(seen, penalized, logits)


def _ban(logits, tokens, hit):
    """Set logits[r, tokens[r, c]] to -inf wherever hit[r, c]. tokens, hit: [R, C]."""
    batch, count = dim(tokens, 0), tokens.shape[1]
    rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, count])
    index = tf.stack([rows, tf.where(hit, tokens, 0)], axis=-1)
    banned = tf.tensor_scatter_nd_max(tf.zeros_like(logits, tf.int32), index, tf.cast(hit, tf.int32))
    return tf.where(banned > 0, tf.constant(-float("inf"), logits.dtype), logits)


def per_row(x):
    """A scalar or a per-row [R] value (any dtype; R the rows of the logits, B*G) as [1, 1] or
    [R, 1], to broadcast against [R, ...]: the decode loops give one step for all rows,
    multi-token steps one per row."""
    return tf.reshape(x, [-1, 1])


def last_tokens(history, length, n):
    """history[r, length[r] - n : length[r]], NO_TOKEN where that reaches before slot 0.
    history: [R, S] int32; length: scalar or [R] int32. Returns [R, n] int32."""
    slots = tf.broadcast_to(per_row(length) - n + tf.range(n), [dim(history, 0), n])
    taken = tf.gather(history, tf.maximum(slots, 0), batch_dims=1)
    return tf.where(slots >= 0, taken, NO_TOKEN)


def ngram_windows(ids, n):
    """Every n-gram of `ids` [B, S] int32: ([B, S - n + 1, n] int32, [B, S - n + 1] bool, the
    n-gram holds no NO_TOKEN). S < n gives no n-grams."""
    count = max(ids.shape[1] - n + 1, 0)
    windows = tf.stack([ids[:, k:k + count] for k in range(n)], axis=-1)
    return windows, tf.reduce_all(windows != NO_TOKEN, axis=-1)


def ban_ngram_continuations(logits, history, length, windows, valid, group=1):
    """Ban every token that, after the last n-1 tokens of the history, would complete one of
    the given n-grams (transformers' n-gram rule, with the n-grams given).

    Args:
      logits: [B*G, V] float32, G rows per n-gram set.
      history: [B*G, S] int32.  length: scalar or [B*G] int32, filled history slots.
      windows: [B, C, n] int32 n-grams.  valid: [B, C] bool, which of them count.
      group: python int G.
    Returns:
      [B*G, V] float32.
    """
    count, n = windows.shape[1], windows.shape[2]
    rows, batch = dim(history, 0), dim(windows, 0)
    if count == 0:
        return logits
    prefix = tf.reshape(last_tokens(history, length, n - 1), [batch, group, 1, n - 1])
    hit = tf.logical_and(tf.reduce_all(tf.equal(windows[:, None, :, :-1], prefix), axis=-1), valid[:, None, :])
    long_enough = tf.broadcast_to(tf.reshape(length >= n - 1, [-1]), [rows])
    hit = tf.logical_and(hit, tf.reshape(long_enough, [batch, group, 1]))  # [B, G, C]
    tokens = tf.reshape(tf.broadcast_to(windows[:, None, :, -1], [batch, group, count]), [rows, count])
    return _ban(logits, tokens, tf.reshape(hit, [rows, count]))


def no_repeat_ngram(logits, history, length, n):
    """transformers' NoRepeatNGramLogitsProcessor: ban every token that would repeat an n-gram
    already in history[:, :length].

    Args:
      logits: [B, V] float32.  history: [B, S] int32.
      length: scalar or [B] int32, how many history slots are filled (the next token goes at `length`).
      n: python int >= 1, the n-gram size (static).
    Returns:
      [B, V] float32, banned tokens at -inf.
    """
    if n > history.shape[1]:
        return logits
    windows, valid = ngram_windows(history, n)
    complete = tf.range(windows.shape[1]) + n - 1 < per_row(length)  # the window's last token is already there
    return ban_ngram_continuations(logits, history, length, windows, tf.logical_and(valid, complete))


# A prefix slot of a sequence table that matches any token (sequences shorter than the table).
ANY_TOKEN = -2


def sequence_matches(history, length, context_length, prefixes, lengths):
    """Which token sequences the next token would complete (transformers' SequenceBias rule).

    Sequence m is its prefix (prefixes[m], right-aligned, ANY_TOKEN before it) followed by
    one last token; it matches a row whose last prefix tokens equal the prefix, provided the
    sequence is not longer than the context (transformers skips those).

    Args:
      history: [R, S] int32.  length: scalar or [R] int32, filled history slots.
      context_length: scalar or [R] int32, the sequence length transformers sees (prompt as given + new tokens).
      prefixes: [M, L] int32.  lengths: [M] int32, whole sequence lengths (0 for unused rows).
    Returns:
      [R, M] bool.
    """
    width = prefixes.shape[1]
    if width:
        last = last_tokens(history, length, width)  # [R, L]
        same = tf.logical_or(tf.equal(last[:, None, :], prefixes[None]), tf.equal(prefixes, ANY_TOKEN)[None])
        match = tf.reduce_all(same, axis=-1)
    else:
        match = tf.ones([dim(history, 0), prefixes.shape[0]], tf.bool)
    return tf.logical_and(match, tf.logical_and(lengths > 0, lengths <= per_row(context_length)))


def add_sequence_bias(logits, matches, last, bias):
    """SequenceBiasLogitsProcessor: add bias[m] to logits[:, last[m]] in the rows where
    sequence m matches. logits [R, V] float32; matches [R, M] bool; last [M] int32;
    bias [M] float32. Returns [R, V] float32."""
    rows, count = dim(matches, 0), matches.shape[1]
    index = tf.stack([tf.broadcast_to(tf.range(rows)[:, None], [rows, count]),
                      tf.broadcast_to(tf.maximum(last, 0)[None], [rows, count])], axis=-1)
    added = tf.where(matches, bias[None, :], 0.0)
    return logits + tf.tensor_scatter_nd_add(tf.zeros_like(logits), index, added)


def ban_sequences(logits, matches, last):
    """NoBadWordsLogitsProcessor: -inf for logits[:, last[m]] in the rows where sequence m
    matches. logits [R, V] float32; matches [R, M] bool; last [M] int32. Returns [R, V]."""
    rows = dim(matches, 0)
    return _ban(logits, tf.broadcast_to(tf.maximum(last, 0)[None], [rows, matches.shape[1]]), matches)


def force(logits, ids, when):
    """ForcedBOS/EOSTokenLogitsProcessor: where `when` (scalar or [R] bool), every logit is -inf
    but those of `ids` ([E] int32, NO_TOKEN padded), which are 0. logits [R, V] float32."""
    allowed = tf.reduce_any(tf.equal(tf.range(logits.shape[-1])[:, None], ids[None, :]), axis=-1)
    forced = tf.where(allowed, 0.0, -float("inf"))[None, :]
    return tf.where(per_row(when), forced, logits)


def encoder_repetition_penalty(logits, seen, inverse):
    """EncoderRepetitionPenaltyLogitsProcessor: raise the logits of tokens in the encoder input
    (hallucination penalty). logits [R, V] float32; seen [R, V] bool; inverse: scalar float32,
    1 / penalty as transformers stores it. Returns [R, V] float32."""
    return tf.where(seen, tf.where(logits < 0, logits * inverse, logits / inverse), logits)


def remove_invalid(logits):
    """InfNanRemoveLogitsProcessor: NaN -> 0, +-inf -> the float32 max / min. [R, V] float32."""
    big = logits.dtype.max
    logits = tf.where(tf.math.is_nan(logits), tf.zeros_like(logits), logits)
    return tf.clip_by_value(logits, -big, big)


def exponential_decay(logits, eos, step, start, factor):
    """ExponentialDecayLengthPenalty: after `start` new tokens, raise the EOS logits by
    |logit| * (factor ** (step - start) - 1).

    Args: logits [R, V] float32; eos [V] bool, which ids are EOS; step: scalar or [R] int32;
      start: scalar int32;
      factor: scalar float64 (transformers computes the power in Python). Returns [R, V].
    """
    step = per_row(step)
    grow = tf.cast(tf.pow(factor, tf.cast(step - start, tf.float64)) - 1.0, tf.float32)
    return tf.where(tf.logical_and(eos[None, :], step > start), logits + tf.abs(logits) * grow, logits)
