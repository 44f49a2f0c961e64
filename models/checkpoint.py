"""Reading a checkpoint folder in Hugging Face Hub layout.

A folder holds config.json, the weights as model.safetensors or as shards listed in
model.safetensors.index.json, and optionally generation_config.json and tokenizer.json.
Weights are read with safetensors into numpy; nothing is ever unpickled.
"""
import json
import os
import re

import numpy as np
from safetensors import safe_open

from xlagen.kernels.errors import CheckpointFormatError, CheckpointNotFoundError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# What a Hub download fetches besides the weights: config.json, then what is there of the rest.
HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json"]
# A shard named by an index is a plain file name in the same folder.
_SHARD_NAME = re.compile(r"[A-Za-z0-9_][\w.-]*\.safetensors")


# The small GPT-2 shipped inside the package (tools/train_default.py), used when no model is named.
DEFAULT_MODEL = "default"
DEFAULT_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default")


def resolve(name_or_path=None, revision=None):
    """The local folder for a checkpoint: the bundled default model for None or "default";
    `name_or_path` itself when it is a folder; else a Hub id fetched (only the files xlagen
    reads) with huggingface_hub when that is installed, at `revision` (a branch, tag or commit;
    None: the repo's default branch).

    Returns a str path. Raises CheckpointNotFoundError with what to do when none works.
    """
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision must be a str (a branch, tag or commit of a Hub repo), not {type(revision).__name__}")
    path = DEFAULT_FOLDER if name_or_path is None or name_or_path == DEFAULT_MODEL else os.fspath(name_or_path)
    if os.path.isdir(path):
        if revision is not None:
            raise CheckpointNotFoundError(f"revision={revision!r} picks a version of a Hub repo, but "
                                          f"{name_or_path or DEFAULT_MODEL!r} is a local folder; drop revision")
        return path
    # A Hub id is "name" or "owner/name"; anything else that is not a folder is a bad path.
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", path) or os.path.exists(path):
        raise CheckpointNotFoundError(f"model folder {path!r} does not exist (expected a folder holding config.json and model.safetensors)")
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        raise CheckpointNotFoundError(
            f"{path!r} is not a local folder, and huggingface_hub is not installed to fetch it from the Hub. "
            f"Either `pip install 'xlagen[hub]'`, or download config.json, model.safetensors and tokenizer.json "
            f"of {path!r} into a folder and pass that folder.") from None
    return _fetch(path, revision, huggingface_hub, EntryNotFoundError)


def _fetch(repo_id, revision, hub, EntryNotFoundError):
    """Download exactly the files xlagen reads from Hub repo `repo_id` into huggingface_hub's cache:
    config.json; generation_config.json and tokenizer.json when present; then
    model.safetensors.index.json and the shards its weight_map names, or else model.safetensors.
    Other files (another checkpoint's safetensors, pickles) are never requested. Every file
    comes from the commit config.json came from. Returns the local snapshot folder."""
    def get(filename, required=True):
        # huggingface_hub remembers files a commit lacks but asks the server again: not for a known commit
        if not required and commit and hub.try_to_load_from_cache(repo_id, filename, revision=commit) is hub._CACHED_NO_EXIST:
            return None
        try:
            return hub.hf_hub_download(repo_id=repo_id, filename=filename, revision=commit)
        except EntryNotFoundError:
            if required:
                raise
            return None

    commit = revision
    try:
        config = get("config.json")
        folder = os.path.dirname(config)
        commit = os.path.basename(folder)  # the snapshot folder is named by the commit it holds
        for name in HUB_FILES[1:]:
            get(name, required=False)
        index = get(SAFETENSORS_INDEX, required=False)
        if index is None:
            if get(SAFETENSORS_FILE, required=False) is None:
                raise CheckpointNotFoundError(
                    f"Hub repo {repo_id!r} has neither {SAFETENSORS_FILE} nor {SAFETENSORS_INDEX}; xlagen reads only "
                    f"safetensors weights (convert pickled ones once with transformers' save_pretrained)")
            return folder
        weight_map = read_json(index).get("weight_map")
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        bad = [s for s in shards if not isinstance(s, str) or not _SHARD_NAME.fullmatch(s)]
        if not shards or bad:
            raise CheckpointFormatError(
                f"{SAFETENSORS_INDEX} of Hub repo {repo_id!r} must map tensor names to shard file names in its own "
                f"folder (plain names ending in .safetensors); found {bad[:3] or 'no weight_map'}")
        for shard in shards:
            get(shard)
        return folder
    except (CheckpointNotFoundError, CheckpointFormatError):
        raise
    except Exception as e:  # huggingface_hub raises many kinds: offline, unknown repo, missing file, ...
        at = "" if revision is None else f" at revision {revision!r}"
        raise CheckpointNotFoundError(f"could not fetch {repo_id!r}{at} from the Hub ({type(e).__name__}: {e}); "
                                      f"check the repo id and revision, or pass a local folder instead") from e


def read_json(path, required=True):
    """Parse a JSON object file. Returns a dict, or None when it is absent and not required."""
    if not os.path.isfile(path):
        if required:
            raise CheckpointNotFoundError(f"{path} is missing: a checkpoint folder needs it")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointFormatError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def weight_files(folder):
    """The safetensors files of a checkpoint folder, in a stable order: [path, ...]."""
    index_path = os.path.join(folder, SAFETENSORS_INDEX)
    single = os.path.join(folder, SAFETENSORS_FILE)
    if os.path.isfile(index_path):
        index = read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointFormatError(f"{index_path} has no 'weight_map' object mapping tensor names to shard files")
        shards = sorted(set(weight_map.values()))
        paths = [os.path.join(folder, s) for s in shards]
        for s, p in zip(shards, paths):
            if not os.path.isfile(p):
                raise CheckpointNotFoundError(f"{index_path} lists shard {s!r}, but {p} does not exist")
        return paths
    if os.path.isfile(single):
        return [single]
    hint = ""
    if any(os.path.isfile(os.path.join(folder, f)) for f in ("pytorch_model.bin", "tf_model.h5")):
        hint = (" The folder has only pickled/h5 weights, which xlagen does not read; convert them once with "
                "transformers: `AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)`.")
    raise CheckpointNotFoundError(f"no weights in {folder}: expected {SAFETENSORS_FILE} or {SAFETENSORS_INDEX}.{hint}")


def _bf16_names(path):
    """{name: (shape, byte offset in the file)} of the BF16 tensors of a safetensors file, from its
    header (8 bytes of little-endian length, then JSON). numpy has no bfloat16, so safetensors'
    numpy path refuses these tensors; they are read as uint16 and viewed as ml_dtypes.bfloat16."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    return {name: (tuple(info["shape"]), 8 + length + info["data_offsets"][0])
            for name, info in header.items() if name != "__metadata__" and info.get("dtype") == "BF16"}


def _read_bf16(path, name, where):
    """One BF16 tensor of a safetensors file (see _bf16_names) as np.ndarray of ml_dtypes.bfloat16."""
    import ml_dtypes  # installed with tensorflow
    shape, offset = where
    count = int(np.prod(shape))
    data = np.fromfile(path, dtype="<u2", count=count, offset=offset)
    if data.size != count:
        raise CheckpointFormatError(f"{path}: tensor {name!r} is cut short ({data.size} of {count} values)")
    return data.view(ml_dtypes.bfloat16).reshape(shape)


def read_tensors(paths):
    """All tensors of the given safetensors files as {name: np.ndarray} (bfloat16 tensors as
    ml_dtypes.bfloat16 arrays)."""
    tensors = {}
    for path in paths:
        try:
            with safe_open(path, framework="numpy") as f:
                bf16 = _bf16_names(path)
                for name in f.keys():
                    tensors[name] = _read_bf16(path, name, bf16[name]) if name in bf16 else f.get_tensor(name)
        except Exception as e:  # safetensors raises its own SafetensorError and others on bad bytes
            raise CheckpointFormatError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    return tensors


def strip_prefix(tensors, prefixes):
    """Drop the first of `prefixes` that a tensor name starts with (e.g. 'transformer.').

    Hub files exist both with and without a wrapper prefix; the key maps are written
    without it. Returns a new {name: array} dict.
    """
    out = {}
    for name, value in tensors.items():
        for p in prefixes:
            if name.startswith(p):
                name = name[len(p):]
                break
        out[name] = value
    return out


def take(tensors, name, shape, source, transpose=False):
    """tensors[name] as float32, checked against the shape the config implies.

    `shape` is the Hub shape; with transpose=True the 2-D tensor is returned transposed (GPT-2's
    Conv1D [in, out] as the [out, in] kernels.layers.dense takes). Raises CheckpointFormatError naming the tensor, the file set and both shapes.
    """
    if name not in tensors:
        raise CheckpointFormatError(f"tensor {name!r} is missing from {source}; the config needs it with shape {list(shape)}")
    value = tensors[name]
    if tuple(value.shape) != tuple(shape):
        raise CheckpointFormatError(f"tensor {name!r} in {source} has shape {list(value.shape)}, but the config implies {list(shape)}")
    if value.dtype.kind != "f" and value.dtype.name != "bfloat16":
        raise CheckpointFormatError(f"tensor {name!r} in {source} has dtype {value.dtype}; weights must be floating point "
                                    f"(float32, float16, bfloat16 or float64)")
    value = np.asarray(value, dtype=np.float32)
    return np.ascontiguousarray(value.T) if transpose else value
