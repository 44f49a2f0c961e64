"""The head screen (kernels.screen): greedy steps read an int8 copy of the LM head and pick the
token exactly. The kernel against the float32 argmax (ties, bans, fallbacks, its bound); whole
greedy calls with and without the screen, token for token, on every family; that the compiled
step really reads the screen; and where it stays off."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import fixture_path
from xlagen.engine import GenerationArgumentError, load, loops
from xlagen.engine.loops.common import screened
from xlagen.kernels import layers, precision, screen

FALLBACK = -7  # the tests' token where the screen did not decide: a token no decision can be


def _screened(table, x, banned=None):
    """screen.argmax compiled, for np arrays table [V, E] and x [R, E]: [R] np.int32."""
    head = screen.build(table)

    @tf.function(jit_compile=True)
    def run(x):
        token, decided = screen.argmax(x, tf.constant(table), head, None if banned is None else tf.constant(banned)[None])
        return tf.where(decided, token, FALLBACK)
    return run(tf.constant(x)).numpy()


def _table(vocab=3000, width=64, seed=0):
    return (np.random.default_rng(seed).standard_normal((vocab, width)) * 0.02).astype(np.float32)


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_the_screen_picks_the_float32_argmax(rows):
    for seed in range(5):
        table = _table(seed=seed)
        x = np.random.default_rng(seed + 10).standard_normal((rows, 64)).astype(np.float32)
        np.testing.assert_array_equal(_screened(table, x), np.argmax(x.astype(np.float64) @ table.T.astype(np.float64), -1))


def test_ties_go_to_the_lowest_id_and_banned_tokens_are_never_picked():
    table = _table()
    x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
    top = int(np.argmax(x @ table.T))
    tied = table.copy()
    tied[[7, 2900]] = table[top]  # three identical largest rows: 7 wins, as tf.argmax's first
    assert _screened(tied, x)[0] == 7
    banned = np.zeros(len(table), bool)
    banned[[7, top]] = True
    assert _screened(tied, x, banned)[0] == 2900
    second = np.argsort(-(x @ table.T)[0])[1]
    banned[:] = False
    banned[top] = True
    assert _screened(table, x, banned)[0] == second


def test_what_the_screen_cannot_decide_falls_back_to_the_whole_head():
    table = _table()
    x = np.random.default_rng(4).standard_normal((2, 64)).astype(np.float32)
    bad = x.copy()
    bad[1, 3] = np.nan
    np.testing.assert_array_equal(_screened(table, bad), [FALLBACK, FALLBACK])
    # Rows that differ by less than their int8 error: more candidates than the passes can check.
    close = np.tile(table[:1], (len(table), 1)) + np.random.default_rng(5).standard_normal(table.shape).astype(np.float32) * 1e-6
    np.testing.assert_array_equal(_screened(close, x), [FALLBACK, FALLBACK])
    assert screen.build(np.where(np.eye(4, 3) > 0, np.inf, 1.0).astype(np.float32)) is None


def test_the_radius_bounds_the_screened_logit_error():
    table = _table(vocab=20000, width=768)
    head = screen.build(table)
    x = (np.random.default_rng(6).standard_normal((4, 768)) * 30).astype(np.float32)
    approx = tf.function(jit_compile=True)(
        lambda x: layers.dense(x, precision.Int8(head.values.value(), head.scale.value())))(tf.constant(x)).numpy()
    exact = x.astype(np.float64) @ table.T.astype(np.float64)
    error = np.abs(exact - approx)
    bound = np.linalg.norm(x, axis=1, keepdims=True) * head.radius.numpy()[None]
    assert (error <= bound).all()
    assert error.max() > bound.max() / 1000  # the bound is not vacuous


# Every family with one and two rows (min_new_tokens' EOS ban); on GPT-2 also 3 and 4 rows and a
# repetition penalty (the whole head, in the same program).
CALLS = [(f, 1, {}) for f in ("gpt2-tiny", "opt-tiny", "t5-v1_0-tiny", "t5-v1_1-tiny")] + [
    (f, 2, dict(min_new_tokens=12)) for f in ("gpt2-tiny", "opt-tiny", "t5-v1_1-tiny")] + [
    ("gpt2-tiny", 3, {}), ("gpt2-tiny", 4, {}), ("gpt2-tiny", 1, dict(repetition_penalty=1.3))]


@pytest.mark.parametrize("fixture, batch, options", CALLS, ids=lambda v: v if isinstance(v, str) else None)
def test_greedy_tokens_are_the_same_with_and_without_the_screen(fixture, batch, options):
    screened, plain = _load(fixture, True), _load(fixture, False)
    assert screened.model.screen is not None and plain.model.screen is None
    ids = np.random.default_rng(batch).integers(3, screened.vocab_size, size=(batch, 6)).astype(np.int32)
    np.testing.assert_array_equal(screened.generate(ids, max_new_tokens=16, **options),
                                  plain.generate(ids, max_new_tokens=16, **options))


_LOADED = {}


def _load(fixture, head_screen):
    """The fixtures' heads are small: load() screens them only when asked (head_screen=True)."""
    if (fixture, head_screen) not in _LOADED:
        _LOADED[fixture, head_screen] = load(fixture_path(fixture), head_screen=head_screen)
    return _LOADED[fixture, head_screen]


def test_compiled_greedy_steps_read_the_screen(tmp_path):
    """A screen whose int8 copy is all zeros with a zero radius bounds every logit by 0: the
    step then keeps the best of its first candidates, not the argmax, so its tokens differ
    from the plain head's, and they do not once the screen is set right again."""
    gen = load(fixture_path("gpt2-tiny"), head_screen=True)
    ids = np.random.default_rng(0).integers(3, gen.vocab_size, size=(1, 6)).astype(np.int32)
    right = gen.generate(ids, max_new_tokens=12)
    values, radius = gen.model.screen.values.numpy(), gen.model.screen.radius.numpy()
    gen.model.screen.values.assign(np.zeros_like(values))
    gen.model.screen.radius.assign(np.zeros_like(radius))
    wrong = gen.generate(ids, max_new_tokens=12)
    assert not np.array_equal(wrong[:, 7:], right[:, 7:])  # the prefill's first token is not screened
    gen.model.screen.values.assign(values)
    gen.model.screen.radius.assign(radius)
    np.testing.assert_array_equal(gen.generate(ids, max_new_tokens=12), right)


def test_where_the_screen_stays_off():
    gen = _load("gpt2-tiny", True)
    greedy = loops.Strategy()
    assert not screened(gen.model, greedy, 1)  # eagerly the plain head runs
    with tf.Graph().as_default():  # as a program is traced
        assert screened(gen.model, greedy, 1) and screened(gen.model, greedy, 4)
        assert not screened(gen.model, greedy, 5)  # five int8 reads cost more than one float32 read
        assert not screened(gen.model, greedy, tf.constant(1))  # an open batch (a SavedModel's)
        assert not screened(gen.model, greedy._replace(output_scores=True), 1)  # scores need every logit
        assert not screened(gen.model, greedy._replace(no_repeat_ngram_size=2), 1)
        assert not screened(gen.model, greedy._replace(choice="draw"), 1)
        assert not screened(gen.model, greedy._replace(loop="multi_token", drafter="assisted"), 1)  # the model checks drafts whole
        assert not screened(gen.model, greedy._replace(controls=greedy.controls._replace(suppress=8)), 1)
        assert screened(gen.model, greedy._replace(controls=greedy.controls._replace(stop=("k",))), 1)
    for narrow in (dict(dtype="bfloat16"), dict(quantize="int8")):
        assert load(fixture_path("gpt2-tiny"), head_screen=True, **narrow).model.screen is None
    # a head of fewer than MIN_ELEMENTS weights gets none unless asked
    assert _load("gpt2-tiny", None).model.screen is None


def test_the_screen_is_counted_and_load_checks_its_argument():
    gen, plain = _load("opt-tiny", True), _load("opt-tiny", False)
    assert gen.weight_bytes == plain.weight_bytes + gen.model.screen.nbytes
    vocab, width = gen.model.head_table.shape
    assert gen.model.screen.nbytes == vocab * width + 8 * vocab
    with pytest.raises(GenerationArgumentError, match="head_screen must be None"):
        load(fixture_path("opt-tiny"), head_screen="no")


def test_a_screened_assistant_drafts_what_its_whole_head_drafts():
    """Assisted greedy decoding, gpt2-tiny drafting for itself: the assistant's drafts come from
    its screen, and each step accepts what it accepts from an unscreened assistant (every
    draft); with the screen zeroed (every bound 0) the drafts change, the model's tokens do not."""
    target = _load("gpt2-tiny", False)
    ids = np.random.default_rng(1).integers(3, target.vocab_size, size=(2, 6)).astype(np.int32)
    screened, plain = (load(fixture_path("gpt2-tiny"), head_screen=on) for on in (True, False))
    kwargs = dict(max_new_tokens=12, num_assistant_tokens=3, output_scores=True)
    a, b = (target.generate(ids, assistant_model=g, **kwargs) for g in (screened, plain))
    np.testing.assert_array_equal(a.sequences, b.sequences)
    np.testing.assert_array_equal(a.accepted, b.accepted)
    assert (a.accepted[:, :2] == 3).all() and (a.accepted == a.drafted).all()
    screened.model.screen.values.assign(np.zeros_like(screened.model.screen.values.numpy()))
    screened.model.screen.radius.assign(np.zeros_like(screened.model.screen.radius.numpy()))
    c = target.generate(ids, assistant_model=screened, **kwargs)
    np.testing.assert_array_equal(c.sequences, a.sequences)
    assert not np.array_equal(c.accepted, a.accepted)


def test_tiny_rows_and_inputs_keep_the_bound():
    """Rows of entries near 1e-20 (their squares underflow float32) still get a true radius, and
    an input of 1e-20 still picks the float32 argmax."""
    table = _table() * 1e-18
    x = np.random.default_rng(7).standard_normal((2, 64)).astype(np.float32)
    radius = screen.build(table).radius.numpy()
    assert (radius > 0).all()
    np.testing.assert_array_equal(_screened(table, x), np.argmax(x.astype(np.float64) @ table.T.astype(np.float64), -1))
    np.testing.assert_array_equal(_screened(_table(), x * 1e-20)[0],
                                  np.argmax((x[:1] * 1e-20).astype(np.float64) @ _table().T.astype(np.float64), -1)[0])


def test_a_model_whose_head_adds_to_the_product_gets_no_screen():
    from xlagen.models.gpt2 import GPT2
    gen = _load("gpt2-tiny", False)

    class Biased(GPT2):
        def head(self, hidden):
            return super().head(hidden) + 1.0

    gen.model.__class__ = Biased
    try:
        assert gen.model.add_screen(small=True).screen is None
    finally:
        gen.model.__class__ = GPT2
