"""The decode program: one prefill, then the strategy's loop, as one traceable function.

A loop never looks inside the model, nor asks what kind it is: it calls `model.prefill`
once, then `model.step` per token (`model.extend` for multi-token steps, `model.reorder` when
beams swap), threading the model's state through a `tf.while_loop` whose shapes never change.
See models/base.py for that interface.

Shapes: B prompts, G rows per prompt (samples or beams), S prefix slots (the prompt bucket,
or 1 for an encoder-decoder's start token), N new tokens, V vocabulary, E EOS slots.
"""
import tensorflow as tf

from xlagen.kernels import search

from . import processing
from .assisted import assisted_search
from .beam_search import beam_search
from .contrastive import contrastive_search
from .prompt_lookup import prompt_lookup_search
from .rows import sample_or_greedy


def generate(model, input_ids, attention_mask, max_new_tokens, knobs, strategy):
    """Decode with the strategy's loop, prefill included, as one traceable function.

    Args:
      model: an xlagen model (models/base.py interface).
      input_ids: [B, S] int32, the prompts as given (left padded for decoder-only models, padded
        anywhere for encoder-decoders); padding slots may hold any id, NO_TOKEN included.
      attention_mask: [B, S] int32, 1 for real tokens.
      max_new_tokens: python int N >= 1.
      knobs: Knobs.  strategy: Strategy.
      B may be unknown (None) at trace time; every other size is static.
    Returns:
      {"sequences": [B*R, S' + N] int32}: the model's prefix (the prompt as given, or the
      decoder start token: S' = 1), then the new tokens, pad_id after EOS; R returns per prompt.
      With strategy.output_scores also (transformers' meanings):
        "scores": [N, rows, V] float32, the processed (and warped) scores of each step, rows
          B*R (greedy, sampling) or B*G (beam search: the beams as they stood at that step);
          steps the loop did not run hold 0;
        "transition_scores": [B*R, N] float32, each chosen token's entry of the step's scores
          (beam search: along the returned beam's own path, 0 after its end);
        "steps": scalar int32, the steps the loop ran (with draft tokens: the most new tokens
          of a row, the length of "scores");
        "sequences_scores": [B*R] float32, beam search only: the length-penalised score;
        "accepted", "drafted": [B, M] int32, prompt lookup and assisted decoding: per model step after the prefill,
          the drafts each row accepted and offered (-1 once the row has ended); M = N.
    """
    contrastive = strategy.loop == "contrastive"
    # Multi-token steps write up to K positions past the last new token.
    room = max_new_tokens + strategy.draft_tokens
    logits, model_state, prefix, hidden = model.prefill(input_ids, attention_mask, knobs.decoder_start_id, room,
                                                        strategy.group, hidden=contrastive)
    # The processors see what transformers' do: the prefix as given, valid padding ids included.
    valid = tf.logical_and(prefix >= 0, prefix < logits.shape[-1])
    history = tf.where(valid, prefix, search.NO_TOKEN)
    prepared = processing.prepare(input_ids, strategy.controls, max_new_tokens, logits.shape[-1])
    if contrastive:
        # hidden: [B, S, E], the prefix's final hidden states (the context the candidates are compared with)
        tokens, extra = contrastive_search(model, logits, model_state, history, max_new_tokens, knobs, strategy,
                                           prepared, hidden)
    elif strategy.drafter == "lookup":
        tokens, extra = prompt_lookup_search(model, logits, model_state, history, attention_mask, max_new_tokens,
                                             knobs, strategy, prepared)
    elif strategy.drafter == "assisted":
        tokens, extra = assisted_search(model, strategy.assistant, logits, model_state, history, input_ids,
                                        attention_mask, max_new_tokens, knobs, strategy, prepared)
    else:
        loop = beam_search if strategy.loop == "beam" else sample_or_greedy
        tokens, extra = loop(model, logits, model_state, history, max_new_tokens, knobs, strategy, prepared)
    out = {"sequences": tf.concat([tf.repeat(prefix, strategy.returns, axis=0), tokens], axis=1)}
    if strategy.output_scores:
        out.update(extra)
    return out


