"""generate(..., jit_compile=False) and logits(..., jit_compile=False): the same decode functions
run op by op, with the compiled program's tokens.

Greedy and beam search are checked against transformers' recorded tokens, which the compiled
programs match too (tests/test_parity.py, test_t5.py, test_beam.py), so no program is compiled
for them here; sampled tokens are compared with a compiled program's directly.
"""
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import fixture_path, generator, reference
from xlagen.engine import GenerationArgumentError
from xlagen.engine.jobs.cli import main
from xlagen.kernels import attention

FAMILIES = ["gpt2-tiny", "opt-tiny", "t5-v1_1-tiny"]
NEW = 12


def _pad(name):
    return 0 if generator(name).config.is_encoder_decoder else int(reference(name)["pad"])


@pytest.mark.parametrize("name", FAMILIES)
def test_eager_greedy_and_beam_give_transformers_tokens_without_tracing(name):
    ref, gen = reference(name), generator(name)
    ids, mask = ref["input_ids"], ref["attention_mask"]
    before = gen.trace_count
    greedy = gen.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None, pad_token_id=_pad(name),
                          jit_compile=False)
    np.testing.assert_array_equal(greedy, ref["greedy"])
    options = json.loads(str(ref["beam_cases"]))[0]  # 4 beams, 2 returns, EOS on
    options["eos_token_id"] = int(ref["eos"])
    beam = gen.generate(ids, attention_mask=mask, max_new_tokens=NEW, pad_token_id=1, output_scores=True,
                        jit_compile=False, **options)
    expected = ref["beam_0_sequences"]
    np.testing.assert_array_equal(beam.sequences[:, :expected.shape[1]], expected)
    np.testing.assert_allclose(beam.sequences_scores, ref["beam_0_scores"], atol=1e-4, rtol=1e-5)
    assert gen.trace_count == before


@pytest.mark.parametrize("name", FAMILIES)
def test_eager_sampling_draws_the_compiled_programs_tokens(name):
    ref, gen = reference(name), generator(name)
    options = dict(attention_mask=ref["attention_mask"], max_new_tokens=4, do_sample=True, top_k=20, top_p=0.9,
                   temperature=0.8, seed=7)
    compiled = gen.generate(ref["input_ids"], **options)
    before = gen.trace_count
    np.testing.assert_array_equal(gen.generate(ref["input_ids"], jit_compile=False, **options), compiled)
    assert gen.trace_count == before


@pytest.mark.parametrize("name", FAMILIES)
def test_eager_logits_match_transformers(name):
    ref, gen = reference(name), generator(name)
    decoder = {"decoder_input_ids": ref["decoder_input_ids"]} if gen.config.is_encoder_decoder else {}
    before = gen.trace_count
    logits = gen.logits(ref["input_ids"], attention_mask=ref["attention_mask"], jit_compile=False, **decoder)
    real = np.broadcast_to(ref["attention_mask"].astype(bool)[..., None] if not decoder else True, logits.shape)
    np.testing.assert_allclose(logits[real], ref["logits"][real], atol=1e-4, rtol=1e-5)
    assert gen.trace_count == before


def test_eager_model_code_sees_real_values(tiny, monkeypatch):
    """What a breakpoint inside a layer or a processor would see: concrete tensors, every layer."""
    seen = []
    step = attention.attend_step

    def spy(q, *args, **kwargs):
        seen.append((tf.executing_eagerly(), q.numpy().shape))
        return step(q, *args, **kwargs)

    monkeypatch.setattr(attention, "attend_step", spy)
    history = []
    tiny.generate([[5, 6, 7]], max_new_tokens=3, jit_compile=False,
                  logits_processor=[lambda logits, ids, step: history.append(ids.numpy()) or logits])
    heads, width = tiny.config.n_head, tiny.config.n_embd
    # Tokens 2 and 3 in each layer (the prefill chose token 1); q is [B, G, H, D].
    assert seen == [(True, (1, 1, heads, width // heads))] * (2 * tiny.config.n_layer)
    assert len(history) == 3  # the processor saw each step's history as numbers: the prompt, then -1
    assert history[0][0, -6:].tolist() == [5, 6, 7, -1, -1, -1] and (history[2][0, -3:-1] >= 0).all()


def test_jit_compile_is_a_bool_and_export_refuses_eager(tiny, tmp_path):
    with pytest.raises(GenerationArgumentError, match="jit_compile must be True .* or False"):
        tiny.generate([[5, 6]], max_new_tokens=2, jit_compile="no")
    with pytest.raises(GenerationArgumentError, match="jit_compile must be"):
        tiny.logits([[5, 6]], jit_compile=None)
    with pytest.raises(GenerationArgumentError, match="export writes the compiled program.*jit_compile=False"):
        tiny.export(str(tmp_path / "out"), prompt_length=4, max_new_tokens=2, jit_compile=False)
    with pytest.raises(GenerationArgumentError, match="jit_compile must be"):
        tiny.export(str(tmp_path / "out"), prompt_length=4, max_new_tokens=2, jit_compile="no")
    assert not (tmp_path / "out").exists()


def test_cli_eager_runs_generate_eagerly(capsys, tiny, monkeypatch):
    from xlagen.engine.generator import Generator
    given, generate = [], Generator.generate

    def recorded(self, *args, **kwargs):  # the real generate, with its jit_compile noted
        given.append(kwargs.get("jit_compile", True))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(Generator, "generate", recorded)
    assert main(["generate", "--model", fixture_path("gpt2-tiny"), "--max-new-tokens", "3", "--eager", "The for"]) == 0
    assert given == [False]
    assert capsys.readouterr().out.splitlines() == tiny.generate_text(["The for"], max_new_tokens=3, jit_compile=False)


def test_decode_call_returns_the_function_generate_runs(tiny):
    call = tiny.decode_call([[5, 6, 7]], max_new_tokens=3, eos_token_id=None)
    assert call.args[0].shape == (1, 8) and call.plan.strategy.name == "greedy"  # the prompt bucket
    tokens = call.function(*call.args)["sequences"].numpy()[:, -6:]
    np.testing.assert_array_equal(tokens, tiny.generate([[5, 6, 7]], max_new_tokens=3, eos_token_id=None,
                                                        jit_compile=False))
    with pytest.raises(GenerationArgumentError, match="decode_call returns the plain function"):
        tiny.decode_call([[5]], jit_compile=True)
