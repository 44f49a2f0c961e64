"""Generation options: transformers' keyword names and defaults, resolved and checked in Python.

Precedence, as in transformers: the keyword given to generate, then generation_config.json,
then config.json, then transformers' GenerationConfig defaults.
"""
import dataclasses
import difflib
from typing import Optional

from xlagen.models import GenerationArgumentError

# transformers' GenerationConfig defaults for every option xlagen understands.
DEFAULTS = {
    "max_length": 20, "max_new_tokens": None, "min_length": 0, "min_new_tokens": None,
    "do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
    "num_beams": 1, "num_return_sequences": 1, "length_penalty": 1.0, "early_stopping": False,
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "bos_token_id": None, "eos_token_id": None, "pad_token_id": None, "decoder_start_token_id": None,
    "seed": None,
}
# Options of xlagen's own, not read from config files.
EXTRA = {"pad_to_multiple_of": 8}


@dataclasses.dataclass(frozen=True)
class Options:
    """Resolved options for one generate call (W = width of the prompt as given)."""
    max_new_tokens: int
    min_new_tokens: int
    eos_token_ids: tuple
    pad_token_id: int
    pad_to_multiple_of: int
    raw: dict


def _int(name, value, low=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationArgumentError(f"{name} must be an int, got {value!r}")
    if low is not None and value < low:
        raise GenerationArgumentError(f"{name} must be >= {low}, got {value}")
    return value


def _eos_list(value):
    if value is None:
        return ()
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, (list, tuple)):
        raise GenerationArgumentError(f"eos_token_id must be an int or a list of ints, got {value!r}")
    return tuple(_int("eos_token_id", v, 0) for v in values)


def check_names(kwargs):
    """Raise GenerationArgumentError for a keyword generate does not know, naming the closest valid one."""
    valid = list(DEFAULTS) + list(EXTRA)
    for name in kwargs:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid options: {', '.join(valid)}"
            raise GenerationArgumentError(f"generate() got an unknown option {name!r}{hint}")


def resolve(kwargs, generation_config, model_config, prompt_width, vocab_size):
    """Merge keyword options with the checkpoint's defaults and check them.

    Args:
      kwargs: the keywords given to generate.
      generation_config: dict from generation_config.json, or None.
      model_config: the model's config dataclass (its .raw dict supplies fallbacks).
      prompt_width: python int W, width of input_ids as given (max_length counts it).
      vocab_size: python int, token ids must be below it.
    Returns:
      Options.
    """
    check_names(kwargs)
    merged = dict(DEFAULTS, **EXTRA)
    for source in (model_config.raw, generation_config or {}):
        merged.update({k: v for k, v in source.items() if k in DEFAULTS and v is not None})
    # As in transformers, a keyword given as None overrides the checkpoint's value: eos_token_id=None
    # means "no EOS"; for options whose default is not None it restores that default.
    merged.update({k: DEFAULTS.get(k, EXTRA.get(k)) if v is None else v for k, v in kwargs.items()})

    if merged["num_beams"] != 1 or merged["do_sample"]:
        # TODO(issue 3, 4): sampling and beam search.
        raise GenerationArgumentError("only greedy decoding (do_sample=False, num_beams=1) is implemented so far")

    if merged["max_new_tokens"] is not None:
        max_new = _int("max_new_tokens", merged["max_new_tokens"], 1)
    else:
        max_length = _int("max_length", merged["max_length"])
        max_new = max_length - prompt_width
        if max_new < 1:
            raise GenerationArgumentError(
                f"max_length={max_length} leaves no room for new tokens after a prompt of width {prompt_width}; "
                f"pass max_new_tokens instead")
    min_new = _int("min_new_tokens", merged["min_new_tokens"], 0) if merged["min_new_tokens"] is not None else 0
    min_new = max(min_new, _int("min_length", merged["min_length"], 0) - prompt_width)

    eos = _eos_list(merged["eos_token_id"])
    pad = merged["pad_token_id"]
    if pad is None:
        pad = eos[0] if eos else 0  # transformers falls back to the first EOS id
    _int("pad_token_id", pad, 0)
    for name, ids in (("eos_token_id", eos), ("pad_token_id", (pad,))):
        if any(i >= vocab_size for i in ids):
            raise GenerationArgumentError(f"{name}={list(ids)} is outside the vocabulary [0, {vocab_size})")
    multiple = _int("pad_to_multiple_of", merged["pad_to_multiple_of"], 1)
    return Options(max_new, min_new, eos, pad, multiple, merged)
