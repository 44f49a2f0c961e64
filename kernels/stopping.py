"""Stop strings over fixed-shape token histories, as transformers' StopStringCriteria matches them.

The tables come from `xlagen.engine.stop_strings.stop_string_tables` (this module knows nothing of
tokenizers). The match walks back from the newest token: the newest token's start must overlap
the end of a stop string (its "end overlap"), then each earlier token must sit where the
characters matched so far end (one of its "valid positions"), until the characters matched reach
the string's length. Tokens may run off either end of the string ("overhangs"). All of it is
gathers, a cumulative sum and comparisons over a fixed window of trailing slots.
"""
import tensorflow as tf

from .search import NO_TOKEN
from .shapes import dim


def stop_string_hits(history, length, tables):
    """Whether each row's tokens up to slot length-1 end with a stop string, in transformers' sense.

    The newest token must overlap the string (a string that ended a token or more earlier does not
    count), and only the last max(len(string)) tokens are looked at, as in transformers.

    Args:
      history: [R, S] int32 token histories, NO_TOKEN in slots without a token (left padding,
        the future). R may be unknown at trace time.
      length: scalar int32, the number of filled slots: the newest token is history[:, length - 1].
      tables: the StopArrays of stop_string_tables as tensors (or arrays), in its field order:
        positions [V, N, P] int32, end_lengths [V, N, E] int32, token_lengths [V] int32,
        string_lengths [N] int32, strings [N, L] int32 (L, static, is the window read).
    Returns:
      [R] bool.
    """
    positions, end_lengths, token_lengths, string_lengths, strings = (tf.convert_to_tensor(t, tf.int32)
                                                                      for t in tables)
    rows, window = dim(history, 0), strings.shape[1]
    vocab = dim(token_lengths, 0)
    length = tf.cast(length, tf.int32)
    # The trailing window, newest first: slot k holds the token k places before the newest one.
    # Only transformers' window (the longest string, in tokens) counts; L is its bucket.
    back = tf.range(window, dtype=tf.int32)
    index = length - 1 - back  # [L]
    inside = tf.logical_and(index >= 0, back < tf.reduce_max(string_lengths))
    ids = tf.gather(history, tf.maximum(index, 0), axis=1)  # [R, L]
    ids = tf.where(inside[None, :], ids, NO_TOKEN)
    # Ids outside the table (NO_TOKEN; past the tokenizer's vocabulary) read the dummy last row,
    # which matches nothing (transformers clamps ids to it).
    ids = tf.where(tf.logical_or(ids < 0, ids >= vocab - 1), vocab - 1, ids)

    ends = tf.gather(end_lengths, ids[:, 0])  # [R, N, E]
    earlier = tf.gather(positions, ids[:, 1:])  # [R, L-1, N, P]
    sizes = tf.gather(token_lengths, ids[:, 1:])  # [R, L-1]
    # Characters matched after each token, one track per possible end overlap of the newest token.
    steps = tf.concat([ends[:, None], sizes[:, :, None, None] + tf.zeros_like(ends)[:, None]], axis=1)  # [R, L, N, E]
    matched = tf.cumsum(steps, axis=1)
    # Token k > 0 continues a track when the characters matched before it are one of its positions.
    fits = tf.reduce_any(tf.equal(matched[:, :-1, :, :, None], earlier[:, :, :, None, :]), axis=-1)  # [R, L-1, N, E]
    fits = tf.concat([ends[:, None] > 0, fits], axis=1)  # [R, L, N, E]
    # A track holds up to its first misfit.
    alive = tf.equal(tf.cumsum(tf.cast(tf.logical_not(fits), tf.int32), axis=1), 0)
    reached = tf.reduce_max(tf.where(alive, matched, 0), axis=[1, 3])  # [R, N]
    hit = tf.logical_and(reached >= string_lengths[None, :], string_lengths[None, :] > 0)
    return tf.reshape(tf.reduce_any(hit, axis=-1), [rows])
