"""Time one peer of xlagen on one benchmark row, and print the result as one JSON line.

    python tools/bench_peers.py --family gpt2|opt|t5 --scenario NAME \
        --peer hf_tf_xla|hf_pt|keras_hub --checkpoint DIR [--reps 3]

Run by tools/bench.py as a subprocess, once per (family, scenario, peer), in a Python
environment with the peers installed (transformers 4.x with TF and PyTorch, tf-keras, keras-hub).
It generalises ../shared/bench/peers.py (GPT-2 only) to GPT-2, OPT and T5:

    hf_tf_xla  transformers TF model, tf.function(model.generate, jit_compile=True)
    hf_pt      transformers PyTorch model, model.generate under torch.no_grad()
    keras_hub  KerasHub GPT2CausalLM / OPTCausalLM / T5Seq2SeqLM (XLA-compiled generate)

DIR is a Hugging Face Hub layout folder (config.json + model.safetensors, random weights written
by the caller). The HF peers load those weights. The transformers TF loader cannot read
safetensors with from_pt, so on first use the PyTorch model is re-saved once as
pytorch_model.bin into DIR + "-bin" and the TF model is loaded from there.

Timing: one first call (tracing + compile + one run: "first_s"), then the best of --reps calls
("best_s"); every call decodes exactly N tokens (min_new_tokens = N). stdout gets exactly one
JSON line: {"family", "scenario", "peer", "B", "prompt", "new", "first_s", "best_s",
"ms_per_step"}, or the same keys of the row plus "error" (the peer failed) or "skipped" (no such
peer or scenario). The exit status is 0 in every case; logs go to stderr.
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

from bench import first_and_best  # noqa: E402  (tools/bench.py)

# name: batch B, prompt length P (encoder length for t5), new tokens N, generate options.
SCENARIOS = {
    "greedy":     dict(B=1,  P=8,   N=32,  kw=dict(do_sample=False)),
    "beam4":      dict(B=1,  P=8,   N=32,  kw=dict(do_sample=False, num_beams=4)),
    "topp":       dict(B=1,  P=8,   N=32,  kw=dict(do_sample=True, top_p=0.9, top_k=0)),
    "topk50":     dict(B=1,  P=8,   N=32,  kw=dict(do_sample=True, top_k=50)),
    "greedy_b16": dict(B=16, P=8,   N=32,  kw=dict(do_sample=False)),
    "long":       dict(B=1,  P=128, N=128, kw=dict(do_sample=False)),
    "beam4_long": dict(B=1,  P=128, N=128, kw=dict(do_sample=False, num_beams=4)),
}
FAMILY_SCENARIOS = {"gpt2": list(SCENARIOS), "opt": ["greedy", "beam4"], "t5": ["greedy", "beam4"]}
# family: (transformers TF class, transformers PyTorch class)
HF_CLASSES = {
    "gpt2": ("TFGPT2LMHeadModel", "GPT2LMHeadModel"),
    "opt": ("TFOPTForCausalLM", "OPTForCausalLM"),
    "t5": ("TFT5ForConditionalGeneration", "T5ForConditionalGeneration"),
}


class Skipped(Exception):
    """This peer does not exist for this family (reported as "skipped", not as an error)."""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def pad_id(config):
    """The config's pad token, else its eos token (GPT-2 has no pad token)."""
    return config.pad_token_id if config.pad_token_id is not None else config.eos_token_id


def token_kwargs(config):
    """pad_token_id, and for T5 decoder_start_token_id (the pad token, T5's convention, when the
    config.json leaves it out, as T5Config() does)."""
    kw = {"pad_token_id": pad_id(config)}
    if config.is_encoder_decoder:
        start = config.decoder_start_token_id
        kw["decoder_start_token_id"] = kw["pad_token_id"] if start is None else start
    return kw


def make_hf_tf(family, checkpoint, ids, mask, N, kw):
    import tensorflow as tf
    import transformers
    bin_dir = checkpoint + "-bin"
    if not os.path.exists(os.path.join(bin_dir, "pytorch_model.bin")):
        # transformers 4.57's TF loader fails on safetensors with from_pt: re-save these
        # (caller-generated) weights once as a PyTorch .bin, atomically via a temporary folder.
        log(f"writing {bin_dir}")
        pt_model = getattr(transformers, HF_CLASSES[family][1]).from_pretrained(checkpoint)
        tmp = bin_dir + f".tmp{os.getpid()}"
        pt_model.save_pretrained(tmp, safe_serialization=False)
        shutil.rmtree(bin_dir, ignore_errors=True)
        os.rename(tmp, bin_dir)
        del pt_model
    model = getattr(transformers, HF_CLASSES[family][0]).from_pretrained(bin_dir, from_pt=True)
    kw = {**kw, **token_kwargs(model.config), "seed": [1, 2] if kw.get("do_sample") else None}
    generate = tf.function(model.generate, jit_compile=True)
    ids, mask = tf.constant(ids), tf.constant(mask)
    return lambda: generate(ids, attention_mask=mask, max_new_tokens=N, min_new_tokens=N, **kw)


def make_hf_pt(family, checkpoint, ids, mask, N, kw):
    import torch
    import transformers
    model = getattr(transformers, HF_CLASSES[family][1]).from_pretrained(checkpoint).eval()
    ids, mask = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    kw = {**kw, **token_kwargs(model.config)}

    def call():
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, max_new_tokens=N, min_new_tokens=N, **kw)
    return call


def keras_hub_backbone(keras_hub, family, cfg):
    """A KerasHub backbone shaped like the checkpoint's config.json, with RANDOM weights (as
    peers.py does): only the shapes matter for timing, so no weight conversion is attempted."""
    models = keras_hub.models
    if family == "gpt2":
        hidden = cfg.get("n_embd", 768)
        return models.GPT2Backbone(
            vocabulary_size=cfg["vocab_size"], num_layers=cfg["n_layer"], num_heads=cfg["n_head"],
            hidden_dim=hidden, intermediate_dim=cfg.get("n_inner") or 4 * hidden,
            max_sequence_length=cfg.get("n_positions", 1024))
    if family == "opt":
        return models.OPTBackbone(
            vocabulary_size=cfg["vocab_size"], num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"], hidden_dim=cfg["hidden_size"],
            intermediate_dim=cfg["ffn_dim"], max_sequence_length=cfg["max_position_embeddings"])
    if not hasattr(models, "T5Seq2SeqLM"):
        raise Skipped(f"keras_hub {keras_hub.__version__} has no T5 seq2seq task")
    if cfg.get("num_decoder_layers") not in (None, cfg["num_layers"]):
        raise Skipped("KerasHub T5Backbone needs as many decoder as encoder layers")
    proj = cfg.get("feed_forward_proj", "relu")  # "relu" (t5-small) or "gated-gelu" (t5 v1.1)
    return models.T5Backbone(
        vocabulary_size=cfg["vocab_size"], num_layers=cfg["num_layers"], num_heads=cfg["num_heads"],
        hidden_dim=cfg["d_model"], intermediate_dim=cfg["d_ff"], key_value_dim=cfg["d_kv"],
        activation=proj.split("-")[-1], use_gated_activation=proj.startswith("gated"),
        layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-6),
        tie_embedding_weights=cfg.get("tie_word_embeddings", True))


def make_keras_hub(family, checkpoint, ids, mask, N, kw):
    import keras
    import keras_hub
    with open(os.path.join(checkpoint, "config.json")) as f:
        cfg = json.load(f)
    keras.utils.set_random_seed(0)
    backbone = keras_hub_backbone(keras_hub, family, cfg)
    task = {"gpt2": "GPT2CausalLM", "opt": "OPTCausalLM", "t5": "T5Seq2SeqLM"}[family]
    lm = getattr(keras_hub.models, task)(backbone=backbone, preprocessor=None)
    samplers = keras_hub.samplers
    if kw.get("num_beams", 1) > 1:
        sampler = samplers.BeamSampler(num_beams=kw["num_beams"])
    elif not kw.get("do_sample"):
        sampler = samplers.GreedySampler()
    elif kw.get("top_k"):
        sampler = samplers.TopKSampler(k=kw["top_k"])
    else:
        sampler = samplers.TopPSampler(p=kw["top_p"])
    lm.compile(sampler=sampler)
    B, P = ids.shape
    if family == "t5":
        # Encoder gets the prompt; the decoder starts from decoder_start_token_id and fills N slots.
        dec = np.zeros((B, 1 + N), "int32")
        start = cfg.get("decoder_start_token_id")
        dec[:, 0] = cfg.get("pad_token_id", 0) if start is None else start
        x = {"encoder_token_ids": ids, "encoder_padding_mask": mask.astype(bool),
             "decoder_token_ids": dec, "decoder_padding_mask": np.arange(1 + N)[None].repeat(B, 0) < 1}
    else:
        # The prompt, then N empty (masked) slots that generate fills.
        x = {"token_ids": np.concatenate([ids, np.zeros((B, N), "int32")], 1),
             "padding_mask": np.concatenate([mask, np.zeros((B, N), "int32")], 1).astype(bool)}
    return lambda: lm.generate(x, stop_token_ids=None)


PEERS = {"hf_tf_xla": make_hf_tf, "hf_pt": make_hf_pt, "keras_hub": make_keras_hub}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", required=True, choices=sorted(FAMILY_SCENARIOS))
    parser.add_argument("--scenario", required=True, choices=list(SCENARIOS))
    parser.add_argument("--peer", required=True, choices=list(PEERS))
    parser.add_argument("--checkpoint", required=True, help="Hub-layout folder: config.json + model.safetensors")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    sc = SCENARIOS[args.scenario]
    B, P, N, kw = sc["B"], sc["P"], sc["N"], sc["kw"]
    row = {"family": args.family, "scenario": args.scenario, "peer": args.peer, "B": B, "prompt": P, "new": N}

    def emit(**extra):
        print(json.dumps({**row, **extra}), flush=True)

    if args.scenario not in FAMILY_SCENARIOS[args.family]:
        return emit(skipped=f"scenario {args.scenario} is not benchmarked for {args.family}")
    try:
        with open(os.path.join(args.checkpoint, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        ids = np.random.RandomState(0).randint(0, min(vocab, 50000), size=(B, P)).astype("int32")
        mask = np.ones_like(ids)
        call = PEERS[args.peer](args.family, args.checkpoint, ids, mask, N, kw)
        first, best = first_and_best(call, max(1, args.reps))
    except Skipped as e:
        return emit(skipped=str(e))
    except Exception as e:  # the caller shows "—" for a failed peer
        log(f"{args.peer} failed:", repr(e))
        message = ([line.strip() for line in str(e).splitlines() if line.strip()] or [""])[-1][:200]
        return emit(error=f"{type(e).__name__}: {message}")
    emit(first_s=round(first, 2), best_s=round(best, 4), ms_per_step=round(best / N * 1000, 2))


if __name__ == "__main__":
    main()
