"""Lesson 4: why pass every number as a tensor?

tf.function traces again for every new value of a Python argument: a Python float is part of
the program, so temperature=0.7 and temperature=0.8 are two programs, each compiled (this is why
transformers' TF generate recompiles when a sampling option changes). xlagen passes every
numeric option as a tensor (engine/loops/strategy.py `Knobs`, built by `knob_tensors`), so a new value
is only new data for the same program.

Here ten temperatures run through generate() (one trace), then through a naive tf.function
that takes the temperature as a Python float around the very same decode function (ten).

    python tools/lessons/04_values_as_tensors.py [--model PATH] [--quick] [--plot FILE.png]
"""
import numpy as np

import common


def main(argv=None):
    args = common.arguments(__doc__, argv)
    import tensorflow as tf
    gen = common.load(args.model)
    temperatures = [0.5, 1.5] if args.quick else [round(0.3 + 0.15 * i, 2) for i in range(10)]
    new = 2 if args.quick else 4
    ids = common.prompt(gen)

    # Plain sampling: no repetition penalty or n-gram ban (the bundled model's defaults), a smaller program.
    options = dict(max_new_tokens=new, do_sample=True, seed=0, repetition_penalty=1.0, no_repeat_ngram_size=0)
    before = gen.trace_count
    ours, ours_s = common.seconds(lambda: [gen.generate(ids, temperature=t, **options) for t in temperatures])
    ours_traces = gen.trace_count - before

    call = gen.decode_call(ids, **options)
    naive_traces = []

    @tf.function(jit_compile=True, autograph=False)
    def naive(input_ids, attention_mask, knobs, temperature):  # temperature: a Python float
        naive_traces.append(temperature)
        return call.function(input_ids, attention_mask, knobs._replace(temperature=tf.constant(temperature)))

    theirs, naive_s = common.seconds(lambda: [naive(*call.args, t)["sequences"].numpy() for t in temperatures])
    same = all(np.array_equal(a, b[:, -a.shape[1]:]) for a, b in zip(ours, theirs))

    print(f"{len(temperatures)} temperatures, {new} sampled tokens each, seed 0:\n")
    common.table(["temperature passed as", "programs traced", "seconds in all"],
                 [["a tensor (xlagen)", ours_traces, ours_s], ["a Python float (naive)", len(naive_traces), naive_s]])
    print(f"\nboth drew the same tokens for each temperature: {same}")
    if args.plot:
        common.plot(args.plot, f"A sweep over {len(temperatures)} temperatures", "", "seconds", bars=True,
                    series={"seconds": (["tensor", "Python float"], [ours_s, naive_s])})
    return {"ours_traces": ours_traces, "naive_traces": len(naive_traces), "values": len(temperatures),
            "same_tokens": same, "seconds": {"tensor": ours_s, "float": naive_s}}


if __name__ == "__main__":
    main()
