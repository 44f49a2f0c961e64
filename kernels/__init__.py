"""Pure TensorFlow building blocks for decoding.

Nothing here knows about a particular model or decode strategy: attention over a
preallocated cache, cache writes, position ids, normalisation, activations and the
small token-selection ops the decode loops share. Every function is XLA-friendly:
static shapes, int32 indices, no Python branching on tensor values.
"""
