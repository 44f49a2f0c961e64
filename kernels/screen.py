"""Greedy's argmax over the vocabulary from an int8 screen of the LM head, exact.

A one-row greedy step reads every weight once, and the LM head is the largest of them (154 MB
of GPT-2-small's 500 in float32, 66 of T5-small's 150). Only the argmax of its logits is used.
So the step reads an int8 copy of the head instead (a quarter of the bytes), which gives every
logit to within a radius known in advance, and computes exactly, from the float32 head, only
the rows that could still be the largest:

  approx[v] = x . (scale[v] * values[v])         one pass over the int8 copy
  |x . table[v] - approx[v]| <= |x| * radius[v]   Cauchy-Schwarz, radius[v] = |table[v] - dequantized[v]|
                                                  plus float32 rounding (below)

Candidates are taken by their upper bound approx + |x| * radius, the largest of each of
PER_PASS slices of the vocabulary per pass, and their exact logit is computed from their
float32 row, until no remaining upper bound reaches the best exact logit found: every other
token's logit is then below it. Ties go to the lowest id, as tf.argmax's. When that takes more
than MAX_PASSES passes, or anything is not finite, the step falls back to the float32 product
over the whole head. The tokens are those of the float32 logits up to float32 rounding: two
logits closer than that (about 1e-7 of |x| |table[v]|) may be ranked either way, as between any
two float32 kernels (XLA and eager, xlagen and torch).

The radius is rigorous with Higham's bound on a float32 dot product of length E, the
worst case of rounding: |fl(a . b) - a . b| <= gamma_E |a| |b| with gamma_E ~ E 2**-24, taken
for both the screen's product and the exact one, and for |x|.

The screened head takes well under the float32 head's time. The int8 radius is a small part
of |table[v]|, so on a trained model the best few bounds decide a step
(tools/lessons/09_head_screen.py counts them for any checkpoint). BENCHMARKS.md has the figures:
"The head screen" the whole steps, "Measurements behind the code" the head alone.
"""
import numpy as np
import tensorflow as tf

from . import layers, precision

# Candidates are taken PER_PASS at a time, the best bound of each of PER_PASS slices of the
# vocabulary (one pass over the bounds finds them all; tf.math.top_k sorts on XLA:CPU, which
# costs more than the screen saves), for at most MAX_PASSES passes before the step falls back
# to the whole float32 head. A trained model's step needs only the first few bounds; the
# passes leave room for nearly flat logits, as in the random benchmark checkpoint
# (BENCHMARKS.md, "Measurements behind the code").
PER_PASS = 16
MAX_PASSES = 4

# Heads of fewer elements get no screen unless asked for (load(head_screen=True)): up to a few
# MB the float32 head is read from cache, and the screen's passes cost what it saves
# (BENCHMARKS.md, "Measurements behind the code").
MIN_ELEMENTS = 1 << 22

# Added to every bound: XLA:CPU flushes subnormal results to zero, so each operation of the dots
# and of the bound may also lose up to 1.2e-38 in absolute terms, far less than this for any width.
_FLUSHED = 1e-30

# One screened product reads the int8 copy once per row; past this many rows the float32 head
# (read once for all rows) costs less (kernels.layers.looped_rows: int8 runs up to 4 one-row products).
MAX_ROWS = 4


class HeadScreen(tf.Module):
    """The int8 copy of an LM head table [V, E] and its error bound.

    values [V, E] int8, scale [V] float32: table[v] ~ values[v] * scale[v] (kernels.precision);
    radius [V] float32: |table[v] - values[v] * scale[v]| plus rounding, rounded up, so that
      |x . table[v] - fl(x . values[v]) * scale[v]| <= fl(|x|) * radius[v] for any float32 x [E].
    """

    def __init__(self, table):
        """table: np.ndarray [V, E] float32, finite (see build)."""
        super().__init__(name="head_screen")
        values, scale = precision.quantize_int8(table)
        dequantized = values * scale[:, None]  # float32: each product within 2**-24 of the real one
        width = table.shape[1]
        gamma = (width + 2) * 2.0 ** -24 / (1 - (width + 2) * 2.0 ** -24)  # Higham's gamma, one dot

        def norms(m):  # |row| in float32, low by at most a relative gamma (and 2**-22 below)
            square = np.einsum("ij,ij->i", m, m)
            root = np.sqrt(square)
            # Squares under 2**-126 lose their low bits (Higham assumes nothing underflows); a
            # row whose sum is small is scaled by its largest entry first. Above 1e-20 what the
            # underflow can lose, E * 2**-126, is below 2**-22 of the sum.
            small = square < 1e-20
            if small.any():
                peak = np.abs(m[small]).max(axis=1)
                unit = m[small] / np.where(peak > 0, peak, 1)[:, None]
                root[small] = peak * np.sqrt(np.einsum("ij,ij->i", unit, unit))
            return root * (1 + gamma) * (1 + 2.0 ** -22)

        # The error row in float32 is within 2**-23 |dequantized row| of the real one; the screen's
        # dot, the exact dot and |x| each round: a gamma of |x| |row| for each dot, and |x| may be
        # low by a relative gamma. Float32 throughout: float64 builds a large head's screen several
        # times slower (BENCHMARKS.md, "Measurements behind the code").
        error = norms(table - dequantized) + 2.0 ** -22 * norms(dequantized)
        radius = (error + 2 * gamma * (norms(table) + norms(dequantized))) * (1 + 4 * gamma)
        radius = np.nextafter(radius.astype(np.float32), np.float32(np.inf))
        self.values = tf.Variable(values, trainable=False, name="values")
        self.scale = tf.Variable(scale, trainable=False, name="scale")
        self.radius = tf.Variable(radius, trainable=False, name="radius")

    @property
    def nbytes(self):
        """Resident bytes (python int)."""
        return sum(v.shape.num_elements() * v.dtype.size for v in (self.values, self.scale, self.radius))


def build(table):
    """The HeadScreen of a float32 head table (np.ndarray [V, E]), or None when the table holds a
    value that is not finite (its logits then are not finite either, and nothing can be bounded)."""
    table = np.asarray(table, np.float32)
    return HeadScreen(table) if np.isfinite(table).all() else None


def _best(logits, tokens):
    """The largest logit per row and its token, the lowest id among equals: logits [R, C] float32,
    tokens [R, C] int32 -> ([R] float32, [R] int32)."""
    top = tf.reduce_max(logits, axis=-1)
    first = tf.reduce_min(tf.where(logits == top[:, None], tokens, tf.int32.max), axis=-1)
    return top, first


def argmax(x, table, screen, banned):
    """The token of largest logit x . table[v] per row, read from the screen; see the module docstring.

    Args:
      x: [R, E] float32, the head's input (R static, at most MAX_ROWS).
      table: [V, E] float32, the head (a variable or tensor).
      screen: the table's HeadScreen.
      banned: [R, V] or [1, V] bool, tokens whose score is -inf (EOS before min_new_tokens), or None.
    Returns:
      (tokens [R] int32, decided: scalar bool). Where decided is False (MAX_PASSES passes did
      not decide every row, or a value was not finite) the tokens are meaningless, and the
      caller reads the whole float32 head instead (in a tf.cond: one copy of it in the program).
    """
    rows, vocab = x.shape[0], screen.values.shape[0]
    approx = layers.dense(x, precision.Int8(screen.values.value(), screen.scale.value()))  # [R, V]
    upper = approx + tf.norm(x, axis=-1, keepdims=True) * screen.radius + _FLUSHED
    finite = tf.reduce_all(tf.math.is_finite(upper))
    if banned is not None:
        upper = tf.where(banned, -np.inf, upper)
    # PER_PASS slices of the vocabulary, padded to equal widths with bounds of -inf.
    width = -(-vocab // PER_PASS)
    upper = tf.reshape(tf.pad(upper, [[0, 0], [0, width * PER_PASS - vocab]], constant_values=-np.inf),
                       [rows, PER_PASS, width])
    table, offsets = precision.read(table), tf.range(PER_PASS) * width

    def pick(upper):
        """Each slice's largest bound and its place: ([R, C] float32, [R, C] int32)."""
        place = tf.argmax(upper, axis=-1, output_type=tf.int32)
        return tf.gather(upper, place, batch_dims=2), place

    def check(upper, bound, place, best, token):
        """Compute the picked candidates' exact logits, keep the best, strike them from upper."""
        ids = tf.minimum(place + offsets, vocab - 1)  # a padding slot (bound -inf) is never live
        logits = tf.einsum("rce,re->rc", tf.gather(table, ids), x)
        live = tf.logical_and(bound > -np.inf, bound >= best[:, None])
        top, first = _best(tf.concat([tf.where(live, logits, -np.inf), best[:, None]], 1),
                           tf.concat([ids, token[:, None]], 1))
        # Struck by a compare over the bounds, not a scatter: XLA:CPU's scatter in this loop made
        # the program's compile longer for no faster step (BENCHMARKS.md, "Measurements behind the code").
        upper = tf.where(tf.range(width) == place[..., None], -np.inf, upper)
        return (upper,) + pick(upper) + (top, first)

    def cond(i, upper, bound, place, best, token):
        return tf.logical_and(i < MAX_PASSES, tf.reduce_any(tf.logical_and(bound > -np.inf, bound >= best[:, None])))

    def body(i, upper, bound, place, best, token):
        return (i + 1,) + check(upper, bound, place, best, token)

    # The first pass checks every slice's best (no logit is known yet: best is -inf).
    start = (tf.constant(0), upper) + pick(upper) + (tf.fill([rows], -np.inf), tf.fill([rows], tf.int32.max))
    _, upper, bound, place, best, token = tf.while_loop(cond, body, start)
    return token, tf.logical_and(finite, tf.reduce_all(bound < best[:, None]))
