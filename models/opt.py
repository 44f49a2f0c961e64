"""OPT, from Hub files, over the same cache and decoding interface as GPT-2.

Hub files name tensors `model.decoder.layers.0.self_attn.q_proj.weight` (or without the
`model.` prefix); torch Linear weights are [out, in] and are used as they are.
"""
import dataclasses
from typing import Optional, Union

import tensorflow as tf

from xlagen.kernels import layers, precision
from xlagen.kernels.errors import CheckpointFormatError

from . import config as config_lib
from .base import DecoderLM
from .checkpoint import strip_prefix

POSITION_OFFSET = 2  # OPT's learned positions start at table row 2


@dataclasses.dataclass(frozen=True)
class OPTConfig:
    """The fields of an OPT config.json that change the math (defaults: transformers' OPTConfig)."""
    vocab_size: int = 50272
    hidden_size: int = 768
    num_hidden_layers: int = 12
    ffn_dim: int = 3072
    max_position_embeddings: int = 2048
    do_layer_norm_before: bool = True
    _remove_final_layer_norm: bool = False
    word_embed_proj_dim: Optional[int] = None
    num_attention_heads: int = 12
    activation_function: str = "relu"
    enable_bias: bool = True
    layer_norm_elementwise_affine: bool = True
    tie_word_embeddings: bool = True
    bos_token_id: Optional[int] = 2
    eos_token_id: Union[int, list, None] = 2
    pad_token_id: Optional[int] = 1
    model_type: str = "opt"
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    is_encoder_decoder = False

    @property
    def max_positions(self):
        return self.max_position_embeddings

    @property
    def embed_dim(self):
        """Width of the token embeddings (word_embed_proj_dim; hidden_size when unset)."""
        return self.word_embed_proj_dim or self.hidden_size

    @property
    def has_final_layer_norm(self):
        return self.do_layer_norm_before and not self._remove_final_layer_norm

    def validate(self, source):
        config_lib.require_positive(self, source, "vocab_size", "hidden_size", "num_hidden_layers", "ffn_dim",
                                    "max_position_embeddings", "num_attention_heads", "word_embed_proj_dim")
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointFormatError(f"{source}: hidden_size={self.hidden_size} is not divisible by "
                                        f"num_attention_heads={self.num_attention_heads}")
        config_lib.require_activation(self.activation_function, source)


HUB_PREFIXES = ("model.",)


# Config fields that count layers (models.load_model checks them against the files).
LAYER_FIELDS = ("num_hidden_layers",)


def parse_config(data, source):
    """OPTConfig from a config.json dict."""
    return config_lib.from_dict(OPTConfig, data, source)


def hub_shapes(c):
    """Every tensor we read, by its Hub name (without `model.`), with its Hub shape."""
    d, e, f = c.hidden_size, c.embed_dim, c.ffn_dim
    shapes = {"decoder.embed_tokens.weight": (c.vocab_size, e),
              "decoder.embed_positions.weight": (c.max_position_embeddings + POSITION_OFFSET, d)}
    if e != d:
        shapes.update({"decoder.project_in.weight": (d, e), "decoder.project_out.weight": (e, d)})

    def norm(name):
        if c.layer_norm_elementwise_affine:
            shapes.update({name + ".weight": (d,), name + ".bias": (d,)})

    def linear(name, out_dim, in_dim):
        shapes[name + ".weight"] = (out_dim, in_dim)
        if c.enable_bias:
            shapes[name + ".bias"] = (out_dim,)

    if c.has_final_layer_norm:
        norm("decoder.final_layer_norm")
    for i in range(c.num_hidden_layers):
        p = f"decoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(p + "self_attn." + proj, d, d)
        norm(p + "self_attn_layer_norm")
        linear(p + "fc1", f, d)
        linear(p + "fc2", d, f)
        norm(p + "final_layer_norm")
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, e)
    return shapes


class OPT(DecoderLM):
    """OPT language model (OPTForCausalLM); decoding as models.base.DecoderLM."""

    def __init__(self, config, tensors, source="checkpoint"):
        super().__init__(name="opt")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_cache_layers = config.num_hidden_layers
        # torch Linear weights are [out, in], the layout kernels.layers.dense takes: nothing is transposed.
        self._load(config, strip_prefix(tensors, HUB_PREFIXES), hub_shapes(config), source)
        self._act = layers.activation(config.activation_function)

    def _scale(self, i):
        return 1.0  # OPT scales the queries before the product (see _blocks), as transformers does

    def _blocks(self, input_ids, position_ids, attend, memory):
        c, w = self.config, self.w
        before = c.do_layer_norm_before

        def norm(x, w, name):
            return layers.layer_norm(x, w.get(name + ".weight"), w.get(name + ".bias"), 1e-5)

        def linear(x, w, name):
            return layers.dense(x, w[name + ".weight"], w.get(name + ".bias"))

        def block(x, w, memory, scale):
            h = norm(x, w, "self_attn_layer_norm") if before else x
            q, k, v = (linear(h, w, "self_attn." + n) for n in ("q_proj", "k_proj", "v_proj"))
            out, memory = attend(q * (float(self.head_dim) ** -0.5), k, v, memory, scale)
            x = x + linear(out, w, "self_attn.out_proj")
            if not before:  # opt-350m: post-LayerNorm
                x = norm(x, w, "self_attn_layer_norm")
            h = norm(x, w, "final_layer_norm") if before else x
            x = x + linear(self._act(linear(h, w, "fc1")), w, "fc2")
            if not before:
                x = norm(x, w, "final_layer_norm")
            return x, memory

        x = precision.embed(w["decoder.embed_tokens.weight"], input_ids)
        if "decoder.project_in.weight" in w:
            x = layers.dense(x, w["decoder.project_in.weight"])
        x = x + precision.embed(w["decoder.embed_positions.weight"], position_ids + POSITION_OFFSET)
        x, memory = layers.stack(block, x, [(self.layer_weights(f"decoder.layers.{i}."), memory[i], self._scale(i))
                                            for i in range(c.num_hidden_layers)])
        if c.has_final_layer_norm:
            x = norm(x, w, "decoder.final_layer_norm")
        if "decoder.project_out.weight" in w:
            x = layers.dense(x, w["decoder.project_out.weight"])
        return x, memory

    @property
    def head_table(self):
        """The LM head's [V, E] weight: lm_head tied to embed_tokens unless untied."""
        return self.w["decoder.embed_tokens.weight" if self.config.tie_word_embeddings else "lm_head.weight"]


def build(config, tensors, source):
    """The OPT module for a parsed config and {hub name: array} tensors."""
    return OPT(config, tensors, source)
