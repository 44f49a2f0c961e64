"""GPT-2, from Hub files, with a preallocated KV cache.

The whole model in one file: the config, the map from Hub tensor names to ours, and the
forward pass. Hub files name tensors `h.0.attn.c_attn.weight` (or with a `transformer.`
prefix); GPT-2's Conv1D weights are (in, out) and are transposed once to the (out, in) of
kernels.layers.dense.
"""
import dataclasses
from typing import Optional, Union

import tensorflow as tf

from xlagen.kernels import layers, precision
from xlagen.kernels.errors import CheckpointFormatError

from . import config as config_lib
from .base import DecoderLM
from .checkpoint import strip_prefix


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """The fields of a GPT-2 config.json that change the math (defaults: transformers' GPT2Config).

    reorder_and_upcast_attn is not one: it only changes float16 attention, and xlagen computes in float32."""
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
        config_lib.require_activation(self.activation_function, source)


# transformers' GPT2Config.attribute_map: other spellings of the same fields.
ALIASES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
           "max_position_embeddings": "n_positions"}
HUB_PREFIXES = ("transformer.",)
# Buffers old checkpoints carry; they hold the causal mask, which we build ourselves.
IGNORED = ("attn.bias", "attn.masked_bias")


# Config fields that count layers (models.load_model checks them against the files).
LAYER_FIELDS = ("n_layer",)


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


class GPT2(DecoderLM):
    """GPT-2 language model (GPT2LMHeadModel); decoding as models.base.DecoderLM."""

    def __init__(self, config, tensors, source="checkpoint"):
        super().__init__(name="gpt2")
        self.num_heads, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.num_cache_layers = config.n_layer
        shapes = hub_shapes(config)
        conv1d = [name for name, shape in shapes.items() if len(shape) == 2 and name.startswith("h.")]
        self._load(config, strip_prefix(tensors, HUB_PREFIXES), shapes, source, transposed=conv1d, ignored=IGNORED)
        self._act = layers.activation(config.activation_function)

    def _scale(self, i):
        c = self.config
        scale = 1.0
        if c.scale_attn_weights:
            scale /= float(self.head_dim) ** 0.5
        if c.scale_attn_by_inverse_layer_idx:
            scale /= float(i + 1)
        return scale

    def _blocks(self, input_ids, position_ids, attend, memory):
        c, w = self.config, self.w
        eps = c.layer_norm_epsilon

        def block(x, w, memory, scale):
            h = layers.layer_norm(x, w["ln_1.weight"], w["ln_1.bias"], eps)
            q, k, v = tf.split(layers.dense(h, w["attn.c_attn.weight"], w["attn.c_attn.bias"]), 3, axis=-1)
            out, memory = attend(q, k, v, memory, scale)
            x = x + layers.dense(out, w["attn.c_proj.weight"], w["attn.c_proj.bias"])
            h = layers.layer_norm(x, w["ln_2.weight"], w["ln_2.bias"], eps)
            h = self._act(layers.dense(h, w["mlp.c_fc.weight"], w["mlp.c_fc.bias"]))
            return x + layers.dense(h, w["mlp.c_proj.weight"], w["mlp.c_proj.bias"]), memory

        x = precision.embed(w["wte.weight"], input_ids) + precision.embed(w["wpe.weight"], position_ids)
        x, memory = layers.stack(block, x, [(self.layer_weights(f"h.{i}."), memory[i], self._scale(i))
                                            for i in range(c.n_layer)])
        return layers.layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps), memory

    @property
    def head_table(self):
        """The LM head's [V, E] weight: lm_head tied to wte unless the config says not."""
        return self.w["wte.weight" if self.config.tie_word_embeddings else "lm_head.weight"]


def build(config, tensors, source):
    """The GPT2 module for a parsed config and {hub name: array} tensors."""
    return GPT2(config, tensors, source)
