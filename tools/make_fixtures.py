"""Build the tiny GPT-2 and OPT checkpoints in tests/fixtures and record what transformers does on them.

Needs transformers (4.x) and torch; the test suite needs neither. Run from the repo root:

    python tools/make_fixtures.py

Writes, under tests/fixtures/:
  tokenizers: byte-level BPE tokenizer.json files trained with `tokenizers` on CPython's pydoc
                        topics (OPT's puts </s> before every prompt, as the Hub's does)
  gpt2-tiny/            transformers' save_pretrained layout (keys with the `transformer.` prefix)
  gpt2-tiny-hub/        the same weights as the original gpt2 repo ships them: no prefix, with the
                        old attn.bias / attn.masked_bias buffers
  gpt2-tiny-sharded/    the same weights in shards with model.safetensors.index.json
  gpt2-variant/         other shapes and every math-changing flag flipped (see VARIANT)
  gpt2-untied/          relu, unscaled attention, an untied lm_head
  opt-tiny/, opt-tiny-unprefixed/   opt-125m's kind, shrunk, with and without the `model.` prefix
  opt-350m-tiny/        opt-350m's kind: post-LayerNorm, word_embed_proj_dim with project_in/out
  opt-variant/          no biases, no LayerNorm affine, gelu, no final LayerNorm, untied lm_head
  t5-v1_0-tiny/         T5 v1.0: ReLU, tied head with the d_model**-0.5 rescale, fewer decoder layers
  t5-v1_1-tiny/         T5 v1.1 / flan-t5: gated-gelu, untied lm_head
  reference/<name>.npz  transformers' outputs: logits, greedy tokens (plain, with EOS, with
                        min_new_tokens, with repetition penalty and no-repeat n-grams) on a
                        left-padded batch, and the warped distribution of the first sampled token
                        and beam search sequences and scores for each of BEAM_CASES
  reference/processors.npz  transformers' logits processors and warpers on random logits
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (GenerationConfig, GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM, T5Config,
                          T5ForConditionalGeneration)
from transformers.models.opt.modeling_opt import OPTPreTrainedModel
from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper, NoRepeatNGramLogitsProcessor,
                                                    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
VOCAB = 384
EOT = "<|endoftext|>"
PROMPTS = ["The for statement", "A", "Classes provide a means of bundling data and functionality together",
           "import", "If the"]
NEW_TOKENS = 12
# Sampling options whose first-token distributions the tests check against ours: each case makes
# a different processor cut (prompt row, options).
SAMPLING_CASES = [(0, dict(temperature=0.7, top_k=12)), (0, dict(top_k=0, top_p=0.6)),
                  (3, dict(top_k=0, min_p=0.15, temperature=0.8)), (2, dict(top_k=10, repetition_penalty=1.5))]

BASE = dict(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0,
            initializer_range=0.35)
VARIANT = dict(BASE, n_embd=48, n_head=3, n_layer=3, n_inner=80, n_positions=48, activation_function="gelu",
               layer_norm_epsilon=1e-3, scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True)
UNTIED = dict(BASE, n_head=2, activation_function="relu", scale_attn_weights=False, tie_word_embeddings=False,
              initializer_range=0.2)
# T5: a Unigram tokenizer (ids 0-2 are <pad>, </s>, <unk>) that appends </s>; inputs padded on the right.
T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
T5_V10 = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=2, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj="relu",
              tie_word_embeddings=True, decoder_start_token_id=0, initializer_factor=1.5)
T5_V11 = dict(T5_V10, feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=2, d_ff=48,
              num_heads=2, d_kv=12, initializer_factor=0.5)
# OPT: ids 0-3 are <s>, <pad>, </s>, <unk> as in facebook/opt-*; the tokenizer puts </s> first.
OPT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
OPT_125M = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=4,
                max_position_embeddings=64, init_std=0.35)  # opt-125m's kind, shrunk: pre-LayerNorm
OPT_350M = dict(OPT_125M, word_embed_proj_dim=32, do_layer_norm_before=False, num_attention_heads=2, ffn_dim=96,
                init_std=0.3)  # opt-350m's kind: post-LayerNorm, project_in / project_out
OPT_VARIANT = dict(OPT_125M, num_hidden_layers=3, enable_bias=False, layer_norm_elementwise_affine=False,
                   activation_function="gelu", _remove_final_layer_norm=True, tie_word_embeddings=False, init_std=0.12)


def corpus():
    from pydoc_data import topics
    return [t for t in topics.topics.values()]


def train_tokenizer(special_tokens, bos=None):
    """A byte-level BPE tokenizer.json; `bos` is prepended to every encoding, as OPT's is."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    assert tok.get_vocab_size() == VOCAB
    return tok


def write_folder(name, model, tok, layout="save_pretrained"):
    """Save `model` in one of the Hub layouts: transformers' save_pretrained, sharded, or
    unprefixed (no `transformer.` / `model.` wrapper; GPT-2 also with its old mask buffers)."""
    path = os.path.join(ROOT, name)
    shutil.rmtree(path, ignore_errors=True)
    if layout == "sharded":
        model.save_pretrained(path, max_shard_size="150KB")
        assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    elif layout == "unprefixed":
        os.makedirs(path)
        model.config.save_pretrained(path)
        model.generation_config.save_pretrained(path)
        c = model.config
        prefix = model.base_model_prefix + "."
        tensors = {k[len(prefix):]: v.contiguous() for k, v in model.state_dict().items() if k.startswith(prefix)}
        if c.model_type == "gpt2":  # as the original gpt2 repo ships it
            for i in range(c.n_layer):
                tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(c.n_positions, c.n_positions)).view(1, 1, c.n_positions, c.n_positions)
                tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    else:
        model.save_pretrained(path)
    tok.save(os.path.join(path, "tokenizer.json"))
    return path


def left_pad(rows, pad):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def reference(model, tok):
    """transformers' logits and greedy tokens on a left-padded batch of PROMPTS."""
    rows = [tok.encode(p).ids for p in PROMPTS]
    pad = model.config.pad_token_id or 0
    ids, mask = left_pad(rows, pad=pad)
    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
    positions = (t_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(t_ids, attention_mask=t_mask, position_ids=positions).logits.numpy()

    def greedy(**kw):
        out = model.generate(t_ids, attention_mask=t_mask, do_sample=False, max_new_tokens=NEW_TOKENS, **kw)
        return out.numpy()

    no_eos = greedy(eos_token_id=None, pad_token_id=pad)
    # An EOS id the batch really emits: row 0's 5th new token, so some rows stop early.
    eos = int(no_eos[0, ids.shape[1] + 4])
    with_eos = greedy(eos_token_id=[eos, VOCAB - 1], pad_token_id=1)
    min_new = greedy(eos_token_id=eos, pad_token_id=1, min_new_tokens=7)
    penalized = greedy(eos_token_id=None, pad_token_id=pad, repetition_penalty=1.5, no_repeat_ngram_size=2)
    # The warped distributions of the first sampled token, through generate's own processor list.
    last = model(t_ids, attention_mask=t_mask, position_ids=positions).logits[:, -1, :]
    warped = np.stack([model._get_logits_processor(
        generation_config=GenerationConfig(do_sample=True, **options), input_ids_seq_length=ids.shape[1],
        encoder_input_ids=t_ids, prefix_allowed_tokens_fn=None, logits_processor=LogitsProcessorList(),
        device="cpu")(t_ids, last.clone())[row].numpy() for row, options in SAMPLING_CASES])
    return dict(**beam_reference(model, ids, mask, eos), pad=np.array(pad), input_ids=ids, attention_mask=mask, logits=logits, greedy=no_eos, eos=np.array(eos),
                greedy_eos=with_eos, greedy_min_new=min_new, greedy_penalized=penalized, warped_first=warped,
                sampling_cases=np.array(json.dumps(SAMPLING_CASES)))


def train_unigram_tokenizer():
    """A T5-style tokenizer.json: Unigram over Metaspace pieces, </s> appended to every input."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=T5_SPECIALS, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    assert tok.get_vocab_size() == VOCAB and tok.token_to_id("</s>") == 1
    return tok


@torch.no_grad()
def seq2seq_reference(model, tok):
    """transformers' decoder logits, greedy and beam tokens on a right-padded batch of PROMPTS."""
    rows = [tok.encode(p).ids for p in PROMPTS]
    width = max(len(r) for r in rows)
    ids = np.array([r + [0] * (width - len(r)) for r in rows])
    mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)

    def greedy(**kw):
        return model.generate(t_ids, attention_mask=t_mask, do_sample=False, max_new_tokens=NEW_TOKENS, **kw).numpy()

    no_eos = greedy(eos_token_id=None, pad_token_id=0)
    eos = int(no_eos[0, 5])  # the 5th new token of row 0
    decoder_ids = torch.tensor(no_eos[:, :8])  # teacher forcing: the start token and 7 greedy tokens
    logits = model(t_ids, attention_mask=t_mask, decoder_input_ids=decoder_ids).logits.numpy()
    return dict(**beam_reference(model, ids, mask, eos), pad=np.array(0), input_ids=ids, attention_mask=mask,
                decoder_input_ids=decoder_ids.numpy(), logits=logits, greedy=no_eos, eos=np.array(eos),
                greedy_eos=greedy(eos_token_id=[eos, VOCAB - 1], pad_token_id=1),
                greedy_min_new=greedy(eos_token_id=eos, pad_token_id=1, min_new_tokens=7),
                greedy_penalized=greedy(eos_token_id=None, pad_token_id=0, repetition_penalty=1.5, no_repeat_ngram_size=2))


def processor_inputs():
    """The random logits [4, 64] float32 and token histories [4, 14] the processor references use."""
    rng = np.random.RandomState(0)
    logits = (rng.randn(4, 64) * 3).astype(np.float32)
    logits[3, :8] = logits[3, 8]  # ties at the top-k / top-p boundaries
    history = rng.randint(0, 64, size=(4, 14))
    history[0, -3:] = history[0, 2:5]  # a repeated trigram's prefix at the end
    history[1, -1] = history[1, 6]
    return logits, history


def processor_reference():
    """transformers' processors and warpers on random logits and token histories."""
    logits, history = processor_inputs()
    ids, scores = torch.tensor(history), torch.tensor(logits)
    out = dict(logits=logits, history=history)
    cases = {"repetition_1.3": RepetitionPenaltyLogitsProcessor(1.3), "repetition_0.7": RepetitionPenaltyLogitsProcessor(0.7),
             "ngram_2": NoRepeatNGramLogitsProcessor(2), "ngram_3": NoRepeatNGramLogitsProcessor(3),
             "temperature_0.7": TemperatureLogitsWarper(0.7), "top_k_5": TopKLogitsWarper(5),
             "top_k_1": TopKLogitsWarper(1), "top_p_0.8": TopPLogitsWarper(0.8), "top_p_0.3": TopPLogitsWarper(0.3),
             "top_p_0.999": TopPLogitsWarper(0.999), "min_p_0.1": MinPLogitsWarper(0.1), "min_p_0.5": MinPLogitsWarper(0.5),
             "chain": LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.2), NoRepeatNGramLogitsProcessor(2),
                                           TemperatureLogitsWarper(0.8), TopKLogitsWarper(20), TopPLogitsWarper(0.9),
                                           MinPLogitsWarper(0.05)])}
    for name, proc in cases.items():
        out[name] = proc(ids, scores.clone()).numpy()
    return out


# Beam search cases: each early_stopping mode, length penalties below and above 1, several
# returned sequences, EOS stops, processors. "eos" stands for the fixture's EOS id.
BEAM_CASES = [dict(num_beams=4, num_return_sequences=2, eos_token_id="eos"),
              dict(num_beams=3, early_stopping=True, length_penalty=0.5, eos_token_id="eos"),
              dict(num_beams=4, early_stopping="never", length_penalty=2.0, num_return_sequences=4, eos_token_id="eos"),
              dict(num_beams=2, eos_token_id=None),
              dict(num_beams=3, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=4, eos_token_id="eos",
                   length_penalty=-0.5)]


@torch.no_grad()
def beam_reference(model, ids, mask, eos):
    """transformers' beam search sequences and sequences_scores for each of BEAM_CASES."""
    out = {"beam_cases": np.array(json.dumps(BEAM_CASES))}
    for i, case in enumerate(BEAM_CASES):
        case = dict(case, eos_token_id=eos if case["eos_token_id"] == "eos" else case["eos_token_id"])
        res = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                             max_new_tokens=NEW_TOKENS, pad_token_id=1, output_scores=True,
                             return_dict_in_generate=True, **case)
        out[f"beam_{i}_sequences"] = res.sequences.numpy()
        out[f"beam_{i}_scores"] = res.sequences_scores.numpy()
    return out


def _skip_affine_free_norms(init):
    """transformers 4.57's OPT init fails on LayerNorms without weights (layer_norm_elementwise_affine=False)."""
    def wrapped(self, module):
        if not (isinstance(module, torch.nn.LayerNorm) and module.weight is None):
            init(self, module)
    return wrapped


OPTPreTrainedModel._init_weights = _skip_affine_free_norms(OPTPreTrainedModel._init_weights)


def build(model_class, config, seed):
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    return model_class(config).eval()


# name -> (model class, config, seed, the layouts to write it in besides save_pretrained under name)
CHECKPOINTS = {
    "gpt2-tiny": (GPT2LMHeadModel, GPT2Config(**BASE), 0, {"gpt2-tiny-hub": "unprefixed", "gpt2-tiny-sharded": "sharded"}),
    "gpt2-variant": (GPT2LMHeadModel, GPT2Config(**VARIANT), 1, {}),
    "gpt2-untied": (GPT2LMHeadModel, GPT2Config(**UNTIED), 2, {}),
    "opt-tiny": (OPTForCausalLM, OPTConfig(**OPT_125M), 3, {"opt-tiny-unprefixed": "unprefixed"}),
    "opt-350m-tiny": (OPTForCausalLM, OPTConfig(**OPT_350M), 4, {}),
    "opt-variant": (OPTForCausalLM, OPTConfig(**OPT_VARIANT), 5, {}),
    "t5-v1_0-tiny": (T5ForConditionalGeneration, T5Config(**T5_V10), 6, {}),
    "t5-v1_1-tiny": (T5ForConditionalGeneration, T5Config(**T5_V11), 7, {}),
}


def main():
    os.makedirs(os.path.join(ROOT, "reference"), exist_ok=True)
    tokenizers_by_type = {"gpt2": train_tokenizer([EOT]), "opt": train_tokenizer(OPT_SPECIALS, bos="</s>"),
                          "t5": train_unigram_tokenizer()}
    for name, (model_class, config, seed, copies) in CHECKPOINTS.items():
        model = build(model_class, config, seed)
        tok = tokenizers_by_type[config.model_type]
        write_folder(name, model, tok)
        for copy, layout in copies.items():
            write_folder(copy, model, tok, layout)
        ref = (seq2seq_reference if config.is_encoder_decoder else reference)(model, tok)
        np.savez_compressed(os.path.join(ROOT, "reference", name + ".npz"), **ref)
        start = 1 if config.is_encoder_decoder else ref["input_ids"].shape[1]
        for i in range(len(BEAM_CASES)):
            seqs = ref[f"beam_{i}_sequences"][:, start:]
            print(name, "beam case", i, "width", seqs.shape[1], "rows ending in EOS:",
                  int((seqs == int(ref["eos"])).any(1).sum()), "of", len(seqs), file=sys.stderr)
        new = ref["greedy_eos"][:, start:]
        print(name, "greedy row 0:", ref["greedy"][0].tolist(), "eos", int(ref["eos"]),
              "rows stopped by eos:", int((new == int(ref["eos"])).any(1).sum()), file=sys.stderr)
    np.savez_compressed(os.path.join(ROOT, "reference", "processors.npz"), **processor_reference())
    with open(os.path.join(ROOT, "reference", "versions.json"), "w") as f:
        import tokenizers
        import transformers
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "tokenizers": tokenizers.__version__, "prompts": PROMPTS, "new_tokens": NEW_TOKENS}, f, indent=1)


if __name__ == "__main__":
    main()
