"""Where a decode step's time goes: XLA's own per-kernel timings for one generate call.

    python tools/profile_step.py CHECKPOINT [--prompt 8] [--new 32] [--option num_beams=4 ...]
        [--dtype bfloat16] [--quantize int8]

Runs generate twice to compile and warm up, then once under the TensorFlow profiler, and
prints, for the XLA thread that ran the loop, the kernels (fusions, matmuls, ...) of one decode step in
the middle of the loop, by busy time. A step is the time between two runs of the loop's
most frequent matmul. Kernels named alike (add_bitcast_fusion.3, add_bitcast_fusion.7) are
summed. Names are XLA's: `dot*` and `MatMul*` are matrix products, the rest are fused
elementwise and reduction kernels. A product that runs as a multi-threaded Eigen call counts
only the time the loop's thread spends in it, so busy time undercounts the products; their
ranking still holds. The profile is written under --logdir for TensorBoard as well.
"""
import argparse
import ast
import collections
import glob
import os
import re
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from xlagen import engine  # noqa: E402


def option(text):
    """'name=value' -> (name, value), the value read as a Python literal when it is one."""
    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def one_step(plane, line):
    """{kernel name: (ms, count)} for one decode step on one profiler line, and the step's ms."""
    names = {k: v.name for k, v in plane.event_metadata.items()}
    events = sorted(line.events, key=lambda e: e.offset_ps)
    counts = collections.Counter(names[e.metadata_id] for e in events)
    matmuls = [n for n in counts if n.startswith(("dot", "MatMul"))]
    if not matmuls:
        return {}, 0.0
    marker = max(matmuls, key=lambda n: (counts[n], n))
    marks = [e.offset_ps for e in events if names[e.metadata_id] == marker]
    if len(marks) < 3:
        return {}, 0.0
    start, end = marks[len(marks) // 2], marks[len(marks) // 2 + 1]
    busy = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        name = names[e.metadata_id]
        if start <= e.offset_ps < end and name != "ThunkExecutor::Execute" and not name.startswith("while"):
            entry = busy[re.sub(r"\.\d+$", "", name)]
            entry[0] += e.duration_ps / 1e9
            entry[1] += 1
    return busy, (end - start) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--prompt", type=int, default=8)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--option", type=option, action="append", default=[], help="a generate option, name=value")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--logdir", default="/tmp/xlagen-profile")
    parser.add_argument("--dtype", default=None, help="stored weight dtype, as load(dtype=): float32 or bfloat16")
    parser.add_argument("--quantize", default=None, help="as load(quantize=): int8")
    args = parser.parse_args(argv)

    gen = engine.load(args.checkpoint, dtype=args.dtype, quantize=args.quantize)
    ids = np.random.RandomState(0).randint(0, min(gen.vocab_size, 30000), size=(1, args.prompt)).astype("int32")
    kwargs = dict(max_new_tokens=args.new, min_new_tokens=args.new, seed=(1, 2), **dict(args.option))
    for _ in range(2):
        gen.generate(ids, **kwargs)
    shutil.rmtree(args.logdir, ignore_errors=True)
    tf.profiler.experimental.start(args.logdir)
    gen.generate(ids, **kwargs)
    tf.profiler.experimental.stop()

    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(args.logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    # The thread that ran the loop is busy for nearly all of its step; a helper thread that
    # ran the marker matmul only now and then shows a long "step" and little busy time.
    steps = [one_step(plane, line) for plane in space.planes for line in plane.lines]
    busy, step = max(steps, key=lambda bs: sum(ms for ms, _ in bs[0].values()) / bs[1] if bs[1] else 0.0)
    if not busy:
        raise SystemExit("no XLA kernels in the profile: is the program jit-compiled?")
    total = sum(ms for ms, _ in busy.values())
    print(f"one decode step: {step:.2f} ms, of which {total:.2f} ms busy in {sum(n for _, n in busy.values())} kernels")
    for name, (ms, n) in sorted(busy.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"  {ms:8.3f} ms  {100 * ms / total:5.1f}%  x{n:<4d} {name}")


if __name__ == "__main__":
    main()
