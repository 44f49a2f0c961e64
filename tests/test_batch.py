"""xlagen batch and Generator.generate_many: bucketing, resuming, bad lines, and the same job on
Apache Beam's DirectRunner in two processes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from xlagen.engine import BatchFileError, GenerationArgumentError, load
from xlagen.engine.jobs import batch
from xlagen.engine.jobs.cli import main

OPTIONS = {"max_new_tokens": 6}
# Mixed lengths: three prompt buckets (8, 16, 24 tokens), and more prompts than one batch of 4.
PROMPTS = ["The for statement", "A class", "Python", "import os", "The while loop runs its body while",
           "Lists and tuples are sequences, but lists can be changed in place and tuples cannot, so",
           "def", "A dictionary maps keys to values; its keys must be hashable, which means that",
           "Exceptions", "The standard library", "In Python, functions are first-class objects: they can be",
           "for x in"]


@pytest.fixture(scope="module")
def gen():
    return load()


@pytest.fixture(scope="module")
def expected(gen):
    """generate_text for each prompt alone, greedy: what every batched run must reproduce."""
    return [gen.generate_text(p, return_full_text=False, **OPTIONS) for p in PROMPTS]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_generate_many_buckets_batches_and_equals_one_call_per_prompt(gen, expected):
    widths = {len(gen.tokenizer.encode(p).ids) for p in PROMPTS}
    assert len({-(-w // 8) for w in widths}) == 3  # the prompts span three buckets
    calls = []
    results = dict(gen.generate_many(PROMPTS, batch_size=4, progress=lambda done, new: calls.append((done, new)),
                                     **OPTIONS))
    assert sorted(results) == list(range(len(PROMPTS)))
    assert [results[i] for i in range(len(PROMPTS))] == expected
    # Each call reports its real prompts (not the rows that fill a batch up) and their tokens.
    assert sum(done for done, _ in calls) == len(PROMPTS)
    assert all(0 < new <= done * OPTIONS["max_new_tokens"] for done, new in calls)


def test_generate_many_chooses_the_batch_from_the_memory_limit(gen):
    assert gen.batch_size_for(8, **OPTIONS) == 32
    small = gen.batch_size_for(8, memory_limit=sum(gen.model.memory_estimate(2, 8, 1, 6).values()), **OPTIONS)
    assert small == 2
    with pytest.raises(GenerationArgumentError, match="prompt 1 .* encodes to no tokens"):
        list(gen.generate_many(["x", ""], **OPTIONS))
    with pytest.raises(GenerationArgumentError, match="batch_size"):
        list(gen.generate_many(["x"], batch_size=0))


def test_local_job_writes_input_order_and_a_rerun_adds_nothing(gen, expected, tmp_path, capsys):
    records = [{"prompt": p, "id": f"q{n}"} for n, p in enumerate(PROMPTS)]
    records[3] = {"prompt": PROMPTS[3]}  # default id: the line number
    source, out = write_jsonl(tmp_path / "in.jsonl", records), str(tmp_path / "out.jsonl")
    argv = ["batch", "--input", source, "--output", out, "--batch-size", "4", "--max-new-tokens", "6", "--progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "generating" in err and "prompt" in err and "tokens/s" in err  # tqdm's bar, on a pipe with --progress
    assert f"{len(PROMPTS)} prompts: {len(PROMPTS)} generated now, 0 by an earlier run, 0 bad" in err
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == [r.get("id", 4) for r in records]
    assert [line["prompt"] for line in lines] == PROMPTS
    assert [line["completions"] for line in lines] == expected
    before = open(out).read()
    assert main(argv + ["--quiet"]) == 0
    assert capsys.readouterr().err == "" and open(out).read() == before


def test_plain_text_input_ids_are_line_numbers(gen, expected, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(PROMPTS[0] + "\n\n" + PROMPTS[1] + "\n")  # the blank line is skipped, not a prompt
    out = str(tmp_path / "out.jsonl")
    done = batch.run(gen, str(source), out, OPTIONS)
    assert done == {"prompts": 2, "generated": 2, "earlier": 0, "bad": 0, "tokens": done["tokens"]}
    assert [(r["id"], r["completions"]) for r in read_jsonl(out)] == [(1, expected[0]), (3, expected[1])]


def test_resume_after_a_kill_mid_line(gen, expected, tmp_path):
    """What a kill leaves: some results, out of input order, and a last line cut short."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": p, "id": n} for n, p in enumerate(PROMPTS)])
    out = tmp_path / "out.jsonl"
    done = [{"id": n, "prompt": PROMPTS[n], "completions": expected[n]} for n in (7, 2, 5)]
    out.write_text("".join(json.dumps(r) + "\n" for r in done) + '{"id": 9, "prompt": "Excep')
    summary = batch.run(gen, source, str(out), OPTIONS, batch_size=4)
    assert summary["generated"] == len(PROMPTS) - 3 and summary["earlier"] == 3
    lines = read_jsonl(out)
    assert [r["id"] for r in lines] == list(range(len(PROMPTS)))
    assert [r["completions"] for r in lines] == expected


def test_killed_cli_job_resumes_with_nothing_lost_or_repeated(expected, tmp_path):
    """A real kill: SIGKILL once the first results are on disk, then the same command again."""
    short = [n for n, p in enumerate(PROMPTS) if len(p) < 24]  # one bucket: one program per process
    many = [{"prompt": PROMPTS[short[n % len(short)]], "id": n} for n in range(24)]
    source, out = write_jsonl(tmp_path / "in.jsonl", many), tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "xlagen.engine.cli", "batch", "--input", source, "--output", str(out),
               "--batch-size", "1", "--max-new-tokens", "6", "--quiet"]
    env = dict(os.environ, XLAGEN_CACHE_DIR=str(tmp_path / "cache"))
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None and not (out.exists() and out.read_text().count("\n") >= 3):
        time.sleep(0.05)
    assert job.poll() is None, f"the job ended before it could be killed: {job.communicate()}"
    job.send_signal(signal.SIGKILL)
    job.wait()
    partial = read_jsonl_lenient(out)
    assert 3 <= len(partial) < len(many)
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr
    lines = read_jsonl(out)
    assert [r["id"] for r in lines] == list(range(len(many)))  # each id once, in input order
    assert [r["completions"] for r in lines] == [expected[short[n % len(short)]] for n in range(len(many))]


def read_jsonl_lenient(path):
    """The whole lines of a file a kill may have cut short."""
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


BAD = [({"prompt": "A class"}, None),
       ("{not json", "not JSON"),
       ({"id": 5, "text": "no prompt"}, 'no "prompt" field'),
       ({"prompt": 7}, '"prompt" is a int, not a string'),
       ({"prompt": "", "id": "empty"}, "encodes to no tokens"),
       (["a", "list"], "not an object"),
       ({"prompt": "word " * 400, "id": "long"}, "tokens long, beyond the")]


def write_bad(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r, _ in BAD))
    return str(path)


def test_bad_line_stops_the_job_before_anything_is_generated(tmp_path, capsys):
    source, out = write_bad(tmp_path), tmp_path / "out.jsonl"
    assert main(["batch", "--input", source, "--output", str(out), "--max-new-tokens", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"xlagen: error: {source} line 2: not JSON") and "and 5 more bad lines" in err
    assert "--on-error skip" in err and "\n" not in err and not out.exists()


def test_on_error_skip_writes_an_error_line_per_bad_line(gen, expected, tmp_path):
    source, out = write_bad(tmp_path), str(tmp_path / "out.jsonl")
    summary = batch.run(gen, source, out, OPTIONS, on_error="skip")
    assert summary["bad"] == len(BAD) - 1 and summary["generated"] == 1
    lines = read_jsonl(out)
    assert [r["id"] for r in lines] == [1, 2, 5, 4, "empty", 6, "long"]
    assert lines[0]["completions"] == expected[1]
    for line, (_, problem) in zip(lines[1:], BAD[1:]):
        assert set(line) == {"id", "error"} and problem in line["error"] and f"{source} line" in line["error"]


def test_an_output_of_another_job_is_refused_and_kept(gen, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "A class", "id": 1}])
    out = tmp_path / "out.jsonl"
    for foreign in ('{"id": 2, "prompt": "A class", "completions": []}\n',  # an id not in the input
                    '{"id": 1, "prompt": "Another prompt", "completions": []}\n',  # another prompt for the id
                    '{"id": 1, "prompt": "A class"}\n',  # not a line xlagen writes: no completions
                    "some notes\n",
                    "notes without a newline"):  # not the start of a line a kill cut short
        out.write_text(foreign)
        with pytest.raises(BatchFileError, match="out.jsonl (line 1 |does not end).*refusing to add to it"):
            batch.run(gen, source, str(out), OPTIONS)
        assert out.read_text() == foreign
    with pytest.raises(BatchFileError, match="is the input file"):
        batch.run(gen, source, source, OPTIONS)
    with pytest.raises(BatchFileError, match="is not a file"):
        batch.run(gen, source, str(tmp_path), OPTIONS)


def test_line_separators_inside_json_strings_stay_in_their_line(gen, tmp_path):
    text = "A class\u2028definition"  # str.splitlines would cut the JSON line here
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": text, "id": 1}, {"prompt": "def", "id": 2}])
    out = tmp_path / "out.jsonl"
    assert batch.run(gen, source, str(out), OPTIONS)["generated"] == 2
    assert [r["prompt"] for r in read_jsonl(out)] == [text, "def"]
    assert batch.run(gen, source, str(out), OPTIONS)["earlier"] == 2  # and a rerun reads it back


def test_duplicate_ids_are_refused(gen, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "id": 1}, {"prompt": "b", "id": 1}])
    with pytest.raises(BatchFileError, match="line 2: id 1 is already used on line 1"):
        batch.run(gen, source, str(tmp_path / "out.jsonl"), OPTIONS)


def test_beam_direct_runner_in_two_processes_equals_the_local_job(gen, tmp_path):
    pytest.importorskip("apache_beam")
    records = [{"prompt": p, "id": n} for n, p in enumerate(PROMPTS)] + [{"id": "bad"}]
    source, local, beam = write_jsonl(tmp_path / "in.jsonl", records), tmp_path / "local.jsonl", tmp_path / "beam.jsonl"
    batch.run(gen, source, str(local), OPTIONS, batch_size=4, on_error="skip")
    command = [sys.executable, "-m", "xlagen.engine.cli", "batch", "--input", source, "--output", str(beam),
               "--batch-size", "4", "--max-new-tokens", "6", "--on-error", "skip",
               "--runner", "DirectRunner", "--direct-num-workers", "2", "--direct-running-mode", "multi_processing"]
    run = subprocess.run(command, env=dict(os.environ, XLAGEN_CACHE_DIR=""), capture_output=True, text=True,
                         timeout=500)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{len(records)} prompts: {len(PROMPTS)} generated now, 0 by an earlier run, 1 bad" in run.stderr
    assert beam.read_text() == local.read_text() and len(read_jsonl(beam)) == len(records)
