"""Assisted decoding: a small model with the same vocabulary drafts K tokens, the model checks them.

The loop is loops/multi_token.py's (one multi-token model step checks the drafts, rows accept
their own counts; greedy, the tokens are plain greedy decoding's); only the drafter differs. The
assistant keeps its own cache, filled at each row's own positions with model.extend like the
target's: after a step, a row's assistant cache holds keys for positions the row may have
rejected, and the next round simply writes over them.

Each round the assistant is fed the tokens it has not seen: the last two of the row's
history (after a step that accepted all K drafts it never saw the last draft, nor the model's
own token after it; re-feeding a token it has seen rewrites the same key), then its own
choices one at a time, K tokens in all. Its scores go through the same processors and warpers
as the model's (transformers runs the assistant with the call's generation options): greedy,
it drafts their argmax; sampling, it draws from them and hands the probabilities on, and the
model keeps its drafts by speculative sampling (kernels/drafts.py), so the tokens are
distributed as the model's own samples.

Shapes: B prompts, G rows each (num_return_sequences when sampling), R = B*G rows, K draft
tokens, V vocabulary (the same for both models).
"""
import tensorflow as tf

from xlagen.kernels import cache
from xlagen.kernels.shapes import dim

from . import processing
from .common import flat, grouped, screened, screened_token
from .multi_token import draft_and_verify, draw, pick


def assisted_search(model, assistant, logits, model_state, history, input_ids, attention_mask, max_new_tokens,
                    knobs, strategy, prepared):
    """Decoding with an assistant model's drafts. See loops.decode.generate and the module docstring.

    Args:
      model, assistant: xlagen decoder-only models (models/base.py) with the same vocabulary.
      logits, model_state: what model.prefill returned.  history: [B, S] int32, the prefix.
      input_ids, attention_mask: [B, S] int32, the prompts as the model got them.
      strategy: loops.Strategy with drafter "assisted" (draft_tokens K, G rows per prompt).
    Returns:
      (tokens [B*G, N] int32, {"scores", "transition_scores", "steps", "accepted", "drafted"}).
    """
    k, group = strategy.draft_tokens, strategy.group
    draft_state = assistant.prefill(input_ids, attention_mask, knobs.decoder_start_id, max_new_tokens + k, group).state
    # Greedy drafts from the assistant's head screen (common.screened): its head is most of what a
    # draft step reads. A draft is a step of the rows loop (sampled drafts keep choice "draw")
    # whose scores output_scores never returns: output_scores gives the model's.
    screens = screened(assistant, strategy._replace(loop="rows", drafter=None, output_scores=False),
                              dim(input_ids, 0) * group)

    def extend(tokens, state, filled):
        """assistant.extend over the flat rows: tokens [R, T], filled [R] -> (logits [R, T, V],
        or with screens the hidden states [R, T, E], and the state)."""
        out = assistant.extend(grouped(tokens, group), state, grouped(filled, group), hidden=screens)
        return flat(out.hidden if screens else out.logits), out.state

    def propose(state, length, last):
        """(drafts [R, K] int32, count [R] int32 (K: an EOS draft ends the row where accepted),
        the probabilities q [R, K, V] the drafts were drawn from (None when greedy), the
        assistant's new state) for the rows of state (multi_token.LookupState)."""
        two = state.step >= 2  # else only the first new token exists: fed at position 0
        before = tf.gather(state.history, tf.maximum(length - 2, 0), batch_dims=1)
        logits, draft = extend(tf.stack([tf.where(two, before, last), last], axis=1), state.draft,
                               tf.where(two, state.step - 2, 0))
        logits = tf.where(two[:, None], logits[:, 1], logits[:, 0])  # after the row's last token

        def choose(i, logits, history):
            """Draft i from the assistant's logits [R, V] (with screens, hidden states [R, E])
            after the history: (token [R], its processed scores [R, V] (None with screens),
            the history with it written)."""
            if screens:
                token, scores = screened_token(assistant, logits, history, length + i, state.step + i, knobs,
                                               strategy, prepared, group), None
            else:
                scores = processing.scores(logits, history, length + i, state.step + i, knobs, strategy, prepared,
                                           group)
                token = pick(scores, knobs, strategy, draw(state, 2 + i, strategy))
            return token, scores, cache.write_at(history, token[:, None], length + i)

        def keep(q, scores, i):
            """q [R, K, V] with draft i's probabilities written (sampling; else the empty q)."""
            if not strategy.draws:
                return q
            return cache.update_slice(q, tf.nn.softmax(scores)[:, None], tf.stack([0, i, 0]))

        token, scores, history = choose(0, logits, state.history)
        tokens = cache.write_columns(tf.zeros_like(state.history[:, :k]), token[:, None], 0)
        q = keep(tf.zeros([dim(scores, 0), k, scores.shape[-1]] if strategy.draws else [0]), scores, 0)

        def more(i, token, history, tokens, q, draft):
            """Drafts 1..K-1, a loop rather than unrolled: the program holds one assistant step."""
            logits, draft = extend(token[:, None], draft, state.step + i - 1)
            token, scores, history = choose(i, logits[:, 0], history)
            return i + 1, token, history, cache.write_columns(tokens, token[:, None], i), keep(q, scores, i), draft

        _, _, _, tokens, q, draft = tf.while_loop(lambda i, *_: i < k, more, (1, token, history, tokens, q, draft))
        return tokens, tf.fill(tf.shape(state.step), k), q if strategy.draws else None, draft

    return draft_and_verify(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared, propose,
                            draft_state)
