"""T5 (v1.0 and v1.1 / flan-t5), from Hub files, with an encoder that runs once per call.

The decoder's self-attention uses the same cache as the decoder-only models (its "prompt"
is the decoder start token); the encoder output's keys/values for cross-attention are
computed once and shared by every sample or beam of a prompt. Hub names: `shared.weight`,
`encoder.block.0.layer.0.SelfAttention.q.weight`, ...; torch Linear weights are [out, in].
"""
import dataclasses
from typing import Optional, Union

import tensorflow as tf

from xlagen.kernels import attention, cache, layers, positions, precision
from xlagen.kernels.shapes import dim

from xlagen.kernels.errors import CheckpointFormatError, UnsupportedModelError

from . import config as config_lib
from .base import CachedLM, Prefilled, Stepped, embeddable


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The fields of a T5 config.json that change the math (defaults: transformers' T5Config)."""
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: Optional[int] = None
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    pad_token_id: Optional[int] = 0
    eos_token_id: Union[int, list, None] = 1
    bos_token_id: Optional[int] = None
    decoder_start_token_id: Optional[int] = 0
    model_type: str = "t5"
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    is_encoder_decoder = True
    max_positions = None  # relative positions: no fixed limit

    @property
    def decoder_layers(self):
        return self.num_decoder_layers if self.num_decoder_layers is not None else self.num_layers

    @property
    def gated(self):
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation_name(self):
        """transformers' dense_act_fn: gated-gelu means gelu_new."""
        name = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else name

    def validate(self, source):
        config_lib.require_positive(self, source, "vocab_size", "d_model", "d_kv", "d_ff", "num_layers",
                                    "num_decoder_layers", "num_heads", "relative_attention_num_buckets",
                                    "relative_attention_max_distance")
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or self.activation_name not in layers.ACTIVATIONS:
            raise UnsupportedModelError(
                f"{source}: feed_forward_proj {self.feed_forward_proj!r} is not supported; expected 'ACT' or "
                f"'gated-ACT' with ACT one of {', '.join(sorted(layers.ACTIVATIONS))}")
        if self.relative_attention_num_buckets < 4:
            raise CheckpointFormatError(f"{source}: relative_attention_num_buckets must be at least 4")


# Config fields that count layers (models.load_model checks them against the files).
LAYER_FIELDS = ("num_layers", "num_decoder_layers")


def parse_config(data, source):
    """T5Config from a config.json dict."""
    return config_lib.from_dict(T5Config, data, source)


def _stack_shapes(c, stack, n_layers, cross):
    e, inner, f = c.d_model, c.num_heads * c.d_kv, c.d_ff
    shapes = {f"{stack}.final_layer_norm.weight": (e,),
              f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
                  (c.relative_attention_num_buckets, c.num_heads)}
    for i in range(n_layers):
        p = f"{stack}.block.{i}.layer."
        attentions = ["0.SelfAttention"] + (["1.EncDecAttention"] if cross else [])
        for a, name in enumerate(attentions):
            shapes.update({f"{p}{name}.{x}.weight": (inner, e) for x in "qkv"})
            shapes[f"{p}{name}.o.weight"] = (e, inner)
            shapes[f"{p}{a}.layer_norm.weight"] = (e,)
        ff = len(attentions)
        wis = ["wi_0", "wi_1"] if c.gated else ["wi"]
        shapes.update({f"{p}{ff}.DenseReluDense.{w}.weight": (f, e) for w in wis})
        shapes[f"{p}{ff}.DenseReluDense.wo.weight"] = (e, f)
        shapes[f"{p}{ff}.layer_norm.weight"] = (e,)
    return shapes


def hub_shapes(c):
    """Every tensor we read, by its Hub name, with its Hub shape."""
    shapes = {"shared.weight": (c.vocab_size, c.d_model)}
    shapes.update(_stack_shapes(c, "encoder", c.num_layers, cross=False))
    shapes.update(_stack_shapes(c, "decoder", c.decoder_layers, cross=True))
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, c.d_model)
    return shapes


# Copies of shared.weight that checkpoints carry under other names.
TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


class T5(CachedLM):
    """T5ForConditionalGeneration. Decoding state (B prompts, G rows per prompt, S encoder slots):

      kv:       tuple of decoder-layer kernels.cache.LayerKV (prompt part: the start token)
      cross:    tuple of decoder-layer (k, v) [B, H, S, D] from the encoder output
      enc_mask: [B, S] int32, 1 for real encoder tokens
      layout:   kernels.cache.Layout of the decoder self-attention cache
    """
    float32_only = ("relative_attention_bias.weight",)

    def __init__(self, config, tensors, source="checkpoint"):
        super().__init__(name="t5")
        self.num_heads, self.head_dim = config.num_heads, config.d_kv
        self.num_cache_layers = config.decoder_layers
        self._load(config, tensors, hub_shapes(config), source, ignored=TIED_COPIES)  # Linear [out, in]: as is
        self._act = layers.activation(config.activation_name)

    # -- layers ----------------------------------------------------------------------------

    def _stack(self, stack, input_ids, attend_self, memory, attend_cross=None, cross=None):
        """An encoder or decoder stack over tokens of any leading shape [...].

        Layer i calls attend_self(q, k, v, memory[i]) -> ([..., H*D], new memory[i]) and, in
        the decoder, attend_cross(q, cross[i]) -> [..., H*D].
        Returns (hidden states [..., E] after the final RMS norm, [new memory[i]]).
        """
        c, eps = self.config, self.config.layer_norm_epsilon

        def block(x, w, memory, cross):
            h = layers.rms_norm(x, w["0.layer_norm.weight"], eps)
            q, k, v = (layers.dense(h, w[f"0.SelfAttention.{n}.weight"]) for n in "qkv")
            out, memory = attend_self(q, k, v, memory)
            x = x + layers.dense(out, w["0.SelfAttention.o.weight"])
            ff = "1."
            if attend_cross is not None:
                h = layers.rms_norm(x, w["1.layer_norm.weight"], eps)
                out = attend_cross(layers.dense(h, w["1.EncDecAttention.q.weight"]), cross)
                x = x + layers.dense(out, w["1.EncDecAttention.o.weight"])
                ff = "2."
            h = layers.rms_norm(x, w[ff + "layer_norm.weight"], eps)
            if c.gated:
                h = self._act(layers.dense(h, w[ff + "DenseReluDense.wi_0.weight"])) * layers.dense(
                    h, w[ff + "DenseReluDense.wi_1.weight"])
            else:
                h = self._act(layers.dense(h, w[ff + "DenseReluDense.wi.weight"]))
            return x + layers.dense(h, w[ff + "DenseReluDense.wo.weight"]), memory

        n_layers = c.num_layers if stack == "encoder" else c.decoder_layers
        cross = cross or [None] * n_layers
        # Layer 0 also holds the relative position table, used before the stack: every layer
        # then has the same weights and shares one trace.
        inputs = [({name: var for name, var in self.layer_weights(f"{stack}.block.{i}.layer.").items()
                    if "relative_attention_bias" not in name}, memory[i], cross[i]) for i in range(n_layers)]
        x, memory = layers.stack(block, precision.embed(self.w["shared.weight"], input_ids), inputs)
        return layers.rms_norm(x, self.w[f"{stack}.final_layer_norm.weight"], eps), memory

    def _position_bias(self, stack, relative_position):
        """Relative position bias [..., H] for int32 key - query distances [...]."""
        c = self.config
        bucket = positions.relative_bucket(relative_position, stack == "encoder", c.relative_attention_num_buckets,
                                           c.relative_attention_max_distance)
        return tf.gather(self.w[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], bucket)

    def _block_attention(self, bias):
        """attend(q, k, v, unused) over whole blocks [B, T, H*D] with an additive bias [B, H, T, S];
        its memory output is the block's keys and values [B, H, S, D]."""
        def attend(q, k, v, unused):
            q, k, v = (attention.split_heads(t, self.num_heads) for t in (q, k, v))
            return attention.merge_heads(attention.attend(q, k, v, bias, 1.0)), (k, v)  # T5 does not scale scores
        return attend

    def encode(self, input_ids, attention_mask):
        """The encoder: [B, S] int32 ids and mask -> [B, S, E] float32 (padding anywhere)."""
        s = input_ids.shape[1]
        relative = tf.range(s)[None, :] - tf.range(s)[:, None]  # key - query
        bias = tf.transpose(self._position_bias("encoder", relative), [2, 0, 1])[None]
        bias += attention.bias_from_mask(tf.cast(attention_mask, tf.bool))[:, None, None, :]
        return self._stack("encoder", input_ids, self._block_attention(bias), [None] * self.config.num_layers)[0]

    def _cross_kv(self, encoded):
        w = self.w
        return tuple((attention.split_heads(layers.dense(encoded, w[f"decoder.block.{i}.layer.1.EncDecAttention.k.weight"]), self.num_heads),
                      attention.split_heads(layers.dense(encoded, w[f"decoder.block.{i}.layer.1.EncDecAttention.v.weight"]), self.num_heads))
                     for i in range(self.config.decoder_layers))

    def _decode_block(self, decoder_input_ids, cross, enc_mask):
        """The decoder over whole [B, T] blocks (causal, right after position 0):
        (hidden [B, T, E], per-layer self-attention keys and values [B, H, T, D])."""
        t = decoder_input_ids.shape[1]
        relative = tf.range(t)[None, :] - tf.range(t)[:, None]
        bias = tf.transpose(self._position_bias("decoder", relative), [2, 0, 1])[None]
        bias += attention.bias_from_mask(relative <= 0)[None, None]
        cross_bias = attention.bias_from_mask(tf.cast(enc_mask, tf.bool))[:, None, None, :]

        def attend_cross(q, kv):
            q = attention.split_heads(q, self.num_heads)
            return attention.merge_heads(attention.attend(q, kv[0], kv[1], cross_bias, 1.0))

        return self._stack("decoder", decoder_input_ids, self._block_attention(bias),
                           [None] * self.config.decoder_layers, attend_cross, cross)

    @property
    def head_table(self):
        """The LM head's [V, E] weight: shared (tied, v1.0) or lm_head."""
        return self.w["shared.weight" if self.config.tie_word_embeddings else "lm_head.weight"]

    def head_input(self, hidden):
        """v1.0's tied head rescales the hidden states by d_model**-0.5: [..., E] -> [..., E]."""
        return hidden * self.config.d_model ** -0.5 if self.config.tie_word_embeddings else hidden

    # -- the decoding interface (models/base.py) -------------------------------------------

    def memory_estimate(self, batch, prompt_len, group, max_new_tokens):
        """As CachedLM.memory_estimate, for an encoder input of prompt_len tokens: the decoder's
        own cache starts from one token, and the cross-attention keys/values are cached too."""
        parts = super().memory_estimate(batch, 1, group, max_new_tokens)
        parts["prompt attention"] = batch * self.num_heads * prompt_len * prompt_len * 4
        parts["cross-attention cache"] = 2 * self.num_cache_layers * self.num_heads * self.head_dim * batch * prompt_len * 4
        return parts

    continues_prompt = False

    def prefill(self, input_ids, attention_mask, start_id, max_new_tokens, group=1, hidden=False):
        """Encode once, then run the decoder start token.

        Args:
          input_ids, attention_mask: [B, S] int32 encoder input (padding anywhere).
          start_id: int32 scalar, the decoder start token.
          max_new_tokens: python int N.  group: python int G.
          hidden: python bool, also return the start token's final decoder hidden state.
        Returns:
          Prefilled(logits [B, V] float32 for the first new token, decoding state, prefix: the
          start token [B, 1] int32, hidden: with hidden=True the decoder hidden states [B, 1, E]
          float32 (after the final norm, before v1.0's head rescale), else None).
        """
        mask = tf.cast(attention_mask, tf.int32)
        cross = self._cross_kv(self.encode(embeddable(input_ids, mask), mask))
        start = tf.fill([dim(input_ids, 0), 1], tf.cast(start_id, tf.int32))
        states, kvs = self._decode_block(start, cross, mask)
        state = {"kv": tuple(cache.start(k, v, group, max_new_tokens) for k, v in kvs), "cross": cross,
                 "enc_mask": mask, "layout": cache.start_layout(tf.ones_like(start), group, max_new_tokens)}
        return Prefilled(self.head(states[:, -1]), state, start, states if hidden else None)

    def step(self, tokens, state, hidden=False):
        """Feed one token per row: tokens [B, G] int32 -> Stepped(logits [B, G, V] float32, new
        state, hidden: with hidden=True the decoder hidden states [B, G, E] float32, else None)."""
        b, g = dim(tokens, 0), tokens.shape[1]
        shape = [b, g, self.num_heads, self.head_dim]
        layout, kvs = state["layout"], state["kv"]
        prompt_len, steps = kvs[0].prompt_k.shape[2], kvs[0].new_k.shape[1] // g
        query = prompt_len + layout.step
        prompt_bias = tf.transpose(self._position_bias("decoder", tf.range(prompt_len) - query))  # [H, P]
        new_bias = tf.transpose(self._position_bias("decoder", prompt_len + tf.range(steps) - query))  # [H, N]

        def attend_self(q, k, v, kv):
            out, kv = attention.attend_step(*(tf.reshape(t, shape) for t in (q, k, v)), kv, layout, 1.0,
                                            prompt_bias, new_bias)
            return tf.reshape(out, [b, g, self.num_heads * self.head_dim]), kv

        def attend_cross(q, kv):
            out = attention.attend_shared(tf.reshape(q, shape), kv[0], kv[1], state["enc_mask"], 1.0)
            return tf.reshape(out, [b, g, self.num_heads * self.head_dim])

        with layers.decode_step():
            states, kvs = self._stack("decoder", tokens, attend_self, kvs, attend_cross, state["cross"])
            out = Stepped(self.head(states), dict(state, kv=tuple(kvs), layout=cache.advance(layout)),
                          states if hidden else None)
        return out

    def logits(self, input_ids, attention_mask, decoder_input_ids=None):
        """Decoder logits, teacher-forced, in one pass.

        Args:
          input_ids, attention_mask: [B, S] int32.  decoder_input_ids: [B, T] int32 (required).
        Returns:
          [B, T, V] float32.
        """
        mask = tf.cast(attention_mask, tf.int32)
        encoded = self.encode(embeddable(input_ids, mask), mask)
        return self.head(self._decode_block(decoder_input_ids, self._cross_kv(encoded), mask)[0])


def build(config, tensors, source):
    """The T5 module for a parsed config and {hub name: array} tensors."""
    return T5(config, tensors, source)
