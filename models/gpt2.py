"""GPT-2, from Hub files, with a preallocated KV cache.

The whole model in one file: the config, the map from Hub tensor names to ours, and the
forward pass. Hub files name tensors `h.0.attn.c_attn.weight` (or with a `transformer.`
prefix); the weights of GPT-2's Conv1D are already (in, out), so they map unchanged.
"""
import dataclasses
from typing import Optional, Union

import tensorflow as tf

from xlagen.kernels import attention, cache, layers, positions

from . import config as config_lib
from .base import CachedLM
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


class GPT2(CachedLM):
    """GPT-2 language model (GPT2LMHeadModel) over a kernels.cache KV cache.

    Decoding state (B prompts, G rows per prompt, P prompt slots, N new tokens):
      kv:       tuple of n_layer kernels.cache.LayerKV
      layout:   kernels.cache.Layout (prompt mask, per-row ancestry, step)
      position: [B] int32, position id of the first new token (the prompt's real length)
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

    def _scale(self, i):
        c = self.config
        scale = 1.0
        if c.scale_attn_weights:
            scale /= float(c.n_embd // c.n_head) ** 0.5
        if c.scale_attn_by_inverse_layer_idx:
            scale /= float(i + 1)
        return scale

    def _blocks(self, input_ids, position_ids, attention):
        """The transformer over tokens of any leading shape [...].

        Args:
          input_ids, position_ids: [...] int32.
          attention: attention(i, q, k, v) -> [..., E], the attention of layer i given
            q, k, v of shape [..., E].
        Returns:
          [..., E] float32 after the final LayerNorm.
        """
        c, w = self.config, self.w
        eps = c.layer_norm_epsilon
        x = tf.gather(w["wte.weight"], input_ids) + tf.gather(w["wpe.weight"], position_ids)
        for i in range(c.n_layer):
            p = f"h.{i}."
            h = layers.layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            q, k, v = tf.split(layers.dense(h, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]), 3, axis=-1)
            x = x + layers.dense(attention(i, q, k, v), w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"])
            h = layers.layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            h = self._act(layers.dense(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]))
            x = x + layers.dense(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
        return layers.layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)

    def _prompt(self, input_ids, attention_mask):
        """Run a left-padded prompt: (hidden [B, T, E], per-layer keys and values [B, H, T, D])."""
        heads = self.config.n_head
        mask = tf.cast(attention_mask, tf.int32)
        bias = attention.bias_from_mask(attention.causal_allowed(mask, input_ids.shape[1]))[:, None]
        kvs = []

        def attend(i, q, k, v):
            q, k, v = (attention.split_heads(t, heads) for t in (q, k, v))
            kvs.append((k, v))
            return attention.merge_heads(attention.attend(q, k, v, bias, self._scale(i)))

        return self._blocks(input_ids, positions.from_mask(mask), attend), kvs

    def head(self, hidden):
        """Vocabulary logits: [..., E] -> [..., V] float32 (lm_head tied to wte unless the config says not)."""
        table = self.w["wte.weight"] if self.config.tie_word_embeddings else self.w["lm_head.weight"]
        return tf.einsum("...e,ve->...v", hidden, table)

    # -- the decoding interface (models/base.py) -------------------------------------------

    def prefill(self, input_ids, attention_mask, max_new_tokens, group=1):
        """Run the left-padded prompt once and set up the cache for G rows of N new tokens.

        Args:
          input_ids, attention_mask: [B, P] int32, static shapes.
          max_new_tokens: python int N.  group: python int G, rows decoded per prompt.
        Returns:
          (logits [B, V] float32 for the first new token, decoding state).
        """
        hidden, kvs = self._prompt(input_ids, attention_mask)
        state = {"kv": tuple(cache.start(k, v, group, max_new_tokens) for k, v in kvs),
                 "layout": cache.start_layout(attention_mask, group, max_new_tokens),
                 "position": positions.next_position(attention_mask)}
        return self.head(hidden[:, -1]), state

    def step(self, tokens, state):
        """Feed one token per row.

        Args:
          tokens: [B, G] int32.  state: as returned by prefill or step.
        Returns:
          (logits [B, G, V] float32 for the following token, new state).
        """
        c = self.config
        b, g = tokens.shape
        shape = [b, g, c.n_head, c.n_embd // c.n_head]
        layout, kvs = state["layout"], list(state["kv"])

        def attend(i, q, k, v):
            out, kvs[i] = attention.attend_step(*(tf.reshape(t, shape) for t in (q, k, v)), kvs[i], layout, self._scale(i))
            return tf.reshape(out, [b, g, c.n_embd])

        position = tf.broadcast_to((state["position"] + layout.step)[:, None], [b, g])
        hidden = self._blocks(tokens, position, attend)
        return self.head(hidden), dict(state, kv=tuple(kvs), layout=cache.advance(layout))

    def logits(self, input_ids, attention_mask):
        """Logits at every position in one forward pass.

        Args:
          input_ids, attention_mask: [B, T] int32.
        Returns:
          [B, T, V] float32.
        """
        return self.head(self._prompt(input_ids, attention_mask)[0])


def build(config, tensors, source):
    """The GPT2 module for a parsed config and {hub name: array} tensors."""
    return GPT2(config, tensors, source)
