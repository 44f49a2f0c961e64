"""Prompt lookup decoding: each multi-token step drafts up to K tokens per row by copying what
followed the earliest earlier occurrence of the row's last n tokens (kernels/drafts.py); the
loop that checks them is loops/multi_token.py's.

Shapes: B prompts, G rows each, S prefix slots, N new tokens, K draft tokens.
"""
import tensorflow as tf

from xlagen.kernels import drafts, search
from xlagen.kernels.shapes import dim

from .multi_token import draft_and_verify


def prompt_lookup_search(model, logits, model_state, history, attention_mask, max_new_tokens, knobs, strategy,
                         prepared):
    """Decoding with prompt lookup drafts. See loops.decode.generate and the module docstring.

    Args:
      history: [B, S] int32, the prefix as the processors see it.  attention_mask: [B, S] int32
        (drafts never match across its padding).
      strategy: loops.Strategy with drafter "lookup" (draft_tokens K, max_ngram; G rows per prompt).
    Returns:
      (tokens [B*G, N] int32, {"scores", "transition_scores", "steps", "accepted", "drafted"}).
    """
    rows, prompt_len = dim(history, 0), history.shape[1]
    width = prompt_len + max_new_tokens + strategy.draft_tokens
    matchable = tf.concat([tf.cast(attention_mask, tf.bool), tf.ones([rows, width - prompt_len], tf.bool)], 1)
    matchable = tf.repeat(matchable, strategy.group, axis=0)

    def propose(state, length, last):
        proposed, count = drafts.prompt_lookup(tf.where(matchable, state.history, search.NO_TOKEN), length,
                                               strategy.draft_tokens, strategy.max_ngram)
        return proposed, count, None, state.draft

    return draft_and_verify(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared,
                            propose, {})
