"""The decode loops: pure functions over an explicit loop state, traced into one XLA program.

    strategy.py       Strategy (which loop, how a token is chosen) and Knobs (numeric options as tensors)
    decode.py         generate(): the prefill, then the strategy's loop
    common.py         what the loops share: row layout, stop strings, ranking, output buffers, the head screen
    rows.py           greedy decoding and sampling, G independent rows per prompt
    beam_search.py    beam search
    contrastive.py    contrastive search
    multi_token.py    the loop of multi-token steps that checks drafted tokens
    prompt_lookup.py  drafts copied from the row's own history
    assisted.py       drafts from an assistant model
    processing.py     the logits processors and warpers, in transformers' order
"""
from .decode import generate
from .strategy import EARLY_STOPPING, KNOB_DTYPES, Knobs, Strategy, knob_specs, knob_tensors, strategy_for

__all__ = ["generate", "Strategy", "Knobs", "KNOB_DTYPES", "EARLY_STOPPING", "knob_specs", "knob_tensors", "strategy_for"]
