"""A persistent cache of compiled XLA programs, shared by the processes that run the same thing.

TensorFlow can keep each program XLA compiles on disk and load it in a later process instead
of compiling it again (its `--tf_xla_persistent_cache_directory` flag). An entry is found again
when both the program's HLO and its TensorFlow function signature match. They match when the
same model, options and shapes are traced after the same TensorFlow work: a rerun of one
`xlagen` command, of one script, or one server's warm-up. A program traced after different
work (other tf.functions first) gets other function names, misses, and is compiled and added.

TensorFlow reads the flag once per process, when it runs its first operation; so
`enable_compile_cache` must be called before that (before `load`, before any tensor is made).
Entries go to a subfolder per TensorFlow version and CPU, so that no process loads a program
built by another TensorFlow or for another processor. A folder that cannot be written turns the
cache off with one warning; an entry that cannot be loaded is compiled again (see
`Programs.run` in generator.py) and removed, with one warning.
"""
import glob
import hashlib
import os
import platform
import sys
import time
import warnings

ENV = "XLAGEN_CACHE_DIR"
FLAG = "--tf_xla_persistent_cache_directory="
# Oldest entries are removed beyond this when the cache is enabled.
MAX_BYTES = 2 * 2**30

_state = {"folder": None, "warned": set()}
_started = time.time()


def default_directory():
    """The folder used when none is given: $XLAGEN_CACHE_DIR if set (empty: no cache, returns
    ""), else $XDG_CACHE_HOME/xlagen/xla, else ~/.cache/xlagen/xla. Returns a str."""
    if ENV in os.environ:
        return os.environ[ENV]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "xlagen", "xla")


def _cpu():
    """A short name for this processor's instruction set: XLA:CPU compiles for the host's."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = platform.processor()
    return f"{platform.machine()}-{hashlib.sha1(flags.encode()).hexdigest()[:8]}"


def _tensorflow_started():
    """Whether TensorFlow has run an operation in this process (and so read its XLA flags)."""
    if "tensorflow" not in sys.modules:
        return False
    from tensorflow.python.eager import context
    return getattr(context.context(), "_context_handle", None) is not None


def _warn(kind, message):
    """One RuntimeWarning per kind of trouble and process."""
    if kind not in _state["warned"]:
        _state["warned"].add(kind)
        warnings.warn(f"compile cache: {message}", RuntimeWarning, stacklevel=3)


def _given_folder():
    """The cache folder TF_XLA_FLAGS already names, or None."""
    for flag in os.environ.get("TF_XLA_FLAGS", "").split():
        if flag.startswith(FLAG):
            return flag[len(FLAG):]
    return None


def enable_compile_cache(directory=None):
    """Keep compiled XLA programs under `directory` and load them in later processes.

    Must be called before TensorFlow runs its first operation in this process (before `load`
    or any tf.constant): TensorFlow reads the setting then and never again. Setting
    XLAGEN_CACHE_DIR before importing xlagen.engine does the same. The `xlagen` command calls
    it for you (`--compile-cache`).

    directory: str folder; None: default_directory(). "" turns the cache off.
    Returns the str folder entries are kept in (`directory`/tf-VERSION-CPU), or None when the
    cache is off or could not be enabled (a RuntimeWarning says why).
    """
    import tensorflow as tf

    directory = default_directory() if directory is None else os.fspath(directory)
    if not directory:
        return None
    folder = os.path.join(os.path.abspath(os.path.expanduser(directory)), f"tf-{tf.__version__}-{_cpu()}")
    given = _given_folder()
    if given is not None:  # already set, by an earlier call or by the user's own TF_XLA_FLAGS
        _state["folder"] = given
        return given
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as e:
        _warn("unwritable", f"off, because {folder} cannot be written ({e.strerror or e}); set {ENV} to a writable folder, "
              f"or to the empty string to turn the cache off")
        return None
    if _tensorflow_started():
        _warn("late", f"not enabled: TensorFlow has already run operations in this process and read its flags. "
              f"Call enable_compile_cache before load() and before any TensorFlow operation, or set {ENV}.")
        return None
    _prune(folder, MAX_BYTES)
    os.environ["TF_XLA_FLAGS"] = (os.environ.get("TF_XLA_FLAGS", "") + " " + FLAG + folder).strip()
    _state["folder"] = folder
    return folder


def folder():
    """The folder this process keeps compiled programs in, or None when the cache is off."""
    return _state["folder"]


def entries():
    """The set of entry file names in the cache folder (empty when the cache is off)."""
    if _state["folder"] is None:
        return set()
    return {os.path.basename(p) for p in glob.glob(os.path.join(_state["folder"], "*.pb"))}


def _prune(folder, max_bytes):
    """Remove the oldest entries until the folder holds at most max_bytes."""
    files = []
    for path in glob.glob(os.path.join(folder, "*.pb")):
        try:
            files.append((os.path.getmtime(path), os.path.getsize(path), path))
        except OSError:
            pass
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total <= max_bytes:
            break
        try:
            os.remove(path)
            total -= size
        except OSError:
            pass


def _is_entry(data):
    """Whether bytes parse as the protobuf message TensorFlow writes (XlaSerializedCacheEntry:
    field 1 the key, 2 the HLO module, 3 the executable, each length-delimited) to the last byte."""
    pos, seen = 0, set()

    def varint():
        nonlocal pos
        value = shift = 0
        while pos < len(data) and shift < 64:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise ValueError("truncated varint")

    try:
        while pos < len(data):
            tag = varint()
            field, kind = tag >> 3, tag & 7
            if kind == 0:
                varint()
            elif kind in (1, 5):
                pos += 8 if kind == 1 else 4
            elif kind == 2:
                length = varint()
                if field == 3 and length == 0:
                    return False
                pos += length
            else:
                return False
            if pos > len(data):
                return False
            seen.add(field)
    except ValueError:
        return False
    return {1, 2, 3} <= seen


def discard_unloadable(error):
    """After a program failed to load from the cache and compiled fine again: remove the entries
    that are not whole (or, when all look whole, those older than this process, one of which
    failed to load), and warn once. Returns the removed file names."""
    paths = glob.glob(os.path.join(_state["folder"], "*.pb"))
    bad = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                if not _is_entry(f.read()):
                    bad.append(path)
        except OSError:
            bad.append(path)
    if not bad:
        bad = [p for p in paths if os.path.getmtime(p) < _started]
    for path in bad:
        try:
            os.remove(path)
        except OSError:
            pass
    _warn("unloadable", f"an entry in {_state['folder']} could not be loaded ({type(error).__name__}: "
          f"{str(error).splitlines()[0][:200]}); compiled the program again and removed {len(bad)} unreadable entries")
    return [os.path.basename(p) for p in bad]
