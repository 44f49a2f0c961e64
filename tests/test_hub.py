"""Loading by Hub id, for real: huggingface_hub downloads from a local HTTP server that serves
fixture checkpoints the way the Hub's resolve endpoint does, and xlagen must request exactly the
files it reads."""
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import fixture_path

pytest.importorskip("huggingface_hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# Runs with HF_ENDPOINT pointing at the server (huggingface_hub reads it at import).
LOAD = r"""
import json, sys
import numpy as np
from xlagen.engine import XlagenError, load
out = {}
for repo in sys.argv[1:]:
    try:
        out[repo] = {"logits": load(repo).logits([[5, 6, 7, 8]]).tolist()}
    except XlagenError as e:
        out[repo] = {"error": type(e).__name__, "message": str(e)}
print(json.dumps(out))
"""


def _repos(tmp_path):
    """{repo id: {file name: bytes}}: checkpoints as the Hub holds them, with decoys xlagen must not fetch."""
    def files(folder):
        return {f: open(os.path.join(folder, f), "rb").read() for f in os.listdir(folder)}

    tiny, sharded = files(fixture_path("gpt2-tiny")), files(fixture_path("gpt2-tiny-sharded"))
    hostile_index = json.dumps({"weight_map": {"wte.weight": "../../outside.safetensors"}}).encode()
    return {
        "someuser/tiny-gpt2": dict(tiny, **{"other-variant.safetensors": tiny["model.safetensors"],
                                             "pytorch_model.bin": b"not a pickle"}),
        "someuser/tiny-sharded": dict(sharded, **{"model.safetensors": tiny["model.safetensors"],
                                                  "adapter_model.safetensors": b"decoy"}),
        "someuser/hostile-index": {"config.json": tiny["config.json"], "model.safetensors.index.json": hostile_index},
        "someuser/pickles-only": {"config.json": tiny["config.json"], "pytorch_model.bin": b"not a pickle"},
    }


class FakeHub(http.server.BaseHTTPRequestHandler):
    """/{owner}/{name}/resolve/{revision}/{file}: HEAD and GET, with the headers huggingface_hub reads."""
    repos, requests = {}, []

    def _find(self):
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None, "RepositoryNotFound"
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        if repo not in self.repos:
            return None, "RepositoryNotFound"
        self.requests.append((repo, filename))
        data = self.repos[repo].get(filename)
        return (data, None) if data is not None else (None, "EntryNotFound")

    def _respond(self, body):
        data, error = self._find()
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", error)
            self.send_header("X-Error-Message", error)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
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
def hub(tmp_path_factory):
    """The fake Hub on 127.0.0.1, stopped when the module's tests are done."""
    FakeHub.repos, FakeHub.requests = _repos(tmp_path_factory.mktemp("repos")), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def loaded(hub, tmp_path_factory):
    """Each repo loaded through xlagen.engine.load in a process that sees only the fake Hub."""
    home = tmp_path_factory.mktemp("hf_home")
    env = dict(os.environ, HF_ENDPOINT=hub, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_OFFLINE="0", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", LOAD, *FakeHub.repos, "someuser/no-such-repo"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), home


def _requested(repo):
    return {f for r, f in FakeHub.requests if r == repo}


def test_a_hub_id_loads_the_same_model_and_fetches_only_what_xlagen_reads(loaded, tiny):
    results, _ = loaded
    expected = tiny.logits([[5, 6, 7, 8]])
    for repo in ("someuser/tiny-gpt2", "someuser/tiny-sharded"):
        np.testing.assert_allclose(np.array(results[repo]["logits"], np.float32), expected, atol=1e-5)
    assert _requested("someuser/tiny-gpt2") == {"config.json", "generation_config.json", "tokenizer.json",
                                                "model.safetensors.index.json", "model.safetensors"}
    shards = set(json.loads(FakeHub.repos["someuser/tiny-sharded"]["model.safetensors.index.json"])["weight_map"].values())
    assert len(shards) > 1
    assert _requested("someuser/tiny-sharded") == {"config.json", "generation_config.json", "tokenizer.json",
                                                   "model.safetensors.index.json"} | shards


def test_a_hostile_index_is_refused_and_nothing_outside_the_cache_is_written(loaded):
    results, home = loaded
    result = results["someuser/hostile-index"]
    assert result["error"] == "CheckpointFormatError"
    assert "../../outside.safetensors" in result["message"] and "plain names" in result["message"]
    assert ("someuser/hostile-index", "../../outside.safetensors") not in FakeHub.requests
    assert not any("outside" in f for _, _, files in os.walk(os.path.dirname(home)) for f in files)


def test_missing_weights_and_unknown_repos_name_the_repo(loaded):
    results, _ = loaded
    assert results["someuser/pickles-only"]["error"] == "CheckpointNotFoundError"
    assert "has neither model.safetensors" in results["someuser/pickles-only"]["message"]
    assert "pytorch_model.bin" not in _requested("someuser/pickles-only")
    unknown = results["someuser/no-such-repo"]
    assert unknown["error"] == "CheckpointNotFoundError" and "'someuser/no-such-repo'" in unknown["message"]
