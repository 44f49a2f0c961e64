"""The generation controls of issue 19 against transformers 4.57 (tools/make_control_fixtures.py,
reference/controls.npz): bad_words_ids, sequence_bias, suppress_tokens, begin_suppress_tokens,
forced_bos_token_id, forced_eos_token_id, typical_p, epsilon_cutoff, eta_cutoff,
renormalize_logits, encoder_repetition_penalty, encoder_no_repeat_ngram_size,
remove_invalid_values, exponential_decay_length_penalty.

- Recorded generate cases (`cases`), by name: greedy and beam search give transformers' tokens,
  transition scores and sequences_scores (and every step's scores where recorded); sampling gives
  transformers' first-step warped scores (zero mass exactly where transformers has none) and only
  ever draws tokens transformers could draw.
- Unit cases (`units/*`): the kernels on transformers' processors' random inputs.
- A checkpoint whose generation_config.json sets bad_words_ids and forced_eos_token_id decodes as
  transformers decodes it (`folder/*`).
- A new list or value of the same size bucket reuses the program (trace_count).

Every control set is its own XLA program (on 2 cores 5-25 s to compile for greedy and beam search,
20-50 s for sampling), and the recorded cases hold about a hundred sets. By default the cases of
CORE_PROGRAMS run: `chain_*` cases (every control at once), the controls that are in no chain
or behave differently alone (exponential decay, forced BOS on a decoder-only model, list-valued
forced EOS, encoder_repetition_penalty in beam search, ...), and the recorded cases that share
their programs; the unit cases check every processor on its own. XLAGEN_CONTROL_CASES=all runs
every recorded case.
"""
import functools
import json
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

from conftest import FIXTURES, fixture_path, generator

NEW = 12  # make_fixtures.NEW_TOKENS: every case's max_new_tokens
ATOL, RTOL = 1e-4, 1e-5
SEEDS = range(8)


@functools.lru_cache(maxsize=None)
def recorded():
    with np.load(os.path.join(FIXTURES, "reference", "controls.npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


CASES = {case["name"]: case for case in json.loads(str(recorded()["cases"]))}
UNITS = json.loads(str(recorded()["units/cases"]))


def _strategy(name):
    options = CASES[name]["options"]
    return "beam" if options.get("num_beams", 1) > 1 else "sample" if options["do_sample"] else "greedy"


# Representatives of the programs that run by default, and the other cases that share their program (same
# model and prompts, strategy, and which controls are on with the same table buckets).
CORE_PROGRAMS = [
    # every control at once: greedy, beam search on a decoder-only model and T5, sampling (OPT and
    # T5 greedy chains run with XLAGEN_CONTROL_CASES=all; OPT greedy and beam programs follow)
    ["gpt2-tiny/chain_greedy"],
    ["gpt2-tiny/chain_beam"], ["t5-v1_1-tiny/chain_beam"],
    ["gpt2-tiny/chain_sample"],
    # exponential_decay_length_penalty (in no chain); rows that end early, a list of EOS ids
    ["gpt2-tiny/exponential_decay_greedy", "gpt2-tiny/exponential_decay_eos_list_greedy"],
    ["gpt2-tiny/exponential_decay_beam"],
    # forced_bos_token_id on a decoder-only model (1-token prompts), begin_suppress_tokens a step later
    ["gpt2-tiny-short/begin_suppress_forced_bos_greedy"],
    # forced_eos_token_id: one id, and a list of two (a tie at the last step), pad_token_id != EOS
    ["opt-tiny/forced_eos_beam", "opt-tiny/forced_eos_list_beam"],
    # bad_words_ids holding [eos] (dropped, as transformers does) with min_new_tokens and forced EOS
    ["opt-tiny/min_new_bad_words_forced_eos_greedy"],
    # encoder_repetition_penalty in beam search: every beam penalised by its prompt's encoder ids
    ["t5-v1_1-tiny/encoder_repetition_1.5_beam_expanded"],
]
CORE = {name for program in CORE_PROGRAMS for name in program}
# Core cases whose controls a compiled chain above already carries into a program: they run eagerly
# (the same functions, tests/test_eager.py), as what transformers does with the control is their question.
EAGER = {"gpt2-tiny/exponential_decay_beam", "gpt2-tiny-short/begin_suppress_forced_bos_greedy",
         "opt-tiny/forced_eos_beam", "opt-tiny/forced_eos_list_beam", "opt-tiny/min_new_bad_words_forced_eos_greedy",
         "t5-v1_1-tiny/encoder_repetition_1.5_beam_expanded"}
assert CORE <= set(CASES), sorted(CORE - set(CASES))
ALL = os.environ.get("XLAGEN_CONTROL_CASES") == "all"


def _cases(*strategies):
    """Parameters for the recorded cases of these strategies: those of CORE, or every one with
    XLAGEN_CONTROL_CASES=all (each other case costs one more XLA program; the whole set takes
    about half an hour on 2 cores). Ordered by fixture and strategy, so that a program is compiled
    once and the cases sharing it run back to back."""
    names = sorted((n for n in CASES if _strategy(n) in strategies and (ALL or n in CORE)),
                   key=lambda n: (CASES[n]["fixture"], _strategy(n)))
    return [pytest.param(n, id=n) for n in names]


def _generator(fixture):
    """gpt2-tiny-short is gpt2-tiny on a batch of 1-token prompts."""
    return generator("gpt2-tiny" if fixture == "gpt2-tiny-short" else fixture)


def _inputs(fixture):
    ref = recorded()
    return ref[f"{fixture}/input_ids"], ref[f"{fixture}/attention_mask"]


def _prefix_width(fixture):
    """Width of the output before the new tokens: the prompt, or T5's start token."""
    return 1 if _generator(fixture).config.is_encoder_decoder else _inputs(fixture)[0].shape[1]


def _generate(name, **extra):
    case = CASES[name]
    ids, mask = _inputs(case["fixture"])
    eager = {"jit_compile": False} if name in EAGER and not ALL else {}
    return _generator(case["fixture"]).generate(ids, attention_mask=mask, output_scores=True,
                                                **dict(case["options"], **eager, **extra))


def _padded(sequences, width, pad):
    """transformers stops when every row is done: its sequences may be narrower than ours."""
    out = np.full([sequences.shape[0], width], pad, sequences.dtype)
    out[:, :sequences.shape[1]] = sequences
    return out


def _after_eos(sequences, start, eos):
    """[R, W] bool: the positions after each row's first EOS among its new tokens (from `start`)."""
    is_eos = np.isin(sequences[:, start:], eos)
    after = np.zeros(sequences.shape, bool)
    after[:, start:] = (np.cumsum(is_eos, axis=1) - is_eos) > 0
    return after


def _where(mask, actual, expected, limit=8):
    spots = np.argwhere(mask)[:limit]
    return "; ".join(f"{tuple(int(i) for i in s)}: got {actual[tuple(s)]!r}, expected {expected[tuple(s)]!r}"
                     for s in spots)


def _same_scores(actual, expected, what, atol=ATOL, rtol=RTOL):
    """-inf (and +inf) exactly where transformers has them, within atol + rtol * |value| elsewhere."""
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert not np.isnan(actual).any(), f"{what}: nan at {_where(np.isnan(actual), actual, expected)}"
    for inf, sign in ((np.isneginf, "-inf"), (np.isposinf, "+inf")):
        wrong = inf(actual) != inf(expected)
        assert not wrong.any(), f"{what}: {sign} at other places than transformers' ({int(wrong.sum())}): " \
                                f"{_where(wrong, actual, expected)}"
    finite = np.isfinite(expected)
    off = np.zeros_like(finite)
    off[finite] = np.abs(actual[finite] - expected[finite]) > atol + rtol * np.abs(expected[finite])
    assert not off.any(), f"{what}: {int(off.sum())} values differ by more than {atol} + {rtol} * |value| " \
                          f"(largest {np.abs(actual - expected)[off].max():.3g}): {_where(off, actual, expected)}"


def _probabilities(scores):
    scores = np.asarray(scores, np.float64)
    top = scores.max(axis=-1, keepdims=True)
    p = np.exp(scores - top)
    return p / p.sum(axis=-1, keepdims=True)


# -- recorded generate cases ---------------------------------------------------------------------


@pytest.mark.parametrize("name", _cases("greedy", "beam"))
def test_greedy_and_beam_match_transformers(name):
    """Token-identical sequences; transition scores, sequences_scores (beam) and, where recorded,
    every step's scores as transformers gives them. *_expanded: transformers 4.57 penalises only the
    first B of the B * num_beams rows with encoder_repetition_penalty (it passes the unexpanded input
    ids); the recording is transformers with the per-beam ids, what xlagen does for the same options."""
    case, ref = CASES[name], recorded()
    options, fixture = case["options"], case["fixture"]
    out = _generate(name)
    rows = len(_inputs(fixture)[0]) * options.get("num_return_sequences", 1)
    width = _prefix_width(fixture) + NEW
    assert out.sequences.shape == (rows, width)
    pad, eos = options["pad_token_id"], options["eos_token_id"]
    expected = _padded(ref[f"{name}/sequences"], width, pad)
    # After a row's EOS xlagen writes pad_token_id (its documented layout). transformers 4.57's beam
    # search fills with `pad_token_id or eos_token_id[0]`, EOS when pad_token_id is 0 (T5's): compare the
    # tokens up to each row's EOS, and pad_token_id after it.
    expected[_after_eos(expected, width - NEW, eos)] = pad
    differ = out.sequences != expected
    assert not differ.any(), (f"{name}: rows {sorted(set(np.argwhere(differ)[:, 0].tolist()))} differ from "
                              f"transformers'; new tokens\n got      {out.sequences[:, width - NEW:].tolist()}\n"
                              f" expected {expected[:, width - NEW:].tolist()}")
    transition = ref[f"{name}/transition_scores"]
    assert out.transition_scores.shape == (rows, NEW)
    _same_scores(out.transition_scores[:, :transition.shape[1]], transition, f"{name} transition_scores")
    if _strategy(name) == "beam":
        _same_scores(out.sequences_scores, ref[f"{name}/sequences_scores"], f"{name} sequences_scores")
    else:
        assert out.sequences_scores is None
    if f"{name}/scores" in ref:
        steps = ref[f"{name}/scores"]
        assert len(out.scores) == len(steps), f"{name}: {len(out.scores)} steps of scores, transformers {len(steps)}"
        for step, (got, want) in enumerate(zip(out.scores, steps)):
            _same_scores(got, want, f"{name} scores of step {step}")


@pytest.mark.parametrize("name", _cases("sample"))
def test_sampling_first_step_matches_transformers(name):
    """The processed and warped scores of the first step, which do not depend on the draw: zero
    mass exactly where transformers has none, the same distribution and the same scores elsewhere."""
    expected = recorded()[f"{name}/scores"]
    out = _generate(name, seed=0)
    first = out.scores[0]
    assert first.shape == expected.shape
    _same_scores(first, expected, f"{name} first-step scores")
    got_p, want_p = _probabilities(first), _probabilities(expected)
    zero = (got_p == 0) != (want_p == 0)
    assert not zero.any(), f"{name}: zero mass at other places than transformers': {_where(zero, first, expected)}"
    np.testing.assert_allclose(got_p, want_p, atol=1e-4, rtol=0, err_msg=f"{name}: first-step probabilities")


@pytest.mark.parametrize("name", _cases("sample"))
def test_sampling_draws_only_what_transformers_allows(name):
    """With fixed seeds, every first token drawn has nonzero mass in transformers' first-step scores."""
    case = CASES[name]
    allowed = _probabilities(recorded()[f"{name}/scores"]) > 0
    start = _prefix_width(case["fixture"])
    for seed in SEEDS:
        first = np.asarray(_generate(name, seed=seed).sequences)[:, start]
        drawn = allowed[np.arange(len(first)), first]
        assert drawn.all(), (f"{name}, seed {seed}: rows {np.flatnonzero(~drawn).tolist()} drew "
                             f"{first[~drawn].tolist()}, which transformers gives no mass")


# -- unit cases: the kernels on transformers' processors' inputs ---------------------------------


def _table(sequences):
    """Token sequences as the kernels' table: prefixes [M, L] right-aligned (ANY_TOKEN before),
    whole lengths [M] and last tokens [M]."""
    from xlagen.kernels import processors
    width = max(len(s) for s in sequences) - 1
    prefixes = np.full([len(sequences), width], processors.ANY_TOKEN, np.int32)
    for m, s in enumerate(sequences):
        if len(s) > 1:
            prefixes[m, width - (len(s) - 1):] = s[:-1]
    return (tf.constant(prefixes), tf.constant([len(s) for s in sequences], tf.int32),
            tf.constant([s[-1] for s in sequences], tf.int32))


def _ids(ids, slots=8):
    """An id list padded with NO_TOKEN, as the engine passes them."""
    from xlagen.kernels.search import NO_TOKEN
    ids = [ids] if isinstance(ids, int) else list(ids)
    return tf.constant(ids + [NO_TOKEN] * (slots - len(ids)), tf.int32)


def _unit(unit):
    """What xlagen's kernel gives for a unit case (transformers' processor(history, scores))."""
    from xlagen.kernels import processors, sampling, search
    ref = recorded()
    cls, args = unit["class"], unit["args"]
    logits, history = tf.constant(ref["units/" + unit["input"]]), tf.constant(ref["units/history"], tf.int32)
    enc = tf.constant(ref["units/enc_ids"], tf.int32)
    length = history.shape[1]  # transformers' cur_len = input_ids.shape[-1]
    vocab = logits.shape[-1]
    if cls == "TypicalLogitsWarper":
        return sampling.typical_p(logits, tf.constant(args["mass"], tf.float32))
    if cls == "EpsilonLogitsWarper":
        kernel = sampling.epsilon_cutoff
        return kernel(logits, tf.constant(args["epsilon"], tf.float32))
    if cls == "EtaLogitsWarper":
        kernel = sampling.eta_cutoff
        return kernel(logits, tf.constant(args["epsilon"], tf.float32))
    if cls == "LogitNormalization":
        return _renormalized(logits)
    if cls == "SuppressTokensLogitsProcessor":
        return search.suppress(logits, _ids(args["suppress_tokens"]), True)
    if cls == "SuppressTokensAtBeginLogitsProcessor":
        return search.suppress(logits, _ids(args["begin_suppress_tokens"]), length == args["begin_index"])
    if cls in ("SequenceBiasLogitsProcessor", "NoBadWordsLogitsProcessor"):
        if cls == "SequenceBiasLogitsProcessor":
            sequences, values = [s for s, _ in args["sequence_bias"]], [b for _, b in args["sequence_bias"]]
        else:
            eos = args.get("eos_token_id")
            eos = [] if eos is None else [eos] if isinstance(eos, int) else eos
            # transformers drops a bad word that is a lone EOS id (engine.options does the same)
            sequences = [s for s in args["bad_words_ids"] if not (len(s) == 1 and s[0] in eos)]
        prefixes, lengths, last = _table(sequences)
        hit = processors.sequence_matches(history, tf.constant(length), tf.constant(length), prefixes, lengths)
        if cls == "NoBadWordsLogitsProcessor":
            return processors.ban_sequences(logits, hit, last)
        return processors.add_sequence_bias(logits, hit, last, tf.constant(values, tf.float32))
    if cls == "EncoderNoRepeatNGramLogitsProcessor":
        windows, valid = processors.ngram_windows(enc, args["encoder_ngram_size"])
        return processors.ban_ngram_continuations(logits, history, tf.constant(length), windows, valid, 1)
    if cls == "EncoderRepetitionPenaltyLogitsProcessor":
        seen = processors.presence(enc, vocab)
        return processors.encoder_repetition_penalty(logits, seen, tf.constant(1.0 / args["penalty"], tf.float32))
    if cls == "ExponentialDecayLengthPenalty":
        start, factor = args["exponential_decay_length_penalty"]
        eos = search.is_any_of(tf.range(vocab), _ids(args["eos_token_id"]))
        step = length - args["input_ids_seq_length"]  # new tokens so far
        return processors.exponential_decay(logits, eos, tf.constant(step), tf.constant(start),
                                            tf.constant(factor, tf.float64))
    if cls == "ForcedBOSTokenLogitsProcessor":
        return processors.force(logits, _ids(args["bos_token_id"], 1), tf.constant(length == 1))
    if cls == "ForcedEOSTokenLogitsProcessor":
        return processors.force(logits, _ids(args["eos_token_id"]), tf.constant(length == args["max_length"] - 1))
    if cls == "InfNanRemoveLogitsProcessor":
        return processors.remove_invalid(logits)
    raise AssertionError(f"no kernel for {cls}: add it here")


def _renormalized(logits):
    """renormalize_logits: no kernel of its own; engine.loops.processing.scores with only it on."""
    from xlagen.engine.loops import processing
    return _pipeline(processing.Controls(renormalize=True), logits, context_width=14, step=0)


def _pipeline(controls, logits, context_width, step, max_new_tokens=NEW, eos=(), **values):
    """engine.loops.processing.scores on one step's logits, history units/history (14 tokens: the
    context_width given, then `step` new ones), with `controls` switched on and the ControlKnobs
    fields `values`; every other knob zero or neutral."""
    from types import SimpleNamespace
    from xlagen.engine import loops
    from xlagen.engine.loops import processing
    history = tf.constant(recorded()["units/history"], tf.int32)
    assert context_width + step == history.shape[1]
    specs = processing.control_specs(controls)._asdict()
    values = dict(values, context_width=context_width)
    fields = {k: tf.cast(values[k], s.dtype) if k in values else tf.zeros(s.shape, s.dtype)
              for k, s in specs.items() if isinstance(s, tf.TensorSpec)}
    knobs = SimpleNamespace(controls=processing.ControlKnobs(**dict(specs, **fields)),
                            repetition_penalty=tf.constant(1.0), eos_ids=_ids(list(eos)), min_new_tokens=tf.constant(0),
                            temperature=tf.constant(1.0), top_k=tf.constant(0), top_p=tf.constant(1.0, tf.float64),
                            min_p=tf.constant(0.0))
    strategy = loops.Strategy(controls=controls)
    prepared = processing.prepare(history, controls, max_new_tokens, logits.shape[-1])
    return processing.scores(logits, history, tf.constant(history.shape[1]), tf.constant(step), knobs, strategy,
                             prepared, 1)


# min_tokens_to_keep > 1 (three units): transformers uses it only in beam sampling, which xlagen
# refuses; xlagen's cutoffs always keep one token, as transformers' do everywhere else.
@pytest.mark.parametrize("unit", sorted(u for u in UNITS if UNITS[u]["args"].get("min_tokens_to_keep", 1) == 1))
def test_kernels_match_transformers_processors(unit):
    ref = recorded()
    _same_scores(_unit(UNITS[unit]), ref[f"units/{unit}"], f"units/{unit}", atol=1e-5, rtol=1e-6)


def _stepped(unit):
    """The unit cases that depend on the step, through engine.loops.processing.scores: its own test
    of the step (forced EOS at the last step, begin suppression at the first, decay after `start`)."""
    from xlagen.engine.loops import processing
    cls, args = unit["class"], unit["args"]
    logits = tf.constant(recorded()["units/logits"])
    if cls == "SuppressTokensAtBeginLogitsProcessor":
        return _pipeline(processing.Controls(begin_suppress=8), logits, context_width=14, step=0,
                         begin_suppress_ids=_ids(args["begin_suppress_tokens"]), begin_index=args["begin_index"])
    if cls == "ExponentialDecayLengthPenalty":
        start, factor = args["exponential_decay_length_penalty"]
        width = args["input_ids_seq_length"]
        eos = args["eos_token_id"]
        return _pipeline(processing.Controls(length_decay=True), logits, context_width=width, step=14 - width,
                         eos=[eos] if isinstance(eos, int) else eos, length_decay_start=start,
                         length_decay_factor=factor)
    if cls == "ForcedEOSTokenLogitsProcessor":
        # 8 prompt tokens and 6 new ones; max_length counts both
        return _pipeline(processing.Controls(forced_eos=8), logits, context_width=8, step=6,
                         max_new_tokens=args["max_length"] - 8, forced_eos_ids=_ids(args["eos_token_id"]))
    if cls == "ForcedBOSTokenLogitsProcessor":
        return _pipeline(processing.Controls(forced_bos=True), logits, context_width=14, step=0,
                         forced_bos_id=args["bos_token_id"])
    raise AssertionError(cls)


STEPPED = sorted(u for u, case in UNITS.items() if case["class"] in (
    "SuppressTokensAtBeginLogitsProcessor", "ExponentialDecayLengthPenalty", "ForcedEOSTokenLogitsProcessor",
    "ForcedBOSTokenLogitsProcessor"))


@pytest.mark.parametrize("unit", STEPPED)
def test_processing_applies_step_dependent_units_at_their_step(unit):
    _same_scores(_stepped(UNITS[unit]), recorded()[f"units/{unit}"], f"units/{unit} (processing.scores)",
                 atol=1e-5, rtol=1e-6)


# -- a checkpoint whose generation_config.json sets controls -------------------------------------


def test_checkpoint_controls_decode_as_transformers(tmp_path):
    """transformers applies generation_config.json's bad_words_ids and forced_eos_token_id when
    generate gets no keyword for them; so does xlagen, without a warning about them."""
    from control_folders import CONTROL, control_folder
    from xlagen.engine import load
    ref = recorded()
    assert json.loads(str(ref["folder/recipe"])) == CONTROL
    ids, mask = _inputs(CONTROL["source"])
    width = ids.shape[1] + NEW
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = load(control_folder(fixture_path(CONTROL["source"]), str(tmp_path / "controlled")))
        seqs = np.asarray(gen.generate(ids, attention_mask=mask, max_new_tokens=NEW))
    about = [str(w.message) for w in caught if any(k in str(w.message) for k in CONTROL["generation_keys"])]
    assert not about, about
    pad = 0  # gpt2-tiny has no pad_token_id: transformers and xlagen pad with its EOS id, 0
    np.testing.assert_array_equal(seqs, _padded(ref["folder/sequences"], width, pad))
    assert (seqs != _padded(ref["folder/plain_sequences"], width, pad)).any()  # the controls changed the tokens
    new = seqs[:, ids.shape[1]:]
    assert not (new == 310).any()  # the banned single token
    still_running = ~(new[:, :-1] == 0).any(axis=1)
    assert (new[still_running, -1] == CONTROL["generation_keys"]["forced_eos_token_id"]).all()


# -- lists and values travel as tensors -----------------------------------------------------------


def _bucket_of(sequences):
    """engine.loops.processing.s table bucket (M, L) of a sequence list."""
    from xlagen.engine.loops import processing
    return processing._sequence_table([(tuple(s), 0.0) for s in sequences])[0]


def _emitted(sequences, start, avoid, count):
    """`count` distinct tokens > 3 (and not in `avoid`) that the rows emitted, in order."""
    found = []
    for t in np.asarray(sequences)[:, start:].T.ravel():
        if t > 3 and int(t) not in avoid and int(t) not in found:
            found.append(int(t))
    return found[:count]


def test_new_lists_of_the_same_bucket_reuse_the_program():
    """New bad word sequences, suppressed ids, begin-suppressed ids, forced EOS ids and sequence
    biases of the same size bucket (engine.buckets.list_slots / _sequence_table), and new
    penalty values, reuse the program and take effect; a longer list compiles once more."""
    from xlagen.engine import buckets
    name = "gpt2-tiny/chain_greedy"
    case, gen = CASES[name], generator("gpt2-tiny")
    ids, mask = _inputs("gpt2-tiny")
    first = np.asarray(_generate(name).sequences)
    count = gen.trace_count
    base = case["options"]
    t = _emitted(first, ids.shape[1], {base["pad_token_id"], base["eos_token_id"]} | set(base["suppress_tokens"]), 8)
    variant = dict(base, bad_words_ids=[[t[0]], [t[1], t[2]]], suppress_tokens=[t[3], t[4]],
                   begin_suppress_tokens=[t[5]], forced_eos_token_id=[base["eos_token_id"], t[6]],
                   sequence_bias=[[[t[7]], 3.0], [[t[1], t[2], t[4]], -2.0]], repetition_penalty=1.1,
                   encoder_repetition_penalty=0.8, min_new_tokens=5)
    for key in ("bad_words_ids", "sequence_bias"):
        old, new = ([entry if key == "bad_words_ids" else entry[0] for entry in v] for v in (base[key], variant[key]))
        assert _bucket_of(old) == _bucket_of(new), key
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        assert buckets.list_slots(len(base[key])) == buckets.list_slots(len(variant[key])), key
    second = np.asarray(gen.generate(ids, attention_mask=mask, output_scores=True, **variant).sequences)
    assert gen.trace_count == count
    assert (second != first).any()
    new = second[:, ids.shape[1]:]
    for banned in (t[0], t[3], t[4]):  # a single bad word and the suppressed ids never come
        assert not (new == banned).any(), banned
    # only the bias values change
    biased = dict(base, sequence_bias=[[seq, -bias] for seq, bias in base["sequence_bias"]])
    gen.generate(ids, attention_mask=mask, output_scores=True, **biased)
    assert gen.trace_count == count
    # nine suppressed ids: the next bucket, one more program
    longer = dict(base, suppress_tokens=t[:8] + [base["suppress_tokens"][0]])
    assert buckets.list_slots(len(longer["suppress_tokens"])) > buckets.list_slots(len(base["suppress_tokens"]))
    gen.generate(ids, attention_mask=mask, output_scores=True, **longer)
    assert gen.trace_count == count + 1


def test_new_warper_values_reuse_the_sampling_program():
    """typical_p, epsilon_cutoff, eta_cutoff and the lists of a sampling program are tensors too."""
    name = "gpt2-tiny/chain_sample"
    gen, base = generator("gpt2-tiny"), CASES[name]["options"]
    first = _generate(name, seed=0)
    count = gen.trace_count
    variant = dict(typical_p=0.7, epsilon_cutoff=0.004, eta_cutoff=0.003, temperature=1.2, top_k=30, top_p=0.8,
                   encoder_repetition_penalty=1.2, bad_words_ids=[[base["bad_words_ids"][0][0] + 1], [5, 6]],
                   suppress_tokens=[base["suppress_tokens"][0] + 1])
    second = _generate(name, seed=0, **variant)
    assert gen.trace_count == count
    assert not np.array_equal(np.isneginf(first.scores[0]), np.isneginf(second.scores[0]))
