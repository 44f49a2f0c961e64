"""Text in, text out: encode prompts with the checkpoint's tokenizer, generate, decode; and
generate_many, which buckets a whole list of prompts by length into a few compiled programs.

The functions take the Generator (`gen`); Generator.generate_text, encode_prompts,
batch_size_for and generate_many call them.
"""
import collections

import numpy as np

from xlagen.kernels.errors import GenerationArgumentError

from . import buckets, loops, planning

# The largest batch generate_many chooses by itself (README, "Generate over a file").
MAX_BATCH = 32


def left_pad(rows, pad_id=0):
    """Token id lists of different lengths -> (ids, attention_mask), [B, max length] int32, left padded."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def require_tokenizer(gen):
    """gen's tokenizers.Tokenizer; GenerationArgumentError when the checkpoint has no tokenizer.json."""
    if gen.tokenizer is None:
        raise GenerationArgumentError(f"{gen.path} has no tokenizer.json; pass token ids to generate() instead")
    return gen.tokenizer


def encode_prompts(gen, prompts):
    """Generator.encode_prompts for gen: list of str -> list of list of int (see there)."""
    tokenizer = require_tokenizer(gen)
    encoded = [e.ids for e in tokenizer.encode_batch(list(prompts))]
    for index, ids in enumerate(encoded):
        if not ids:
            raise GenerationArgumentError(f"prompt {index} ({prompts[index]!r}) encodes to no tokens; "
                                          f"give every prompt some text")
    return encoded


def generate_text(gen, prompts, return_full_text=True, **kwargs):
    """Generator.generate_text for gen: str or list of str -> list[str] (see there)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise GenerationArgumentError("prompts must be a str or a non-empty list of str")
    encoded = encode_prompts(gen, prompts)
    texts, _ = complete(gen, encoded, return_full_text, kwargs)
    return [text for group in texts for text in group]


def complete(gen, encoded, return_full_text, kwargs):
    """Generate after one batch of encoded prompts and decode: ([[str] * R per prompt],
    [new tokens of each prompt's R rows, up to and including each row's EOS: python int])."""
    tokenizer = require_tokenizer(gen)
    ids, mask = left_pad(encoded)
    out = gen.generate(ids, attention_mask=mask, **kwargs)
    sequences = out.sequences if isinstance(out, planning.GenerateOutput) else out
    returns = len(sequences) // len(encoded)  # rows of prompt 0 first
    start = planning.prefix_width(gen, ids.shape[1])
    new = sequences[:, start:]
    eos = planning.options_for(gen, {k: v for k, v in kwargs.items() if k != "jit_compile"}, ids.shape[1]).eos_token_ids
    ended = np.isin(new, eos) if eos else np.zeros(new.shape, bool)
    # A row's tokens: those up to its first EOS (included), or all of them.
    counts = np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, new.shape[1])
    # A continuation is decoded together with its prompt, so tokens that join across the seam decode as one.
    keep = return_full_text and gen.model.continues_prompt
    texts = [tokenizer.decode((encoded[row // returns] if keep else []) + new[row].tolist(),
                              skip_special_tokens=True) for row in range(len(sequences))]
    return ([texts[i:i + returns] for i in range(0, len(texts), returns)],
            counts.reshape(len(encoded), returns).sum(axis=1).tolist())


def batch_size_for(gen, width, **kwargs):
    """Generator.batch_size_for for gen: python int >= 1 (see there)."""
    opts = planning.options_for(gen, kwargs, width)
    strategy = loops.strategy_for(opts)
    padded = buckets.padded_width(width, opts.pad_to_multiple_of)
    limit = gen.memory_limit if opts.memory_limit is None else opts.memory_limit
    batch = MAX_BATCH
    while batch > 1 and sum(planning.memory_parts(gen, opts, strategy, batch, padded).values()) > limit:
        batch //= 2
    return batch


def generate_many(gen, prompts, batch_size=None, return_full_text=False, progress=None, **kwargs):
    """Generator.generate_many for gen: yields (index into prompts, list of str) per prompt
    as its batch finishes (see there)."""
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise GenerationArgumentError("prompts must be a sequence of str")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                                   or batch_size < 1):
        raise GenerationArgumentError(f"batch_size must be a positive int or None, got {batch_size!r}")
    encoded = encode_prompts(gen, prompts)
    multiple = planning.options_for(gen, kwargs, 1).pad_to_multiple_of
    by_width = collections.defaultdict(list)
    for index, ids in enumerate(encoded):
        by_width[buckets.padded_width(len(ids), multiple)].append(index)
    for width in sorted(by_width):
        indices = by_width[width]
        size = batch_size or batch_size_for(gen, width, **kwargs)
        for first in range(0, len(indices), size):
            chunk = indices[first:first + size]
            # The last batch of a bucket that had full ones reuses their program; a bucket
            # smaller than one batch takes the next power of two.
            rows = size if len(indices) >= size else min(buckets.power_of_two(len(chunk)), size)
            filled = chunk + chunk[-1:] * (rows - len(chunk))
            texts, tokens = complete(gen, [encoded[i] for i in filled], return_full_text, kwargs)
            if progress is not None:
                progress(len(chunk), sum(tokens[:len(chunk)]))
            yield from zip(chunk, texts)

