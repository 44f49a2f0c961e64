"""Lesson 1: what does compiling the decode loop buy?

xlagen's decode loops (engine/loops/) and models (models/*.py) are plain Python functions of
TensorFlow ops. The same functions run three ways here:

  eager        op by op from Python: generate(..., jit_compile=False). Every op is a Python
               call, every intermediate a real tensor you can print.
  tf.function  traced once into a TensorFlow graph; TensorFlow's executor then runs the graph's
               ops one by one in C++, without Python. (Two ops exist only in XLA, the in-place
               cache write and the optimization barrier; TensorFlow compiles them one by one.)
  XLA          the same graph compiled by XLA into one program whose ops are fused into loops
               over memory (generate()'s default, tf.function(jit_compile=True)).

They choose the same tokens. The question is what each new token costs.

    python tools/lessons/01_eager_vs_xla.py [--model PATH] [--quick] [--plot FILE.png]
"""
import numpy as np

import common


def main(argv=None):
    args = common.arguments(__doc__, argv)
    import tensorflow as tf
    gen = common.load(args.model)
    new, repeat = (8, 2) if args.quick else (32, 3)

    # decode_call checks the options and returns the very function generate() runs, with its
    # tensor arguments (the prompt, its mask, and the numeric options as "knobs").
    call = gen.decode_call(common.prompt(gen), max_new_tokens=new, min_new_tokens=new)
    modes = {"eager": call.function,
             "tf.function": tf.function(call.function, autograph=False),
             "XLA": tf.function(call.function, autograph=False, jit_compile=True)}

    tokens, first, per_token = {}, {}, {}
    for name, function in modes.items():
        out, first[name] = common.seconds(lambda: function(*call.args)["sequences"].numpy())
        tokens[name] = out
        per_token[name] = common.best_seconds(lambda: function(*call.args)["sequences"].numpy(), repeat) / new * 1e3

    same = all(np.array_equal(tokens["eager"], t) for t in tokens.values())
    print(f"{gen.config.model_type}, {new} new tokens after a {call.args[0].shape[1]}-slot prompt, best of {repeat}:\n")
    common.table(["mode", "first call (s)", "ms per token", "speed-up over eager"],
                 [[name, first[name], per_token[name], per_token["eager"] / per_token[name]] for name in modes])
    print(f"\nthe three modes chose the same tokens: {same}")
    print("The first call includes tracing (tf.function, XLA) and compiling (XLA): lesson 2 takes it apart.")
    if args.plot:
        common.plot(args.plot, "One new token, three ways", "mode", "ms per token", logy=True, bars=True,
                    series={"ms per token": (list(modes), [per_token[m] for m in modes])})
    return {"tokens": tokens, "same_tokens": same, "ms_per_token": per_token, "first_call_s": first}


if __name__ == "__main__":
    main()
