"""Lesson 3: why pad prompts up to a few lengths?

An XLA program is compiled for fixed shapes. A prompt of 5 tokens and one of 6 are different
programs, each traced and compiled anew (lesson 2: seconds each). generate() pads prompts on the
left up to a multiple of pad_to_multiple_of (default 8; engine/generator.py `_pad_left`), with
the padding masked out, so prompts of 1 to 8 tokens share one program, 9 to 16 the next.

Here the same prompts of many lengths run twice: with pad_to_multiple_of=1 (one program per
length) and with the default buckets. gen.trace_count counts the programs traced.

    python tools/lessons/03_shapes_and_retracing.py [--model PATH] [--quick] [--plot FILE.png]
"""
import numpy as np

import common


def main(argv=None):
    args = common.arguments(__doc__, argv)
    lengths = range(1, 3) if args.quick else range(1, 10)
    new = 2 if args.quick else 8
    results, curves, outputs = {}, {}, {}
    for multiple in (1, 8):
        gen = common.load(args.model)  # a fresh Generator: no program compiled yet
        total, elapsed = 0.0, []
        outputs[multiple] = []
        for length in lengths:
            ids = common.prompt(gen, length=length)
            out, s = common.seconds(lambda: gen.generate(ids, max_new_tokens=new, pad_to_multiple_of=multiple))
            outputs[multiple].append(out)
            total += s
            elapsed.append(total)
        results[multiple] = {"programs": gen.trace_count, "seconds": total}
        curves[f"pad_to_multiple_of={multiple}"] = (list(lengths), elapsed)

    same = all(np.array_equal(a, b) for a, b in zip(outputs[1], outputs[8]))
    print(f"prompts of {lengths[0]}..{lengths[-1]} tokens, {new} new tokens each:\n")
    common.table(["pad_to_multiple_of", "programs traced", "seconds in all"],
                 [[m, r["programs"], r["seconds"]] for m, r in results.items()])
    print(f"\nbucketed and unbucketed prompts gave the same tokens: {same} (the padding is masked out)")
    if args.plot:
        common.plot(args.plot, "Seconds spent, prompt after prompt", "prompt length", "seconds so far", curves)
    return {"programs": {m: r["programs"] for m, r in results.items()}, "lengths": len(lengths), "same_tokens": same,
            "seconds": {m: r["seconds"] for m, r in results.items()}}


if __name__ == "__main__":
    main()
