"""What every decode loop shares: the row layout helpers, the stop-string check, the ranking
of scores, the output buffers and the greedy token from the head screen.

Shapes: B prompts, G rows per prompt, R = B*G rows, S prefix slots, N new tokens, V vocabulary.
"""
import tensorflow as tf

from xlagen.kernels import screen, search, stopping
from xlagen.kernels.shapes import dim

from . import processing

def stopped(history, length, knobs, strategy):
    """Which rows end with a stop string once `length` history slots are filled: [R] bool
    (all False without stop strings). history: [R, S + N] int32."""
    if not strategy.controls.stop:
        return tf.zeros([dim(history, 0)], tf.bool)
    return stopping.stop_string_hits(history, length, knobs.controls.stop)


def ranked(scores, strategy):
    """The scores greedy and beam search rank. exponential_decay_length_penalty makes NaN where
    an earlier processor set an EOS logit to -inf (-inf + inf), and so may the caller's
    processors; transformers (torch) then ranks the NaN first, and so do these programs. Without
    those processors nothing can be NaN and the scores are ranked as they are."""
    if strategy.controls.length_decay or strategy.controls.custom:
        return search.nan_first(scores)
    return scores


def flat(x):
    """[B, G, ...] -> [B*G, ...]"""
    return tf.reshape(x, [-1] + x.shape[2:].as_list())


def grouped(x, group):
    """[B*G, ...] -> [B, G, ...]"""
    return tf.reshape(x, [-1, group] + x.shape[1:].as_list())


def prompt_history(prefix, group, max_new_tokens):
    """[B, S] prefix ids -> [B, G, S + N] histories with the new slots empty (NO_TOKEN)."""
    b, s = dim(prefix, 0), prefix.shape[1]
    future = tf.fill([b, max_new_tokens], search.NO_TOKEN)
    return tf.broadcast_to(tf.concat([prefix, future], 1)[:, None], [b, group, s + max_new_tokens])


def score_buffer(rows, vocab, max_new_tokens, strategy):
    """The [N, R, V] per-step scores, or an empty placeholder without output_scores."""
    return tf.zeros([max_new_tokens, rows, vocab] if strategy.output_scores else [0])


def transition_buffer(rows, max_new_tokens, strategy):
    """The [R, N] chosen tokens' scores, or an empty [R, 0] placeholder without output_scores.

    Never a loop-invariant [R, N] constant: TensorFlow copies such constants into the loop body
    under names whose numbering follows Python's hash seed, which would give every process a
    different program and defeat the persistent compile cache."""
    return tf.zeros([rows, max_new_tokens if strategy.output_scores else 0])


def screened(model, strategy, rows):
    """Whether a program's greedy steps pick their token from the model's head screen
    (kernels.screen) instead of the whole float32 head: traced for XLA (eagerly, the plain head
    is what a reader steps through), greedy decoding (loops.assisted asks it of its
    assistant's drafts as greedy steps), a model with has_head_screen, of at most kernels.screen.MAX_ROWS
    rows known at trace time, without output_scores, and without a processor that changes a
    logit other than the two checked inside the program (min_new_tokens' EOS ban, which the
    screen applies too, and a repetition_penalty other than 1, which reads the whole head).
    Stop strings change no logit. rows: python int, or a tensor when unknown."""
    return (model.has_head_screen and strategy.loop == "rows" and strategy.choice == "argmax"
            and not strategy.output_scores
            and not strategy.no_repeat_ngram_size and strategy.controls._replace(stop=()) == processing.Controls()
            and isinstance(rows, int) and rows <= screen.MAX_ROWS and not tf.executing_eagerly())


def screened_token(model, hidden, history, length, step, knobs, strategy, prepared, group):
    """Greedy's token from the model's head screen (where screened() holds): hidden [R, E]
    float32, the final hidden states; history, length, step as for processing.scores (step a
    scalar or [R] int32). Returns [R] int32, the argmax of the processed logits."""
    def whole_head():
        scores = processing.scores(model.head(hidden), history, length, step, knobs, strategy, prepared, group)
        return tf.argmax(scores, axis=-1, output_type=tf.int32)

    # The processors left are min_new_tokens' EOS ban, which the screen applies, and the
    # repetition penalty: not 1, the whole head is read (the screen's token is not used).
    banned = search.suppressed(model.vocab_size, knobs.eos_ids, step < knobs.min_new_tokens)
    token, decided = model.greedy_token(hidden, banned)
    return tf.cond(tf.logical_and(decided, tf.equal(knobs.repetition_penalty, 1.0)), lambda: token, whole_head)

