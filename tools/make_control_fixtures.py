"""Record what transformers 4.57's generate does with its generation controls on the existing
fixture checkpoints: bad_words_ids, sequence_bias, suppress_tokens, begin_suppress_tokens,
forced_bos_token_id, forced_eos_token_id, typical_p, epsilon_cutoff, eta_cutoff,
renormalize_logits, encoder_repetition_penalty, encoder_no_repeat_ngram_size,
remove_invalid_values, exponential_decay_length_penalty; and the processors behind them on random
logits.

Needs transformers (4.x) and torch; the test suite needs neither. Run from the repo root after
tools/make_fixtures.py (it reads the checkpoints that script writes and changes none of them):

    python tools/make_control_fixtures.py

Writes tests/fixtures/reference/controls.npz (numeric arrays, and 0-d strings holding JSON; loads
with allow_pickle=False):
  cases                      JSON list of {"name", "fixture", "options"}: "options" are generate's
                             keywords exactly as passed (after a JSON round trip: sequence_bias a list
                             of [[ids...], bias] pairs, exponential_decay_length_penalty a list
                             [start_index, decay_factor]); every case sets do_sample, max_new_tokens
                             (NEW_TOKENS), pad_token_id and eos_token_id. Each call also gets
                             attention_mask, output_scores=True and return_dict_in_generate=True.
                             "fixture" is gpt2-tiny, opt-tiny, t5-v1_1-tiny, or gpt2-tiny-short
                             (gpt2-tiny with a batch of 1-token prompts, so that forced_bos_token_id
                             applies to a decoder-only model).
  <fixture>/input_ids, <fixture>/attention_mask   the inputs of every case on that fixture:
                             make_generation_fixtures.batch (left padded for GPT-2 / OPT, right padded
                             for T5); for gpt2-tiny-short the first token of each of PROMPTS.
  <name>/sequences           greedy and beam cases: out.sequences as transformers returns them (it
                             stops early when every row is done, so a few are narrower than
                             prompt + NEW_TOKENS: pad them with the case's pad_token_id to compare)
  <name>/sequences_scores    beam cases: out.sequences_scores
  <name>/transition_scores   greedy and beam cases: model.compute_transition_scores(out.sequences,
                             out.scores, out.beam_indices (beam search), normalize_logits=False),
                             [rows, steps]: each emitted token's entry of its step's processed scores
                             (beam search: processed log-probabilities along the returned beam, 0 after
                             its end)
  <name>/scores              greedy cases in FULL_SCORES (renormalize_greedy, chain_greedy):
                             torch.stack(out.scores), [steps, rows, vocab], the processed scores of every
                             step (the other greedy and beam cases record transition scores only, which
                             keeps the file small); sampling cases (do_sample=True):
                             out.scores[0], [rows, vocab], the processed and warped scores of the first
                             step, which do not depend on the random draw (the call still runs
                             max_new_tokens=NEW_TOKENS steps, as its options say; later steps are not
                             recorded). Stored float32; -inf where a processor removed a token.
  units/logits, units/history    tools/make_fixtures.processor_reference's random logits [4, 64] (with
                             ties) and token histories [4, 14] (the same numbers as processors.npz)
  units/logits_invalid       units/logits with nan, +inf and -inf planted (InfNanRemoveLogitsProcessor)
  units/enc_ids              encoder input ids [4, 10] whose n-grams meet the histories' ends
  units/cases                JSON {unit name: {"class": transformers class name, "args": constructor
                             keywords, "input": "logits" | "logits_invalid"}}; an argument given as the
                             string "units/enc_ids" means that array. Each unit is called as
                             processor(torch.tensor(history), torch.tensor(<input>)).
  units/<unit name>          what that processor returned, [4, 64]
  generation_config_fields   JSON sorted list of vars(transformers.GenerationConfig()) keys
  folder/recipe              JSON of tools/control_folders.CONTROL
  folder/sequences           generate on control_folder(gpt2-tiny) with only input_ids, attention_mask
                             (gpt2-tiny/input_ids and attention_mask) and max_new_tokens=NEW_TOKENS
  folder/plain_sequences     the same call on gpt2-tiny itself

Every recorded case is checked here to change what it records compared with the same call without
its control options (sequences for greedy and beam search, first-step scores for sampling), except:
remove_invalid_values (a no-op on finite logits); renormalize_logits in greedy search (argmax is
unchanged; checked on the scores); renormalize_logits in beam search (checked on sequences or,
when the beams come out the same, on scores).

transformers' own encoder_repetition_penalty is wrong with num_beams > 1 or num_return_sequences
> 1: generate() builds EncoderRepetitionPenaltyLogitsProcessor from the unexpanded input ids
[B, S], so it gathers and scatters only the first B of the B * num_beams rows. The beam cases named
*_expanded record the intended behaviour instead: their options say encoder_repetition_penalty (what
xlagen is asked for), but transformers is called without it and with
logits_processor=LogitsProcessorList([EncoderRepetitionPenaltyLogitsProcessor(penalty,
torch.repeat_interleave(input_ids, num_beams, 0))]) (appended after generate's own processors; these
cases have no other processor, so the order does not matter).
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.generation import logits_process as lp

from control_folders import CONTROL, control_folder
from make_fixtures import NEW_TOKENS, PROMPTS, ROOT
from make_generation_fixtures import batch, emitted, load

FIXTURES = ("gpt2-tiny", "opt-tiny", "t5-v1_1-tiny")
BEAM = dict(num_beams=3, num_return_sequences=2)
# greedy / beam cases whose every step's full scores are recorded (the others: transition scores only, to keep
# the file small)
FULL_SCORES = ("renormalize_greedy", "chain_greedy")
# the controls this script is about; a case's baseline is its options without the ones it sets
# (or without the keys its `control` names)
CONTROLS = ("bad_words_ids", "sequence_bias", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
            "forced_eos_token_id", "typical_p", "epsilon_cutoff", "eta_cutoff", "renormalize_logits",
            "encoder_repetition_penalty", "encoder_no_repeat_ngram_size", "remove_invalid_values",
            "exponential_decay_length_penalty")


def jsonable(options):
    """The options exactly as a JSON reader will see them."""
    return json.loads(json.dumps(options))


class Recorder:
    def __init__(self):
        self.out = {}
        self.cases = []

    @torch.no_grad()
    def call(self, model, ids, mask, options, expanded=False):
        """transformers' generate with `options`: (sequences, sequences_scores or None, scores)."""
        options = jsonable(options)
        extra = {}
        if expanded and "encoder_repetition_penalty" in options:
            penalty = options.pop("encoder_repetition_penalty")
            expand = max(options.get("num_beams", 1), options.get("num_return_sequences", 1))
            extra["logits_processor"] = lp.LogitsProcessorList([lp.EncoderRepetitionPenaltyLogitsProcessor(
                penalty=penalty, encoder_input_ids=torch.repeat_interleave(torch.tensor(ids), expand, 0))])
        torch.manual_seed(0)
        res = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), output_scores=True,
                             return_dict_in_generate=True, **options, **extra)
        if options["do_sample"]:
            return None, None, res.scores[0].numpy()
        beams = options.get("num_beams", 1) > 1
        seq_scores = res.sequences_scores.numpy() if beams else None
        self.transition = model.compute_transition_scores(res.sequences, res.scores, res.beam_indices if beams else None,
                                                          normalize_logits=False).numpy()
        return res.sequences.numpy(), seq_scores, torch.stack(res.scores).numpy()

    def add(self, name, fixture, model, ids, mask, base, candidates, check="result", control=None):
        """Record the first of `candidates` (dicts of control options merged into `base`) that changes
        the result against `base` alone; `control` names keys of `base` that are controls too
        (removed for the baseline). check: "result" (sequences, or first-step scores when sampling),
        "scores" (scores only), "either", or None (no check)."""
        control = control or []
        plain = {k: v for k, v in base.items() if k not in control}
        expanded = name.endswith("_expanded")
        ref = self.call(model, ids, mask, plain, expanded=expanded)
        for i, extra in enumerate(candidates):
            options = dict(base, **extra)
            got = self.call(model, ids, mask, options, expanded=expanded)
            transition = self.transition if got[0] is not None else None
            changed = {"seq": got[0] is not None and not same(got[0], ref[0]), "scores": not close(got[2], ref[2])}
            sampling = options["do_sample"]
            if check is None or (check == "result" and (changed["scores"] if sampling else changed["seq"])) or (
                    check == "scores" and changed["scores"]) or (check == "either" and any(changed.values())):
                break
            print(f"  {name}: candidate {i} {extra} changes nothing, trying the next", file=sys.stderr)
        else:
            raise AssertionError(f"{name}: no candidate changes the result ({candidates})")
        full = f"{fixture}/{name}" if fixture != "gpt2-tiny-short" else f"gpt2-tiny-short/{name}"
        self.cases.append({"name": full, "fixture": fixture, "options": jsonable(options)})
        seqs, seq_scores, scores = got
        assert not np.isnan(scores).any(), f"{full}: nan in the scores"
        if seqs is not None:
            self.out[f"{full}/sequences"] = seqs
        if seq_scores is not None:
            self.out[f"{full}/sequences_scores"] = seq_scores
        if seqs is None or name in FULL_SCORES:
            self.out[f"{full}/scores"] = scores.astype(np.float32)
        if seqs is not None:
            self.out[f"{full}/transition_scores"] = transition.astype(np.float32)
        what = "first-step scores" if seqs is None else f"sequences {seqs.shape}"
        print(f"{full}: {jsonable(dict((k, v) for k, v in options.items() if k in CONTROLS or k in control))} "
              f"changes {', '.join(k for k, v in changed.items() if v) or 'nothing (not checked)'}; {what}")
        return got


def same(a, b):
    return a.shape == b.shape and (a == b).all()


def close(a, b):
    """Scores equal up to float noise, -inf in the same places."""
    if a.shape != b.shape:
        return False
    fa, fb = np.isfinite(a), np.isfinite(b)
    return (fa == fb).all() and (a[~fa] == b[~fb]).all() and np.allclose(a[fa], b[fb], atol=1e-5, rtol=0)


def grams(new, n, avoid, count=4):
    """Up to `count` distinct n-grams (lists) of ids > 3 and not in `avoid` that the rows of `new` contain,
    taken a few tokens in, one per row first."""
    found = []
    for start in range(1, new.shape[1] - n + 1):
        for row in new:
            g = [int(t) for t in row[start:start + n]]
            if all(t > 3 and t not in avoid for t in g) and g not in found:
                found.append(g)
    # spread over rows and positions: take every other one
    return found[::2][:count] + found[1::2][:count]


def new_tokens(model, ids, seqs):
    return seqs[:, 1 if model.config.is_encoder_decoder else ids.shape[1]:]


def fixture_cases(rec, name):
    model, tok = load(name)
    ids, mask = batch(name, model, tok)
    rec.out[f"{name}/input_ids"], rec.out[f"{name}/attention_mask"] = ids, mask
    t5 = model.config.is_encoder_decoder
    eos = int(model.generation_config.eos_token_id)
    pad = int(model.config.pad_token_id if model.config.pad_token_id is not None else 0)
    greedy = dict(do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=pad, eos_token_id=eos)
    beam = dict(greedy, **BEAM)
    sample = dict(greedy, do_sample=True, top_k=0)
    g_seq = rec.call(model, ids, mask, greedy)[0]
    b_seq = rec.call(model, ids, mask, beam)[0]
    g_new, b_new = new_tokens(model, ids, g_seq), new_tokens(model, ids, b_seq)
    avoid = {eos, pad}
    singles = [g[0] for g in grams(g_new, 1, avoid, 8)]
    pairs, triples = grams(g_new, 2, avoid), grams(g_new, 3, avoid)
    b_singles = [g[0] for g in grams(b_new, 1, avoid, 8)]
    b_pairs, b_triples = grams(b_new, 2, avoid), grams(b_new, 3, avoid)
    print(name, "eos", eos, "pad", pad, "greedy new row 0:", g_new[0].tolist(), file=sys.stderr)

    def add(case, base, candidates, **kw):
        return rec.add(case, name, model, ids, mask, base, candidates, **kw)

    # bad_words_ids: a single token and a 2- and a 3-token sequence the greedy output contains
    def apart(single, seqs):  # sequences without the single banned token, so that each ban counts
        return [s for s in seqs if single not in s]
    bad = [{"bad_words_ids": [[singles[i]], apart(singles[i], pairs)[0], apart(singles[i], triples)[0]]} for i in range(3)]
    b_bad = bad + [{"bad_words_ids": [[b_singles[i]], apart(b_singles[i], b_pairs)[0], apart(b_singles[i], b_triples)[0]]}
                   for i in range(3)]
    add("bad_words_greedy", greedy, bad)
    add("bad_words_beam", beam, b_bad)
    add("bad_words_sample", sample, bad)
    add("bad_words_multi_only_greedy", greedy, [{"bad_words_ids": [pairs[i], triples[i]]} for i in range(3)])

    # sequence_bias: single-token and multi-token entries, positive and negative biases
    def bias(s, p, t, pos):
        return {"sequence_bias": [[[s], -4.0], [[pos], 1.5], [p, -6.0], [t[:2] + [pos], 5.0]]}
    outsiders = [t for t in range(4, model.config.vocab_size) if t not in g_new and t not in b_new and t not in avoid]
    add("sequence_bias_greedy", greedy, [bias(singles[i + 1], pairs[i + 1], triples[i], outsiders[i]) for i in range(3)])
    add("sequence_bias_beam", beam, [bias(b_singles[i + 1], b_pairs[i + 1], b_triples[i], outsiders[i]) for i in range(3)])

    # suppress_tokens, begin_suppress_tokens (the first new tokens of the rows)
    add("suppress_greedy", greedy, [{"suppress_tokens": [singles[i], singles[i + 2]]} for i in range(3)])
    add("suppress_beam", beam, [{"suppress_tokens": [b_singles[i], b_singles[i + 2]]} for i in range(3)])
    first = sorted({int(t) for t in g_new[:, 0]})
    b_first = sorted({int(t) for t in b_new[:, 0]})
    add("begin_suppress_greedy", greedy, [{"begin_suppress_tokens": first[:2]}, {"begin_suppress_tokens": first}])
    add("begin_suppress_beam", beam, [{"begin_suppress_tokens": b_first[:2]}, {"begin_suppress_tokens": b_first}])

    # forced_bos_token_id: applies at the first step of T5 (decoder input length 1)
    if t5:
        add("forced_bos_greedy", greedy, [{"forced_bos_token_id": singles[3]}])
        add("forced_bos_beam", beam, [{"forced_bos_token_id": singles[3]}])
        bos = dict(greedy, forced_bos_token_id=singles[3])
        second = sorted({int(t) for t in new_tokens(model, ids, rec.call(model, ids, mask, bos)[0])[:, 1]})
        add("begin_suppress_forced_bos_greedy", bos, [{"begin_suppress_tokens": second[:2]}, {"begin_suppress_tokens": second}])
        bbos = dict(beam, forced_bos_token_id=singles[3])
        b_second = sorted({int(t) for t in new_tokens(model, ids, rec.call(model, ids, mask, bbos)[0])[:, 1]})
        add("begin_suppress_forced_bos_beam", bbos, [{"begin_suppress_tokens": b_second[:2]}, {"begin_suppress_tokens": b_second}])

    # forced_eos_token_id: the fixture's EOS, and a list of two ids (both get 0 at the last step: a tie)
    add("forced_eos_greedy", greedy, [{"forced_eos_token_id": eos}])
    add("forced_eos_beam", beam, [{"forced_eos_token_id": eos}])
    add("forced_eos_list_greedy", greedy, [{"forced_eos_token_id": [singles[i], outsiders[i]]} for i in range(3)])
    add("forced_eos_list_beam", beam, [{"forced_eos_token_id": [eos, outsiders[i]]} for i in range(3)])

    # sampling warpers, first-step scores: alone (top_k=0), and after temperature / top_k / top_p
    warped = dict(sample, temperature=0.7, top_k=40, top_p=0.9)
    for key, values in (("typical_p", (0.5, 0.9)), ("epsilon_cutoff", (0.02,)), ("eta_cutoff", (0.02,))):
        for value in values:
            add(f"{key}_{value}_sample", sample, [{key: value}])
        add(f"{key}_{values[0]}_warped_sample", warped, [{key: values[0]}] + [{key: v} for v in (0.3, 0.05, 0.002)])
    add("typical_epsilon_eta_sample", sample, [dict(typical_p=0.9, epsilon_cutoff=0.005, eta_cutoff=0.01)])

    # renormalize_logits
    add("renormalize_greedy", greedy, [{"renormalize_logits": True}], check="scores")
    add("renormalize_beam", dict(beam, sequence_bias=[[[outsiders[0]], 2.5]], suppress_tokens=[b_singles[0]]),
        [{"renormalize_logits": True}], check="either", control=[])
    add("renormalize_sample", dict(sample, top_k=10, temperature=0.8), [{"renormalize_logits": True}])

    # encoder_repetition_penalty (decoder-only models: the prompt ids, padding included)
    for value in (1.5, 0.7):
        add(f"encoder_repetition_{value}_greedy", greedy, [{"encoder_repetition_penalty": value}])
    add("encoder_repetition_1.5_beam_expanded", beam, [{"encoder_repetition_penalty": 1.5},
                                                       {"encoder_repetition_penalty": 3.0}])
    add("encoder_repetition_0.7_sample", sample, [{"encoder_repetition_penalty": 0.7}])

    # encoder_no_repeat_ngram_size. The tiny models rarely copy the input's n-grams, so where the ban alone changes
    # nothing, the case keeps encoder_repetition_penalty (in its baseline too) to make them copy; such beam cases
    # are *_expanded (see above)
    for size in ((1, 2) if t5 else (2,)):
        for case, base in ((f"encoder_no_repeat_{size}_greedy", greedy), (f"encoder_no_repeat_{size}_beam", beam)):
            for boost in (None, 2.0, 4.0, 8.0):
                boosted = base if boost is None else dict(base, encoder_repetition_penalty=boost)
                try:
                    add(case + ("_expanded" if boost and base is beam else ""), boosted,
                        [{"encoder_no_repeat_ngram_size": size}])
                    break
                except AssertionError as e:
                    print("  ", e, file=sys.stderr)
            else:
                raise AssertionError(f"{name}: {case} changes nothing")

    add("remove_invalid_greedy", greedy, [{"remove_invalid_values": True}], check=None)

    # exponential_decay_length_penalty with the fixture's EOS
    decays = [{"exponential_decay_length_penalty": d} for d in ([4, 1.5], [2, 2.0], [1, 3.0], [0, 6.0])]
    add("exponential_decay_greedy", greedy, decays)
    add("exponential_decay_beam", beam, decays)
    add("exponential_decay_eos_list_greedy", dict(greedy, eos_token_id=[eos, outsiders[0]]), decays)

    # min_new_tokens with bad_words_ids ([eos] among them: dropped, it is an EOS id) and forced_eos
    # (min_new_tokens = NEW_TOKENS: EOS is suppressed at the last step, then forced)
    mixed = [{"bad_words_ids": [[eos], pairs[i], [singles[i + 1]]], "forced_eos_token_id": eos} for i in range(3)]
    add("min_new_bad_words_forced_eos_greedy", dict(greedy, min_new_tokens=NEW_TOKENS), mixed)
    add("min_new_bad_words_forced_eos_beam", dict(beam, min_new_tokens=5), mixed)

    # everything at once, with repetition_penalty and no_repeat_ngram_size; not exponential_decay_length_penalty:
    # once another processor has set EOS to -inf, transformers' penalty adds |-inf| * (factor**k - 1) = inf to it,
    # giving nan for EOS (and, after renormalize_logits, for the whole row)
    chain = dict(bad_words_ids=[[singles[0]], pairs[1]], sequence_bias=[[[singles[2]], -1.5], [triples[0][:2] + [outsiders[1]], 2.0]],
                 suppress_tokens=[singles[3]], begin_suppress_tokens=first[:1], forced_eos_token_id=eos,
                 encoder_no_repeat_ngram_size=3, remove_invalid_values=True, renormalize_logits=True)
    penalties = dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3)
    t5_first = {"forced_bos_token_id": singles[4]} if t5 else {}
    add("chain_greedy", dict(greedy, **penalties), [dict(chain, encoder_repetition_penalty=1.4, **t5_first)])
    add("chain_beam", dict(beam, **penalties), [dict(chain, **t5_first)])
    add("chain_sample", dict(sample, **penalties, temperature=0.9, top_k=60, top_p=0.95),
        [dict(chain, encoder_repetition_penalty=1.4, typical_p=0.95, epsilon_cutoff=0.001, eta_cutoff=0.002)])
    return model, tok


def short_cases(rec, model, tok):
    """gpt2-tiny on 1-token prompts: forced_bos_token_id applies, begin_suppress_tokens moves to step 1."""
    name = "gpt2-tiny-short"
    ids = np.array([[tok.encode(p).ids[0]] for p in PROMPTS])
    mask = np.ones_like(ids)
    rec.out[f"{name}/input_ids"], rec.out[f"{name}/attention_mask"] = ids, mask
    eos = int(model.generation_config.eos_token_id)
    greedy = dict(do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=0, eos_token_id=eos)
    beam = dict(greedy, **BEAM)
    g_new = new_tokens(model, ids, rec.call(model, ids, mask, greedy)[0])
    forced = [t for t in range(4, 64) if t not in g_new[:, 0]][0]

    def add(case, base, candidates, **kw):
        return rec.add(case, name, model, ids, mask, base, candidates, **kw)

    add("forced_bos_greedy", greedy, [{"forced_bos_token_id": forced}])
    add("forced_bos_beam", beam, [{"forced_bos_token_id": forced}])
    for base, case in ((greedy, "greedy"), (beam, "beam")):
        bos = dict(base, forced_bos_token_id=forced)
        second = sorted({int(t) for t in new_tokens(model, ids, rec.call(model, ids, mask, bos)[0])[:, 1]})
        add(f"begin_suppress_forced_bos_{case}", bos, [{"begin_suppress_tokens": second[:2]}, {"begin_suppress_tokens": second}])
    add("begin_suppress_greedy", greedy, [{"begin_suppress_tokens": sorted({int(t) for t in g_new[:, 0]})}])


def unit_cases(out):
    """transformers' processors on make_fixtures.processor_reference's random logits and histories."""
    from make_fixtures import processor_inputs
    logits, history = processor_inputs()
    with np.load(os.path.join(ROOT, "reference", "processors.npz"), allow_pickle=False) as f:
        assert (f["logits"] == logits).all() and (f["history"] == history).all()
    invalid = logits.copy()
    invalid[0, [3, 9]] = np.nan
    invalid[1, 5] = np.inf
    invalid[2, [0, 1]] = -np.inf
    invalid[3, 10] = np.inf
    invalid[3, 11] = np.nan
    enc = np.random.RandomState(1).randint(0, 64, size=(4, 10))
    enc[0, 2] = history[0, -1]  # bigrams (last token, next) for every row, a trigram for rows 0 and 2
    enc[1, 5] = history[1, -1]
    enc[2, 6:8] = history[2, -2:]
    enc[3, 8] = history[3, -1]
    enc[0, 6:8] = history[0, -2:]
    h = [[int(t) for t in row] for row in history]
    positive = lambda t: t if t > 0 else 1  # noqa: E731 (list-form sequence_bias wants ids > 0)
    bias = [[[positive(h[0][-1]), 7], 2.5], [[positive(h[1][-2]), positive(h[1][-1]), 9], -3.0],
            [[positive(h[2][-1]), 11], -1.0], [[positive(h[3][-1]), 11], 4.0], [[5], -2.0], [[40], 1.25],
            [[positive(h[0][-1]), 5], 0.5]]
    bad = [[h[0][-1], 12], [h[1][-2], h[1][-1], 13], [h[2][-3], h[2][-2], h[2][-1], 14], [20], [21], [h[3][-1], 22],
           [1, 2, 3, 4, 5]]
    cases = {
        "typical_0.5": ("TypicalLogitsWarper", {"mass": 0.5}),
        "typical_0.9": ("TypicalLogitsWarper", {"mass": 0.9}),
        "typical_0.2": ("TypicalLogitsWarper", {"mass": 0.2}),
        "typical_0.2_keep_3": ("TypicalLogitsWarper", {"mass": 0.2, "min_tokens_to_keep": 3}),
        "epsilon_0.02": ("EpsilonLogitsWarper", {"epsilon": 0.02}),
        "epsilon_0.1": ("EpsilonLogitsWarper", {"epsilon": 0.1}),
        "epsilon_0.1_keep_4": ("EpsilonLogitsWarper", {"epsilon": 0.1, "min_tokens_to_keep": 4}),
        "eta_0.02": ("EtaLogitsWarper", {"epsilon": 0.02}),
        "eta_0.2": ("EtaLogitsWarper", {"epsilon": 0.2}),
        "eta_0.2_keep_4": ("EtaLogitsWarper", {"epsilon": 0.2, "min_tokens_to_keep": 4}),
        "logit_normalization": ("LogitNormalization", {}),
        "suppress": ("SuppressTokensLogitsProcessor", {"suppress_tokens": [0, 7, 33, 63]}),
        "begin_suppress_now": ("SuppressTokensAtBeginLogitsProcessor", {"begin_suppress_tokens": [1, 7, 33], "begin_index": 14}),
        "begin_suppress_later": ("SuppressTokensAtBeginLogitsProcessor", {"begin_suppress_tokens": [1, 7, 33], "begin_index": 15}),
        "sequence_bias": ("SequenceBiasLogitsProcessor", {"sequence_bias": bias}),
        "bad_words": ("NoBadWordsLogitsProcessor", {"bad_words_ids": bad, "eos_token_id": 20}),
        "bad_words_no_eos": ("NoBadWordsLogitsProcessor", {"bad_words_ids": bad}),
        "encoder_no_repeat_1": ("EncoderNoRepeatNGramLogitsProcessor", {"encoder_ngram_size": 1, "encoder_input_ids": "units/enc_ids"}),
        "encoder_no_repeat_2": ("EncoderNoRepeatNGramLogitsProcessor", {"encoder_ngram_size": 2, "encoder_input_ids": "units/enc_ids"}),
        "encoder_no_repeat_3": ("EncoderNoRepeatNGramLogitsProcessor", {"encoder_ngram_size": 3, "encoder_input_ids": "units/enc_ids"}),
        "encoder_repetition_1.5": ("EncoderRepetitionPenaltyLogitsProcessor", {"penalty": 1.5, "encoder_input_ids": "units/enc_ids"}),
        "encoder_repetition_0.7": ("EncoderRepetitionPenaltyLogitsProcessor", {"penalty": 0.7, "encoder_input_ids": "units/enc_ids"}),
        "exponential_decay": ("ExponentialDecayLengthPenalty", {"exponential_decay_length_penalty": [3, 1.5], "eos_token_id": 3,
                                                                "input_ids_seq_length": 8}),
        "exponential_decay_list": ("ExponentialDecayLengthPenalty", {"exponential_decay_length_penalty": [2, 0.8],
                                                                     "eos_token_id": [3, 17, 40], "input_ids_seq_length": 8}),
        "exponential_decay_not_yet": ("ExponentialDecayLengthPenalty", {"exponential_decay_length_penalty": [6, 1.5],
                                                                        "eos_token_id": 3, "input_ids_seq_length": 8}),
        "forced_bos_not_first": ("ForcedBOSTokenLogitsProcessor", {"bos_token_id": 5}),
        "forced_eos_last": ("ForcedEOSTokenLogitsProcessor", {"max_length": 15, "eos_token_id": [3, 17]}),
        "forced_eos_not_last": ("ForcedEOSTokenLogitsProcessor", {"max_length": 16, "eos_token_id": 3}),
        "inf_nan_remove": ("InfNanRemoveLogitsProcessor", {}),
    }
    out["units/logits"], out["units/history"] = logits, history
    out["units/logits_invalid"], out["units/enc_ids"] = invalid, enc
    table = {}
    for name, (cls, args) in cases.items():
        source = "logits_invalid" if cls == "InfNanRemoveLogitsProcessor" else "logits"
        built = {k: (torch.tensor(enc) if v == "units/enc_ids" else v) for k, v in args.items()}
        proc = getattr(lp, cls)(**built)
        scores = torch.tensor(invalid if source == "logits_invalid" else logits)
        res = proc(torch.tensor(history), scores.clone()).numpy()
        table[name] = {"class": cls, "args": args, "input": source}
        out[f"units/{name}"] = res
        kept = np.isfinite(res).sum(1).tolist()
        print(f"units/{name}: finite per row {kept}, changed entries {int((~np.isclose(res, logits, equal_nan=True)).sum())}")
    out["units/cases"] = np.array(json.dumps(table))


@torch.no_grad()
def folder(out):
    model, tok = load("gpt2-tiny")
    ids, mask = batch("gpt2-tiny", model, tok)
    out["folder/recipe"] = np.array(json.dumps(CONTROL))
    kw = dict(attention_mask=torch.tensor(mask), max_new_tokens=NEW_TOKENS)
    plain = model.generate(torch.tensor(ids), **kw).numpy()
    with tempfile.TemporaryDirectory() as root:
        path = control_folder(os.path.join(ROOT, CONTROL["source"]), os.path.join(root, "controlled"))
        controlled = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
        assert controlled.generation_config.bad_words_ids == CONTROL["generation_keys"]["bad_words_ids"]
        seqs = controlled.generate(torch.tensor(ids), **kw).numpy()
    assert not same(seqs, plain), "the folder's controls change nothing"
    out["folder/sequences"], out["folder/plain_sequences"] = seqs, plain
    print("folder: plain row 0", plain[0, ids.shape[1]:].tolist(), "controlled", seqs[0, ids.shape[1]:].tolist(),
          "rows changed", int((seqs != plain).any(1).sum()) if seqs.shape == plain.shape else "all (width)")


def main():
    rec = Recorder()
    for name in FIXTURES:
        model, tok = fixture_cases(rec, name)
        if name == "gpt2-tiny":
            short_cases(rec, model, tok)
    out = rec.out
    out["cases"] = np.array(json.dumps(rec.cases))
    unit_cases(out)
    out["generation_config_fields"] = np.array(json.dumps(sorted(vars(GenerationConfig()).keys())))
    folder(out)
    with open(os.path.join(ROOT, "reference", "versions.json")) as f:
        versions = json.load(f)
    assert versions["transformers"] == transformers.__version__ and versions["torch"] == torch.__version__, versions
    path = os.path.join(ROOT, "reference", "controls.npz")
    np.savez_compressed(path, **out)
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == sorted(out)
    print(len(rec.cases), "cases,", len(out), "keys,", os.path.getsize(path), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
