"""Export a Generator's whole decode program as a SavedModel that serves without xlagen.

The SavedModel holds the weights and one jit-compiled function, prefill and decode loop
included, as its `serving_default` signature:

  inputs   input_ids, attention_mask   [batch, prompt_length] int32 (batch may be unknown)
           the strategy's numeric knobs, scalars (SIGNATURE_KNOBS): change them per request
  outputs  sequences                   [batch * num_return_sequences, prompt_length + N] int32
                                       ([.., 1 + N] for encoder-decoders), as Generator.generate
           with output_scores=True, the fields of generate's GenerateOutput:
           scores                      [N, rows, V] float32 (generate's tuple, stacked; steps the
                                       loop did not run hold 0), steps: scalar int32
           transition_scores           [batch * R, N] float32
           sequences_scores            [batch * R] float32, beam search only

Every other option (EOS ids, penalties, min_new_tokens, ...) is fixed at export time. Inputs are
not checked at serving time: ids under the mask must lie in [0, vocab_size), and decoder-only
prompts must be left padded.
"""
import os

import tensorflow as tf

from xlagen.kernels.errors import GenerationArgumentError

from . import loops, options, planning

# Signature inputs per strategy: (name, dtype). seed is one int64, split as generate(seed=int) does.
SIGNATURE_KNOBS = {
    "greedy": (),
    "lookup": (),
    "sample": (("temperature", tf.float32), ("top_k", tf.int32), ("top_p", tf.float64), ("seed", tf.int64)),
    "beam": (("length_penalty", tf.float64),),
    "contrastive": (("penalty_alpha", tf.float32),),
}


def _seed_pair(seed):
    """Scalar int64 -> [2] int32, the same halves as generate(seed=int) gives."""
    low = tf.bitwise.bitwise_and(seed, tf.constant(0x7FFFFFFF, tf.int64))
    return tf.cast(tf.stack([low, tf.bitwise.right_shift(seed, tf.constant(31, tf.int64))]), tf.int32)


class ExportedDecoder(tf.Module):
    """What the SavedModel holds: the model's weights and the `serve` function."""

    def __init__(self, model, plan, prompt_length, batch_size):
        super().__init__(name="xlagen_decoder")
        self.model = model
        opts, strategy = plan.opts, plan.strategy
        signature = SIGNATURE_KNOBS["sample" if strategy.draws else strategy.name]
        knob_names = [name for name, _ in signature]
        specs = [tf.TensorSpec([batch_size, prompt_length], tf.int32, name="input_ids"),
                 tf.TensorSpec([batch_size, prompt_length], tf.int32, name="attention_mask")]
        specs += [tf.TensorSpec([], dtype, name=name) for name, dtype in signature]

        def serve(input_ids, attention_mask, *values):
            given = dict(zip(knob_names, values))
            if "seed" in given:
                given["seed"] = _seed_pair(given["seed"])
            knobs = plan.knobs()._replace(**given)
            return loops.generate(model, input_ids, attention_mask, opts.max_new_tokens, knobs, strategy)

        self.serve = tf.function(serve, jit_compile=True, autograph=False, input_signature=specs)


def export(gen, directory, *, prompt_length, max_new_tokens, batch_size=None, **kwargs):
    """Write gen's decode program for one strategy as a SavedModel. See Generator.export."""
    for name, value, low in (("prompt_length", prompt_length, 1), ("max_new_tokens", max_new_tokens, 1)):
        options.int_option(name, value, low)
    if batch_size is not None:
        options.int_option("batch_size", batch_size, 1)
    if not planning.check_jit_compile(kwargs.pop("jit_compile", True)):
        raise GenerationArgumentError("export writes the compiled program, so it cannot take jit_compile=False; "
                                      "drop jit_compile (jit_compile=False is for running generate() eagerly)")
    if kwargs.get("assistant_model") is not None:
        raise GenerationArgumentError("export does not take assistant_model: the SavedModel would need the assistant's "
                                      "weights as well; export plain greedy decoding, or use prompt_lookup_num_tokens")
    if os.path.exists(directory) and os.listdir(directory):
        raise GenerationArgumentError(f"export directory {directory} is not empty; give a new or empty directory")
    opts = planning.options_for(gen, dict(kwargs, max_new_tokens=max_new_tokens), prompt_length)
    plan = planning.plan(gen, opts, batch_size, prompt_length, prompt_length, bucket=False)
    module = ExportedDecoder(gen.model, plan, prompt_length, batch_size)
    tf.saved_model.save(module, directory, signatures={"serving_default": module.serve.get_concrete_function()})
    return directory
