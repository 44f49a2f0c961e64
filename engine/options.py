"""Generation options: transformers' keyword names resolved against the checkpoint's defaults
(engine/defaults.py) and checked in Python, before any narrowing cast: parse() gives the Options
of one call."""
import dataclasses

import numpy as np

from xlagen.kernels.errors import GenerationArgumentError

from .defaults import DEFAULTS, EXTRA, NEUTRAL, check_names, checkpoint_defaults
from .stop_strings import check_stop_strings


@dataclasses.dataclass(frozen=True)
class ControlOptions:
    """The options of the controls (engine/loops/processing.py), resolved; the defaults switch all off."""
    bad_words_ids: tuple = ()          # ((ids...), ...), each at least one id, [eos] entries dropped
    sequence_bias: tuple = ()          # (((ids...), bias float), ...)
    suppress_tokens: tuple = ()
    begin_suppress_tokens: tuple = ()
    forced_bos_token_id: object = None
    forced_eos_token_ids: tuple = ()
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    renormalize_logits: bool = False
    encoder_repetition_penalty: float = 1.0
    encoder_no_repeat_ngram_size: int = 0
    remove_invalid_values: bool = False
    exponential_decay_length_penalty: object = None  # (start int, factor float) or None
    stop_strings: tuple = ()
    logits_processor: tuple = ()       # the caller's functions, in order


@dataclasses.dataclass(frozen=True)
class Options:
    """Resolved options for one generate call."""
    max_new_tokens: int
    min_new_tokens: int
    eos_token_ids: tuple
    pad_token_id: int
    decoder_start_token_id: int
    pad_to_multiple_of: int
    do_sample: bool
    num_beams: int
    num_return_sequences: int
    early_stopping: object
    length_penalty: float
    no_repeat_ngram_size: int
    output_scores: bool
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    penalty_alpha: float  # contrastive search when > 0 with top_k > 1 (greedy mode only)
    seed: tuple  # two int32 halves of the stateless RNG seed
    memory_limit: object  # bytes a call may allocate, or None for the Generator's limit
    controls: ControlOptions = ControlOptions()
    prompt_lookup_num_tokens: int = 0  # K draft tokens per step (engine/loops/prompt_lookup.py); 0 is off
    max_matching_ngram_size: int = 2
    assistant_model: object = None  # an xlagen Generator drafting num_assistant_tokens (engine/loops/assisted.py)
    num_assistant_tokens: int = 0


def int_option(name, value, low=None):
    """The option `name`, checked: a python int >= low (GenerationArgumentError naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationArgumentError(f"{name} must be an int, got {value!r}")
    if low is not None and value < low:
        raise GenerationArgumentError(f"{name} must be >= {low}, got {value}")
    return value


def float_option(name, value, low, high, low_open=False):
    """The option `name`, checked: a python float in [low, high] ((low, high] with low_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenerationArgumentError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (value > low if low_open else value >= low) or value > high:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise GenerationArgumentError(f"{name} must be in {interval}, got {value}")
    return value


def _bool(name, value):
    if not isinstance(value, bool):
        raise GenerationArgumentError(f"{name} must be True or False, got {value!r}")
    return value


def _seed(value):
    """An int or a pair of ints (transformers' TF `seed=(a, b)`) -> two int32 halves; None draws one."""
    if value is None:
        return tuple(int(x) for x in np.random.default_rng().integers(0, 2**31 - 1, size=2))
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 2**62:
            raise GenerationArgumentError(f"seed must be in [0, 2**62), got {value}")
        return (value & 0x7FFFFFFF, value >> 31)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and -2**31 <= v < 2**31 for v in value)):
        return tuple(value)
    raise GenerationArgumentError(f"seed must be an int or a pair of int32 values, got {value!r}")


def _eos_list(value):
    if value is None:
        return ()
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, (list, tuple)):
        raise GenerationArgumentError(f"eos_token_id must be an int or a list of ints, got {value!r}")
    return tuple(int_option("eos_token_id", v, 0) for v in values)


def _token(name, value, vocab_size):
    int_option(name, value, 0)
    if value >= vocab_size:
        raise GenerationArgumentError(f"{name} holds token id {value}, outside the vocabulary [0, {vocab_size})")
    return value


def _token_list(name, value, vocab_size):
    """An int or a list of ints -> a tuple of token ids (None: empty)."""
    if value is None:
        return ()
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, (list, tuple)):
        raise GenerationArgumentError(f"{name} must be a list of token ids, got {value!r}")
    return tuple(_token(name, v, vocab_size) for v in values)


def _sequences(name, value, vocab_size):
    """A list of token id lists -> a tuple of non-empty tuples (None: empty)."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(seq, (list, tuple)) and seq for seq in value):
        raise GenerationArgumentError(f"{name} must be a list of non-empty lists of token ids, e.g. [[42], [7, 9]], "
                                      f"got {value!r}")
    return tuple(_token_list(name, list(seq), vocab_size) for seq in value)


def _bad_words(value, eos, vocab_size):
    """transformers' NoBadWordsLogitsProcessor: distinct sequences, a lone EOS id dropped (so that
    generation can end)."""
    sequences = dict.fromkeys(_sequences("bad_words_ids", value, vocab_size))
    return tuple(seq for seq in sequences if not (len(seq) == 1 and seq[0] in eos))


def _sequence_bias(value, vocab_size):
    """{(ids...): bias} or [[[ids...], bias], ...] -> (((ids...), bias), ...), later entries win."""
    if value is None:
        return ()
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise GenerationArgumentError(f"sequence_bias must be a dict {{(ids...): bias}} or a list of [[ids...], bias] "
                                      f"pairs, e.g. [[[42], -5.0], [[7, 9], 2.0]], got {value!r}")
    biases = {}
    for ids, bias in pairs:
        ids = _sequences("sequence_bias", [list(ids) if isinstance(ids, (list, tuple)) else ids], vocab_size)[0]
        biases[ids] = float_option("sequence_bias", bias, float("-inf"), float("inf"))
    return tuple(biases.items())


def _decay(value):
    """exponential_decay_length_penalty: (start_index, decay_factor) or None."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise GenerationArgumentError(f"exponential_decay_length_penalty must be (start_index, decay_factor), "
                                      f"got {value!r}")
    return int_option("exponential_decay_length_penalty[0]", value[0], 0), float_option(
        "exponential_decay_length_penalty[1]", value[1], 0.0, float("inf"), low_open=True)


def _processors(value):
    if value is None:
        return ()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for f in values:
        if not callable(f):
            raise GenerationArgumentError(f"logits_processor must be a list of functions "
                                          f"f(logits [R, V], history [R, S], step) -> [R, V], got {f!r}")
    return tuple(values)


# Draft tokens per model step with an assistant model when num_assistant_tokens is not given:
# a check of 4 positions costs about 1.47x a one-token step at GPT-2-small shape on this CPU, and
# K = 3 measured fastest for an agreeing 2-layer draft (BENCHMARKS.md).
ASSISTANT_TOKENS = 3


def _drafts(merged, kwargs, multi_token, *, beams, contrastive, stop, custom):
    """The multi-token step options, checked: {Options field: value}: prompt_lookup_num_tokens
    and max_matching_ngram_size (engine/loops/prompt_lookup.py), or assistant_model and num_assistant_tokens
    (engine/loops/assisted.py).

    Both run greedy decoding or sampling (engine/loops/prompt_lookup.py). Given as a keyword, a combination
    they cannot run is refused; prompt lookup set by the checkpoint's generation_config is then
    left off (the tokens are plain decoding's either way: the same greedy tokens, samples from
    the same distribution)."""
    k, assistant = merged["prompt_lookup_num_tokens"], merged["assistant_model"]
    if assistant is not None and "prompt_lookup_num_tokens" not in kwargs:
        k = None  # the checkpoint's prompt lookup gives way to an assistant given to this call
    if k is None and assistant is None:
        return {}
    name = "prompt_lookup_num_tokens" if assistant is None else "assistant_model"
    conflicts = [what for what, on in (("num_beams > 1", beams > 1),
                                       ("penalty_alpha (contrastive search)", contrastive),
                                       ("stop_strings", bool(stop)), ("logits_processor", bool(custom)))
                 if on]
    if k is not None and assistant is not None:
        conflicts.append("prompt_lookup_num_tokens (one drafter at a time)")
    if not multi_token:
        conflicts.append("an encoder-decoder model (draft tokens need a decoder-only model: GPT-2, OPT)")
    if conflicts:
        if name in kwargs:
            raise GenerationArgumentError(
                f"{name} runs greedy decoding or sampling with draft tokens, and cannot run with "
                f"{', '.join(conflicts)}; "
                f"drop {name} or those options")
        return {}
    if assistant is not None:
        count = merged["num_assistant_tokens"]
        return {"assistant_model": assistant,
                "num_assistant_tokens": ASSISTANT_TOKENS if count is None else int_option("num_assistant_tokens", count, 1)}
    ngram = merged["max_matching_ngram_size"]
    return {"prompt_lookup_num_tokens": int_option("prompt_lookup_num_tokens", k, 1),
            "max_matching_ngram_size": 2 if ngram is None else int_option("max_matching_ngram_size", ngram, 1)}


def parse(kwargs, generation_config, model_config, prompt_width, vocab_size, multi_token=True):
    """Merge keyword options with the checkpoint's defaults and check them.

    Args:
      kwargs: the keywords given to generate.
      generation_config: dict from generation_config.json, or None (absent).
      model_config: the model's config dataclass (config.json), for checkpoint_defaults.
      prompt_width: python int W, the sequence length before the new tokens (max_length and
        min_length count it; a max_length left at transformers' default of 20 means 20 new tokens): the prompt's width, or 1 (the start token) for encoder-decoders.
      vocab_size: python int, token ids must be below it.
      multi_token: python bool, the model takes multi-token steps (prompt lookup).
    Returns:
      Options.
    """
    check_names(kwargs)
    merged = dict(DEFAULTS, **EXTRA)
    merged.update({k: v for k, v in checkpoint_defaults(generation_config, model_config).items()
                   if k in DEFAULTS and v is not None})
    # As in transformers, a keyword given as None overrides the checkpoint's value: eos_token_id=None
    # means "no EOS", top_k=None "no top-k"; for other options it restores the default.
    merged.update({k: NEUTRAL.get(k, DEFAULTS.get(k, EXTRA.get(k))) if v is None else v for k, v in kwargs.items()})

    do_sample = _bool("do_sample", merged["do_sample"])
    beams = int_option("num_beams", merged["num_beams"], 1)
    if beams > 1 and do_sample:
        raise GenerationArgumentError("beam sampling (num_beams > 1 with do_sample=True) is not supported; "
                                      "use do_sample=False for beam search, or num_beams=1 to sample")
    returns = int_option("num_return_sequences", merged["num_return_sequences"], 1)
    if returns > 1 and not do_sample and beams == 1:
        raise GenerationArgumentError(
            f"num_return_sequences={returns} needs do_sample=True or num_beams >= {returns} "
            f"(greedy decoding returns one sequence per prompt)")
    if beams > 1 and returns > beams:
        raise GenerationArgumentError(
            f"num_return_sequences={returns} is more than num_beams={beams}; beam search returns at most num_beams "
            f"sequences per prompt")
    early_stopping = merged["early_stopping"]
    if early_stopping not in (True, False, "never"):
        raise GenerationArgumentError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    length_penalty = float_option("length_penalty", merged["length_penalty"], float("-inf"), float("inf"))
    sampling = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)  # warpers apply only when sampling
    if do_sample:
        sampling = dict(temperature=float_option("temperature", merged["temperature"], 0.0, float("inf"), low_open=True),
                        top_k=int_option("top_k", merged["top_k"], 0),
                        top_p=float_option("top_p", merged["top_p"], 0.0, 1.0, low_open=True),
                        min_p=float_option("min_p", 0.0 if merged["min_p"] is None else merged["min_p"], 0.0, 1.0))
    penalty = float_option("repetition_penalty", merged["repetition_penalty"], 0.0, float("inf"), low_open=True)
    alpha = float_option("penalty_alpha", 0.0 if merged["penalty_alpha"] is None else merged["penalty_alpha"], 0.0, 1.0)
    if alpha > 0 and not do_sample and beams == 1:
        # transformers' GenerationMode: contrastive search needs top_k > 1; its top_k is the candidate count.
        candidates = int_option("top_k", merged["top_k"], 0)
        if candidates > 1:
            if returns > 1:
                raise GenerationArgumentError("contrastive search (penalty_alpha > 0) returns one sequence per prompt; "
                                              "drop num_return_sequences")
            sampling = dict(sampling, top_k=candidates)
        else:
            alpha = 0.0
    ngram = int_option("no_repeat_ngram_size", merged["no_repeat_ngram_size"], 0)

    if merged["max_new_tokens"] is not None:
        max_new = int_option("max_new_tokens", merged["max_new_tokens"], 1)
    else:
        max_length = int_option("max_length", merged["max_length"])
        if kwargs.get("max_length") is None and max_length == DEFAULTS["max_length"]:
            # transformers' _prepare_generated_length: an untouched default max_length means 20 new
            # tokens, within the model's positions.
            max_length += prompt_width
            if model_config.max_positions is not None:
                max_length = min(max_length, model_config.max_positions)
        max_new = max_length - prompt_width
        if max_new < 1:
            raise GenerationArgumentError(
                f"max_length={max_length} leaves no room for new tokens after a prompt of width {prompt_width}; "
                f"pass max_new_tokens instead")
    min_new = int_option("min_new_tokens", merged["min_new_tokens"], 0) if merged["min_new_tokens"] is not None else 0
    min_new = max(min_new, int_option("min_length", merged["min_length"], 0) - prompt_width)

    eos = _eos_list(merged["eos_token_id"])
    pad = merged["pad_token_id"]
    if pad is None:
        pad = eos[0] if eos else 0  # transformers falls back to the first EOS id
    int_option("pad_token_id", pad, 0)
    for name, ids in (("eos_token_id", eos), ("pad_token_id", (pad,))):
        if any(i >= vocab_size for i in ids):
            raise GenerationArgumentError(f"{name}={list(ids)} is outside the vocabulary [0, {vocab_size})")
    start = merged["decoder_start_token_id"]
    if start is None:
        start = merged["bos_token_id"] if merged["bos_token_id"] is not None else 0
    int_option("decoder_start_token_id", start, 0)
    if start >= vocab_size:
        raise GenerationArgumentError(f"decoder_start_token_id={start} is outside the vocabulary [0, {vocab_size})")
    # The controls (engine/loops/processing.py); the warpers among them apply only when sampling, as in transformers.
    warpers = dict(typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
    if do_sample:
        warpers = dict(typical_p=float_option("typical_p", merged["typical_p"], 0.0, 1.0, low_open=True),
                       epsilon_cutoff=float_option("epsilon_cutoff", merged["epsilon_cutoff"], 0.0, 1.0),
                       eta_cutoff=float_option("eta_cutoff", merged["eta_cutoff"], 0.0, 1.0))
        for name in ("epsilon_cutoff", "eta_cutoff"):
            if warpers[name] >= 1.0:
                raise GenerationArgumentError(f"{name} must be in [0, 1), got {warpers[name]}")
    stop = merged["stop_strings"]
    controls = dict(
        bad_words_ids=_bad_words(merged["bad_words_ids"], eos, vocab_size),
        sequence_bias=_sequence_bias(merged["sequence_bias"], vocab_size),
        suppress_tokens=_token_list("suppress_tokens", merged["suppress_tokens"], vocab_size),
        begin_suppress_tokens=_token_list("begin_suppress_tokens", merged["begin_suppress_tokens"], vocab_size),
        forced_bos_token_id=None if merged["forced_bos_token_id"] is None
        else _token("forced_bos_token_id", merged["forced_bos_token_id"], vocab_size),
        forced_eos_token_ids=_token_list("forced_eos_token_id", merged["forced_eos_token_id"], vocab_size),
        renormalize_logits=_bool("renormalize_logits", merged["renormalize_logits"]),
        encoder_repetition_penalty=float_option("encoder_repetition_penalty", merged["encoder_repetition_penalty"], 0.0,
                                          float("inf"), low_open=True),
        encoder_no_repeat_ngram_size=int_option("encoder_no_repeat_ngram_size", merged["encoder_no_repeat_ngram_size"], 0),
        remove_invalid_values=_bool("remove_invalid_values", merged["remove_invalid_values"]),
        exponential_decay_length_penalty=_decay(merged["exponential_decay_length_penalty"]),
        stop_strings=() if stop is None else check_stop_strings(stop),
        logits_processor=_processors(merged["logits_processor"]), **warpers)
    lookup = _drafts(merged, kwargs, multi_token, beams=beams, contrastive=alpha > 0 and not do_sample,
                     stop=controls["stop_strings"], custom=controls["logits_processor"])
    multiple = int_option("pad_to_multiple_of", merged["pad_to_multiple_of"], 1)
    memory_limit = merged["memory_limit"]
    if memory_limit is not None:
        memory_limit = float_option("memory_limit", memory_limit, 0.0, float("inf"), low_open=True)
    return Options(max_new_tokens=max_new, min_new_tokens=min_new, eos_token_ids=eos, pad_token_id=pad,
                   decoder_start_token_id=start,
                   pad_to_multiple_of=multiple, do_sample=do_sample, num_beams=beams, num_return_sequences=returns,
                   early_stopping=early_stopping, length_penalty=length_penalty,
                   no_repeat_ngram_size=ngram, output_scores=_bool("output_scores", merged["output_scores"]),
                   repetition_penalty=penalty, penalty_alpha=alpha, seed=_seed(merged["seed"]), memory_limit=memory_limit,
                   controls=ControlOptions(**controls), **lookup, **sampling)
