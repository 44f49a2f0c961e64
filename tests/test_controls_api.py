"""The controls' interface: your own processors, options nothing applies (warned or refused),
the checks on the new options, the CLI flags, and program reuse for new lists and values.
Parity with transformers is tests/test_controls.py's."""
import json
import os
import shutil
import warnings

import numpy as np
import pytest
import tensorflow as tf

from conftest import FIXTURES, fixture_path, reference
from xlagen.engine import GenerationArgumentError, defaults, load
from xlagen.engine.jobs.cli import bad_words_ids, main

NEW = 8


def _prompts():
    ref = reference("gpt2-tiny")
    return ref["input_ids"], ref["attention_mask"]


def _new(out, ids):
    return np.asarray(out)[:, ids.shape[1]:]


def _ban_after(trigger, banned):
    """The README's example: once `trigger` is in a row's history, `banned` is never chosen."""
    def processor(logits, history, step):
        seen = tf.reduce_any(tf.equal(history, trigger), axis=1)
        ban = tf.equal(tf.range(logits.shape[-1]), banned)
        return tf.where(seen[:, None] & ban[None, :], float("-inf"), logits)
    return processor


def test_custom_processor_bans_a_token_after_its_trigger(tiny):
    ids, mask = _prompts()
    plain = _new(tiny.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None), ids)
    # a trigger that occurs in the plain output's first half, and the token it is followed by later
    row = 0
    trigger, banned = int(plain[row, 0]), int(plain[row, 1])
    # Eagerly: what the processor does is the question; test_same_processor_reuses_the_program traces one in.
    out = _new(tiny.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None, jit_compile=False,
                             logits_processor=[_ban_after(trigger, banned)]), ids)
    full = np.concatenate([ids, out], axis=1)
    for r in range(len(full)):
        seen = np.flatnonzero((full[r] == trigger) & (np.concatenate([mask[r], np.ones(NEW, int)]) == 1))
        if len(seen):
            assert banned not in full[r, seen[0] + 1:], (r, full[r])
    assert out[row, 1] != banned
    # rows that never see the trigger decode as before
    untouched = [r for r in range(len(full)) if trigger not in full[r][np.concatenate([mask[r], np.ones(NEW, int)]) == 1]]
    np.testing.assert_array_equal(out[untouched], plain[untouched])


def test_custom_processor_runs_after_xlagen_processors_and_before_warpers(tiny):
    """It sees the processed logits (bad words already -inf) and its output is what is warped."""
    ids, mask = _prompts()
    seen = {}

    def spy(logits, history, step):
        seen["shape"] = (logits.shape, history.shape, step.shape, step.dtype)
        # keep only token 5 and 6: sampling then can only pick those
        keep = tf.logical_or(tf.equal(tf.range(logits.shape[-1]), 5), tf.equal(tf.range(logits.shape[-1]), 6))
        return tf.where(keep[None, :], logits, float("-inf"))

    out = tiny.generate(ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None, do_sample=True, seed=3,
                        bad_words_ids=[[5]], logits_processor=[spy], output_scores=True, jit_compile=False)  # the order
    assert set(np.asarray(out.sequences)[:, ids.shape[1]:].ravel()) == {6}  # 5 was banned before spy ran
    rows, width = len(ids), ids.shape[1]
    assert seen["shape"][0].as_list() == [rows, tiny.vocab_size]
    assert seen["shape"][1].as_list()[1] == -(-width // 8) * 8 + 4  # prefix slots (the prompt bucket) + new tokens
    assert seen["shape"][2:] == (tf.TensorShape([]), tf.int32)
    assert np.isneginf(out.scores[0][:, 5]).all()


def test_same_processor_reuses_the_program_and_a_new_one_compiles(tiny):
    ids, mask = _prompts()
    f = _ban_after(5, 6)
    tiny.generate(ids, attention_mask=mask, max_new_tokens=4, logits_processor=[f])
    count = tiny.trace_count
    tiny.generate(ids, attention_mask=mask, max_new_tokens=4, logits_processor=[f])
    assert tiny.trace_count == count
    tiny.generate(ids, attention_mask=mask, max_new_tokens=4, logits_processor=[_ban_after(5, 6)])
    assert tiny.trace_count == count + 1


def test_a_processor_that_returns_the_wrong_shape_is_named(tiny):
    def wrong(logits, history, step):
        return logits[:, :3]
    with pytest.raises(GenerationArgumentError, match="logits_processor 'wrong' must return a float32 tensor"):
        tiny.generate([[1, 2, 3]], max_new_tokens=2, logits_processor=[wrong])
    with pytest.raises(GenerationArgumentError, match="logits_processor must be a list of functions"):
        tiny.generate([[1, 2, 3]], max_new_tokens=2, logits_processor=[42])


def test_new_lists_and_values_of_a_bucket_reuse_the_program(tiny):
    ids, mask = _prompts()
    base = dict(max_new_tokens=4, eos_token_id=0, pad_token_id=0)
    first = dict(bad_words_ids=[[88], [99, 281]], sequence_bias=[[[4], 1.5]], suppress_tokens=[7],
                 forced_eos_token_id=0, exponential_decay_length_penalty=(2, 1.2), encoder_repetition_penalty=1.3)
    tiny.generate(ids, attention_mask=mask, **base, **first)
    count = tiny.trace_count
    for other in (dict(bad_words_ids=[[12], [13, 14], [15, 16, 17]], sequence_bias=[[[9], -3.0], [[2, 3], 2.0]],
                       suppress_tokens=[1, 2, 3], forced_eos_token_id=[5, 6], exponential_decay_length_penalty=(1, 2.0),
                       encoder_repetition_penalty=0.5),
                  dict(first, bad_words_ids=[[200]])):
        tiny.generate(ids, attention_mask=mask, **base, **other)
    assert tiny.trace_count == count
    sample = dict(base, do_sample=True, typical_p=0.9, epsilon_cutoff=0.01, eta_cutoff=0.01, seed=1)
    tiny.generate(ids, attention_mask=mask, **sample)
    count = tiny.trace_count
    tiny.generate(ids, attention_mask=mask, **dict(sample, typical_p=0.5, epsilon_cutoff=0.001, eta_cutoff=0.1))
    assert tiny.trace_count == count


# (options, words the message must hold)
BAD = [
    (dict(bad_words_ids=[5]), "bad_words_ids must be a list of non-empty lists"),
    (dict(bad_words_ids=[[]]), "bad_words_ids must be a list of non-empty lists"),
    (dict(bad_words_ids=[[10_000]]), "bad_words_ids holds token id 10000, outside the vocabulary"),
    (dict(sequence_bias={(3,): "x"}), "sequence_bias must be a number"),
    (dict(sequence_bias=[[3, 1.0]]), "sequence_bias must be a list of non-empty lists"),
    (dict(sequence_bias=7), "sequence_bias must be a dict"),
    (dict(suppress_tokens=[-1]), "suppress_tokens must be >= 0"),
    (dict(forced_eos_token_id=5000), "forced_eos_token_id holds token id 5000"),
    (dict(forced_bos_token_id="a"), "forced_bos_token_id must be an int"),
    (dict(do_sample=True, typical_p=0.0), r"typical_p must be in \(0.0, 1.0\]"),
    (dict(do_sample=True, epsilon_cutoff=1.0), r"epsilon_cutoff must be in \[0, 1\)"),
    (dict(do_sample=True, eta_cutoff=-0.1), r"eta_cutoff must be in \[0.0, 1.0\]"),
    (dict(exponential_decay_length_penalty=3), "exponential_decay_length_penalty must be"),
    (dict(encoder_repetition_penalty=0), "encoder_repetition_penalty must be in"),
    (dict(encoder_no_repeat_ngram_size=-2), "encoder_no_repeat_ngram_size must be >= 0"),
    (dict(renormalize_logits="yes"), "renormalize_logits must be True or False"),
    (dict(stop_strings=[""]), "stop"),
    (dict(diversity_penalty=0.5), "xlagen does not apply diversity_penalty"),
    (dict(num_beam_groups=2), "xlagen does not apply num_beam_groups"),
    (dict(constraints=[1]), "xlagen does not apply constraints"),
]


@pytest.mark.parametrize("kwargs,words", BAD, ids=[next(iter(k)) + "-" + str(i) for i, (k, _) in enumerate(BAD)])
def test_bad_control_is_refused_before_compiling(tiny, kwargs, words):
    count = tiny.trace_count
    with pytest.raises(GenerationArgumentError, match=words):
        tiny.generate([[1, 2, 3]], max_new_tokens=2, **kwargs)
    assert tiny.trace_count == count


def test_stop_strings_need_a_tokenizer(tmp_path):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(fixture_path("gpt2-tiny"), folder)
    (folder / "tokenizer.json").unlink(missing_ok=True)
    with pytest.raises(GenerationArgumentError, match="stop_strings needs a tokenizer"):
        load(str(folder)).generate([[1, 2, 3]], max_new_tokens=2, stop_strings=["x"])


def _field_list():
    with np.load(os.path.join(FIXTURES, "reference", "controls.npz"), allow_pickle=False) as f:
        return json.loads(str(f["generation_config_fields"]))


def test_every_generation_config_field_is_applied_warned_or_harmless():
    """transformers 4.57's GenerationConfig fields, recorded by tools/make_control_fixtures.py: a
    new field must be sorted into one of the three sets before this passes."""
    known = set(defaults.DEFAULTS) | set(defaults.NOT_APPLIED) | defaults.IGNORED
    assert [f for f in _field_list() if f not in known] == []
    assert not set(defaults.NOT_APPLIED) & (set(defaults.DEFAULTS) | defaults.IGNORED)
    assert not set(defaults.DEFAULTS) & defaults.IGNORED


def _folder_with(tmp_path, **generation):
    folder = tmp_path / "checkpoint"
    shutil.copytree(fixture_path("gpt2-tiny"), folder)
    path = folder / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(dict(config, **generation)))
    return str(folder)


def test_unapplied_options_from_the_checkpoint_warn_once_at_load(tmp_path):
    folder = _folder_with(tmp_path, num_beam_groups=2, diversity_penalty=0.5, guidance_scale=None, token_healing=False)
    with pytest.warns(UserWarning) as record:
        gen = load(folder)
    messages = [str(w.message) for w in record if "xlagen does not apply" in str(w.message)]
    assert len(messages) == 2, messages
    assert any("num_beam_groups=2" in m and "tokens will differ from transformers'" in m for m in messages)
    assert any("diversity_penalty=0.5" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gen.generate([[1, 2, 3]], max_new_tokens=2)  # not again per call


def test_unapplied_options_at_their_defaults_are_quiet(tmp_path):
    folder = _folder_with(tmp_path, num_beam_groups=1, diversity_penalty=0.0, max_time=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(folder)


def test_checkpoint_controls_apply(tmp_path):
    """generation_config.json's suppress_tokens is applied as the keyword is."""
    ids, mask = _prompts()
    plain = load(_folder_with(tmp_path)).generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None)
    banned = sorted(set(_new(plain, ids).ravel().tolist()))[:3]
    folder = tmp_path / "b"
    shutil.copytree(_folder_with(tmp_path / "x", suppress_tokens=banned), folder)
    out = load(str(folder)).generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None)
    assert not set(_new(out, ids).ravel().tolist()) & set(banned)
    same = load(_folder_with(tmp_path / "y")).generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None,
                                                       suppress_tokens=banned)
    np.testing.assert_array_equal(out, same)


def test_cli_flags_reach_generate(capsys):
    model = "default"  # the bundled model writes words
    # --eager: the flags' effect is the question, not the compiled program (tests/test_eager.py).
    assert main(["generate", "--eager", "--model", model, "--max-new-tokens", "12", "The for"]) == 0
    plain = capsys.readouterr().out.strip()
    completion = plain[len("The for"):]
    word = completion.split()[0]
    assert main(["generate", "--eager", "--model", model, "--max-new-tokens", "12", "--bad-words", word, "The for"]) == 0
    banned = capsys.readouterr().out.strip()
    assert banned != plain and word not in banned[len("The for"):].split()[:1]
    stop = completion.strip()[:3]
    assert main(["generate", "--eager", "--model", model, "--max-new-tokens", "12", "--stop", stop, "The for"]) == 0
    stopped = capsys.readouterr().out.strip()
    assert stopped.endswith(stop) or stop in stopped[-(len(stop) + 8):], (stopped, stop)
    assert len(stopped) < len(plain)
    for flags in (["--penalty-alpha", "0.6", "--top-k", "3"],
                  ["--do-sample", "--typical-p", "0.8", "--epsilon-cutoff", "0.01", "--eta-cutoff", "0.01", "--seed", "1"]):
        assert main(["generate", "--eager", "--model", model, "--max-new-tokens", "6"] + flags + ["The for"]) == 0
        assert capsys.readouterr().out.startswith("The for")


def test_bad_words_from_text_cover_both_spellings(tiny):
    sequences = bad_words_ids(tiny.tokenizer, ["for"])
    assert tiny.tokenizer.encode("for", add_special_tokens=False).ids in sequences
    assert tiny.tokenizer.encode(" for", add_special_tokens=False).ids in sequences


def test_a_nan_score_ranks_first_as_in_transformers(tiny):
    """torch's argmax and top-k rank NaN above every number, so transformers picks a token whose
    processed score is NaN (exponential_decay_length_penalty makes one from a -inf EOS logit)."""
    ids, mask = _prompts()

    def nan_at_5(logits, history, step):
        return tf.where(tf.equal(tf.range(logits.shape[-1]), 5)[None, :], float("nan"), logits)

    out = _new(tiny.generate(ids, attention_mask=mask, max_new_tokens=3, eos_token_id=None,
                             logits_processor=[nan_at_5]), ids)
    assert (out == 5).all(), out
