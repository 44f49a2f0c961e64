"""The model-agnostic kernels against plain numpy."""
import math

import numpy as np
import pytest
import tensorflow as tf

from xlagen.kernels import attention, cache, layers, positions, search


def test_positions_count_from_first_real_token():
    mask = tf.constant([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(positions.from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(positions.next_position(mask), [3, 5])


def test_cache_write_in_place_at_index():
    write = tf.function(cache.write, jit_compile=True)
    out = write(tf.zeros([1, 2, 5, 3]), tf.ones([1, 2, 2, 3]), tf.constant(2)).numpy()
    assert out[:, :, 2:4].min() == 1 and out[:, :, :2].max() == 0 and out[:, :, 4:].max() == 0


def test_causal_allowed_respects_padding_and_future():
    allowed = attention.causal_allowed(tf.constant([[0, 1, 1, 1]]), tf.constant(1), 2).numpy()
    np.testing.assert_array_equal(allowed[0], [[False, True, False, False], [False, True, True, False]])


def test_fully_masked_query_is_finite():
    q = tf.random.normal([1, 1, 1, 4])
    k = v = tf.random.normal([1, 1, 3, 4])
    bias = attention.bias_from_mask(tf.zeros([1, 1, 3], tf.bool))
    assert np.isfinite(attention.attend(q, k, v, bias, 0.5).numpy()).all()


@pytest.mark.parametrize("name,reference", [
    ("gelu", lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    ("gelu_new", lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    ("relu", lambda x: np.maximum(x, 0)),
    ("silu", lambda x: x / (1 + np.exp(-x))),
    ("quick_gelu", lambda x: x / (1 + np.exp(-1.702 * x))),
])
def test_activations(name, reference):
    x = np.linspace(-5, 5, 41).astype(np.float32)
    np.testing.assert_allclose(layers.activation(name)(tf.constant(x)).numpy(), reference(x.astype(np.float64)), atol=1e-5)


def test_unknown_activation_lists_supported():
    with pytest.raises(KeyError, match="gelu_new"):
        layers.activation("nope")


def test_finish_pads_after_eos():
    tokens, finished = search.finish(tf.constant([5, 9, 4]), tf.constant([False, False, True]),
                                     tf.constant([9, search.NO_TOKEN]), tf.constant(0))
    np.testing.assert_array_equal(tokens, [5, 9, 0])
    np.testing.assert_array_equal(finished, [False, True, True])


def test_suppress_only_when_asked():
    logits = tf.zeros([2, 4])
    out = search.suppress(logits, tf.constant([1, search.NO_TOKEN]), tf.constant([True, False])).numpy()
    assert out[0, 1] == -np.inf and np.isfinite(out[0, [0, 2, 3]]).all() and np.isfinite(out[1]).all()
