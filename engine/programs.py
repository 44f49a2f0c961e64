"""The compiled programs of a Generator: at most a bounded number, the least recently used
dropped first, each traced once, logged as it compiles, and retried once when the persistent
compile cache hands back an entry that cannot be loaded (engine/compile_cache.py)."""
import collections
import logging
import threading
import time

import tensorflow as tf

from . import compile_cache

log = logging.getLogger("xlagen")

# Compiled programs a Generator keeps (generate and logits together) before it drops the least
# recently used: a server that sees many shapes must not grow without bound.
MAX_PROGRAMS = 32


class Programs:
    """Compiled programs by static key, at most `limit` of them, the least recently used dropped
    first. Thread-safe; a program built here counts in `traces` when it is traced.

    A program's first call traces and compiles it (or loads it from the persistent compile
    cache), and says so on the "xlagen" logger at INFO level, as it starts and when it is done.
    """

    def __init__(self, limit):
        self.limit = limit
        self._programs = collections.OrderedDict()
        self._lock = threading.Lock()
        self.traces = 0

    def __len__(self):
        return len(self._programs)

    def _get(self, key, build, fresh=False):
        """(program, new): the program for `key`, built by build(count_trace) -> tf.function when
        missing (or when `fresh`); new when it was built by this call."""
        with self._lock:
            if key in self._programs and not fresh:
                self._programs.move_to_end(key)
                return self._programs[key], False
            program = self._programs[key] = build(self._count)
            # Every program is its own tf.function, traced once. TensorFlow counts the traces of all
            # functions made from one piece of Python code, and from the sixth shape on (a batch job
            # over several buckets) it would warn of "retracing" that is by design here.
            if hasattr(program, "_omit_frequent_tracing_warning"):
                program._omit_frequent_tracing_warning = True
            self._programs.move_to_end(key)
            while len(self._programs) > max(1, self.limit):
                self._programs.popitem(last=False)
            return program, True

    def run(self, key, build, args, what):
        """Call the program for `key` on `args` (a tuple of tensors), building it with
        build(count_trace) when missing; the function must call count_trace() once per trace.
        what: str, the program for the log, "greedy program for batch 1, prompt 8, 32 new tokens".
        Returns the program's outputs."""
        program, new = self._get(key, build)
        if not new:
            return program(*args)
        log.info("compiling %s", what, extra={"xlagen_status": "start"})
        cached, start = compile_cache.entries(), time.perf_counter()
        try:
            out = program(*args)
        except tf.errors.OpError as error:
            if compile_cache.folder() is None:
                raise
            # A cache entry that cannot be loaded fails the call. A new tf.function has new names,
            # so it misses the cache and compiles; if it fails too, the fault was not the cache's.
            out = self._get(key, build, fresh=True)[0](*args)
            compile_cache.discard_unloadable(error)
        seconds = time.perf_counter() - start
        how = "" if compile_cache.folder() is None else (
            " (saved to the compile cache)" if compile_cache.entries() - cached else " (from the compile cache)")
        log.info("compiled %s in %.1f s%s", what, seconds, how,
                 extra={"xlagen_status": "done", "seconds": seconds, "cache_note": how})
        return out

    def _count(self):
        with self._lock:
            self.traces += 1

