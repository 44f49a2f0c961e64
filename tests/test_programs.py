"""The compiled programs do not change unless a change means to change them: the persistent
compile cache's key of a greedy, a beam and a sampling program (the fingerprint of the XLA
program TensorFlow hands the compiler) equals the one recorded in tests/fixtures/program_keys.json.

The keys were recorded before the layout change of engine/ (loops/, jobs/, planning.py...), so
this test is the proof that the change left every program byte for byte as it was. A change that
does mean to change a program records the keys again:

    python tests/test_programs.py --record

The keys are TensorFlow's: for a TensorFlow version with no recorded keys, the test checks that
the keys are the same in two processes with different hash seeds, and the first
`--record` under that version adds its keys.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "fixtures", "program_keys.json")
MODEL = os.path.join(HERE, "fixtures", "gpt2-tiny")
PROGRAMS = {"greedy": [], "beam": ["--num-beams", "2"], "sample": ["--do-sample", "--seed", "1"]}


def program_keys(hash_seed=0):
    """{program: its compile-cache entry name}, each program compiled alone in a fresh
    `xlagen generate` process on gpt2-tiny (4 new tokens after "The for")."""
    runs = {}
    for name, flags in PROGRAMS.items():
        folder = tempfile.mkdtemp(prefix=f"xlagen-keys-{name}-")
        env = dict(os.environ, XLAGEN_CACHE_DIR=folder, PYTHONHASHSEED=str(hash_seed))
        command = [sys.executable, "-m", "xlagen.engine.cli", "generate", "--model", MODEL, "--max-new-tokens", "4",
                   *flags, "The for"]
        runs[name] = (folder, subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                               text=True))
    keys = {}
    for name, (folder, run) in runs.items():
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
        entries = [f for _, _, files in os.walk(folder) for f in files]
        assert len(entries) == 1, f"{name}: expected one compile-cache entry, found {entries}"
        keys[name] = entries[0]
    return keys


def _recorded():
    import tensorflow as tf
    with open(FIXTURE) as f:
        return json.load(f), tf.__version__


def test_greedy_beam_and_sampling_programs_are_the_recorded_ones():
    recorded, version = _recorded()
    keys = program_keys(hash_seed=1)
    if version in recorded:
        assert keys == recorded[version], (f"the compiled programs changed: {keys} != {recorded[version]}; "
                                           f"if the change is meant, record them: python tests/test_programs.py --record")
    else:  # a TensorFlow without recorded keys: they must at least not depend on the process
        assert keys == program_keys(hash_seed=2)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    recorded, version = _recorded() if os.path.exists(FIXTURE) else ({}, __import__("tensorflow").__version__)
    recorded[version] = program_keys()
    with open(FIXTURE, "w") as f:
        json.dump(recorded, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{FIXTURE}: {version}: {recorded[version]}")
