"""Loading by Hub id, for real: huggingface_hub downloads from a local HTTP server that serves
fixture checkpoints the way the Hub's resolve endpoint does, and xlagen must request exactly the
files it reads."""
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import fixture_path

pytest.importorskip("huggingface_hub")

# Runs with HF_ENDPOINT pointing at the server (huggingface_hub reads it at import). argv[1]:
# "logits" (xlagen.engine.load, then logits of one prompt) or "resolve" (xlagen.models.resolve,
# which fetches the files without TensorFlow); then JSON [repo, revision] pairs.
LOAD = r"""
import json, sys
from xlagen.models import XlagenError, resolve
out = {}
for repo, revision in json.loads(sys.argv[2]):
    key = repo if revision is None else repo + "@" + revision
    try:
        if sys.argv[1] == "logits":
            from xlagen.engine import load
            out[key] = {"logits": load(repo, revision=revision).logits([[5, 6, 7, 8]]).tolist()}
        else:
            out[key] = {"path": resolve(repo, revision)}
    except XlagenError as e:
        out[key] = {"error": type(e).__name__, "message": str(e)}
print(json.dumps(out))
"""


def _commit(repo, revision):
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def _repos():
    """{repo id: {revision: {file name: bytes}}}: checkpoints as the Hub holds them, with decoys
    xlagen must not fetch; each revision is also reachable by its commit hash."""
    def files(name):
        folder = fixture_path(name)
        return {f: open(os.path.join(folder, f), "rb").read() for f in os.listdir(folder)}

    tiny, sharded = files("gpt2-tiny"), files("gpt2-tiny-sharded")
    hostile_index = json.dumps({"weight_map": {"wte.weight": "../../outside.safetensors"}}).encode()
    missing_shard = dict(sharded)
    del missing_shard[sorted(f for f in sharded if f.endswith(".safetensors"))[-1]]
    repos = {
        "someuser/tiny-gpt2": {"main": dict(tiny, **{"other-variant.safetensors": tiny["model.safetensors"],
                                                     "pytorch_model.bin": b"not a pickle", "tf_model.h5": b"no"}),
                               "v1": files("gpt2-variant")},
        "someuser/tiny-sharded": {"main": dict(sharded, **{"model.safetensors": tiny["model.safetensors"],
                                                           "adapter_model.safetensors": b"decoy"})},
        "someuser/missing-shard": {"main": missing_shard},
        "someuser/hostile-index": {"main": {"config.json": tiny["config.json"],
                                            "model.safetensors.index.json": hostile_index}},
        "someuser/pickles-only": {"main": {"config.json": tiny["config.json"], "pytorch_model.bin": b"not a pickle"}},
    }
    for repo, revisions in repos.items():
        for revision in list(revisions):
            revisions[_commit(repo, revision)] = revisions[revision]
    return repos


class FakeHub(http.server.BaseHTTPRequestHandler):
    """/{owner}/{name}/resolve/{revision}/{file}: HEAD and GET, with the headers huggingface_hub reads.
    Every request is recorded as (method, repo, revision, file)."""
    repos, requests = {}, []

    def _find(self):
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None, None, "RepositoryNotFound"
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        self.requests.append((self.command, repo, revision, filename))
        if repo not in self.repos:
            return None, None, "RepositoryNotFound"
        if revision not in self.repos[repo]:
            return None, None, "RevisionNotFound"
        data = self.repos[repo][revision].get(filename)
        commit = revision if len(revision) == 40 else _commit(repo, revision)
        return (data, commit, None) if data is not None else (None, commit, "EntryNotFound")

    def _respond(self, body):
        data, commit, error = self._find()
        if data is None:
            self.send_response(404)
            if commit:  # as the Hub does, so that huggingface_hub remembers the file is absent there
                self.send_header("X-Repo-Commit", commit)
            self.send_header("X-Error-Code", error)
            self.send_header("X-Error-Message", error)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._respond(body=False)

    def do_GET(self):
        self._respond(body=True)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    """The fake Hub on 127.0.0.1, stopped when the module's tests are done."""
    FakeHub.repos, FakeHub.requests = _repos(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _start(mode, cases, endpoint, home, **env):
    """A process that loads `cases` ([repo, revision] pairs) from `endpoint` with HF_HOME `home`."""
    env = dict(os.environ, **dict(dict(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_XET="1",
                                       HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="0", TF_CPP_MIN_LOG_LEVEL="3"), **env))
    return subprocess.Popen([sys.executable, "-c", LOAD, mode, json.dumps(cases)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture(scope="module")
def loaded(hub, tmp_path_factory):
    """Processes that see only the fake Hub:
    first: every repo through xlagen.engine.load (and logits) into an empty huggingface_hub
      cache, with xlagen's compile cache on from the environment, as a Python user turns it on;
    again: the same repos through xlagen.models.resolve, online, from that cache;
    offline: the same with HF_HUB_OFFLINE=1;  refused: a Hub id with the endpoint's port closed."""
    home, xla = tmp_path_factory.mktemp("hf_home"), tmp_path_factory.mktemp("xla")
    cases = [[repo, None] for repo in FakeHub.repos] + [["someuser/no-such-repo", None],
             ["someuser/tiny-gpt2", "v1"], ["someuser/tiny-gpt2", "no-such-tag"]]
    # TQDM_POSITION=-1: huggingface_hub's bars also on a pipe (on a terminal they show anyway)
    first = _finish(_start("logits", cases, hub, home, XLAGEN_CACHE_DIR=str(xla), TQDM_POSITION="-1"))
    before = len(FakeHub.requests)
    again_cases = [["someuser/tiny-gpt2", None], ["someuser/tiny-sharded", None], ["someuser/tiny-gpt2", "v1"]]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    processes = {"again": _start("resolve", again_cases, hub, home),
                 "offline": _start("resolve", again_cases, hub, home, HF_HUB_OFFLINE="1"),
                 "refused": _start("resolve", [["someuser/tiny-gpt2", None]], f"http://127.0.0.1:{closed.getsockname()[1]}",
                                   tmp_path_factory.mktemp("hf_home_empty"))}
    results = {name: _finish(p) for name, p in processes.items()}
    closed.close()
    return dict(first=first[0], first_stderr=first[1], home=home, xla=xla, first_requests=FakeHub.requests[:before],
                later_requests=FakeHub.requests[before:], **{k: v[0] for k, v in results.items()})


def _requested(requests, repo, method="GET"):
    return {f for m, r, _, f in requests if r == repo and m == method}


def test_a_hub_id_loads_the_same_model_and_fetches_only_what_xlagen_reads(loaded, tiny):
    results, requests = loaded["first"], loaded["first_requests"]
    expected = tiny.logits([[5, 6, 7, 8]])
    for repo in ("someuser/tiny-gpt2", "someuser/tiny-sharded"):
        np.testing.assert_allclose(np.array(results[repo]["logits"], np.float32), expected, atol=1e-5)
    main = {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors"}
    assert _requested(requests, "someuser/tiny-gpt2") == main | set(FakeHub.repos["someuser/tiny-gpt2"]["v1"]) - {
        "model.safetensors.index.json"}
    assert not {"pytorch_model.bin", "tf_model.h5", "other-variant.safetensors"} & {f for _, _, _, f in requests}
    shards = set(json.loads(FakeHub.repos["someuser/tiny-sharded"]["main"]["model.safetensors.index.json"])["weight_map"].values())
    assert len(shards) > 1
    assert _requested(requests, "someuser/tiny-sharded") == {"config.json", "generation_config.json", "tokenizer.json",
                                                             "model.safetensors.index.json"} | shards


def test_huggingface_hub_shows_its_download_progress(loaded):
    err = loaded["first_stderr"]
    assert "model.safetensors" in err and "100%" in err, err[-2000:]


def test_a_revision_pins_the_files_of_that_commit(loaded):
    from conftest import generator
    results, requests = loaded["first"], loaded["first_requests"]
    np.testing.assert_allclose(np.array(results["someuser/tiny-gpt2@v1"]["logits"], np.float32),
                               generator("gpt2-variant").logits([[5, 6, 7, 8]]), atol=1e-5)
    v1 = _commit("someuser/tiny-gpt2", "v1")
    # config.json names the revision; every later file is asked for by the commit it resolved to
    asked = {(rev, f) for m, r, rev, f in requests if r == "someuser/tiny-gpt2" and rev in ("v1", v1)}
    assert {f for rev, f in asked if rev == "v1"} == {"config.json"}
    assert {"model.safetensors", "tokenizer.json", "generation_config.json"} <= {f for rev, f in asked if rev == v1}
    assert ("GET", "someuser/tiny-gpt2", v1, "model.safetensors") in requests
    unknown = results["someuser/tiny-gpt2@no-such-tag"]
    assert unknown["error"] == "CheckpointNotFoundError"
    assert "'someuser/tiny-gpt2' at revision 'no-such-tag'" in unknown["message"]


def test_a_second_load_reads_the_cache_and_asks_nothing_about_the_weights(loaded):
    later = loaded["later_requests"]
    assert not [r for r in later if r[3] != "config.json"], later  # "again" only checks where the refs point now
    assert {(m, rev) for m, _, rev, _ in later} == {("HEAD", "main"), ("HEAD", "v1")}
    for name in ("again", "offline"):
        paths = {key: value["path"] for key, value in loaded[name].items()}
        assert set(paths) == {"someuser/tiny-gpt2", "someuser/tiny-sharded", "someuser/tiny-gpt2@v1"}, loaded[name]
        assert all(p.startswith(str(loaded["home"])) for p in paths.values())
        assert os.path.basename(paths["someuser/tiny-gpt2@v1"]) == _commit("someuser/tiny-gpt2", "v1")


def test_a_refused_connection_names_the_repo(loaded):
    result = loaded["refused"]["someuser/tiny-gpt2"]
    assert result["error"] == "CheckpointNotFoundError" and "'someuser/tiny-gpt2'" in result["message"]
    assert "local folder" in result["message"]


def test_python_turns_the_compile_cache_on_from_the_environment(loaded):
    assert any(f.endswith(".pb") for _, _, files in os.walk(loaded["xla"]) for f in files)


def test_a_hostile_index_is_refused_and_nothing_outside_the_cache_is_written(loaded):
    result = loaded["first"]["someuser/hostile-index"]
    assert result["error"] == "CheckpointFormatError"
    assert "../../outside.safetensors" in result["message"] and "plain names" in result["message"]
    assert not [r for r in loaded["first_requests"] if "outside" in r[3]]
    assert not any("outside" in f for _, _, files in os.walk(os.path.dirname(loaded["home"])) for f in files)


def test_missing_weights_files_and_unknown_repos_name_the_repo(loaded):
    results = loaded["first"]
    assert results["someuser/pickles-only"]["error"] == "CheckpointNotFoundError"
    assert "has neither model.safetensors" in results["someuser/pickles-only"]["message"]
    assert "pytorch_model.bin" not in _requested(loaded["first_requests"], "someuser/pickles-only")
    missing = results["someuser/missing-shard"]
    absent = sorted(f for f in FakeHub.repos["someuser/tiny-sharded"]["main"] if f.startswith("model-"))[-1]
    assert missing["error"] == "CheckpointNotFoundError" and "'someuser/missing-shard'" in missing["message"]
    assert absent in missing["message"] or "EntryNotFound" in missing["message"]
    unknown = results["someuser/no-such-repo"]
    assert unknown["error"] == "CheckpointNotFoundError" and "'someuser/no-such-repo'" in unknown["message"]
