"""Train the small default GPT-2 that ships in models/default, with xlagen's own forward pass.

Needs only what xlagen needs (TensorFlow, tokenizers, safetensors, numpy); no transformers or torch.
Run from the repo root (about 4 minutes on 2 idle CPU cores, 7 when they are shared):

    python tools/train_default.py [--out models/default] [--steps N | --minutes M] [--seed 0]

What it does:
  corpus     the reference text every CPython carries, `pydoc_data.topics.topics` (79 topics,
             ~465k characters), with the hard-wrapped lines of prose paragraphs joined (code,
             grammar, tables and lists keep theirs). Every 10th topic in sorted order (the 1st,
             11th, ...) is held out for validation; paragraphs of training topics that also occur
             in a held-out topic (the topics quote each other) are dropped from training.
  tokenizer  a byte-level BPE (tokenizers library, GPT-2 style: ByteLevel pre-tokenizer without
             prefix space, ByteLevel decoder) trained on the training topics; "<|endoftext|>" is
             id 0 and serves as bos, eos and pad.
  model      GPT-2 (xlagen.models.gpt2.GPT2) built from randomly initialised Hub-named tensors
             (GPT-2 init: normal(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer), zero
             biases, LayerNorm weights 1), trained through `model.logits` under tf.GradientTape:
             next-token cross-entropy on random windows of the training stream (documents joined
             with "<|endoftext|>"), AdamW with linear warmup and cosine decay, global-norm
             clipping, one XLA-compiled train step. Seeds are fixed: `--steps` runs are reproducible.
             (`--minutes` picks the step count from the measured speed, so it is not.)
  output     --out gets config.json (as transformers' GPT2Config writes it), model.safetensors
             (fp32, Hub names without prefix, tied embeddings, metadata {"format": "pt"}),
             generation_config.json and tokenizer.json. tools/check_default.py checks the folder
             against transformers.
"""
import argparse
import contextlib
import json
import math
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402
from tensorflow.python.framework import ops  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

from xlagen.models import gpt2  # noqa: E402

EOT = "<|endoftext|>"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# The model: 2.42M parameters, 9.7 MB as fp32 safetensors (+0.2 MB tokenizer.json: under 10 MB).
VOCAB = 3072
ARCH = dict(vocab_size=VOCAB, n_positions=256, n_embd=192, n_layer=4, n_head=4)
CONTEXT = 256      # training window: every position of the model is trained
BATCH = 8
PEAK_LR = 2e-3
MIN_LR = 1e-4
WARMUP = 50
WEIGHT_DECAY = 0.1  # on matrices and embeddings, not on biases or LayerNorm
BETAS = (0.9, 0.95)
CLIP = 1.0
DEFAULT_STEPS = 600


# -- data ---------------------------------------------------------------------------------

UNDERLINE = re.compile(r"^([*=\-^~+])\1{2,}\s*$")


def unwrap(paragraph):
    """Join the hard-wrapped lines of a prose paragraph (pydoc text is wrapped at ~70 columns).

    Only paragraphs whose lines share one indentation, are all long but the last (wrapped
    prose, not code), and hold no heading underline, grammar rule, prompt, table or list
    marker are joined; code, grammar, tables and lists keep their line breaks. Without this,
    a line break is the likeliest token after almost any word, and a small model's greedy
    output dissolves into runs of newlines.
    """
    core = paragraph.rstrip("\n")
    lines = core.split("\n")
    if len(lines) < 2 or not all(line.strip() for line in lines):
        return paragraph
    indent = min(len(line) - len(line.lstrip(" ")) for line in lines)
    body = [line[indent:] for line in lines]
    if any(line.startswith(" ") for line in body) or any(len(line) < 40 for line in body[:-1]):
        return paragraph
    if any(UNDERLINE.match(line) or line.startswith((">>>", "...", "|", "+", "* ", "- ")) or "::=" in line for line in body):
        return paragraph
    return " " * indent + " ".join(line.strip() for line in body) + paragraph[len(core):]


def split_corpus():
    """(train texts, validation texts): every 10th topic (sorted by name) is validation.

    Paragraphs (split at blank lines) of prose are unwrapped; training topics lose every
    paragraph that also occurs in a validation topic.
    """
    from pydoc_data import topics
    names = sorted(topics.topics)
    docs = {n: [unwrap(p) for p in topics.topics[n].split("\n\n")] for n in names}
    val = [docs[n] for i, n in enumerate(names) if i % 10 == 0]
    held = {p.strip() for paragraphs in val for p in paragraphs if p.strip()}
    train = []
    for i, n in enumerate(names):
        if i % 10:
            paragraphs = [p for p in docs[n] if p.strip() not in held]
            if paragraphs:
                train.append("\n\n".join(paragraphs))
    return train, ["\n\n".join(paragraphs) for paragraphs in val]


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    assert tok.get_vocab_size() == VOCAB and tok.token_to_id(EOT) == 0
    return tok


def token_stream(tok, texts):
    """Documents joined with <|endoftext|> (id 0), which also starts the stream: int32 [N]."""
    out = []
    for enc in tok.encode_batch(texts):
        out.append([0])
        out.append(enc.ids)
    return np.concatenate([np.asarray(x, np.int32) for x in out])


def eval_windows(stream, context, batch):
    """Non-overlapping windows covering every token of `stream` once as a target.

    Returns (x, y, w), each [K, batch, context]: inputs, targets and 0/1 weights (padding 0).
    """
    xs, ys, ws = [], [], []
    for start in range(0, len(stream) - 1, context):
        seg = stream[start:start + context + 1]
        n = len(seg) - 1
        x, y, w = (np.zeros(context, np.int32) for _ in range(3))
        x[:n], y[:n], w[:n] = seg[:-1], seg[1:], 1
        xs.append(x), ys.append(y), ws.append(w)
    while len(xs) % batch:
        xs.append(np.zeros(context, np.int32)), ys.append(np.zeros(context, np.int32)), ws.append(np.zeros(context, np.int32))
    shape = (-1, batch, context)
    return np.reshape(xs, shape), np.reshape(ys, shape), np.reshape(ws, shape).astype(np.float32)


# -- model --------------------------------------------------------------------------------

def _dynamic_update_slice_grad(op, grad):
    """Gradient of XlaDynamicUpdateSlice(input, update, indices), which TF registers none for.

    The forward pass writes keys/values into its cache with it (kernels/cache.py); training
    differentiates through those writes: the cache gets the gradient outside the written
    window, the update gets the window itself.
    """
    update, indices = op.inputs[1], op.inputs[2]
    return (xla.dynamic_update_slice(grad, tf.zeros_like(update), indices),
            xla.dynamic_slice(grad, indices, tf.shape(update, out_type=indices.dtype)), None)


try:
    tf.RegisterGradient("XlaDynamicUpdateSlice")(_dynamic_update_slice_grad)
except KeyError:  # already registered (by a newer TensorFlow or by xlagen itself)
    pass


@contextlib.contextmanager
def fast_einsum_grad():
    """Swap in a cheaper gradient for the einsums of the forward pass while gradients are built.

    The dense layers and the tied head are `einsum("...i,io->...o", x, kernel)`. TensorFlow's
    Einsum gradient gets the kernel's gradient by appending the ellipsis to the kernel's
    subscripts ("...o,...i->io...") and summing afterwards, which materialises a
    [in, out, B, T] tensor per layer: ~100x slower than the matmul. For a binary einsum whose
    first operand and output start with "..." and whose second operand has none, this computes
    the kernel's gradient as one contraction over the flattened batch axes instead; any other
    einsum gets TensorFlow's own gradient. The forward pass is untouched.
    """
    entry = ops.gradient_registry._registry["Einsum"]  # no public way to replace a gradient
    original = entry["type"]

    def grad(op, dz):
        equation = op.get_attr("equation")
        equation = equation.decode() if isinstance(equation, bytes) else equation
        inputs, z_subs = equation.split("->")
        subs = inputs.split(",")
        if len(subs) != 2:
            return original(op, dz)
        x_subs, y_subs = subs
        x, y = op.inputs
        labels = x_subs[3:] + y_subs + z_subs[3:]
        if not (x_subs.startswith("...") and z_subs.startswith("...") and "." not in x_subs[3:] + y_subs + z_subs[3:]
                and len(set(x_subs[3:])) == len(x_subs[3:]) and len(set(z_subs[3:])) == len(z_subs[3:])
                and len(set(y_subs)) == len(y_subs) and x.shape.rank is not None and dz.shape.rank is not None):
            return original(op, dz)
        flat = next(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in labels)
        dx = tf.einsum(f"{z_subs},{y_subs}->{x_subs}", dz, y)
        x2 = tf.reshape(x, tf.concat([[-1], tf.shape(x)[x.shape.rank - len(x_subs) + 3:]], 0))
        dz2 = tf.reshape(dz, tf.concat([[-1], tf.shape(dz)[dz.shape.rank - len(z_subs) + 3:]], 0))
        dy = tf.einsum(f"{flat}{x_subs[3:]},{flat}{z_subs[3:]}->{y_subs}", x2, dz2)
        return dx, dy

    entry["type"] = grad
    try:
        yield
    finally:
        entry["type"] = original


def init_tensors(config, rng):
    """GPT-2's initialisation, as transformers' GPT2PreTrainedModel._init_weights does it."""
    tensors = {}
    for name, shape in gpt2.hub_shapes(config).items():
        if name.endswith("bias"):
            value = np.zeros(shape)
        elif ".ln_" in name or name.startswith("ln_"):
            value = np.ones(shape)
        elif name.endswith("c_proj.weight"):
            value = rng.normal(0.0, 0.02 / math.sqrt(2 * config.n_layer), shape)
        else:
            value = rng.normal(0.0, 0.02, shape)
        tensors[name] = value.astype(np.float32)
    return tensors


def lr_at(step, total):
    """Linear warmup to PEAK_LR, then cosine decay to MIN_LR at `total` (step counts from 0)."""
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    progress = min(1.0, (step - WARMUP) / max(1, total - WARMUP))
    return MIN_LR + 0.5 * (PEAK_LR - MIN_LR) * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """AdamW on the GPT2 module's variables (created trainable=False: we watch them ourselves)."""

    def __init__(self, model):
        self.model = model
        self.names = sorted(model.w)
        self.params = [model.w[n] for n in self.names]
        self.decay = [len(p.shape) == 2 for p in self.params]
        self.m = [tf.Variable(tf.zeros_like(p), trainable=False) for p in self.params]
        self.v = [tf.Variable(tf.zeros_like(p), trainable=False) for p in self.params]
        self.t = tf.Variable(0.0, trainable=False)

    def _loss(self, x, y, w):
        logits = self.model.logits(x, tf.ones_like(x))
        per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return tf.reduce_sum(per_token * w), tf.reduce_sum(w)

    @tf.function(jit_compile=True)
    def step(self, x, y, lr):
        """One AdamW step on a batch x, y: [B, T] int32. Returns (mean loss, grad norm before clipping)."""
        with tf.GradientTape() as tape:
            tape.watch(self.params)
            total, count = self._loss(x, y, tf.ones(tf.shape(y), tf.float32))
            loss = total / count
        # Embedding gradients arrive as IndexedSlices (from tf.gather); make every one dense.
        with fast_einsum_grad():
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.params)]
        grads, norm = tf.clip_by_global_norm(grads, CLIP)
        self.t.assign_add(1.0)
        b1, b2 = BETAS
        c1, c2 = 1.0 - tf.pow(b1, self.t), 1.0 - tf.pow(b2, self.t)
        for p, g, m, v, decay in zip(self.params, grads, self.m, self.v, self.decay):
            m.assign(b1 * m + (1.0 - b1) * g)
            v.assign(b2 * v + (1.0 - b2) * tf.square(g))
            update = (m / c1) / (tf.sqrt(v / c2) + 1e-8)
            if decay:
                update += WEIGHT_DECAY * p
            p.assign_sub(lr * update)
        return loss, norm

    @tf.function(jit_compile=True)
    def eval_batch(self, x, y, w):
        return self._loss(x, y, w)

    def evaluate(self, windows):
        """Mean next-token loss over prepared eval windows."""
        total = count = 0.0
        for x, y, w in zip(*windows):
            t, c = self.eval_batch(x, y, w)
            total, count = total + float(t), count + float(c)
        return total / count


# -- writing the Hub folder ---------------------------------------------------------------

def config_json(arch):
    """config.json as transformers' GPT2Config(...).save_pretrained writes it (4.57 key set)."""
    return {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 0, "dtype": "float32", "embd_pdrop": 0.1, "eos_token_id": 0, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_embd": arch["n_embd"], "n_head": arch["n_head"],
        "n_inner": None, "n_layer": arch["n_layer"], "n_positions": arch["n_positions"],
        "reorder_and_upcast_attn": False, "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True, "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "transformers_version": "4.57.6", "use_cache": True, "vocab_size": arch["vocab_size"],
    }


def generation_config_json():
    # A model this small loops under plain greedy decoding; these defaults keep its output readable.
    return {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "no_repeat_ngram_size": 3,
            "repetition_penalty": 1.2, "transformers_version": "4.57.6"}


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save(out, model, tok):
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), config_json(ARCH))
    write_json(os.path.join(out, "generation_config.json"), generation_config_json())
    tensors = {name: np.ascontiguousarray(t) for name, t in sorted(model.hub_tensors().items())}
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    tok.save(os.path.join(out, "tokenizer.json"))
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)  # safetensors writes it 0600
    sizes = {f: os.path.getsize(os.path.join(out, f))
             for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")}
    return sizes


# -- main ---------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "models", "default"))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {DEFAULT_STEPS})")
    group.add_argument("--minutes", type=float, default=None, help="train for about this long instead (not reproducible)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()

    start = time.time()
    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    train_texts, val_texts = split_corpus()
    tok = train_tokenizer(train_texts)
    train, val = token_stream(tok, train_texts), token_stream(tok, val_texts)
    print(f"corpus: {len(train_texts)} train / {len(val_texts)} val topics, "
          f"{sum(map(len, train_texts))} / {sum(map(len, val_texts))} chars, {len(train)} / {len(val)} tokens "
          f"(vocab {VOCAB})", flush=True)

    config = gpt2.GPT2Config(**ARCH, bos_token_id=0, eos_token_id=0)
    model = gpt2.GPT2(config, init_tensors(config, rng), source="init")
    trainer = Trainer(model)
    n_params = sum(int(np.prod(p.shape)) for p in trainer.params)
    print(f"model: {ARCH}, {n_params} parameters; context {CONTEXT}, batch {BATCH}, "
          f"lr {PEAK_LR} warmup {WARMUP} cosine to {MIN_LR}, wd {WEIGHT_DECAY}, clip {CLIP}", flush=True)
    val_windows = eval_windows(val, CONTEXT, BATCH)

    def batch():
        starts = rng.integers(0, len(train) - CONTEXT - 1, size=BATCH)
        rows = np.stack([train[s:s + CONTEXT + 1] for s in starts])
        return rows[:, :-1], rows[:, 1:]

    # Compile the train step (XLA) outside the timed loop: run it, then restore the initial state.
    t0 = time.time()
    x, y = batch()
    snapshot = [v.numpy() for v in trainer.params + trainer.m + trainer.v + [trainer.t]]
    trainer.step(x, y, tf.constant(0.0))
    compile_time = time.time() - t0
    total_steps = args.steps or DEFAULT_STEPS
    if args.minutes is not None:
        t1 = time.time()
        for _ in range(5):
            float(trainer.step(x, y, tf.constant(0.0))[0])
        per_step = (time.time() - t1) / 5
        total_steps = max(WARMUP + 1, int(args.minutes * 60 / per_step))
        print(f"{per_step * 1000:.0f} ms/step measured: {total_steps} steps for {args.minutes} min", flush=True)
    for v, value in zip(trainer.params + trainer.m + trainer.v + [trainer.t], snapshot):
        v.assign(value)
    print(f"compiled the train step in {compile_time:.1f}s; step 0 val loss {trainer.evaluate(val_windows):.3f}; "
          f"training {total_steps} steps ({total_steps * BATCH * CONTEXT / len(train):.1f} epochs of the train stream)",
          flush=True)

    t_train = time.time()
    losses = []
    for step in range(total_steps):
        x, y = batch()
        loss, norm = trainer.step(x, y, tf.constant(lr_at(step, total_steps), tf.float32))
        losses.append(float(loss))
        if (step + 1) % args.eval_every == 0 or step + 1 == total_steps:
            elapsed = time.time() - t_train
            val_loss = trainer.evaluate(val_windows)
            print(f"step {step + 1:5d}  train loss {np.mean(losses[-50:]):.3f}  val loss {val_loss:.3f} "
                  f"(ppl {math.exp(val_loss):.1f})  grad norm {float(norm):.2f}  lr {lr_at(step, total_steps):.2e}  "
                  f"{(step + 1) / elapsed:.2f} steps/s  {elapsed:.0f}s", flush=True)
    train_time = time.time() - t_train

    val_loss = trainer.evaluate(val_windows)
    sizes = save(args.out, model, tok)
    print(f"\ntrained {total_steps} steps in {train_time:.0f}s ({total_steps / train_time:.2f} steps/s, "
          f"{total_steps * BATCH * CONTEXT / train_time:.0f} tokens/s); total run {time.time() - start:.0f}s")
    print(f"final train loss {np.mean(losses[-50:]):.3f} (mean of the last 50 steps)")
    val_chars = sum(map(len, val_texts))
    print(f"validation: loss {val_loss:.4f}, perplexity {math.exp(val_loss):.2f} over {int(val_windows[2].sum())} tokens "
          f"of {len(val_texts)} held-out topics ({val_loss * int(val_windows[2].sum()) / val_chars / math.log(2):.3f} bits/char)")
    print(f"wrote {os.path.abspath(args.out)}: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items())
          + f"; total {sum(sizes.values()) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
