import functools
import os
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite never writes to the user's compile cache; tests/test_compile_cache.py sets its own.
os.environ["XLAGEN_CACHE_DIR"] = ""
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# tools/ holds the torch-free helpers that fixture scripts and tests share (tools/legacy_folders.py).
sys.path.append(os.path.join(os.path.dirname(FIXTURES), "..", "tools"))


def fixture_path(name):
    return os.path.join(FIXTURES, name)


@functools.lru_cache(maxsize=None)
def reference(name):
    """transformers' recorded outputs for a fixture checkpoint (see tools/make_fixtures.py)."""
    with np.load(os.path.join(FIXTURES, "reference", name + ".npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@functools.lru_cache(maxsize=None)
def generation_reference(name):
    """transformers' outputs recorded in reference/generation.npz for one fixture: {key: array}
    (mask inference, several EOS ids, per-step scores, option precedence)."""
    with np.load(os.path.join(FIXTURES, "reference", "generation.npz"), allow_pickle=False) as f:
        prefix = name + "/"
        return {k[len(prefix):]: f[k] for k in f.files if k.startswith(prefix)}


@functools.lru_cache(maxsize=None)
def generator(name):
    """One Generator per fixture for the whole session, so compiled programs are reused."""
    from xlagen.engine import load
    return load(fixture_path(name))


@pytest.fixture
def tiny():
    return generator("gpt2-tiny")
