"""The persistent compile cache and the quiet CLI, for real: `xlagen generate` in fresh processes
that share a cache folder. A second process loads the first one's program instead of compiling
it, whatever Python's hash seed; a corrupt entry costs one warning and a compile, never the run;
and no TensorFlow log line reaches stderr unless --verbose."""
import os
import subprocess
import sys
import warnings

import pytest

from conftest import fixture_path
from xlagen.engine import compile_cache
from xlagen.engine.jobs.cli import _TF_LOG_LINE

PROMPT = ["--model", fixture_path("gpt2-tiny"), "--max-new-tokens", "4", "The for"]


def _xlagen(args, cache, hash_seed):
    env = dict(os.environ, XLAGEN_CACHE_DIR=str(cache), PYTHONHASHSEED=str(hash_seed))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI's own default must keep TensorFlow quiet
    run = subprocess.run([sys.executable, "-m", "xlagen.engine.cli", "generate", *args], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _entries(cache):
    return {os.path.relpath(os.path.join(d, f), cache): os.path.getmtime(os.path.join(d, f))
            for d, _, files in os.walk(cache) for f in files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs of one command on one cache: it fills (quietly), it is read (--progress), it is
    corrupted and mended (--verbose)."""
    cache = tmp_path_factory.mktemp("xla-cache")
    other = cache / "tf-0.0.1-elsewhere"  # another TensorFlow's entries: never read, never touched
    other.mkdir()
    (other / "xla_compile_cache__1__2__XLA_CPU_JIT.pb").write_bytes(b"not for this TensorFlow")
    first = _xlagen(PROMPT, cache, 1)
    filled = _entries(cache)
    second = _xlagen(["--progress", *PROMPT], cache, 2)
    read = _entries(cache)
    (entry,) = [name for name in filled if not name.startswith("tf-0.0.1")]
    with open(cache / entry, "r+b") as f:
        f.truncate(os.path.getsize(cache / entry) // 2)
    third = _xlagen(["--verbose", *PROMPT], cache, 3)
    return dict(cache=cache, entry=entry, first=first, filled=filled, second=second, read=read, third=third,
                mended=_entries(cache))


def test_a_later_process_loads_the_program_instead_of_compiling_it(runs):
    assert len(runs["filled"]) == 2 and runs["entry"].startswith(f"tf-{__import__('tensorflow').__version__}-")
    assert runs["read"] == runs["filled"]  # nothing new written: the entry served the second run
    assert runs["second"].stdout == runs["first"].stdout
    status = runs["second"].stderr.strip().splitlines()
    assert len(status) == 1 and status[0].startswith("compiling greedy program for batch 1, prompt 8, 4 new tokens")
    assert status[0].endswith(" s (from the compile cache)")


def test_the_cli_prints_no_tensorflow_log_line(runs):
    assert runs["first"].stderr == ""  # and not a terminal: no compile status line either


def test_a_corrupt_entry_costs_a_warning_and_a_compile(runs):
    third = runs["third"]
    assert third.stdout == runs["first"].stdout
    (line,) = [line for line in third.stderr.splitlines() if line.startswith("xlagen:")]
    assert line.startswith("xlagen: warning: compile cache: an entry in ") and "compiled the program again" in line
    assert runs["entry"] not in runs["mended"]  # the broken entry is gone, a whole one replaced it
    assert len(runs["mended"]) == 2
    new = [name for name in runs["mended"] if name not in runs["filled"]]
    assert len(new) == 1 and compile_cache._is_entry((runs["cache"] / new[0]).read_bytes())


def test_verbose_lets_tensorflow_log(runs):
    assert any(_TF_LOG_LINE.match(line.encode()) for line in runs["third"].stderr.splitlines())


def test_entry_check_tells_whole_from_broken(runs):
    (name,) = [n for n in runs["mended"] if not n.startswith("tf-0.0.1")]
    data = (runs["cache"] / name).read_bytes()
    assert compile_cache._is_entry(data)
    for broken in (data[:len(data) // 2], data[:-1], b"", b"\xff" * 64, data + b"\x0f"):
        assert not compile_cache._is_entry(broken)


def test_an_unwritable_folder_turns_the_cache_off_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_cache, "_state", {"folder": None, "warned": set()})
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    (tmp_path / "a-file").write_text("")
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        assert compile_cache.enable_compile_cache(tmp_path / "a-file" / "cache") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compile_cache.enable_compile_cache("") is None  # off: no warning
    assert compile_cache.folder() is None and "TF_XLA_FLAGS" not in os.environ


def test_enabling_after_tensorflow_started_says_when_to_call_it(tmp_path, monkeypatch):
    import tensorflow as tf
    tf.constant(0)  # this process has started TensorFlow
    monkeypatch.setattr(compile_cache, "_state", {"folder": None, "warned": set()})
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    with pytest.warns(RuntimeWarning, match="before load"):
        assert compile_cache.enable_compile_cache(tmp_path) is None
    assert "TF_XLA_FLAGS" not in os.environ


def test_old_entries_are_pruned_beyond_the_size_limit(tmp_path):
    for age, name in enumerate(["new", "mid", "old"]):
        path = tmp_path / f"{name}.pb"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 - age, 1000 - age))
    compile_cache._prune(str(tmp_path), 250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid.pb", "new.pb"]
