"""Small ops the decode loops share: end-of-sequence bookkeeping and token suppression."""
import tensorflow as tf

# The id of an empty slot: EOS id vectors are padded with it to a bucket length (so that lists
# of different lengths share a program), and token histories hold it where no token is yet.
# No token ever equals it.
NO_TOKEN = -1


def is_any_of(tokens, ids):
    """Whether each token is one of `ids`.

    Args:
      tokens: [...] int32.  ids: [E] int32, padded with NO_TOKEN.
    Returns:
      [...] bool.
    """
    return tf.reduce_any(tf.equal(tokens[..., None], ids), axis=-1)


def suppressed(vocab, ids, when):
    """Which tokens suppress() sets to -inf: [B, V] bool ([1, V] for a scalar `when`).

    Args:
      vocab: V, python int or scalar int32.  ids: [E] int32, padded with NO_TOKEN.
      when: bool, scalar or [B].
    """
    banned = is_any_of(tf.range(vocab, dtype=tf.int32), ids)  # [V]
    return tf.logical_and(banned[None, :], tf.reshape(tf.cast(when, tf.bool), [-1, 1]))


def suppress(logits, ids, when):
    """Set the logits of `ids` to -inf in the rows where `when` holds.

    Args:
      logits: [B, V] float.  ids: [E] int32, padded with NO_TOKEN.
      when: bool, scalar or [B].
    Returns:
      [B, V] float.
    """
    return tf.where(suppressed(tf.shape(logits)[-1], ids, when), tf.constant(-float("inf"), logits.dtype), logits)


def finish(tokens, finished, eos_ids, pad_id):
    """Apply end-of-sequence rules to freshly chosen tokens.

    Rows already finished emit `pad_id`; a row becomes finished when it emits an EOS id.

    Args:
      tokens: [B] int32 chosen tokens.  finished: [B] bool before this step.
      eos_ids: [E] int32 padded with NO_TOKEN.  pad_id: scalar int32.
    Returns:
      (tokens [B] int32, finished [B] bool) after this step.
    """
    tokens = tf.where(finished, pad_id, tokens)
    return tokens, tf.logical_or(finished, is_any_of(tokens, eos_ids))


def nan_first(scores):
    """Scores ordered as torch's argmax and top-k order them: NaN above every number (so a row
    whose processors made a NaN picks it, as transformers does). [..., V] float -> [..., V]."""
    return tf.where(tf.math.is_nan(scores), tf.constant(float("inf"), scores.dtype), scores)
