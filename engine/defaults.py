"""transformers' generation defaults and which checkpoint file's defaults apply.

Precedence, as in transformers: the keyword given to generate, then the checkpoint's generation
defaults, then transformers' GenerationConfig defaults. The checkpoint's defaults are those of
generation_config.json; config.json's (transformers' GenerationConfig.from_model_config) only
when there is no generation_config.json, or when it says "_from_model_config": true (it was
derived from config.json) and config.json holds a generation key that differs from transformers'
default: transformers 4.57's deprecated legacy path (GenerationMixin._prepare_generation_config),
followed so that such checkpoints decode as there. A generation_config.json written on its own
always wins over a legacy config.json.
"""
import difflib

from xlagen.kernels.errors import GenerationArgumentError

# transformers' GenerationConfig defaults for every option xlagen understands.
DEFAULTS = {
    "max_length": 20, "max_new_tokens": None, "min_length": 0, "min_new_tokens": None,
    "do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None,
    "num_beams": 1, "num_return_sequences": 1, "length_penalty": 1.0, "early_stopping": False,
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "bos_token_id": None, "eos_token_id": None, "pad_token_id": None, "decoder_start_token_id": None,
    "output_scores": False, "penalty_alpha": None,
    "prompt_lookup_num_tokens": None, "max_matching_ngram_size": None, "num_assistant_tokens": None,
    # the controls of engine/loops/processing.py
    "bad_words_ids": None, "sequence_bias": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "typical_p": 1.0, "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0, "renormalize_logits": False, "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0, "remove_invalid_values": False, "exponential_decay_length_penalty": None,
    "stop_strings": None,
}
# transformers GenerationConfig fields that change tokens and that xlagen does not apply, with their
# defaults: a checkpoint that sets one is warned about at load; as a keyword it is refused.
NOT_APPLIED = {"constraints": None, "force_words_ids": None, "diversity_penalty": 0.0, "num_beam_groups": 1,
               "dola_layers": None, "guidance_scale": None, "max_time": None, "token_healing": False,
               "watermarking_config": None}
# GenerationConfig fields that leave the tokens as they are: bookkeeping, what is returned, how the
# cache is kept or compiled, and speed-ups whose greedy tokens are those of plain decoding
# (assisted decoding; prefill in chunks; low_memory's one-beam-at-a-time search).
IGNORED = {"_commit_hash", "_from_model_config", "transformers_version", "cache_config", "cache_implementation",
           "compile_config", "disable_compile", "return_legacy_cache", "use_cache", "low_memory",
           "prefill_chunk_size", "output_attentions", "output_hidden_states", "output_logits",
           "return_dict_in_generate", "is_assistant", "assistant_confidence_threshold", "assistant_early_exit",
           "assistant_lookbehind", "target_lookbehind", "num_assistant_tokens_schedule"}
# The generation keys (and transformers' defaults) whose non-default value in config.json sends
# transformers 4.57 down its legacy path (PretrainedConfig._get_global_generation_defaults).
LEGACY_KEYS = {"max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
               "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
               "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
               "bad_words_ids": None, "num_return_sequences": 1, "output_scores": False,
               "return_dict_in_generate": False, "forced_bos_token_id": None, "forced_eos_token_id": None,
               "remove_invalid_values": False, "exponential_decay_length_penalty": None, "suppress_tokens": None,
               "begin_suppress_tokens": None, "num_beam_groups": 1, "diversity_penalty": 0.0}
# transformers skips a warper or processor whose option is None: the neutral value does the same.
NEUTRAL = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}
# Options of generate's call only (never read from config files): (default).
EXTRA = {"pad_to_multiple_of": 8, "seed": None, "memory_limit": None, "logits_processor": None,
         "assistant_model": None}


def unapplied(defaults):
    """The {field: value} of a checkpoint's generation defaults that change tokens in transformers
    and that xlagen does not apply (NOT_APPLIED, set to a non-default value)."""
    return {k: v for k, v in defaults.items() if k in NOT_APPLIED and v is not None and v != NOT_APPLIED[k]}


def check_names(kwargs):
    """Raise GenerationArgumentError for a keyword generate does not know, naming the closest valid one."""
    valid = list(DEFAULTS) + list(EXTRA)
    for name in kwargs:
        if name in NOT_APPLIED:
            raise GenerationArgumentError(f"xlagen does not apply {name} (transformers' option); "
                                          f"see README 'Generation controls' for what it applies")
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid options: {', '.join(valid)}"
            raise GenerationArgumentError(f"generate() got an unknown option {name!r}{hint}")


def checkpoint_defaults(generation_config, model_config):
    """The generation defaults a checkpoint sets, chosen as transformers 4.57 chooses them (see
    the module docstring): {option: value}.

    Args:
      generation_config: dict from generation_config.json, or None (absent).
      model_config: the model's config dataclass; its .raw dict is config.json, and its fields
        give the special token ids config.json leaves to the model type's defaults.
    """
    legacy = any(model_config.raw.get(k) is not None and model_config.raw[k] != v for k, v in LEGACY_KEYS.items())
    if generation_config is not None and not (generation_config.get("_from_model_config") is True and legacy):
        return generation_config
    tokens = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    return dict(model_config.raw, **{k: getattr(model_config, k) for k in tokens if hasattr(model_config, k)})
