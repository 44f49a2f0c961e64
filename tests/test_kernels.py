"""The model-agnostic kernels against plain numpy."""
import math

import numpy as np
import pytest
import tensorflow as tf

from xlagen.kernels import attention, cache, layers, positions, sampling, search


def test_positions_count_from_first_real_token():
    mask = tf.constant([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(positions.from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(positions.next_position(mask), [3, 5])


def test_append_writes_one_position_per_row_in_place():
    kv = cache.start(tf.zeros([1, 2, 3, 4]), tf.zeros([1, 2, 3, 4]), group=2, max_new_tokens=5)
    append = tf.function(cache.append, jit_compile=True)
    out = append(kv, tf.ones([1, 2, 2, 4]), 2 * tf.ones([1, 2, 2, 4]), tf.constant(3))
    assert out.new_k.shape == (1 * 2, 5 * 2, 4)  # [B*H, N*G, D]: slot n*G + g
    new_k = out.new_k.numpy().reshape(2, 5, 2, 4)
    assert (new_k[:, 3] == 1).all() and new_k[:, [0, 1, 2, 4]].max() == 0
    assert (out.new_v.numpy().reshape(2, 5, 2, 4)[:, 3] == 2).all()


def test_reorder_inherits_only_written_positions():
    layout = cache.start_layout(tf.ones([1, 3]), group=3, max_new_tokens=4)
    layout = cache.advance(cache.advance(layout))  # positions 0 and 1 written
    layout = cache.reorder(layout, tf.constant([[2, 2, 0]]))
    np.testing.assert_array_equal(layout.ancestry[0], [[2, 2, 0, 0], [2, 2, 1, 1], [0, 0, 2, 2]])
    layout = cache.reorder(cache.advance(layout), tf.constant([[2, 0, 1]]))
    np.testing.assert_array_equal(layout.ancestry[0], [[0, 0, 2, 0], [2, 2, 0, 1], [2, 2, 1, 2]])


def test_attend_step_reads_each_rows_history_through_ancestry():
    """Attention of a reordered group equals plain attention over each row's explicit history."""
    rng = np.random.RandomState(0)
    b, g, h, p, n, d = 1, 3, 2, 4, 3, 5
    prompt_k, prompt_v = rng.randn(b, h, p, d).astype(np.float32), rng.randn(b, h, p, d).astype(np.float32)
    kv = cache.start(tf.constant(prompt_k), tf.constant(prompt_v), g, n)
    layout = cache.start_layout(tf.constant([[0, 1, 1, 1]]), g, n)
    written = {}  # (row, position) -> the key and value that row wrote there
    for step, parents in enumerate([[0, 0, 1], [2, 1, 1]]):
        k, v = rng.randn(b, g, h, d).astype(np.float32), rng.randn(b, g, h, d).astype(np.float32)
        kv = cache.append(kv, tf.constant(k), tf.constant(v), layout.step)
        for row in range(g):
            written[row, step] = (k[0, row], v[0, row])
        layout = cache.reorder(cache.advance(layout), tf.constant([parents]))
    q, k, v = (rng.randn(b, g, h, d).astype(np.float32) for _ in range(3))
    out, _ = attention.attend_step(tf.constant(q), tf.constant(k), tf.constant(v), kv, layout, 0.5)
    ancestry = layout.ancestry.numpy()[0]
    for row in range(g):
        history = [written[ancestry[row, s], s] for s in range(2)] + [(k[0, row], v[0, row])]
        hist_k = np.concatenate([prompt_k[0][:, 1:]] + [key[:, None] for key, _ in history], axis=1)
        hist_v = np.concatenate([prompt_v[0][:, 1:]] + [value[:, None] for _, value in history], axis=1)
        scores = np.einsum("hd,hsd->hs", q[0, row], hist_k) * 0.5
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        np.testing.assert_allclose(out.numpy()[0, row], np.einsum("hs,hsd->hd", probs, hist_v), atol=1e-5)


@pytest.mark.parametrize("shape", [[5, 16], [1, 1, 16], [3, 40, 16], [70, 16]])
def test_dense_matches_numpy_for_few_and_many_rows(shape):
    """Few rows take kernel @ x^T, many (> 64) x @ kernel^T; an unknown row count takes the former."""
    rng = np.random.RandomState(0)
    x, kernel, bias = rng.randn(*shape), rng.randn(24, 16), rng.randn(24)
    x, kernel, bias = (a.astype(np.float32) for a in (x, kernel, bias))
    expected = x @ kernel.T + bias
    run = tf.function(layers.dense, jit_compile=True)
    np.testing.assert_allclose(run(x, kernel, bias), expected, rtol=1e-5, atol=1e-5)
    open_rows = tf.function(lambda x: layers.dense(x, kernel, bias), jit_compile=True,
                            input_signature=[tf.TensorSpec([None] * (len(shape) - 1) + [16], tf.float32)])
    np.testing.assert_allclose(open_rows(x), expected, rtol=1e-5, atol=1e-5)


def test_one_row_products_run_as_a_loop_fusion_up_to_the_size_limit(monkeypatch):
    """A one-row float32 product is a loop fusion (multiply_dot_fusion) for a kernel of at most
    _ROW_LOOP_ELEMENTS, XLA's matrix-vector dot past it; both match numpy."""
    rng = np.random.RandomState(0)
    x, kernel = rng.randn(1, 64).astype(np.float32), rng.randn(48, 64).astype(np.float32)
    for limit, fused in ((48 * 64, True), (48 * 64 - 1, False)):
        monkeypatch.setattr(layers, "_ROW_LOOP_ELEMENTS", limit)
        run = tf.function(lambda x: layers.dense(x, kernel), jit_compile=True)
        np.testing.assert_allclose(run(x), x @ kernel.T, rtol=1e-5, atol=1e-5)
        hlo = run.experimental_get_compiler_ir(x)(stage="optimized_hlo")
        assert ("multiply_dot_fusion" in hlo) == fused, hlo
    # The limit is float32's: a narrow one-row kernel is always widened inside the loop fusion.
    narrow = tf.constant(kernel, tf.bfloat16)
    run = tf.function(lambda x: layers.dense(x, narrow), jit_compile=True)
    np.testing.assert_allclose(run(x), x @ narrow.numpy().astype(np.float32).T, rtol=1e-5, atol=1e-5)
    assert "dot_fusion" in run.experimental_get_compiler_ir(x)(stage="optimized_hlo")


def test_stored_dtype_reads_no_variable_for_every_weight_form():
    """is_low / stored_dtype answer for variables, Int8Weight, Int8, tensors and numpy arrays."""
    from xlagen.kernels import precision
    weight = np.ones((4, 3), np.float32)
    int8 = precision.lower(weight, "float32", "int8", "w")
    forms = {"float32 variable": (tf.Variable(weight), False),
             "bfloat16 variable": (tf.Variable(weight, dtype=tf.bfloat16), True),
             "Int8Weight": (int8, True), "Int8": (int8.read(), True),
             "tensor": (tf.constant(weight), False), "numpy": (weight, False)}
    for name, (form, low) in forms.items():
        assert precision.is_low(form) == low, name
        assert precision.stored_dtype(form) == (tf.int8 if "Int8" in name else tf.bfloat16 if low else tf.float32), name


def test_stack_traces_the_block_once_and_matches_an_unrolled_loop():
    """Layers with the same argument structure share one trace, inside a while loop too, and
    give what calling the block layer by layer gives; a python value per layer retraces."""
    rng = np.random.RandomState(0)
    weights = [{"k": tf.Variable(rng.randn(8, 8).astype(np.float32)), "b": rng.randn(8).astype(np.float32)}
               for _ in range(3)]
    x = rng.randn(2, 8).astype(np.float32)
    traces = []

    def block(x, w, scale):
        traces.append(scale)
        h = layers.dense(x, w["k"], w["b"]) * scale
        return x + tf.tanh(h), tf.reduce_sum(h)

    def stacked(x, scales):
        return layers.stack(block, x, [(w, s) for w, s in zip(weights, scales)])

    def looped(x):  # the same layers inside a one-iteration while loop, as a decode step
        return tf.while_loop(lambda i, x: i < 1, lambda i, x: (i + 1, stacked(x, [0.5] * 3)[0]), (0, x))[1]

    expected, sums = tf.constant(x), []
    for w in weights:
        expected, total = block(expected, w, 0.5)
        sums.append(total.numpy())
    traces.clear()
    out, outputs = tf.function(lambda x: stacked(x, [0.5] * 3), jit_compile=True)(x)
    assert traces == [0.5]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([o.numpy() for o in outputs], sums, rtol=1e-5)
    np.testing.assert_allclose(tf.function(looped, jit_compile=True)(x), expected, rtol=1e-5, atol=1e-5)
    traces.clear()
    tf.function(lambda x: stacked(x, [1.0, 1.0, 2.0]))(x)
    assert traces == [1.0, 2.0]


def test_causal_allowed_respects_padding_and_future():
    allowed = attention.causal_allowed(tf.constant([[0, 1, 1]]), 3).numpy()
    np.testing.assert_array_equal(allowed[0], [[False, False, False], [False, True, False], [False, True, True]])


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


@pytest.mark.parametrize("jit", [False, True])
def test_uniform_from_bits_stays_inside_zero_and_one_eagerly_and_compiled(jit):
    """The extreme bit patterns map inside (0, 1): a 1.0 would make an infinite Gumbel draw."""
    bits = tf.constant([0, 1, 2**31, 0xFFFFFE00, 0xFFFFFF00, 0xFFFFFFFF], tf.uint32)
    u = tf.function(sampling.uniform_from_bits, jit_compile=True)(bits) if jit else sampling.uniform_from_bits(bits)
    u = u.numpy()
    assert u.dtype == np.float32 and (u > 0).all() and (u < 1).all()
    assert u[0] == 2.0**-24 and u[-1] == 1 - 2.0**-24 and u[2] == 0.5 + 2.0**-24


def test_uniform_gives_each_step_its_own_stream_the_same_eagerly_and_compiled():
    shape, compiled = tf.constant([3, 4099]), tf.function(sampling.uniform, jit_compile=True)
    draws = {}
    for seed in ([0, 0], [0, 1], [-2**31, 2**31 - 1]):
        for step in (0, 1, 700):
            args = (shape, tf.constant(seed, tf.int32), tf.constant(step))
            draws[tuple(seed), step] = u = sampling.uniform(*args).numpy()
            np.testing.assert_array_equal(u, compiled(*args).numpy())
            # Uniform enough for sampling: mean, spread, and the rows differ.
            assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005 and not np.array_equal(u[0], u[1])
    flat = np.stack([u.ravel() for u in draws.values()])
    # No two (seed, step) streams share a draw pattern: correlations stay at chance level.
    corr = np.corrcoef(flat) - np.eye(len(flat))
    assert np.abs(corr).max() < 0.05


def test_sampling_program_derives_no_key_with_philox():
    """The key and counter go to Philox directly (see sampling.uniform): no StatelessRandomGetKeyCounter
    or fold_in Philox on scalars, on which XLA's simplifier ran to its iteration limit."""
    program = tf.function(lambda logits, seed, step: sampling.sample(logits, seed, step), jit_compile=True)
    hlo = program.experimental_get_compiler_ir(tf.zeros([2, 64]), tf.constant([1, 2]), tf.constant(3))(stage="hlo")
    assert "StatelessRandomUniformFullIntV2" in hlo
    assert "GetKeyCounter" not in hlo and "fold_in" not in hlo.lower()


def test_update_slice_writes_the_same_eagerly_and_compiled():
    buffer = tf.reshape(tf.range(24, dtype=tf.float32), [2, 3, 4])
    update = -tf.ones([1, 2, 2])
    for start in ([1, 1, 2], [1, 2, 3], [0, 0, 0]):  # the second is clamped to fit, as DynamicUpdateSlice does
        start = tf.constant(start, tf.int32)
        eager = cache.update_slice(buffer, update, start)
        compiled = tf.function(cache.update_slice, jit_compile=True)(buffer, update, start)
        np.testing.assert_array_equal(eager.numpy(), compiled.numpy())
