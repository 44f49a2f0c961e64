"""Sampling with draft tokens: speculative sampling with an assistant model and prompt lookup's
draw-and-match rule keep every token distributed as plain sampling's.

Each test draws thousands of rows of one prompt and compares, by a chi-square test, the
first new token's frequencies with the model's own (warped) distribution after the prompt,
and the second's and third's, among the rows that drew the commonest tokens before them,
with the model's distribution after that prefix. The drafts' own distribution (the
assistant's) is rejected by the same test, so it can tell them apart."""
import shutil

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file, save_file

from conftest import fixture_path, generator
from xlagen.engine import load
from xlagen.kernels import drafts

ROWS = 3000
TOP_K = 6
# gpt2-tiny's likeliest token after this prompt (p = 0.91) is its first, and the likeliest after
# that is its second (p = 0.67; found by search): prompt lookup drafts them, kept or not.
PROMPT = [110, 306, 285, 242, 87, 213, 222, 151, 116, 210, 248, 241]


def _critical(dof):
    """The chi-square statistic exceeded with probability 1e-3 (Wilson-Hilferty; 10.8 for 1, 20.5 for 5)."""
    z, h = 3.090, 2.0 / (9 * dof)
    return dof * (1 - h + z * np.sqrt(h)) ** 3


def _warped(gen, prefix):
    """The top-k warped distribution after `prefix` (a list of ids): [V] float64."""
    logits = gen.logits([prefix])[0, -1].astype(np.float64)
    keep = logits >= np.sort(logits)[-TOP_K]
    p = np.where(keep, np.exp(logits - logits.max()), 0.0)
    return p / p.sum()


def _chi_square(tokens, p):
    """(statistic, degrees of freedom) of the drawn tokens [n] against the distribution p [V]."""
    support = np.flatnonzero(p > 0)
    assert np.isin(tokens, support).all(), "a token the model's distribution excludes was drawn"
    observed = np.array([(tokens == t).sum() for t in support])
    expected = p[support] * len(tokens)
    return float(((observed - expected) ** 2 / expected).sum()), len(support) - 1


def _assert_distributed_as(gen, new, prefix, position, other=None):
    """The tokens new[:, position] of the rows whose earlier new tokens are the commonest ones
    follow the model's distribution after them (and not `other`'s, a Generator)."""
    rows = np.ones(len(new), bool)
    for i in range(position):
        values, counts = np.unique(new[rows, i], return_counts=True)
        prefix = prefix + [int(values[np.argmax(counts)])]
        rows &= new[:, i] == prefix[-1]
    assert rows.sum() >= 200, f"too few rows ({rows.sum()}) to test position {position}"
    statistic, dof = _chi_square(new[rows, position], _warped(gen, prefix))
    assert statistic < _critical(dof), (position, statistic, dof)
    if other is not None:
        q = _warped(other, prefix)
        drawn = new[rows, position]
        q = np.where(np.isin(np.arange(len(q)), drawn), np.maximum(q, 1e-3), q)  # the test needs q > 0 where drawn
        statistic, dof = _chi_square(drawn, q / q.sum())
        assert statistic > _critical(dof), ("the assistant's distribution passes too", position, statistic)


def _draw(gen, **options):
    """ROWS samples of PROMPT's next 4 tokens, one prompt row each (a group of G rows shares its
    prompt's cache entry, whose attention grows as G squared)."""
    out = gen.generate([PROMPT] * ROWS, max_new_tokens=4, do_sample=True, top_k=TOP_K, eos_token_id=None,
                       pad_token_id=0, seed=7, output_scores=True, **options)
    return out, out.sequences[:, len(PROMPT):]


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    """gpt2-tiny with its final layer norm's scale halved and noise on its last MLP: the same
    likely tokens, with other probabilities, so that some drafts are kept and some are not."""
    path = tmp_path_factory.mktemp("assistant")
    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        shutil.copy(fixture_path("gpt2-tiny") + "/" + name, path / name)
    weights = load_file(fixture_path("gpt2-tiny") + "/model.safetensors")
    weights["transformer.ln_f.weight"] = weights["transformer.ln_f.weight"] * 0.5
    noise = np.random.default_rng(0).normal(0, 0.05, weights["transformer.h.1.mlp.c_proj.weight"].shape)
    weights["transformer.h.1.mlp.c_proj.weight"] = (weights["transformer.h.1.mlp.c_proj.weight"] + noise).astype(np.float32)
    save_file(weights, str(path / "model.safetensors"))
    return load(str(path))


def test_speculative_sampling_keeps_the_models_distribution(assistant):
    target = generator("gpt2-tiny")
    out, new = _draw(target, assistant_model=assistant, num_assistant_tokens=3)
    # The first model step checked 2 drafts (N = 4); rows kept 0, 1 and 2 of them.
    first = out.accepted[:, 0]
    assert (out.drafted[:, 0] == 2).all()
    assert {0, 1, 2} <= set(first.tolist()), np.bincount(first)
    for position in range(3):  # the prefill's draw, then drafts kept or drawn after a rejection
        _assert_distributed_as(target, new, list(PROMPT), position, other=assistant if position else None)


def test_prompt_lookup_sampling_keeps_the_models_distribution():
    target = generator("gpt2-tiny")
    out, new = _draw(target, prompt_lookup_num_tokens=3)
    assert (out.drafted[:, 0] > 0).any() and (out.accepted[:, 0] > 0).any()
    for position in range(3):
        _assert_distributed_as(target, new, list(PROMPT), position)


def test_speculative_acceptance_rule():
    """Drafts stay with probability min(1, p / q); the token after a rejection comes from
    max(p - q, 0), after all valid drafts from p."""
    v = 4
    p = tf.constant([[[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25]]] * 3)  # [R=3, K+1, V]
    q = tf.constant([[[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]] * 3)  # [R, K=2, V]
    proposed = tf.constant([[1, 3], [1, 3], [0, 2]])
    # row 0: draft 1 stays (p = q), draft 3 goes (p = 0); row 1: only one valid draft; row 2: p(2) = 1 > q(2) = 0 is
    # impossible for a drawn draft, but p >= q keeps it: both stay.
    chosen, kept = drafts.speculative(proposed, tf.constant([2, 1, 2]), p, q, tf.fill([3, 2], 0.5), tf.constant([1, 2]),
                                      tf.constant(0))
    np.testing.assert_array_equal(kept, [1, 1, 2])
    np.testing.assert_array_equal(chosen[:, 0], [1, 1, 0])
    assert chosen[0, 1] == 2  # max(p - q, 0) at the rejected position is all on token 2
    assert chosen[1, 1] == 2  # one valid draft kept: the next token is drawn from p there
    assert 0 <= chosen[2, 2] < v and chosen[0, 2] == 0


@pytest.mark.parametrize("drafter", ["lookup", "assistant"])
def test_sampled_drafts_with_returns_eos_and_seeds(drafter, assistant):
    """num_return_sequences rows per prompt, EOS ends a row and pads it, the same seed gives the
    same tokens, another seed others."""
    target = generator("gpt2-tiny")
    given = {"lookup": dict(prompt_lookup_num_tokens=3), "assistant": dict(assistant_model=assistant)}[drafter]
    ids = [PROMPT, PROMPT[4:] + PROMPT[:4]]
    eos = 22  # the commonest new token of these prompts' samples
    common = dict(max_new_tokens=10, do_sample=True, top_k=TOP_K, num_return_sequences=3, pad_token_id=1,
                  eos_token_id=eos, output_scores=True, **given)
    out = target.generate(ids, seed=3, **common)
    np.testing.assert_array_equal(out.sequences, target.generate(ids, seed=3, **common).sequences)
    assert out.sequences.shape == (6, len(PROMPT) + 10)
    assert not (target.generate(ids, seed=4, **common).sequences == out.sequences).all()
    new = out.sequences[:, len(PROMPT):]
    for row in new:
        if (row == eos).any():
            end = int(np.argmax(row == eos))
            assert (row[end + 1:] == 1).all()
    assert (new == eos).any(axis=1).any()
    # A step emits the drafts it kept and one token of the model's; rows end at their EOS.
    emitted = np.where(out.accepted >= 0, out.accepted + 1, 0).sum(axis=1) + 1
    lengths = [int(np.argmax(r == eos)) + 1 if (r == eos).any() else 10 for r in new]
    np.testing.assert_array_equal(emitted, lengths)


def test_eager_speculative_sampling_draws_the_compiled_tokens(assistant):
    """jit_compile=False runs the same loop op by op and draws the same tokens."""
    target = generator("gpt2-tiny")
    common = dict(max_new_tokens=6, do_sample=True, top_k=TOP_K, eos_token_id=None, pad_token_id=0, seed=11,
                  assistant_model=assistant)
    ids = [PROMPT, PROMPT[6:] + PROMPT[:6]]
    np.testing.assert_array_equal(target.generate(ids, jit_compile=False, **common), target.generate(ids, **common))
