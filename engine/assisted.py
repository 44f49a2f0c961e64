"""Assisted decoding: a small model with the same vocabulary drafts K tokens, the model checks them.

The loop is engine/lookup.py's (one multi-token model step checks the drafts, rows accept
their own counts, the tokens are plain greedy decoding's); only the drafter differs. The
assistant keeps its own cache, filled at each row's own positions with model.extend like the
target's: after a step, a row's assistant cache holds keys for positions the row may have
rejected, and the next round simply writes over them.

Each round the assistant is fed the tokens it has not seen: the last two of the row's
history (after a step that accepted all K drafts it never saw the last draft, nor the model's
own token after it; re-feeding a token it has seen rewrites the same key), then its own
greedy choices one at a time, K tokens in all.

Shapes: R = B rows (G = 1), K draft tokens, V vocabulary (the same for both models).
"""
import tensorflow as tf

from . import lookup


def assisted_search(model, assistant, logits, model_state, history, input_ids, attention_mask, max_new_tokens,
                    knobs, strategy, prepared):
    """Greedy decoding with an assistant model's drafts. See decode.generate and the module docstring.

    Args:
      model, assistant: xlagen decoder-only models (models/base.py) with the same vocabulary.
      logits, model_state: what model.prefill returned.  history: [B, S] int32, the prefix.
      input_ids, attention_mask: [B, S] int32, the prompts as the model got them.
      strategy: decode.Strategy of kind "assisted" (draft_tokens K).
    Returns:
      (tokens [B, N] int32, {"scores", "transition_scores", "steps", "accepted", "drafted"}).
    """
    k, prompt_len = strategy.draft_tokens, history.shape[1]
    _, draft_state, _ = assistant.prefill(input_ids, attention_mask, knobs.decoder_start_id, max_new_tokens + k, 1)

    def propose(state):
        """(drafts [R, K] int32, count [R] int32 (K: an EOS draft ends the row where accepted),
        the assistant's new state) for the rows of state (lookup.LookupState)."""
        length = prompt_len + state.step
        two = state.step >= 2  # else only the first new token exists: fed at position 0
        last = tf.gather(state.history, length - 1, batch_dims=1)
        before = tf.gather(state.history, tf.maximum(length - 2, 0), batch_dims=1)
        fed = tf.stack([tf.where(two, before, last), last], axis=1)
        filled = tf.where(two, state.step - 2, 0)
        logits, draft = assistant.extend(fed[:, None], state.draft, filled[:, None])
        logits = tf.where(two[:, None], logits[:, 0, 1], logits[:, 0, 0])  # after the row's last token
        tokens = [tf.argmax(logits, axis=-1, output_type=tf.int32)]
        for i in range(1, k):  # the assistant's own greedy continuation, one position at a time
            logits, draft = assistant.extend(tokens[-1][:, None, None], draft, (state.step + i - 1)[:, None])
            tokens.append(tf.argmax(logits[:, 0, 0], axis=-1, output_type=tf.int32))
        proposed = tf.stack(tokens, axis=1)
        count = tf.fill(tf.shape(state.step), k)
        return proposed, count, draft

    return lookup.draft_and_verify(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared,
                                   propose, draft_state)
