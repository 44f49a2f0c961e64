"""GPT-2, from Hub files, with a preallocated KV cache.

The whole model in one file: the config, the map from Hub tensor names to ours, and the
forward pass. Hub files name tensors `h.0.attn.c_attn.weight` (or with a `transformer.`
prefix); the weights of GPT-2's Conv1D are already (in, out), so they map unchanged.
"""
import dataclasses
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from xlagen.kernels import attention, cache, layers, positions

from . import config as config_lib
from .checkpoint import strip_prefix, take
from .errors import CheckpointFormatError, UnsupportedModelError


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """The fields of a GPT-2 config.json that change the math (defaults: transformers' GPT2Config)."""
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: Optional[int] = None
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: Optional[int] = 50256
    eos_token_id: Union[int, list, None] = 50256
    pad_token_id: Optional[int] = None
    model_type: str = "gpt2"
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    is_encoder_decoder = False

    @property
    def max_positions(self):
        return self.n_positions

    @property
    def inner_dim(self):
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def validate(self, source):
        config_lib.require_positive(self, source, "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner")
        if self.n_embd % self.n_head:
            raise CheckpointFormatError(f"{source}: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.activation_function not in layers.ACTIVATIONS:
            raise UnsupportedModelError(
                f"{source}: activation_function {self.activation_function!r} is not supported; "
                f"supported: {', '.join(sorted(layers.ACTIVATIONS))}")


# transformers' GPT2Config.attribute_map: other spellings of the same fields.
ALIASES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
           "max_position_embeddings": "n_positions"}
HUB_PREFIXES = ("transformer.",)
# Buffers old checkpoints carry; they hold the causal mask, which we build ourselves.
IGNORED = ("attn.bias", "attn.masked_bias")


def parse_config(data, source):
    """GPT2Config from a config.json dict."""
    return config_lib.from_dict(GPT2Config, data, source, ALIASES)


def hub_shapes(c):
    """Every tensor we read, by its Hub name (without prefix), with the shape the config implies."""
    e, inner = c.n_embd, c.inner_dim
    shapes = {"wte.weight": (c.vocab_size, e), "wpe.weight": (c.n_positions, e),
              "ln_f.weight": (e,), "ln_f.bias": (e,)}
    for i in range(c.n_layer):
        p = f"h.{i}."
        shapes.update({
            p + "ln_1.weight": (e,), p + "ln_1.bias": (e,),
            p + "attn.c_attn.weight": (e, 3 * e), p + "attn.c_attn.bias": (3 * e,),
            p + "attn.c_proj.weight": (e, e), p + "attn.c_proj.bias": (e,),
            p + "ln_2.weight": (e,), p + "ln_2.bias": (e,),
            p + "mlp.c_fc.weight": (e, inner), p + "mlp.c_fc.bias": (inner,),
            p + "mlp.c_proj.weight": (inner, e), p + "mlp.c_proj.bias": (e,),
        })
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, e)
    return shapes


class GPT2(tf.Module):
    """GPT-2 language model (GPT2LMHeadModel) with a preallocated KV cache.

    Decoding state (a dict of tensors, B = batch, L = prompt + max_new_tokens):
      k, v:     tuples of n_layer [B, H, L, D] float32 caches
      key_mask: [B, L] int32, 1 where a cache slot holds a real token
      position: [B] int32, position id of the next token of each row
      slot:     scalar int32, cache slot the next token is written to
    """

    def __init__(self, config, tensors, source="checkpoint"):
        super().__init__(name="gpt2")
        self.config = config
        tensors = strip_prefix(tensors, HUB_PREFIXES)
        self.w = {name: tf.Variable(take(tensors, name, shape, source), trainable=False, name=name.replace(".", "_"))
                  for name, shape in hub_shapes(config).items()}
        self.unused = sorted(n for n in tensors if n not in self.w and not n.endswith(IGNORED)
                             and not (n == "lm_head.weight" and config.tie_word_embeddings))
        self._act = layers.activation(config.activation_function)

    # -- the forward pass ------------------------------------------------------------------

    def _attention(self, i, h, bias, k_cache, v_cache, slot):
        c, w, p = self.config, self.w, f"h.{i}.attn."
        q, k, v = tf.split(layers.dense(h, w[p + "c_attn.weight"], w[p + "c_attn.bias"]), 3, axis=-1)
        q, k, v = (attention.split_heads(t, c.n_head) for t in (q, k, v))
        k_cache, v_cache = cache.write(k_cache, k, slot), cache.write(v_cache, v, slot)
        scale = 1.0
        if c.scale_attn_weights:
            scale /= float(c.n_embd // c.n_head) ** 0.5
        if c.scale_attn_by_inverse_layer_idx:
            scale /= float(i + 1)
        out = attention.attend(q, k_cache, v_cache, bias, scale)
        return layers.dense(attention.merge_heads(out), w[p + "c_proj.weight"], w[p + "c_proj.bias"]), k_cache, v_cache

    def _mlp(self, i, h):
        w, p = self.w, f"h.{i}.mlp."
        h = self._act(layers.dense(h, w[p + "c_fc.weight"], w[p + "c_fc.bias"]))
        return layers.dense(h, w[p + "c_proj.weight"], w[p + "c_proj.bias"])

    def forward(self, input_ids, position_ids, k, v, key_mask, slot):
        """Run T new tokens per row through the model, writing their keys/values at `slot`.

        Args:
          input_ids, position_ids: [B, T] int32.
          k, v: tuples of n_layer [B, H, L, D] float32 caches.
          key_mask: [B, L] int32, 1 for cache slots holding real tokens (the new ones included).
          slot: scalar int32, cache slot of the first new token.
        Returns:
          (hidden [B, T, E] float32 after the final LayerNorm, new k, new v).
        """
        c, w = self.config, self.w
        eps = c.layer_norm_epsilon
        x = tf.gather(w["wte.weight"], input_ids) + tf.gather(w["wpe.weight"], position_ids)
        bias = attention.bias_from_mask(attention.causal_allowed(key_mask, slot, input_ids.shape[1]))
        new_k, new_v = [], []
        for i in range(c.n_layer):
            p = f"h.{i}."
            h = layers.layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            a, ki, vi = self._attention(i, h, bias, k[i], v[i], slot)
            new_k.append(ki)
            new_v.append(vi)
            x = x + a
            x = x + self._mlp(i, layers.layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps))
        return layers.layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps), tuple(new_k), tuple(new_v)

    def head(self, hidden):
        """Vocabulary logits: [..., E] -> [..., V] float32 (lm_head tied to wte unless the config says not)."""
        table = self.w["wte.weight"] if self.config.tie_word_embeddings else self.w["lm_head.weight"]
        return tf.einsum("...e,ve->...v", hidden, table)

    # -- the decoding interface the engine uses --------------------------------------------

    def _empty_cache(self, batch, length):
        c = self.config
        shape = (batch, c.n_head, length, c.n_embd // c.n_head)
        return (tuple(cache.allocate(*shape) for _ in range(c.n_layer)),
                tuple(cache.allocate(*shape) for _ in range(c.n_layer)))

    def prefill(self, input_ids, attention_mask, max_new_tokens):
        """Run the left-padded prompt and allocate the cache for max_new_tokens more.

        Args:
          input_ids, attention_mask: [B, P] int32, static shapes.
          max_new_tokens: python int N.
        Returns:
          (logits [B, V] float32 for the first new token, decoding state with L = P + N).
        """
        b, p = input_ids.shape
        k, v = self._empty_cache(b, p + max_new_tokens)
        mask = tf.cast(attention_mask, tf.int32)
        key_mask = tf.concat([mask, tf.zeros([b, max_new_tokens], tf.int32)], axis=1)
        hidden, k, v = self.forward(input_ids, positions.from_mask(mask), k, v, key_mask, tf.constant(0))
        state = {"k": k, "v": v, "key_mask": key_mask, "position": positions.next_position(mask),
                 "slot": tf.constant(p, tf.int32)}
        return self.head(hidden[:, -1]), state

    def step(self, tokens, state):
        """Feed one token per row.

        Args:
          tokens: [B] int32.  state: as returned by prefill or step.
        Returns:
          (logits [B, V] float32 for the following token, new state).
        """
        slot = state["slot"]
        key_mask = cache.write_columns(state["key_mask"], tf.ones_like(tokens)[:, None], slot)
        hidden, k, v = self.forward(tokens[:, None], state["position"][:, None], state["k"], state["v"], key_mask, slot)
        state = {"k": k, "v": v, "key_mask": key_mask, "position": state["position"] + 1, "slot": slot + 1}
        return self.head(hidden[:, 0]), state

    def logits(self, input_ids, attention_mask):
        """Logits at every position in one forward pass.

        Args:
          input_ids, attention_mask: [B, T] int32.
        Returns:
          [B, T, V] float32.
        """
        b, t = input_ids.shape
        k, v = self._empty_cache(b, t)
        mask = tf.cast(attention_mask, tf.int32)
        hidden, _, _ = self.forward(input_ids, positions.from_mask(mask), k, v, mask, tf.constant(0))
        return self.head(hidden)


def build(config, tensors, source):
    """The GPT2 module for a parsed config and {hub name: array} tensors."""
    return GPT2(config, tensors, source)
