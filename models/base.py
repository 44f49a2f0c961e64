"""What every xlagen model offers the decode loops, whatever its architecture.

    prefill(input_ids [B, P], attention_mask [B, P], max_new_tokens N, group G)
        -> (logits [B, V] for the first new token, state)
    step(tokens [B, G], state) -> (logits [B, G, V] for the next token, state)
    reorder(state, parents [B, G]) -> state      row g continues row parents[b, g]'s history
    logits(input_ids [B, T], attention_mask [B, T]) -> [B, T, V]

G is the number of rows decoded per prompt (samples or beams); they share the prompt's
cache. `state` is a dict of tensors whose shapes never change during decoding; its
"layout" entry is the kernels.cache.Layout the loops' reorder acts on.
"""
import tensorflow as tf

from xlagen.kernels import cache


class CachedLM(tf.Module):
    """Base class of the models: the beam reorder every cached model shares."""

    def reorder(self, state, parents):
        """Row g of each prompt continues the history of row parents[b, g]; moves no keys or values."""
        return dict(state, layout=cache.reorder(state["layout"], parents))
