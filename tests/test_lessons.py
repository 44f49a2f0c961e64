"""Every lesson in tools/lessons/ runs its --quick mode, and what it claims holds (not its timings)."""
import glob
import importlib.util
import os
import sys

import pytest

LESSONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "lessons")
sys.path.insert(0, LESSONS)  # the lessons import their shared `common` module


def lesson(number):
    """Import tools/lessons/NN_*.py as a module."""
    (path,) = glob.glob(os.path.join(LESSONS, f"{number:02d}_*.py"))
    spec = importlib.util.spec_from_file_location(f"lesson_{number:02d}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(number, capsys, *flags):
    result = lesson(number).main(["--quick", *flags])
    printed = capsys.readouterr().out
    assert printed.strip(), "a lesson prints what it measured"
    return result, printed


def test_every_lesson_has_a_test():
    numbers = sorted(int(os.path.basename(p)[:2]) for p in glob.glob(os.path.join(LESSONS, "[0-9][0-9]_*.py")))
    tested = sorted(int(name.split("_")[2]) for name in globals() if name.startswith("test_lesson_"))
    assert numbers == tested == list(range(1, 10))


def test_lesson_01_eager_tf_function_and_xla_choose_the_same_tokens(capsys):
    result, printed = run(1, capsys)
    assert set(result["tokens"]) == {"eager", "tf.function", "XLA"} and result["same_tokens"]
    assert "speed-up over eager" in printed


def test_lesson_02_later_calls_reuse_the_one_trace(capsys):
    result, printed = run(2, capsys)
    assert result["traces"] == 1 and result["calls"] > 1
    assert set(result["seconds"]) == {"trace", "lower to HLO", "compile", "run (= a later call)"}


def test_lesson_03_one_program_per_length_against_one_per_bucket(capsys):
    result, _ = run(3, capsys)
    assert result["programs"] == {1: result["lengths"], 8: 1} and result["lengths"] > 1
    assert result["same_tokens"]


def test_lesson_04_a_sweep_traces_once_a_python_float_traces_per_value(capsys):
    result, _ = run(4, capsys)
    assert result["ours_traces"] == 1 and result["naive_traces"] == result["values"] > 1
    assert result["same_tokens"]


def test_lesson_05_the_cache_changes_no_token(capsys):
    result, _ = run(5, capsys)
    assert result["same_tokens"] and len(result["cached_ms"]) == len(result["lengths"]) > 1


def test_lesson_06_positions_from_the_left_edge_change_padded_rows(capsys):
    result, _ = run(6, capsys)
    assert all(result["ours"])  # every row equals its prompt alone
    padded = [n for n, p in zip(result["naive"], result["padding"]) if p]
    unpadded = [n for n, p in zip(result["naive"], result["padding"]) if not p]
    assert unpadded and all(unpadded)  # no padding: both count the same positions
    assert padded and not all(padded)  # a padded row under textbook positions decodes differently


def test_lesson_07_ancestry_and_gathering_give_rows_the_same_history(capsys):
    result, _ = run(7, capsys)
    assert all(result["agree"]) and len(result["agree"]) == len(result["lengths"])


def test_lesson_08_bisection_keeps_what_sorting_keeps(capsys, tmp_path):
    plot = tmp_path / "top_p.png"
    result, _ = run(8, capsys, "--plot", str(plot))
    assert all(result["same_kept"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the --plot path draws a real PNG


def test_lesson_09_the_screen_keeps_greedy_tokens_and_leaves_few_candidates(capsys):
    result, printed = run(9, capsys)
    assert result["same_tokens"] and set(result["ms"]) == {"screen", "whole head"}
    # the winner always reaches its own bound; a trained model's bound rules out nearly every other token
    assert len(result["undecided"]) == 8 and min(result["undecided"]) >= 1 and max(result["undecided"]) < 50
    assert "tokens the bound left per step" in printed
