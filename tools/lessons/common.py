"""What every lesson shares: its command line, a timer, a table printer and an optional plot.

Each lesson is a script to read top to bottom; this module holds only the plumbing, so that
the lessons themselves show nothing but the idea they measure.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: keep its start-up chatter off
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/
from bench import best_seconds  # noqa: E402,F401 - the benchmark's timer: the shortest of `reps` calls


def arguments(doc, argv=None, plot=True, options=()):
    """Parse a lesson's command line: --model PATH, --quick, and --plot FILE.png when the lesson
    draws a curve (plot=True).

    doc: the lesson's module docstring (shown by --help). argv: list of str, or None for sys.argv.
    options: the lesson's own flags, (flag, argparse keyword dict) pairs.
    Returns an argparse.Namespace (model: str or None for the bundled model; quick: bool;
    plot: str or None).
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="checkpoint folder in Hub layout, or a Hub id (needs huggingface_hub); "
                             "default: the small GPT-2 bundled with xlagen")
    parser.add_argument("--quick", action="store_true", help="the smallest sizes: seconds, for CI")
    for flag, kwargs in options:
        parser.add_argument(flag, **kwargs)
    if plot:
        parser.add_argument("--plot", metavar="FILE.png", default=None,
                            help="also draw what was measured (needs matplotlib: pip install -e '.[lessons]')")
    return parser.parse_args(argv)


def load(model):
    """xlagen.engine.load(model), imported here so that --help answers before TensorFlow loads."""
    from xlagen.engine import load as load_checkpoint
    return load_checkpoint(model)


def seconds(fn):
    """(fn()'s result, the wall seconds it took)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def table(headers, rows):
    """Print rows (sequences of values) under headers as an aligned text table."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    # Words to the left, numbers to the right, headers as their column.
    left = [all(isinstance(row[i], str) for row in rows) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if (left[i] or not n) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def plot(path, title, xlabel, ylabel, series, logx=False, logy=False, bars=False):
    """Draw curves (or, with bars=True, grouped bars over categories) to a PNG file.

    series: {label: (xs, ys)}, python lists of numbers (xs may be category names with bars).
    logx, logy: logarithmic axes (x base 2, as lengths here double).
    """
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[lessons]'") from None
    matplotlib.use("Agg")  # a file, no display
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(series))
    for n, (label, (xs, ys)) in enumerate(series.items()):
        if bars:
            axes.bar([i + n * width for i in range(len(xs))], ys, width, label=label)
            axes.set_xticks([i + (len(series) - 1) * width / 2 for i in range(len(xs))], [str(x) for x in xs])
        else:
            axes.plot(xs, ys, marker="o", label=label)
    if logx:
        axes.set_xscale("log", base=2)
    if logy:
        axes.set_yscale("log")
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"wrote {path}")


def prompt(gen, text="The for statement", length=None):
    """One prompt as token ids [1, T] int32: `text` through the checkpoint's tokenizer, or ids
    counted up from 1 when it has none. length: python int, repeat (or cut) the ids to it."""
    import numpy as np
    ids = gen.tokenizer.encode(text).ids if gen.tokenizer is not None else list(range(1, 9))
    if length is not None:
        ids = (ids * (length // len(ids) + 1))[:length]
    return np.array([ids], np.int32)
