import functools
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture_path(name):
    return os.path.join(FIXTURES, name)


@functools.lru_cache(maxsize=None)
def reference(name):
    """transformers' recorded outputs for a fixture checkpoint (see tools/make_fixtures.py)."""
    with np.load(os.path.join(FIXTURES, "reference", name + ".npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@functools.lru_cache(maxsize=None)
def generator(name):
    """One Generator per fixture for the whole session, so compiled programs are reused."""
    from xlagen.engine import load
    return load(fixture_path(name))


@pytest.fixture
def tiny():
    return generator("gpt2-tiny")
