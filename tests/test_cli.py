import pytest

from conftest import fixture_path
from xlagen.engine.jobs.cli import main


def test_generate_prints_one_completion_per_prompt(capsys):
    assert main(["generate", "--model", fixture_path("gpt2-tiny"), "--max-new-tokens", "4", "The for", "If"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("The for") and any(l.startswith("If") for l in lines[1:])


def test_missing_model_is_one_line_error(capsys, tmp_path):
    assert main(["generate", "--model", str(tmp_path / "absent"), "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xlagen: error:") and "does not exist" in err and "\n" not in err


# Six eager greedy tokens of gpt2-tiny: what the assistant tests compare drafted text with.
EAGER_GREEDY = ["generate", "--eager", "--model", fixture_path("gpt2-tiny"), "--max-new-tokens", "6"]


def _printed(capsys, *flags):
    """stdout of a successful `xlagen generate` of "The for" with EAGER_GREEDY and flags."""
    assert main(EAGER_GREEDY + list(flags) + ["The for"]) == 0
    return capsys.readouterr().out


def test_head_screen_flags_reach_load_and_keep_the_text(capsys, monkeypatch):
    """Compiled greedy text is the same with the screen (--head-screen: the fixture's head is
    small, so none by default) and without (--no-head-screen)."""
    import xlagen.engine.generator as engine
    screened, real_load = [], engine.load

    def recording_load(path, **kwargs):
        gen = real_load(path, **kwargs)
        screened.append(gen.model.screen is not None)
        return gen

    monkeypatch.setattr(engine, "load", recording_load)
    texts = []
    for flags in ([], ["--head-screen"], ["--no-head-screen"]):
        assert main(["generate", "--model", fixture_path("gpt2-tiny"), "--max-new-tokens", "6", *flags, "The for"]) == 0
        texts.append(capsys.readouterr().out)
    assert screened == [False, True, False] and texts[0] == texts[1] == texts[2]
    with pytest.raises(SystemExit):
        main(["generate", "--head-screen", "--no-head-screen", "The for"])


def test_assistant_model_flag_drafts_for_the_model(capsys):
    """--assistant-model loads a second checkpoint that drafts; greedy text is plain greedy's."""
    plain = _printed(capsys)
    assert _printed(capsys, "--assistant-model", fixture_path("gpt2-variant"), "--num-assistant-tokens", "2") == plain
    assert main(EAGER_GREEDY + ["--assistant-model", fixture_path("opt-tiny"), "The for"]) == 2
    assert "vocabulary" in capsys.readouterr().err


def test_assistant_quantize_flag_loads_an_int8_draft_and_keeps_the_text(capsys, monkeypatch):
    """--assistant-quantize int8 stores only the assistant as int8; the model's check keeps its greedy text."""
    import xlagen.engine.generator as engine
    loaded, real_load = [], engine.load

    def recording_load(path, **kwargs):
        gen = real_load(path, **kwargs)
        loaded.append((path, gen.model.quantize))
        return gen

    monkeypatch.setattr(engine, "load", recording_load)
    plain = _printed(capsys)
    assert _printed(capsys, "--assistant-model", fixture_path("gpt2-variant"), "--assistant-quantize", "int8") == plain
    assert loaded[-2:] == [(fixture_path("gpt2-tiny"), None), (fixture_path("gpt2-variant"), "int8")]
    # Either assistant flag sets the assistant's storage alone: an int8 model may have a float32 draft.
    _printed(capsys, "--quantize", "int8", "--assistant-model", fixture_path("gpt2-variant"), "--assistant-dtype", "float32")
    assert loaded[-2:] == [(fixture_path("gpt2-tiny"), "int8"), (fixture_path("gpt2-variant"), None)]
    with pytest.raises(SystemExit):
        main(EAGER_GREEDY + ["--assistant-quantize", "int8", "The for"])
    assert "--assistant-model" in capsys.readouterr().err
