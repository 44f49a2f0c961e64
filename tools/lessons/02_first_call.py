"""Lesson 2: where does the first call's time go?

A compiled program's first call does four things that later calls skip or repeat:

  trace      Python runs the decode functions once, with symbolic tensors, and records every op
             into a TensorFlow graph (tf.function's get_concrete_function)
  lower      tf2xla translates that graph into XLA's HLO (experimental_get_compiler_ir)
  compile    XLA optimises the HLO (fusion, layout, buffer reuse) and emits machine code
  run        the machine code decodes: the only part a later call repeats

Tracing and lowering are timed on their own; compiling is what remains of the first call once
lowering and a later call's run are taken off.
xlagen keeps every compiled program (gen.trace_count counts the traces), so each shape pays
this once per process.

    python tools/lessons/02_first_call.py [--model PATH] [--quick] [--plot FILE.png]
"""
import common


def main(argv=None):
    args = common.arguments(__doc__, argv)
    import tensorflow as tf
    gen = common.load(args.model)
    new = 4 if args.quick else 32
    call = gen.decode_call(common.prompt(gen), max_new_tokens=new, min_new_tokens=new)

    traces = []

    def traced(*inputs):
        traces.append(1)  # Python runs this body only while tracing
        return call.function(*inputs)

    program = tf.function(traced, autograph=False, jit_compile=True)
    graph, trace_s = common.seconds(lambda: program.get_concrete_function(*call.args).graph)
    _, first_s = common.seconds(lambda: program(*call.args)["sequences"].numpy())  # lower, compile, run
    later_s = common.best_seconds(lambda: program(*call.args)["sequences"].numpy(), 3)
    # Lowering once more, on its own, to see its share of the first call.
    hlo, lower_s = common.seconds(lambda: program.experimental_get_compiler_ir(*call.args)(stage="hlo"))
    parts = {"trace": trace_s, "lower to HLO": lower_s, "compile": max(first_s - later_s - lower_s, 0.0),
             "run (= a later call)": later_s}

    print(f"{gen.config.model_type}, {new} new tokens: the graph has {len(graph.as_graph_def().node)} ops at the "
          f"top level, the HLO {hlo.count(chr(10))} lines\n")
    common.table(["part", "seconds", "share of the first call"],
                 [[name, s, f"{s / (trace_s + first_s):.0%}"] for name, s in parts.items()])
    print(f"\nThe body was traced {len(traces)} time(s) over {1 + 3} calls: later calls run the compiled program.")
    if args.plot:
        common.plot(args.plot, "The first call, taken apart", "part", "seconds", bars=True,
                    series={"seconds": (list(parts), list(parts.values()))})
    return {"seconds": parts, "traces": len(traces), "calls": 4}


if __name__ == "__main__":
    main()
