"""Draft tokens for multi-token steps, and how many of them the model keeps (greedy: the ones it
would have chosen; sampling with a draft model's probabilities: speculative sampling).

A multi-token step feeds a row's last token and K draft tokens at once; the model's choice
after each fed position says whether the next draft was right. Drafts cost no model read when
they are copied from the row's own history (prompt lookup decoding: Saxena, 2023; transformers'
PromptLookupCandidateGenerator): text that quotes or edits its input repeats long runs of it.

Shapes: R rows, L history slots, K draft tokens.
"""
import tensorflow as tf

from .processors import last_tokens, ngram_windows
from .sampling import sample
from .search import NO_TOKEN
from .shapes import dim


def prompt_lookup(history, length, num_tokens, max_ngram):
    """The tokens that followed the earliest earlier occurrence of the row's last n tokens.

    transformers' rule: try n = max_ngram down to 1; the first window of the history (left to
    right) equal to the last n tokens and followed by at least one token gives up to K of the
    tokens after it, never past the row's filled slots.

    Args:
      history: [R, L] int32, NO_TOKEN in empty slots and wherever nothing may match (padding).
      length: [R] int32, filled slots (the row's last token is history[r, length - 1]).
      num_tokens: python int K >= 1.  max_ngram: python int >= 1.
    Returns:
      (drafts [R, K] int32, 0 past the count; count [R] int32 in [0, K]).
    """
    rows, slots = dim(history, 0), history.shape[1]
    found = tf.zeros([rows], tf.bool)
    start = tf.zeros([rows], tf.int32)  # the slot of the first draft token
    for n in range(min(max_ngram, slots - 1), 0, -1):
        windows, valid = ngram_windows(history, n)  # [R, L - n + 1, n]
        last = last_tokens(history, length, n)  # [R, n]
        followed = tf.range(windows.shape[1]) + n < length[:, None]  # a token comes after the window
        match = tf.reduce_all(tf.equal(windows, last[:, None, :]), axis=-1)
        match = tf.logical_and(tf.logical_and(match, valid), followed)
        hit = tf.logical_and(tf.reduce_any(match, axis=-1), tf.logical_not(found))
        first = tf.argmax(tf.cast(match, tf.int32), axis=-1, output_type=tf.int32)
        start = tf.where(hit, first + n, start)
        found = tf.logical_or(found, hit)
    count = tf.where(found, tf.minimum(num_tokens, length - start), 0)
    index = tf.minimum(start[:, None] + tf.range(num_tokens), slots - 1)
    drafts = tf.where(tf.range(num_tokens) < count[:, None], tf.gather(history, index, batch_dims=1), 0)
    return drafts, count


def accepted(drafts, count, chosen):
    """How many leading drafts the model confirmed: drafts[r, k] counts when it equals the
    token chosen after the fed position k (chosen[r, k]) and every draft before it counted.

    Args: drafts: [R, K] int32; count: [R] int32 valid drafts; chosen: [R, K + 1] int32.
    Returns: [R] int32 in [0, count].
    """
    k = drafts.shape[1]
    return _leading(tf.logical_and(tf.equal(drafts, chosen[:, :k]), tf.range(k) < count[:, None]))


def _leading(good):
    """[R, K] bool -> [R] int32, how many leading entries of each row are true."""
    return tf.reduce_sum(tf.math.cumprod(tf.cast(good, tf.int32), axis=-1), axis=-1)


def speculative(drafts, count, target, proposal, uniform, seed, stream):
    """Speculative sampling's acceptance (Leviathan et al., 2023; Chen et al., 2023; transformers'
    _speculative_sampling), row by row: draft k stays with probability min(1, p(x) / q(x)) while
    every draft before it stayed; the token after the kept drafts is drawn from
    normalise(max(p - q, 0)) where a draft was turned down, from p where all valid drafts stayed.
    Each emitted token is then distributed as a sample from p alone.

    Args:
      drafts: [R, K] int32, drawn from `proposal`; count: [R] int32 valid drafts.
      target: [R, K + 1, V] float32 probabilities p (the model's, after each fed position).
      proposal: [R, K, V] float32 probabilities q the drafts were drawn from.
      uniform: [R, K] float32 in (0, 1).  seed: [2] int32; stream: scalar int32, the
        sampling.sample step of the draw after the kept drafts.
    Returns:
      (chosen [R, K + 1] int32: the kept drafts, then the drawn token, 0 after it;
       kept [R] int32 in [0, count]).
    """
    k = drafts.shape[1]
    p = tf.gather(target[:, :k], drafts[:, :, None], batch_dims=2)[:, :, 0]  # [R, K]
    q = tf.gather(proposal, drafts[:, :, None], batch_dims=2)[:, :, 0]
    good = tf.logical_and(tf.logical_and(uniform * q <= p, p > 0), tf.range(k) < count[:, None])
    kept = _leading(good)
    after = tf.gather(target, kept, batch_dims=1)  # [R, V]
    residual = tf.maximum(after - tf.gather(proposal, tf.minimum(kept, k - 1), batch_dims=1), 0.0)
    turned_down = tf.logical_and(kept < count, tf.reduce_sum(residual, axis=-1) > 0)
    weights = tf.where(turned_down[:, None], residual, after)
    drawn = sample(tf.math.log(weights), seed, stream)
    position = tf.range(k + 1)[None, :]
    padded = tf.pad(drafts, [[0, 0], [0, 1]])
    chosen = tf.where(position < kept[:, None], padded, tf.where(position == kept[:, None], drawn[:, None], 0))
    return chosen, kept
