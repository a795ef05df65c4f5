"""A study is set up once: a notebook with no parameters follows the current run and its recorded
settings; a preset or run_name given explicitly wins; force and interactive are never recorded."""

import json

import pytest

from helpers import config
from helpers.config import study as session
from helpers.core.errors import UserError


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEG_ROOT", str(tmp_path))
    return tmp_path


def test_a_fresh_clone_gets_the_demo_preset(root, capsys):
    cfg = session.start({"preset": None, "run_name": None, "overrides": {}}, "05_compare")
    assert cfg == config.from_preset("demo")
    assert "run 'demo' · settings: preset demo (a new run)" in capsys.readouterr().out
    assert not (root / "checkpoints").exists()  # 05 only reads


def test_set_once_in_02_then_later_notebooks_follow(root, capsys):
    ns = {"preset": None, "run_name": "trial", "overrides": {"epochs": 3}, "seeds": None, "force": True}
    made = session.start(ns, "02_baseline")
    assert (made.run_name, made.epochs, made.force) == ("trial", 3, True)
    rec = json.loads((root / "checkpoints" / "trial" / "settings.json").read_text())
    assert rec["by"] == "02_baseline" and rec["preset"] == "demo" and rec["settings"]["epochs"] == 3
    assert "force" not in rec["settings"] and "interactive" not in rec["settings"]
    # 05 opened with its defaults: the current run, its recorded settings
    later = session.start(
        {"preset": None, "run_name": None, "overrides": {}, "bootstrap_resamples": None}, "05_compare"
    )
    assert later.replace(force=True) == made
    assert "run 'trial' · settings: the run's record (last written by 02_baseline" in capsys.readouterr().out
    # 03's own knob changes one value on top of the record, and 03 records it for 05/06
    tuned = session.start({"preset": None, "run_name": None, "overrides": {}, "alpha": 0.25}, "03_response_kd")
    assert (tuned.alpha, tuned.epochs) == (0.25, 3)
    assert session.resolve(None, None, {})[0].alpha == 0.25


def test_an_explicit_preset_ignores_the_record(root):
    session.record(config.from_preset("demo", {"run_name": "smoke", "epochs": 9}), "demo", "test")
    cfg, source = session.resolve("smoke", None, {})
    assert cfg == config.from_preset("smoke") and source == "preset smoke"
    assert session.resolve(None, None, {})[0].epochs == 9  # no preset: the record of the current run


def test_bad_overrides_are_refused_with_did_you_mean(root):
    with pytest.raises(UserError, match=r"Unknown parameter 'temprature' \(did you mean 'temperature'\?\)"):
        session.start({"overrides": {"temprature": 2}}, "03_response_kd")
    with pytest.raises(UserError, match="overrides must be a dict"):
        session.start({"overrides": ["epochs", 3]}, "03_response_kd")
    assert not (root / "checkpoints").exists()
