"""Logits warpers and the sampler, as transformers defines them, without sorting the vocabulary.

top-k and top-p need a threshold: the k-th largest logit, or the logit below which the
probability mass is at most 1 - p. Instead of sorting V values every step, we find the
threshold by bisection over the 2**32 float32 values in their order (as integer keys):
33 masked reductions over V (17 trying 3 keys each for a single row) give the exact threshold, for any k or p
given as a tensor.
"""
import tensorflow as tf

_NEG_INF = -float("inf")
_PHILOX = tf.random.Algorithm.PHILOX.value


def ordered_key(x):
    """float32 -> int32 keys with the same order (negative floats have their bits flipped)."""
    bits = tf.bitcast(x, tf.int32)
    return tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.constant(0x7FFFFFFF, tf.int32)), bits)


# Candidates tried per bisection pass. For one row a pass costs little more with 3 candidates
# than with 1, so 17 passes of 3 (2 bits a pass) take about half of 33 passes of 1; from 4 rows
# on the comparisons dominate and 1 candidate is faster (tools/lessons/08_sort_free_top_p.py).
def _candidates(rows):
    return 3 if rows == 1 else 1


def _passes(span, ways):
    """Passes that shrink an interval of `span` keys to 1 when each pass splits it `ways` ways."""
    n = 0
    while span > 1:
        span, n = -(-span // ways), n + 1
    return n


def largest_key_where(keys, holds):
    """The largest int32 key t for which `holds(t)` is true, per row, by bisection.

    Args:
      keys: [B, V] int32 ordered keys (ordered_key of the logits).
      holds: maps [B, C] int32 candidate keys to [B, C] bool; it must be monotone in the key
        (true up to some key, false after), true below the row's smallest key and false above
        its largest.
    Returns:
      [B, 1] int32.
    """
    # The bounds live in int64 ([B, 1], cheap) because min - 1 and max + 1 may leave int32;
    # the candidates lie between them, so the [B, V] comparisons stay in int32.
    lo = tf.cast(tf.reduce_min(keys, axis=-1, keepdims=True), tf.int64) - 1  # holds(lo) is true
    hi = tf.cast(tf.reduce_max(keys, axis=-1, keepdims=True), tf.int64) + 1  # holds(hi) is false
    ways = _candidates(keys.shape[0]) + 1
    steps = tf.range(1, ways, dtype=tf.int64)[None, :]  # [1, C]
    # A fixed number of passes, with no convergence test (once converged a pass changes
    # nothing), in a while loop rather than unrolled: the loop runs at the unrolled passes' speed,
    # and XLA compiles one pass instead of all of them, which shortens a sampling program's first
    # call (BENCHMARKS.md, "Measurements behind the code").
    def narrow(lo, hi):
        cand = lo + (hi - lo) * steps // ways  # [B, C], ascending, in [lo, hi)
        ok = holds(tf.cast(tf.clip_by_value(cand, -2**31, 2**31 - 1), tf.int32))
        return (tf.reduce_max(tf.where(ok, cand, lo), axis=-1, keepdims=True),
                tf.reduce_min(tf.where(ok, hi, cand), axis=-1, keepdims=True))

    passes = _passes(2**32 + 1, ways)
    lo, hi = tf.while_loop(lambda lo, hi: True, narrow, (lo, hi), maximum_iterations=passes)
    return tf.cast(lo, tf.int32)


def temperature(logits, t):
    """TemperatureLogitsWarper: logits / t, t a scalar float32 > 0."""
    return logits / t


def top_k(logits, k):
    """TopKLogitsWarper: keep the logits >= the k-th largest (ties kept), -inf elsewhere.

    Args: logits [B, V] float32; k scalar int32, 0 (or >= V) keeps everything. Returns [B, V].
    """
    vocab = logits.shape[-1]

    def cut():
        keys = ordered_key(logits)
        kth = largest_key_where(keys, lambda t: tf.reduce_sum(tf.cast(keys[:, None, :] >= t[:, :, None], tf.int32), -1) >= k)
        return tf.where(keys >= kth, logits, _NEG_INF)

    return tf.cond(tf.logical_and(k > 0, k < vocab), cut, lambda: logits)


def top_p(logits, p):
    """TopPLogitsWarper: drop the least likely tokens whose total probability is at most 1 - p;
    the most likely token always stays.

    Args: logits [B, V] float32; p scalar float64 in (0, 1], 1 keeps everything. Returns [B, V].
    """
    def cut():
        # transformers compares float32 cumulative sums with float32(1 - p), p a Python double.
        budget = tf.cast(1.0 - p, tf.float32)
        probs = tf.nn.softmax(logits, axis=-1)
        keys = ordered_key(logits)
        below = largest_key_where(keys, lambda t: tf.reduce_sum(tf.where(keys[:, None, :] <= t[:, :, None], probs[:, None, :], 0.0), -1) <= budget)
        top = tf.reduce_max(keys, axis=-1, keepdims=True)
        return tf.where(tf.logical_and(keys <= below, keys < top), _NEG_INF, logits)

    return tf.cond(p < 1.0, cut, lambda: logits)


def min_p(logits, m):
    """MinPLogitsWarper: drop tokens whose probability is below m times the top probability.

    Args: logits [B, V] float32; m scalar float32 in [0, 1], 0 keeps everything. Returns [B, V].
    """
    def cut():
        probs = tf.nn.softmax(logits, axis=-1)
        floor = m * tf.reduce_max(probs, axis=-1, keepdims=True)
        return tf.where(probs < floor, _NEG_INF, logits)

    return tf.cond(m > 0.0, cut, lambda: logits)


def sample(logits, seed, step):
    """Draw one token per row from softmax(logits), by the Gumbel-max trick.

    Args:
      logits: [B, V] float32 (-inf entries are never drawn).
      seed: [2] int32 stateless seed of the call.
      step: scalar int32, the decoding step; each step draws from its own part of the stream.
      The same seed and step give the same draws; rows draw independently.
    Returns:
      [B] int32.
    """
    return tf.argmax(logits - tf.math.log(-tf.math.log(uniform(tf.shape(logits), seed, step))), axis=-1,
                     output_type=tf.int32)


def uniform(shape, seed, step):
    """Stateless uniform floats in (0, 1), the same compiled by XLA and run eagerly.

    Philox-4x32-10 keyed by the seed's 64 bits, with the step in the high word of its 128-bit
    counter: each step's draws come from a block of counters no other step touches. This is
    TensorFlow's own Philox op given its key and counter directly. The usual route,
    stateless_uniform(shape, fold_in(seed, step)), runs Philox on scalars first to derive a
    key, and XLA's simplifier then moves reshapes back and forth across those scalar ops
    without converging: two fixed-point pipelines ran to their 25-iteration limit over the
    whole program, about 1.5 s of a sampling program's 6 s compile (GPT-2-small shape).

    TensorFlow's and XLA's Philox give the same 32-bit integers, but turn them into floats
    differently; the conversion here (uniform_from_bits) is exact in both, so eager and
    compiled sampling draw the same tokens.
    Args: shape: [rank] int32; seed: [2] int32; step: scalar int32.
    Returns: float32 of `shape`, never 0 or 1.
    """
    key = tf.bitcast(tf.bitcast(seed, tf.uint32), tf.uint64)[None]  # [1] uint64
    counter = tf.stack([tf.constant(0, tf.uint64), tf.cast(step, tf.uint64)])  # [low, high] words
    return uniform_from_bits(tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=shape, key=key, counter=counter, alg=_PHILOX, dtype=tf.uint32))


def uniform_from_bits(bits):
    """uint32 random bits -> float32 in (0, 1): the top 23 bits, centred in their interval.

    (k + 0.5) / 2**23 for k < 2**23 is exact in float32 and lies in [2**-24, 1 - 2**-24]; with 24
    bits the largest, 2**24 - 0.5, would round to 2**24 and give 1.0 (an infinite Gumbel draw).
    """
    high = tf.cast(tf.bitwise.right_shift(bits, tf.constant(9, tf.uint32)), tf.float32)
    return (high + 0.5) * (1.0 / (1 << 23))


def typical_p(logits, mass):
    """TypicalLogitsWarper: keep the tokens whose surprisal is closest to the entropy, in that
    order, until their probability reaches `mass`; the token that crosses it stays.

    The order is by |-log p - entropy| (ascending); the cut is found by bisection over those
    values' keys, as top-p's, instead of sorting.
    Args: logits [B, V] float32; mass scalar float32 in (0, 1), 1 keeps everything. Returns [B, V].
    """
    def cut():
        logp = tf.nn.log_softmax(logits, axis=-1)
        probs = tf.exp(logp)
        # transformers' nansum: tokens at -inf have p = 0 and add nothing.
        entropy = -tf.reduce_sum(tf.where(probs > 0, logp * probs, 0.0), axis=-1, keepdims=True)
        keys = ordered_key(tf.abs(-logp - entropy))
        # The kept set ends at the first key whose cumulative mass (keys in ascending order) reaches
        # `mass`: find the largest key below it, t, where the mass of keys <= t is still short.
        short = largest_key_where(keys, lambda t: tf.reduce_sum(
            tf.where(keys[:, None, :] <= t[:, :, None], probs[:, None, :], 0.0), -1) < mass)
        # Keep keys up to the next key present; the smallest key always stays (min_tokens_to_keep=1).
        above = tf.where(keys > short, keys, tf.int32.max)
        boundary = tf.reduce_min(above, axis=-1, keepdims=True)
        return tf.where(keys <= boundary, logits, _NEG_INF)

    return tf.cond(mass < 1.0, cut, lambda: logits)


def _keep_top(logits, remove):
    """Never remove a row's largest logit (min_tokens_to_keep=1, as transformers' cutoffs)."""
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    return tf.where(tf.logical_and(remove, logits < top), _NEG_INF, logits)


def epsilon_cutoff(logits, epsilon):
    """EpsilonLogitsWarper: drop tokens whose probability is below epsilon (scalar float32 in
    (0, 1); 0 keeps everything). logits [B, V] float32 -> [B, V]."""
    def cut():
        return _keep_top(logits, tf.nn.softmax(logits, axis=-1) < epsilon)

    return tf.cond(epsilon > 0.0, cut, lambda: logits)


def eta_cutoff(logits, eta):
    """EtaLogitsWarper: drop tokens whose probability is below min(eta, sqrt(eta) * exp(-entropy))
    (eta scalar float32 in (0, 1); 0 keeps everything). logits [B, V] float32 -> [B, V]."""
    def cut():
        logp = tf.nn.log_softmax(logits, axis=-1)
        probs = tf.exp(logp)
        # torch.distributions.Categorical.entropy: log-probs clamped to the float32 minimum.
        entropy = -tf.reduce_sum(tf.maximum(logp, logits.dtype.min) * probs, axis=-1, keepdims=True)
        floor = tf.minimum(eta, tf.sqrt(eta) * tf.exp(-entropy))
        return _keep_top(logits, probs < floor)

    return tf.cond(eta > 0.0, cut, lambda: logits)
