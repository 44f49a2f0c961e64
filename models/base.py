"""What every xlagen model offers the decode loops, whatever its architecture.

    prefill(input_ids [B, P], attention_mask [B, P], start_id [], max_new_tokens N, group G, hidden=False)
        -> Prefilled(logits [B, V] for the first new token, state, prefix [B, S], hidden)
           hidden: with hidden=True the final hidden states [B, S, E] float32 at every
           prefix slot (see below), else None
    step(tokens [B, G], state, hidden=False) -> Stepped(logits [B, G, V] for the next token, state,
           hidden: [B, G, E] float32 of the fed tokens with hidden=True, else None)
    reorder(state, parents [B, G]) -> state      row g continues row parents[b, g]'s history
    head(hidden [..., E]) -> logits [..., V]     the LM head alone: dense(head_input(hidden), head_table)
    has_head_screen: python bool, greedy_token can pick a token from the hidden states
    greedy_token(hidden [R, E], banned [R, V] bool) -> (token [R] int32, decided [] bool)
           the argmax of the head's logits (banned ids excluded) from the int8 head screen;
           where not decided, the caller reads the whole head
    extend(tokens [B, G, T], state, filled [B, G], hidden=False) -> Stepped(logits [B, G, T, V],
           state, hidden [B, G, T, E] or None)
           T tokens per row at the row's own generated positions filled..filled+T-1 (a
           multi-token step: prompt lookup checks T draft positions with one read of the
           weights); decoder-only models (supports_extend True)
    logits(input_ids [B, T], attention_mask [B, T], decoder_input_ids [B, T'] or None) -> [B, T or T', V]
    continues_prompt: python bool (see below)
    supports_extend: python bool, the model has extend

The loops hold no model-specific branch: every model takes the same arguments and returns
the same things, as t5x's single tokens-to-logits boundary. input_ids may hold any id where
attention_mask is 0; the model embeds a valid id there. start_id (int32 scalar) is the
decoder start token: encoder-decoders begin their output with it, decoder-only models ignore
it. `prefix` is what generate's output holds before the new tokens and what the logits
processors see as the sequence so far: the prompt as given (decoder-only, continues_prompt
True) or the start token (encoder-decoder, continues_prompt False, where logits() scores
decoder_input_ids given the encoder's input_ids).

The hidden states (contrastive search's degeneration penalty) are the LM head's input, what
transformers returns as the last entry of hidden_states (decoder_hidden_states): after the
final norm (and OPT's project_out), before T5 v1.0's d_model**-0.5 rescale. Slot s of
prefill's [B, S, E] belongs to prefix slot s; padding slots hold meaningless values, and the
valid ones are those of state["layout"].prompt_mask [B, S]. hidden=False (the default) runs the
same computation and returns exactly the values it always did.

G is the number of rows decoded per prompt (samples, beams or contrastive candidates); they share the prompt's
cache. `state` is a dict of tensors whose shapes never change during decoding; its
"layout" entry is the kernels.cache.Layout that reorder acts on.
"""
from typing import NamedTuple, Optional

import tensorflow as tf

from xlagen.kernels import attention, cache, layers, positions, precision, screen
from xlagen.kernels.shapes import dim

from .checkpoint import take


class Prefilled(NamedTuple):
    """What prefill returns: logits [B, V] float32 for the first new token, the decoding state,
    the prefix [B, S] int32, and the final hidden states [B, S, E] float32 (hidden=True) or None."""
    logits: tf.Tensor
    state: dict
    prefix: tf.Tensor
    hidden: Optional[tf.Tensor] = None


class Stepped(NamedTuple):
    """What step and extend return: logits [B, G, (T,) V] float32 for the following token, the
    new decoding state, and the fed tokens' final hidden states [B, G, (T,) E] float32
    (hidden=True) or None."""
    logits: tf.Tensor
    state: dict
    hidden: Optional[tf.Tensor] = None


def embeddable(input_ids, attention_mask):
    """input_ids with 0 wherever attention_mask is 0: padding slots may hold any id (-100,
    NO_TOKEN), and an out-of-range id must never reach an embedding gather. [B, T] int32."""
    return tf.where(tf.cast(attention_mask, tf.bool), input_ids, tf.zeros_like(input_ids))


class CachedLM(tf.Module):
    """Base class of the models: weight loading and the beam reorder every cached model shares."""

    def _load(self, config, tensors, shapes, source, transposed=(), ignored=()):
        """Make self.w, one tf.Variable per Hub tensor in `shapes` ({name: Hub shape}), and
        self.unused, the names read but not used (minus `ignored` names and a tied lm_head).

        Dense kernels are kept as [out, in] (see kernels.layers.dense); `transposed` names the
        tensors the Hub stores as [in, out] (GPT-2's Conv1D), transposed once here.
        """
        self.config, self.vocab_size = config, config.vocab_size
        self._transposed = frozenset(transposed)
        self.w = {name: tf.Variable(take(tensors, name, shape, source, transpose=name in self._transposed),
                                    trainable=False, name=name.replace(".", "_"))
                  for name, shape in shapes.items()}
        self.unused = sorted(n for n in tensors if n not in self.w and not n.endswith(tuple(ignored))
                             and not (n == "lm_head.weight" and config.tie_word_embeddings))

    # Matrices kept float32 whatever load(dtype=, quantize=) asks (names ending so): small
    # tables read a few rows per step, where narrow storage saves nothing.
    float32_only = ()
    dtype, quantize = "float32", None
    supports_extend = False

    def store(self, dtype=None, quantize=None):
        """Store every matrix ([out, in] kernels and embedding tables; vectors stay float32) as
        dtype ("float32", "bfloat16") or quantized (quantize="int8": kernels.precision.Int8Weight,
        one scale per row). Computation stays float32. Returns self."""
        dtype, quantize = precision.check(dtype, quantize)
        if (dtype, quantize) == (self.dtype, self.quantize):
            return self
        if (self.dtype, self.quantize) != ("float32", None):
            raise ValueError("store() converts a float32 model once; load the checkpoint again for another precision")
        for name, var in list(self.w.items()):
            if var.shape.rank == 2 and not name.endswith(self.float32_only):
                self.w[name] = precision.lower(var.numpy(), dtype, quantize, name.replace(".", "_"))
        self.dtype, self.quantize, self.screen = dtype, quantize, None  # a narrow head needs no screen
        return self

    @property
    def weight_bytes(self):
        """Resident bytes of the weights, as stored, the head screen included (python int)."""
        return sum(precision.nbytes(w) for w in self.w.values()) + (self.screen.nbytes if self.screen else 0)

    # kernels.screen.HeadScreen of the LM head (see add_screen), or None.
    screen = None

    def head(self, hidden):
        """Vocabulary logits: hidden [..., E] float32 -> [..., V] float32, the product of
        head_input(hidden) and the model's head_table [V, E]."""
        return layers.dense(self.head_input(hidden), self.head_table)

    def head_input(self, hidden):
        """What the LM head multiplies: the final hidden states themselves, [..., E] float32."""
        return hidden

    @property
    def has_head_screen(self):
        """Whether greedy_token can pick greedy tokens from the head screen (python bool)."""
        return self.screen is not None

    def greedy_token(self, hidden, banned):
        """The head's argmax from its int8 screen (kernels.screen.argmax), exactly, for a model
        with has_head_screen.

        Args:
          hidden: [R, E] float32, final hidden states.  banned: [R, V] bool, ids that may not win.
        Returns:
          (token [R] int32, decided: scalar bool; where False the caller reads the whole head).
        """
        return screen.argmax(self.head_input(hidden), self.head_table, self.screen, banned)

    def add_screen(self, small=False):
        """Keep an int8 copy of the LM head that greedy steps read instead of the float32 head
        (kernels.screen: same tokens, a quarter of the head's bytes per step); a head of fewer
        than kernels.screen.MIN_ELEMENTS only with small=True. Only a float32 head gains from
        it: with dtype= or quantize= the head is narrow already and nothing is added. Returns self."""
        table = self.head_table
        large = table.shape.num_elements() >= screen.MIN_ELEMENTS
        # The screen bounds dense(head_input(hidden), head_table): a model whose head does more
        # (a bias, soft-capping) overrides head() and gets none.
        plain_head = type(self).head is CachedLM.head
        if (self.dtype, self.quantize) == ("float32", None) and self.screen is None and (large or small) and plain_head:
            self.screen = screen.build(table.numpy())
        return self

    def layer_weights(self, prefix):
        """{name after prefix: variable} of the weights named prefix + name (one layer's)."""
        return {name[len(prefix):]: var for name, var in self.w.items() if name.startswith(prefix)}

    def hub_tensors(self):
        """The weights as the Hub stores them: {hub name: np.ndarray float32} (the inverse of _load;
        low-precision weights widened)."""
        def numpy(var):
            return var.numpy() if isinstance(var, precision.Int8Weight) else var.numpy().astype("float32")
        return {name: (numpy(var).T if name in self._transposed else numpy(var)) for name, var in self.w.items()}

    def memory_estimate(self, batch, prompt_len, group, max_new_tokens):
        """Bytes one generate call allocates, before it allocates them: {part: bytes}.

        "kv cache": keys and values of every cached layer, the prompt's once per prompt and
        each row's generated ones (2 x layers x heads x head_dim x (B*P + B*G*N) x 4 bytes);
        "prompt attention": the [B, H, P, P] scores of one prefill layer;
        "logits": a few [B, G, V] float32 copies the processors and the search make;
        "widened weights", with low-precision weights: the float32 copy of every narrow matrix
        that a step of more than kernels.layers.looped_rows() rows uses for the call
        (or of the largest one, widened where a prompt uses it).
        A subclass with more cached tensors (T5's cross-attention) adds its own.
        """
        width = self.num_heads * self.head_dim
        slots = batch * prompt_len + batch * group * max_new_tokens
        parts = {"kv cache": 2 * self.num_cache_layers * width * slots * 4,
                 "prompt attention": batch * self.num_heads * prompt_len * prompt_len * 4,
                 "logits": 4 * batch * group * self.vocab_size * 4}
        low = [w for w in self.w.values() if precision.is_low(w)]
        if low:
            sizes = [w.shape.num_elements() for w in low]
            copied = sum(n for w, n in zip(low, sizes) if batch * group > layers.looped_rows(w))
            parts["widened weights"] = 4 * (copied or max(sizes))
        return parts

    def forward_memory_estimate(self, batch, length, decoder_length=None):
        """Bytes one logits() call allocates, before it allocates them: {part: bytes}.

        "logits": the [B, T, V] float32 output (T: decoder_length when given);
        "attention": the [B, H, T, T] scores of one layer; "keys and values": every layer's.
        """
        scored = length if decoder_length is None else decoder_length
        return {"logits": batch * scored * self.vocab_size * 4,
                "attention": batch * self.num_heads * max(length, scored) ** 2 * 4,
                "keys and values": 2 * self.num_cache_layers * self.num_heads * self.head_dim * batch * length * 4}

    def reorder(self, state, parents):
        """Row g of each prompt continues the history of row parents[b, g]; moves no keys or values."""
        return dict(state, layout=cache.reorder(state["layout"], parents))


class DecoderLM(CachedLM):
    """The decoding interface of a decoder-only transformer, given its layers.

    A subclass sets `num_heads`, `head_dim` and `num_cache_layers` and defines
      _blocks(input_ids, position_ids, attend, memory) -> (hidden [..., E], memory): the
        transformer over tokens of any leading shape, calling
        attend(q, k, v, memory[i], scale) -> ([..., H*D], new memory[i]) for the attention of
        layer i given its q, k, v of shape [..., H*D] and the python float _scale(i);
      _scale(i) -> python float multiplying the attention scores of layer i;
      head_table: the LM head's [V, E] weight, and head_input(hidden) when the head does more
        than multiply the final hidden states by it (a head that adds to the product overrides
        head() instead, and then gets no screen).

    Decoding state (B prompts, G rows per prompt):
      kv:       tuple of kernels.cache.LayerKV, one per layer
      layout:   kernels.cache.Layout (prompt mask, per-row ancestry, step)
      position: [B] int32, position id of the first new token (the prompt's real length)
    """

    def _prompt(self, input_ids, attention_mask):
        """Run a left-padded prompt: (hidden [B, T, E], per-layer keys and values [B, H, T, D])."""
        mask = tf.cast(attention_mask, tf.int32)
        bias = attention.bias_from_mask(attention.causal_allowed(mask, input_ids.shape[1]))[:, None]

        def attend(q, k, v, unused, scale):
            q, k, v = (attention.split_heads(t, self.num_heads) for t in (q, k, v))
            return attention.merge_heads(attention.attend(q, k, v, bias, scale)), (k, v)

        return self._blocks(input_ids, positions.from_mask(mask), attend, [None] * self.num_cache_layers)

    continues_prompt = True

    def prefill(self, input_ids, attention_mask, start_id, max_new_tokens, group=1, hidden=False):
        """Run the left-padded prompt once and set up the cache for G rows of N new tokens.

        Args:
          input_ids, attention_mask: [B, P] int32 (P static); ids under padding may be anything.
          start_id: ignored (decoder-only models continue the prompt).
          max_new_tokens: python int N.  group: python int G, rows decoded per prompt.
          hidden: python bool, also return the final hidden states of the prompt.
        Returns:
          Prefilled(logits [B, V] float32 for the first new token, decoding state, prefix:
          input_ids [B, P], hidden: with hidden=True the hidden states [B, P, E] float32 at every
          prompt position, else None).
        """
        states, kvs = self._prompt(embeddable(input_ids, attention_mask), attention_mask)
        state = {"kv": tuple(cache.start(k, v, group, max_new_tokens) for k, v in kvs),
                 "layout": cache.start_layout(attention_mask, group, max_new_tokens),
                 "position": positions.next_position(attention_mask)}
        return Prefilled(self.head(states[:, -1]), state, input_ids, states if hidden else None)

    def step(self, tokens, state, hidden=False):
        """Feed one token per row.

        Args:
          tokens: [B, G] int32.  state: as returned by prefill or step.
          hidden: python bool, also return the fed tokens' final hidden states.
        Returns:
          Stepped(logits [B, G, V] float32 for the following token, new state, hidden: with
          hidden=True the hidden states [B, G, E] float32, else None).
        """
        b, g = dim(tokens, 0), tokens.shape[1]
        shape = [b, g, self.num_heads, self.head_dim]
        layout = state["layout"]

        def attend(q, k, v, kv, scale):
            out, kv = attention.attend_step(*(tf.reshape(t, shape) for t in (q, k, v)), kv, layout, scale)
            return tf.reshape(out, [b, g, self.num_heads * self.head_dim]), kv

        position = tf.broadcast_to((state["position"] + layout.step)[:, None], [b, g])
        with layers.decode_step():
            states, kvs = self._blocks(tokens, position, attend, state["kv"])
            out = Stepped(self.head(states), dict(state, kv=tuple(kvs), layout=cache.advance(layout)),
                          states if hidden else None)
        return out

    supports_extend = True

    def extend(self, tokens, state, filled, hidden=False):
        """Feed T tokens per row at each row's own generated positions (a multi-token step).

        Rows may hold different numbers of generated positions (they accepted different numbers
        of draft tokens); the state's layout.step is neither read nor moved, and the cache needs
        room for filled + T positions (loops.decode.generate's prefill asks for N + K, K = T - 1).
        Args:
          tokens: [B, G, T] int32.  state: as returned by prefill or extend.
          filled: [B, G] int32, generated positions each row holds; its tokens take the next T.
          hidden: python bool, also return the fed tokens' final hidden states.
        Returns:
          Stepped(logits [B, G, T, V] float32, each for the token after tokens[..., t], new state,
          hidden: with hidden=True the hidden states [B, G, T, E] float32, else None).
        """
        b, g, t = dim(tokens, 0), tokens.shape[1], tokens.shape[2]
        shape = [b, g, t, self.num_heads, self.head_dim]
        layout = state["layout"]

        def attend(q, k, v, kv, scale):
            out, kv = attention.attend_tokens(*(tf.reshape(x, shape) for x in (q, k, v)), kv, layout, filled, scale)
            return tf.reshape(out, [b, g, t, self.num_heads * self.head_dim]), kv

        position = state["position"][:, None, None] + filled[:, :, None] + tf.range(t)
        with layers.decode_step():
            states, kvs = self._blocks(tokens, position, attend, state["kv"])
            out = Stepped(self.head(states), dict(state, kv=tuple(kvs)), states if hidden else None)
        return out

    def logits(self, input_ids, attention_mask, decoder_input_ids=None):
        """Logits at every position in one forward pass.

        Args:
          input_ids, attention_mask: [B, T] int32, left padded.  decoder_input_ids: unused (None).
        Returns:
          [B, T, V] float32; values at padding positions are meaningless.
        """
        return self.head(self._prompt(embeddable(input_ids, attention_mask), attention_mask)[0])
