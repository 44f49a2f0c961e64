"""SavedModel export: every strategy and model family, reloaded in a process where xlagen cannot
be imported, gives the tokens Generator.generate gives (run eagerly here: its compiled program gives the same)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import fixture_path, generator
from xlagen.engine import GenerationArgumentError
from xlagen.engine.jobs.cli import main

P, N = 8, 6


def _no_token_7(logits, history, step):
    return tf.where(tf.equal(tf.range(logits.shape[-1]), 7)[None, :], float("-inf"), logits)


SAMPLE = dict(temperature=0.8, top_k=20, top_p=0.9, seed=1234567)
# name: (fixture, batch_size, export options, signature inputs beyond the prompts)
CASES = {
    "gpt2-sample": ("gpt2-tiny", None, dict(do_sample=True, num_return_sequences=2, repetition_penalty=1.3), SAMPLE),
    "gpt2-beam": ("gpt2-tiny", None, dict(num_beams=3, num_return_sequences=2, output_scores=True), dict(length_penalty=0.7)),
    "opt-greedy": ("opt-tiny", 2, dict(eos_token_id=None), {}),
    # The controls, a processor of the caller's, stop strings and scores are carried into the
    # SavedModel; over 64 rows (kernels.layers.dense changes the product's order there), open batch.
    "gpt2-controls": ("gpt2-tiny", None, dict(bad_words_ids=[[88], [99, 281]], sequence_bias=[[[4], 1.5]],
                                              suppress_tokens=[116], forced_eos_token_id=0, eos_token_id=0,
                                              stop_strings=["e"], logits_processor=[_no_token_7], output_scores=True,
                                              repetition_penalty=1.2), {}),
    "gpt2-contrastive": ("gpt2-tiny", None, dict(penalty_alpha=0.6, top_k=4, eos_token_id=None), dict(penalty_alpha=0.3)),
    "t5-beam-controls": ("t5-v1_1-tiny", 2, dict(num_beams=3, encoder_no_repeat_ngram_size=2, forced_bos_token_id=104,
                                                 output_scores=True), dict(length_penalty=1.5)),
}
ROWS = {"gpt2-controls": 66}  # prompts per case; 2 otherwise

# Runs in a fresh interpreter: xlagen is blocked, only TensorFlow and numpy are used.
SERVE = r"""
import json, sys
class NoXlagen:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "xlagen":
            raise ImportError("xlagen is blocked in this process")
sys.meta_path.insert(0, NoXlagen())
try:
    import xlagen
    sys.exit("xlagen was importable")
except ImportError:
    pass
import numpy as np, tensorflow as tf
for case in json.loads(sys.argv[1]):
    fn = tf.saved_model.load(case["dir"]).signatures["serving_default"]
    inputs = {k: tf.constant(v, case["dtypes"][k]) for k, v in case["inputs"].items()}
    np.savez(case["dir"] + ".out.npz", **{k: v.numpy() for k, v in fn(**inputs).items()})
"""

DTYPES = dict(input_ids="int32", attention_mask="int32", temperature="float32", top_k="int32", top_p="float64",
              seed="int64", length_penalty="float64", penalty_alpha="float32")


def _prompts(gen, batch=2):
    rng = np.random.RandomState(batch)
    ids = rng.randint(1, gen.vocab_size, size=(batch, P)).astype(np.int32)
    mask = np.ones_like(ids)
    if gen.config.is_encoder_decoder:
        mask[1, -3:] = 0  # encoder inputs may be padded on the right
    else:
        mask[1, :3] = 0  # decoder-only prompts are left padded
        ids[1, :3] = 0
    return ids, mask


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Export every case, run all SavedModels in one xlagen-free subprocess, return
    {case: (what generate returned, what the SavedModel returned)}."""
    root = tmp_path_factory.mktemp("export")
    jobs, expected = [], {}
    for name, (fixture, batch, opts, knobs) in CASES.items():
        gen = generator(fixture)
        ids, mask = _prompts(gen, ROWS.get(name, 2))
        directory = str(root / name)
        if name == "opt-greedy":  # through the command line, with the head screen (kernels.screen) in the program
            assert main(["export", "--model", fixture_path(fixture), "--out", directory, "--prompt-length", str(P),
                         "--max-new-tokens", str(N), "--batch-size", str(batch), "--head-screen"]) == 0
            stored = tf.train.load_checkpoint(os.path.join(directory, "variables", "variables"))
            shapes = stored.get_variable_to_shape_map()
            int8 = [shapes[n] for n, d in stored.get_variable_to_dtype_map().items() if d == tf.int8]
            assert int8 == [generator(fixture).model.head_table.shape.as_list()]  # the screen's int8 copy
            opts = {}
        else:
            gen.export(directory, prompt_length=P, max_new_tokens=N, batch_size=batch, **opts)
        # generate() eagerly: the same functions and tokens as its compiled program (tests/test_eager.py),
        # without compiling each program a second time here
        expected[name] = gen.generate(ids, attention_mask=mask, max_new_tokens=N, jit_compile=False, **dict(opts, **knobs))
        inputs = dict(input_ids=ids.tolist(), attention_mask=mask.tolist(), **knobs)
        jobs.append(dict(dir=directory, inputs=inputs, dtypes={k: DTYPES[k] for k in inputs}))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", SERVE, json.dumps(jobs)], cwd=str(root), env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {}
    for name, job in zip(CASES, jobs):
        with np.load(job["dir"] + ".out.npz") as f:
            results[name] = (expected[name], {k: f[k] for k in f.files})
    return results


@pytest.mark.parametrize("case", sorted(CASES))
def test_saved_model_reproduces_generate_without_xlagen(served, case):
    expected, got = served[case]
    if CASES[case][2].get("output_scores"):  # the SavedModel's outputs are generate's fields
        beam = expected.sequences_scores is not None
        assert set(got) == {"sequences", "scores", "transition_scores", "steps"} | ({"sequences_scores"} if beam else set())
        np.testing.assert_array_equal(got["sequences"], expected.sequences)
        # scores: XLA's floats against eager's, within the parity tolerance
        np.testing.assert_allclose(got["transition_scores"], expected.transition_scores, rtol=1e-4, atol=1e-4)
        assert int(got["steps"]) == len(expected.scores)
        np.testing.assert_allclose(got["scores"][:len(expected.scores)], np.stack(expected.scores), rtol=1e-4, atol=1e-4)
        if beam:
            np.testing.assert_allclose(got["sequences_scores"], expected.sequences_scores, rtol=1e-4, atol=1e-4)
    else:
        assert set(got) == {"sequences"}
        np.testing.assert_array_equal(got["sequences"], expected)


def test_export_refuses_bad_arguments(tiny, tmp_path):
    with pytest.raises(GenerationArgumentError, match="beyond the model's 64 positions"):
        tiny.export(str(tmp_path / "a"), prompt_length=60, max_new_tokens=10)
    with pytest.raises(GenerationArgumentError, match="prompt_length must be >= 1"):
        tiny.export(str(tmp_path / "b"), prompt_length=0, max_new_tokens=10)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(GenerationArgumentError, match="is not empty"):
        tiny.export(str(tmp_path / "full"), prompt_length=8, max_new_tokens=4)
    with pytest.raises(GenerationArgumentError, match="did you mean 'temperature'"):
        tiny.export(str(tmp_path / "c"), prompt_length=8, max_new_tokens=4, temprature=0.5)
