"""Every rounding that enters a program key, in one place.

A compiled program is keyed by static sizes (engine/programs.py). Rounding those sizes up to
buckets lets a few programs serve every call: a prompt of 5 tokens and one of 8 share a program,
as do 1 to 8 EOS ids, or 3 and 4 stop strings. A size that reaches a program key goes through
one of these functions; nothing else in the engine rounds a shape.
"""

# EOS id vectors are padded with NO_TOKEN to a multiple of this: up to 8 EOS ids share a program.
EOS_SLOTS = 8
# Token lists (suppressed ids, forced EOS ids) and sequence tables are padded to at least this
# many entries, then to the next power of two.
LIST_SLOTS = 8


def padded_width(width, multiple):
    """A prompt width rounded up to the bucket `multiple` (pad_to_multiple_of): python int."""
    return width + (-width % multiple)


def eos_slots(eos_ids):
    """The padded length E of an EOS id list: the next multiple of EOS_SLOTS (at least one)."""
    return EOS_SLOTS * max(1, -(-len(eos_ids) // EOS_SLOTS))


def list_slots(n, smallest=LIST_SLOTS):
    """The padded length of a list of n entries: 0 for none, else smallest * 2**k >= n."""
    if n == 0:
        return 0
    size = smallest
    while size < n:
        size *= 2
    return size


def power_of_two(size, floor=1):
    """The smallest power of two >= size, at least `floor` (stop-string tables, batch rows)."""
    return max(floor, 1 << max(size - 1, 0).bit_length())
