"""The small GPT-2 bundled with xlagen (tools/train_default.py): offline, pinned, round-trips text."""
import os

from xlagen.engine import load
from xlagen.engine.jobs.cli import main


def test_loads_from_the_package_without_network():
    gen = load()
    assert gen.path == load("default").path and os.path.isdir(gen.path)
    assert gen.config.model_type == "gpt2" and gen.config.n_layer == 4 and gen.tokenizer is not None
    size = sum(os.path.getsize(os.path.join(gen.path, f)) for f in os.listdir(gen.path))
    assert size <= 10 * 1024 * 1024


def test_greedy_output_is_pinned():
    gen = load()
    ids = gen.tokenizer.encode("The for statement").ids
    out = gen.generate([ids], max_new_tokens=16)  # generation_config: no_repeat_ngram_size 3, repetition_penalty 1.2
    assert out[0].tolist() == [489, 340, 444, 289, 266, 626, 374, 261, 529, 14, 199, 33, 379, 846, 293, 418, 1099, 12, 323]


def test_tokenizer_round_trips_text():
    tok = load().tokenizer
    for text in ["The for statement", "def f(x):\n    return x ** 2  # café", "  indented\ttabs and <|endoftext|>"]:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_cli_without_model_uses_the_default(capsys):
    assert main(["generate", "--max-new-tokens", "8", "The for statement"]) == 0
    assert capsys.readouterr().out.startswith("The for statement")
