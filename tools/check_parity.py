"""Check xlagen against transformers on random GPT-2 configs and file layouts the fixtures do not use.

Needs transformers, torch and xlagen in one environment (and TensorFlow transformers, i.e.
tf-keras, for the contrastive search check):

    python tools/check_parity.py [--configs 12] [--seed 0] [--start 0] [--no-controls]
                                 [--checks greedy,beam,sample,contrastive] [--no-narrow]

For each drawn config it saves a random-weight GPT2LMHeadModel in a random layout (with or
without the `transformer.` prefix, sharded or not), then compares logits on a left-padded batch
(max abs difference, must be < 1e-4), greedy tokens and beam search tokens with a random
num_beams, early_stopping and length_penalty (must be identical).

--controls (the default; --no-controls keeps only the checks above, with the same configs and
inputs) also draws, per config, random generation controls and compares xlagen with
transformers 4.57's PyTorch generate on the same inputs (the config's left-padded batch, or
sometimes a batch of one-token prompts, where forced_bos_token_id applies):

  greedy    a random subset of bad_words_ids (single and multi-token, some taken from the
            plain greedy output so that they matter), sequence_bias ([[ids], bias] pairs),
            suppress_tokens, begin_suppress_tokens, forced_bos_token_id (one-token prompts only),
            forced_eos_token_id (int or list), exponential_decay_length_penalty,
            encoder_repetition_penalty, repetition_penalty, no_repeat_ngram_size, min_new_tokens,
            renormalize_logits, remove_invalid_values, with an EOS id the plain greedy output
            emits: tokens must be identical (xlagen's output may be wider than transformers',
            which stops when every row is done: the extra columns must hold pad_token_id).
  beam      the same kind of draw with a random num_beams, num_return_sequences, early_stopping
            and length_penalty: identical tokens. Not drawn there, for transformers' sake:
            encoder_repetition_penalty (transformers 4.57 penalises only the first B of the
            B * num_beams rows with it), a forced_eos_token_id list of several ids (they tie exactly
            in every beam at the last step, and transformers takes torch.topk's arbitrary order
            among ties), pad_token_id 0 (transformers fills finished beams with
            `pad_token_id or eos_token_id[0]`, so the first EOS id).
  sample    typical_p, epsilon_cutoff, eta_cutoff with top_k / top_p / temperature (sometimes
            min_p and some of the processors above): the first step's warped scores,
            generate(..., do_sample=True, output_scores=True, max_new_tokens=1).scores[0], must have
            -inf in the same places and a softmax total variation < 1e-4 per row.
  contrastive  penalty_alpha in (0, 1), top_k in 2..6 (sometimes repetition_penalty or
            no_repeat_ngram_size), against transformers' TF TFGPT2LMHeadModel.from_pretrained(folder,
            from_pt=True).generate on each prompt alone, unpadded (xlagen masks padding in the
            degeneration penalty, transformers does not): xlagen's padded batch rows must hold the
            same new tokens. TF GPT-2 always ties its head and scales attention by 1/sqrt(head
            width) with no per-layer scaling and knows fewer activations, so a config it cannot
            express is checked on a TF-compatible sibling with the same weights (marked "variant").
            Skipped, with a message, when TF transformers does not import.

--checks picks some of the four control checks. Each check of each config draws from its own
generator (seeded by the seed, the config's index and the check's name), so
`--start I --configs 1 [--checks NAME]` re-runs config I of a seed, and that check, alone, with
the same draws (a run of 12 configs can also be split in parts that way).

With --narrow (the default) a failing control check is re-run with none of the drawn controls,
with each alone and without each, and the result names the culprits, with the inputs, and for
greedy and beam search the steps where transformers' processed scores held NaN. One line per
config and check; totals at the end. Exits 1 on any mismatch.
"""
import argparse
import os
import random
import tempfile
import time
import warnings

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from xlagen.engine import load  # noqa: E402

ACTIVATIONS = ["gelu_new", "gelu", "gelu_fast", "relu", "silu", "quick_gelu", "gelu_pytorch_tanh"]


def draw_config(rng):
    heads = rng.choice([1, 2, 3, 4, 8])
    return dict(vocab_size=rng.randint(50, 700), n_positions=rng.choice([40, 64, 100]), n_head=heads,
                n_embd=heads * rng.choice([8, 12, 16, 32]), n_layer=rng.randint(1, 4),
                n_inner=rng.choice([None, rng.randint(16, 160)]), activation_function=rng.choice(ACTIVATIONS),
                layer_norm_epsilon=rng.choice([1e-5, 1e-3, 1e-6]), scale_attn_weights=rng.random() < 0.8,
                scale_attn_by_inverse_layer_idx=rng.random() < 0.5, reorder_and_upcast_attn=rng.random() < 0.5,
                tie_word_embeddings=rng.random() < 0.7, initializer_range=rng.choice([0.1, 0.2, 0.4]),
                bos_token_id=0, eos_token_id=0)


def save(model, folder, layout):
    if layout == "sharded":
        model.save_pretrained(folder, max_shard_size="60KB")
    elif layout == "no-prefix":
        os.makedirs(folder)
        model.config.save_pretrained(folder)
        tensors = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            tensors.pop("lm_head.weight", None)
        save_file(tensors, os.path.join(folder, "model.safetensors"))
    else:
        model.save_pretrained(folder)


def draw_case(rng):
    """One config, its layout and the random values of its base checks: (config, layout, draws).
    Draws from `rng` exactly what check() always drew, so a seed gives the configs it gave before."""
    config = draw_config(rng)
    layout = rng.choice(["prefix", "no-prefix", "sharded"])
    draws = dict(torch_seed=rng.randint(0, 1 << 30), folder=rng.randint(0, 1 << 30))
    batch, width, new = rng.randint(1, 4), rng.randint(2, 12), rng.randint(4, 16)
    draws.update(batch=batch, width=width, new=min(new, config["n_positions"] - width),
                 np_seed=rng.randint(0, 1 << 30), num_beams=rng.randint(2, 4),
                 early_stopping=rng.choice([True, False, "never"]), length_penalty=rng.choice([-1.0, 0.5, 1.0, 2.0]))
    return config, layout, draws


@torch.no_grad()
def check(config, layout, draws, tmp):
    torch.manual_seed(draws["torch_seed"])
    model = GPT2LMHeadModel(GPT2Config(**config, attn_implementation="eager")).eval()
    folder = os.path.join(tmp, f"ckpt-{draws['folder']}")
    save(model, folder, layout)
    batch, width, new = draws["batch"], draws["width"], draws["new"]
    nprng = np.random.RandomState(draws["np_seed"])
    ids = nprng.randint(1, config["vocab_size"], size=(batch, width))
    mask = np.ones_like(ids)
    for row in range(1, batch):
        mask[row, : nprng.randint(0, width - 1)] = 0
    ids = np.where(mask == 1, ids, 0)
    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
    ref_logits = model(t_ids, attention_mask=t_mask, position_ids=(t_mask.cumsum(-1) - 1).clamp(min=0)).logits.numpy()
    ref_tokens = model.generate(t_ids, attention_mask=t_mask, max_new_tokens=new, do_sample=False,
                                eos_token_id=None, pad_token_id=0).numpy()
    # Beam search with an EOS id the greedy run emits, so that hypotheses end early.
    eos = int(ref_tokens[0, width + new // 2])
    beam = dict(num_beams=draws["num_beams"], early_stopping=draws["early_stopping"],
                length_penalty=draws["length_penalty"], eos_token_id=eos, pad_token_id=max(1, eos - 1))
    ref_beam = model.generate(t_ids, attention_mask=t_mask, max_new_tokens=new, do_sample=False, **beam).numpy()
    gen = load(folder)
    logits = gen.logits(ids, attention_mask=mask)
    tokens = gen.generate(ids, attention_mask=mask, max_new_tokens=new, eos_token_id=None, pad_token_id=0)
    beams = gen.generate(ids, attention_mask=mask, max_new_tokens=new, **beam)
    diff = float(np.abs(logits - ref_logits)[mask == 1].max())
    same = tokens.shape == ref_tokens.shape and bool((tokens == ref_tokens).all())
    same_beam = (bool((beams[:, :ref_beam.shape[1]] == ref_beam).all())
                 and bool((beams[:, ref_beam.shape[1]:] == beam["pad_token_id"]).all()))
    case = dict(model=model, folder=folder, gen=gen, ids=ids, mask=mask, width=width, new=new,
                greedy=ref_tokens, config=config, layout=layout)
    return diff, same, same_beam, (batch, width, new), beam, case


# ---------------------------------------------------------------------------------------------
# Generation controls (--controls)

def same_tokens(got, ref, pad):
    """xlagen's tokens `got` [R, W + N] against transformers' `ref` [R, W + n], n <= N (it stops
    when every row is done): identical where both have columns, pad_token_id after."""
    return (got.shape[0] == ref.shape[0] and ref.shape[1] <= got.shape[1]
            and bool((got[:, :ref.shape[1]] == ref).all()) and bool((got[:, ref.shape[1]:] == pad).all()))


def first_difference(got, ref, pad):
    """A short description of where xlagen's tokens differ from transformers'."""
    if got.shape[0] != ref.shape[0] or ref.shape[1] > got.shape[1]:
        return f"shapes: xlagen {got.shape}, transformers {ref.shape}"
    wide = np.concatenate([ref, np.full((ref.shape[0], got.shape[1] - ref.shape[1]), pad, ref.dtype)], axis=1)
    rows, cols = np.nonzero(got != wide)
    r, c = int(rows[0]), int(cols[0])
    return f"row {r} col {c}: expected {wide[r].tolist()} got {got[r].tolist()}"


class Draw:
    """Token picks for one prompt batch: the plain greedy output's new tokens (so that bad words,
    biases and suppressions hit tokens the model actually emits) and random vocabulary ids."""

    def __init__(self, rng, vocab, greedy_new):
        self.rng, self.vocab, self.new = rng, vocab, greedy_new  # greedy_new [B, N]

    def random_id(self):
        return self.rng.randint(1, self.vocab - 1)

    def emitted(self, after=0):
        """A token the plain greedy output emits (new token `after` or later of some row)."""
        row = self.rng.randrange(self.new.shape[0])
        col = self.rng.randrange(min(after, self.new.shape[1] - 1), self.new.shape[1])
        return int(self.new[row, col])

    def emitted_ngram(self, n):
        """n consecutive tokens of the plain greedy output (n <= N), or None."""
        if self.new.shape[1] < n:
            return None
        row = self.rng.randrange(self.new.shape[0])
        col = self.rng.randrange(0, self.new.shape[1] - n + 1)
        return [int(t) for t in self.new[row, col:col + n]]


def draw_processors(rng, d, width, new, eos, beam):
    """A random subset (at least one) of the processors, as generate keywords."""
    opts = {}
    while not opts:
        if rng.random() < 0.4:
            words = [[d.emitted()] for _ in range(rng.randint(0, 2))]
            words += [[d.random_id()] for _ in range(rng.randint(0, 1))]
            for n in (2, 2, 3):
                gram = d.emitted_ngram(n) if rng.random() < 0.5 else None
                if gram and gram not in words:
                    words.append(gram)
            if rng.random() < 0.3:
                words.append([d.random_id() for _ in range(rng.randint(2, 4))])
            if words:
                opts["bad_words_ids"] = words
        if rng.random() < 0.35:
            biases = []
            for _ in range(rng.randint(1, 4)):
                kind = rng.random()
                ids = ([d.emitted()] if kind < 0.4 else d.emitted_ngram(rng.randint(2, 3)) if kind < 0.8
                       else [d.random_id() for _ in range(rng.randint(1, 3))])
                if ids:
                    biases.append([ids, rng.choice([-10.0, -4.0, -1.5, 0.5, 2.0, 5.0])])
            if biases:
                opts["sequence_bias"] = biases
        if rng.random() < 0.3:
            opts["suppress_tokens"] = sorted({d.emitted(1) for _ in range(rng.randint(1, 2))}
                                             | {d.random_id() for _ in range(rng.randint(0, 2))})
        if rng.random() < 0.3:
            first = {int(t) for t in d.new[:, 0]}
            opts["begin_suppress_tokens"] = sorted(set(rng.sample(sorted(first), rng.randint(1, len(first))))
                                                   | {d.random_id() for _ in range(rng.randint(0, 1))})
        if width == 1 and rng.random() < 0.7:
            opts["forced_bos_token_id"] = d.random_id()
        if rng.random() < 0.25:
            # Beam search: one id only. Several forced ids tie exactly in every beam at the last step,
            # and transformers' beam search takes torch.topk's order among ties, which is arbitrary.
            opts["forced_eos_token_id"] = (d.random_id() if rng.random() < 0.5
                                           else [d.random_id() for _ in range(1 if beam else rng.randint(1, 3))])
        if rng.random() < 0.25:
            opts["exponential_decay_length_penalty"] = (rng.randint(0, max(0, new - 2)),
                                                        rng.choice([0.8, 1.1, 1.5, 3.0]))
        if not beam and rng.random() < 0.25:
            opts["encoder_repetition_penalty"] = rng.choice([0.5, 0.8, 1.3, 2.5])
        if rng.random() < 0.3:
            opts["repetition_penalty"] = rng.choice([0.7, 1.2, 1.6, 3.0])
        if rng.random() < 0.25:
            opts["no_repeat_ngram_size"] = rng.randint(1, 3)
        if rng.random() < 0.25:
            opts["min_new_tokens"] = rng.randint(1, new)
        if rng.random() < 0.2:
            opts["renormalize_logits"] = True
        if rng.random() < 0.15:
            opts["remove_invalid_values"] = True
    return opts


def draw_eos(rng, d, beam=False):
    """An EOS id (or list) the plain greedy output emits a few tokens in, and a pad id. Never pad
    id 0 in beam search: transformers 4.57's _beam_search fills finished rows with
    `pad_token_id or eos_token_id[0]`, so a pad id of 0 comes out as the first EOS id there."""
    eos = d.emitted(after=2)
    if rng.random() < 0.3:
        eos = [eos, d.random_id()]
    first = eos if isinstance(eos, int) else eos[0]
    return dict(eos_token_id=eos, pad_token_id=max(1, first - 1) if beam else rng.choice([0, max(1, first - 1)]))


def draw_sampling(rng, d, width, new):
    """Warpers (at least one of typical_p, epsilon_cutoff, eta_cutoff) with top_k / top_p /
    temperature, sometimes min_p and processors."""
    opts = dict(top_k=rng.choice([0, 0, 5, 20, 50]), top_p=rng.choice([1.0, 1.0, 0.95, 0.8]),
                temperature=rng.choice([1.0, 1.0, 0.7, 1.6]))
    while not any(k in opts for k in ("typical_p", "epsilon_cutoff", "eta_cutoff")):
        if rng.random() < 0.5:
            opts["typical_p"] = rng.choice([0.2, 0.5, 0.9, 0.99])
        if rng.random() < 0.5:
            opts["epsilon_cutoff"] = round(rng.choice([0.3, 0.8, 1.5, 3.0]) / d.vocab, 6)
        if rng.random() < 0.5:
            opts["eta_cutoff"] = rng.choice([1e-3, 1e-2, 0.05, 0.2])
    if rng.random() < 0.15:
        opts["min_p"] = rng.choice([0.05, 0.2])
    if rng.random() < 0.4:
        opts.update(draw_processors(rng, d, width, 1, None, beam=False))
    return opts


def narrow(run, base, controls):
    """Which controls a failing check needs: none, each alone, then all but each. run(options) -> ok."""
    if not run(base):
        return f"fails without any of the drawn controls too: {base}"
    alone = [k for k in controls if not run(dict(base, **{k: controls[k]}))]
    needed = [k for k in controls if run(dict(base, **{j: v for j, v in controls.items() if j != k}))]
    return f"fails alone: {alone or 'none'}; passes without: {needed or 'none'}"


def tf_available():
    try:
        import tensorflow as tf  # noqa: F401
        from transformers import TFGPT2LMHeadModel  # noqa: F401
        return True
    except Exception as e:  # transformers raises ImportError or RuntimeError without tf-keras
        print(f"contrastive search check skipped: TF transformers does not import ({type(e).__name__}: {e})")
        return False


def tf_activations():
    from transformers.activations_tf import ACT2FN
    return set(ACT2FN)


def tf_compatible_folder(case, tmp):
    """A folder TF GPT-2 reads as the same model: case's own (standard layout, TF-expressible
    config) or a sibling with the same weights. Returns (folder, variant)."""
    config = case["config"]
    acts = tf_activations()
    ok = (config["scale_attn_weights"] and not config["scale_attn_by_inverse_layer_idx"]
          and not config["reorder_and_upcast_attn"] and config["tie_word_embeddings"]
          and config["activation_function"] in acts)
    if ok and case["layout"] == "prefix":
        return case["folder"], False
    sibling = dict(config, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
                   tie_word_embeddings=True,
                   activation_function=config["activation_function"] if config["activation_function"] in acts
                   else "gelu_new")
    model = GPT2LMHeadModel(GPT2Config(**sibling, attn_implementation="eager")).eval()
    state = {k: v for k, v in case["model"].state_dict().items() if k != "lm_head.weight"}
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    folder = case["folder"] + "-tf"
    model.save_pretrained(folder)
    return folder, not ok


@torch.no_grad()
def check_controls(case, key, tmp, wanted, with_tf, narrow_failures):
    """The control checks `wanted` (names of CHECKS) of one config: [(name, ok, options, detail)].
    Each check draws from its own generator, seeded by `key` and its name, so that a check draws
    the same options whichever others run."""
    def rng_for(name):
        return random.Random(f"{key}-{name}")

    model, gen, config, new = case["model"], case["gen"], case["config"], case["new"]
    vocab = config["vocab_size"]
    rng = rng_for("inputs")
    nprng = np.random.RandomState(rng.randint(0, 1 << 30))
    if rng.random() < 0.3:  # one-token prompts: forced_bos_token_id applies
        ids = nprng.randint(1, vocab, size=(case["ids"].shape[0], 1))
        mask = np.ones_like(ids)
        new = min(new, config["n_positions"] - 1)
        plain = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=new,
                               do_sample=False, eos_token_id=None, pad_token_id=0).numpy()
    else:
        ids, mask, plain = case["ids"], case["mask"], case["greedy"]
    width = ids.shape[1]
    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
    inputs = f"input_ids={ids.tolist()} attention_mask={mask.tolist()}"
    results = []

    nan_steps = []  # the steps whose processed scores held NaN in transformers' last run

    def tokens_run(opts):
        out = model.generate(t_ids, attention_mask=t_mask, max_new_tokens=new, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, **opts)
        nan_steps[:] = [k for k, step in enumerate(out.scores) if bool(torch.isnan(step).any())]
        got = gen.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, **opts)
        return out.sequences.numpy(), got

    def tokens_ok(opts):
        try:
            ref, got = tokens_run(opts)
            return same_tokens(got, ref, opts["pad_token_id"])
        except Exception:
            return False

    # greedy and beam search with processors
    for name in ("greedy", "beam"):
        if name not in wanted:
            continue
        began, rng = time.time(), rng_for(name)
        d = Draw(rng, vocab, plain[:, width:])
        base = draw_eos(rng, d, beam=name == "beam")
        if name == "beam":
            beams = rng.randint(2, 4)
            base.update(num_beams=beams, num_return_sequences=rng.choice([1, 1, beams]),
                        early_stopping=rng.choice([True, False, "never"]), length_penalty=rng.choice([-1.0, 0.5, 1.0, 2.0]))
        controls = draw_processors(rng, d, width, new, base["eos_token_id"], beam=name == "beam")
        opts = dict(base, **controls)
        try:
            ref, got = tokens_run(opts)
            ok = same_tokens(got, ref, opts["pad_token_id"])
            detail = "" if ok else first_difference(got, ref, opts["pad_token_id"])
            if not ok and nan_steps:
                detail += f"; transformers' processed scores hold NaN at steps {nan_steps}"
        except Exception as e:
            ok, detail = False, f"{type(e).__name__}: {e}"
        if not ok:
            detail += ("; " + narrow(tokens_ok, base, controls) if narrow_failures else "") + "; " + inputs
        results.append((f"{name}+controls W={width} N={new} ({time.time() - began:.0f}s)", ok, opts, detail))

    # sampling: the first step's warped scores
    def sample_run(o):
        ref = model.generate(t_ids, attention_mask=t_mask, do_sample=True, output_scores=True,
                             return_dict_in_generate=True, max_new_tokens=1, **o).scores[0].numpy()
        got = gen.generate(ids, attention_mask=mask, do_sample=True, output_scores=True, max_new_tokens=1,
                           seed=0, **o).scores[0]
        if got.shape != ref.shape:
            return False, f"scores shapes: transformers {ref.shape}, xlagen {got.shape}"
        differ = (np.isneginf(got) != np.isneginf(ref)).any(-1)
        if differ.any():
            r = int(np.nonzero(differ)[0][0])
            only_ref = np.nonzero(np.isfinite(ref[r]) & np.isneginf(got[r]))[0].tolist()
            only_got = np.nonzero(np.isfinite(got[r]) & np.isneginf(ref[r]))[0].tolist()
            return False, (f"-inf pattern differs in rows {np.nonzero(differ)[0].tolist()}; row {r}: transformers keeps "
                           f"{int(np.isfinite(ref[r]).sum())}, xlagen {int(np.isfinite(got[r]).sum())}; kept only by "
                           f"transformers {only_ref[:10]}, only by xlagen {only_got[:10]}")
        p, q = (torch.softmax(torch.tensor(x, dtype=torch.float64), -1) for x in (ref, got))
        tv = float(0.5 * (p - q).abs().sum(-1).max())
        kept = int(np.isfinite(ref).sum(-1).min())
        return tv < 1e-4, f"TV={tv:.1e} kept>={kept}/{vocab}"

    def sample_ok(o):
        try:
            return sample_run(o)[0]
        except Exception:
            return False

    if "sample" in wanted:
        began, rng = time.time(), rng_for("sample")
        d = Draw(rng, vocab, plain[:, width:])
        opts = draw_sampling(rng, d, width, new)
        opts.update(draw_eos(rng, d))
        try:
            ok, detail = sample_run(opts)
        except Exception as e:
            ok, detail = False, f"{type(e).__name__}: {e}"
        if not ok:
            controls = {k: v for k, v in opts.items() if k not in ("eos_token_id", "pad_token_id")}
            base = dict({k: opts[k] for k in ("eos_token_id", "pad_token_id")}, top_k=0)  # no top-k unless drawn
            detail += ("; " + narrow(sample_ok, base, controls) if narrow_failures else "") + "; " + inputs
        results.append((f"sample+controls W={width} first step ({time.time() - began:.0f}s)", ok, opts, detail))

    # contrastive search against TF transformers, each prompt alone (the config's padded batch)
    if "contrastive" in wanted and with_tf:
        results.append(check_contrastive(case, rng_for("contrastive"), tmp))
    return results


def check_contrastive(case, rng, tmp):
    import tensorflow as tf
    from transformers import TFGPT2LMHeadModel

    began = time.time()
    ids, mask, new, plain = case["ids"], case["mask"], case["new"], case["greedy"]
    width = ids.shape[1]
    d = Draw(rng, case["config"]["vocab_size"], plain[:, width:])
    opts = dict(penalty_alpha=round(rng.uniform(0.05, 0.95), 2), top_k=rng.randint(2, 6))
    if rng.random() < 0.6:
        opts.update(eos_token_id=d.emitted(after=2))
    opts["pad_token_id"] = 0
    if rng.random() < 0.2:
        opts["repetition_penalty"] = rng.choice([1.2, 2.0])
    if rng.random() < 0.2:
        opts["no_repeat_ngram_size"] = rng.randint(2, 3)
    try:
        folder, variant = tf_compatible_folder(case, tmp)
        gen = load(folder) if folder != case["folder"] else case["gen"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tf_model = TFGPT2LMHeadModel.from_pretrained(folder, from_pt=True)
        got = gen.generate(ids, attention_mask=mask, max_new_tokens=new, **opts)
        ok, detail = True, ""
        for r in range(ids.shape[0]):
            prompt = ids[r][mask[r] == 1]
            ref = tf_model.generate(tf.constant(prompt[None], tf.int32), max_new_tokens=new, do_sample=False,
                                    **opts).numpy()[0, len(prompt):]
            mine = got[r, width:]
            if not (len(ref) <= len(mine) and (mine[:len(ref)] == ref).all() and (mine[len(ref):] == 0).all()):
                ok = False
                # transformers 4.57's PyTorch contrastive search lives on the Hub (custom_generate):
                # tell padding from search instead, with xlagen on the prompt alone.
                alone = gen.generate(prompt[None], max_new_tokens=new, **opts)[0, len(prompt):]
                detail = (f"row {r} (prompt {prompt.tolist()}): TF {ref.tolist()} xlagen {mine.tolist()} "
                          f"(xlagen on the prompt alone: {alone.tolist()}); "
                          f"input_ids={ids.tolist()} attention_mask={mask.tolist()}")
                break
        detail = ("variant; " if variant else "") + detail
        del tf_model
    except Exception as e:
        ok, detail = False, f"{type(e).__name__}: {e}"
    return (f"contrastive W={width} N={new} vs TF, prompts alone ({time.time() - began:.0f}s)", ok, opts, detail)


CHECKS = ("greedy", "beam", "sample", "contrastive")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0,
                        help="skip the seed's first START configs (run configs START .. START+CONFIGS-1)")
    parser.add_argument("--controls", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare random generation controls (greedy, beam, sampling, contrastive)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"which control checks to run, comma separated (default: all of {','.join(CHECKS)})")
    parser.add_argument("--narrow", action=argparse.BooleanOptionalAction, default=True,
                        help="re-run a failing control check per control to name the culprit")
    args = parser.parse_args()
    wanted = tuple(c for c in args.checks.split(",") if c)
    if set(wanted) - set(CHECKS):
        parser.error(f"--checks: unknown {sorted(set(wanted) - set(CHECKS))}; choose from {','.join(CHECKS)}")
    rng = random.Random(args.seed)
    if args.controls:
        import transformers
        transformers.logging.set_verbosity_error()
        warnings.filterwarnings("ignore")
    with_tf = args.controls and "contrastive" in wanted and tf_available()
    failures = 0
    checks = check_failures = 0
    began = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.start + args.configs):
            config, layout, draws = draw_case(rng)
            if i < args.start:
                continue
            start = time.time()
            diff, same, same_beam, shape, beam, case = check(config, layout, draws, tmp)
            ok = diff < 1e-4 and same and same_beam
            failures += not ok
            flags = {k: v for k, v in config.items() if k not in ("bos_token_id", "eos_token_id")}
            print(f"{'ok  ' if ok else 'FAIL'} #{i} {layout:9s} B,W,N={shape} logits max|diff|={diff:.2e} "
                  f"greedy {'identical' if same else 'DIFFERENT'}, beam {'identical' if same_beam else 'DIFFERENT'} "
                  f"{beam} {flags}", flush=True)
            if args.controls:
                # Each config's controls draw from their own generator: the configs and base checks
                # are those of --no-controls, and --start reproduces a config's controls alone.
                results = check_controls(case, f"controls-{args.seed}-{i}", tmp, wanted, with_tf, args.narrow)
                for name, passed, opts, detail in results:
                    checks += 1
                    check_failures += not passed
                    print(f"     {'ok  ' if passed else 'FAIL'} #{i} {name} {opts}" + (f" -- {detail}" if detail else ""),
                          flush=True)
                print(f"     #{i} took {time.time() - start:.0f}s", flush=True)
    print(f"{args.configs - failures} passed, {failures} failed ({time.time() - began:.0f}s)")
    if args.controls:
        print(f"controls: {checks - check_failures} checks passed, {check_failures} failed"
              + ("" if with_tf or "contrastive" not in wanted else " (contrastive search skipped: no TF transformers)"))
    raise SystemExit(1 if failures or check_failures else 0)


if __name__ == "__main__":
    main()
