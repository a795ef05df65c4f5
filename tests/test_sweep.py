"""The calibration sweep: a grid x seeds trained on train, scored on holdout, written as CSV/PNG/markdown,
resumable cell by cell, with the study's teacher; mistakes are refused before anything trains."""

import csv

import numpy as np
import pytest
from scipy import stats

from helpers import cli as cli
from helpers import config, kd, training
from helpers.core.errors import UserError
from helpers.models import store as runs
from helpers.perf import sweep


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_grid_is_trained_scored_on_holdout_and_resumed(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg.replace(epochs=1)
    out = tmp_path / "sweep"
    sweep.run(cfg, "response", ["alpha=0.2,0.5"], seeds=1, out=out, progress=False)

    rows = rows_of(out / "sweep.csv")
    assert [(r["method"], r["alpha"], r["seed"]) for r in rows] == [
        ("baseline", "", "0"),
        ("response", "0.2", "0"),
        ("response", "0.5", "0"),
    ]
    assert all(r["split"] == "holdout" and 0 <= float(r["holdout_miou"]) <= 1 and float(r["train_s"]) > 0 for r in rows)
    for run in (
        "sweep-baseline/baseline.pt",
        "sweep-response-alpha=0.2/response.pt",
        "sweep-response-alpha=0.5/response.pt",
    ):
        assert (out / "checkpoints" / run).is_file(), run
    teacher = runs.checkpoint_path(cfg, "teacher")  # the study's teacher, trained once, where
    assert teacher.is_file() and not (out / "checkpoints" / "teachers").exists()  # the study keeps it
    assert runs.load_model(out / "checkpoints/sweep-response-alpha=0.5/response.pt")[1]["config"][
        "teacher_weights"
    ] == str(teacher.resolve())
    assert (out / "sweep.png").stat().st_size > 1000
    md = (out / "sweep.md").read_text()
    assert md == sweep.table_markdown(out / "sweep.csv")
    assert "| baseline (no KD) |" in md and "alpha=0.2" in md and "Best setting" in md

    calls = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append((a[1], k.get("seed"))) or real_fit(*a, **k))
    teacher_mtime = teacher.stat().st_mtime_ns
    sweep.run(cfg, "response", ["alpha=0.2,0.5"], seeds=1, out=out, progress=False)
    assert calls == [] and len(rows_of(out / "sweep.csv")) == 3  # every cell was there: nothing trained
    sweep.run(cfg, "response", ["alpha=0.5,1"], seeds=1, out=out, progress=False)
    assert [c for c in calls if c[0] != "teacher"] == [("response", 0)]  # only the new cell, alpha=1.0
    assert teacher.stat().st_mtime_ns == teacher_mtime
    assert rows_of(out / "sweep.csv")[-1]["alpha"] == "1.0"
    with pytest.raises(UserError, match="epochs: 1 there, 2 now"):  # another study: not mixed in
        sweep.run(cfg.replace(epochs=2), "response", ["alpha=0.5"], seeds=1, out=out, progress=False)


@pytest.mark.parametrize(
    "method, grid, message",
    [
        ("response", ["alpah=0.5"], "unknown parameter 'alpah' \\(did you mean 'alpha'\\?\\)"),
        ("response", ["beta=0.5,1"], "'beta' does not calibrate response KD \\(it acts only in feature KD\\)"),
        ("feature", ["lr=0.001"], "'lr' does not calibrate feature KD"),
        ("response", ["alpha"], "NAME=V1,V2"),
        ("response", ["alpha=0.5", "alpha=1"], "twice"),
        ("response", ["alpha=big"], "'alpha' must be float"),
        ("feature", ["cwd_temperature=2,4"], "only with feature_loss='cwd'"),
        ("baseline", ["alpha=0.5"], "no knobs"),
    ],
)
def test_bad_grids_are_refused_before_training(tiny_cfg, tmp_path, monkeypatch, method, grid, message):
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(UserError, match=message):
        sweep.run(tiny_cfg, method, grid, out=tmp_path / "s", progress=False)


def test_holdout_must_not_be_the_reported_split(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(UserError, match="never looks at the reported split"):
        sweep.run(tiny_cfg.replace(monitor_split="val"), "response", ["alpha=0.5"], out=tmp_path, progress=False)


def test_two_knobs_give_a_heatmap_and_paired_gains(tmp_path):
    path = tmp_path / "sweep.csv"
    path.write_text(
        "method,alpha,temperature,seed,split,holdout_miou,train_s\n"
        "baseline,,,0,holdout,0.30,1\nbaseline,,,1,holdout,0.40,1\n"
        "response,0.5,2.0,0,holdout,0.35,1\nresponse,0.5,2.0,1,holdout,0.41,1\n"
        "response,0.5,4.0,0,holdout,0.50,1\nresponse,0.5,4.0,1,holdout,0.60,1\n"
        "response,1.0,4.0,0,holdout,0.20,1\n"
    )
    md = sweep.table_markdown(path)
    assert "| baseline (no KD) | 0.3500 ± 0.0707 | 0: 0.3000, 1: 0.4000 | — |" in md
    assert "| **alpha=0.5, temperature=4.0** | 0.5500 ± 0.0707 | 0: 0.5000, 1: 0.6000 | +0.2000 |" in md
    assert "| alpha=1.0, temperature=4.0 | 0.2000 | 0: 0.2000 | -0.1000 |" in md  # paired: seed 0 only
    assert "Best setting (highest mean holdout mIoU): **alpha=0.5, temperature=4.0**" in md
    assert sweep.plot(path, tmp_path / "sweep.png").stat().st_size > 1000


def test_knobs_are_settings_that_shape_the_student():
    for method in kd.registered():  # a sweep cell's checkpoint is told apart by them
        assert set(sweep.knobs_of(method)) <= set(config.shaping_keys(method))


def test_cli_sweep(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr(
        sweep,
        "run",
        lambda cfg, method, grid, seeds, out: (
            seen.update(cfg=cfg, method=method, grid=grid, seeds=seeds, out=out) or out
        ),
    )
    monkeypatch.setattr(sweep, "table_markdown", lambda path: "| table |\n")
    assert (
        cli.main(
            [
                "sweep",
                "--preset",
                "smoke",
                "--method",
                "feature",
                "--grid",
                "beta=0.3,1",
                "--grid",
                "feature_loss=hint,cwd",
                "--seeds",
                "2",
                "-p",
                "epochs",
                "3",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert seen["method"] == "feature" and seen["grid"] == ["beta=0.3,1", "feature_loss=hint,cwd"]
    assert seen["seeds"] == 2 and seen["cfg"].epochs == 3 and seen["cfg"].run_name == "smoke"
    assert "| table |" in capsys.readouterr().out
    monkeypatch.undo()
    assert (
        cli.main(
            ["sweep", "--preset", "smoke", "--method", "response", "--grid", "beta=1", "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert "does not calibrate response KD" in capsys.readouterr().err


def test_two_settings_are_compared_paired_by_seed(tmp_path):
    """The cached-vs-online measurement: two settings of one knob, their difference seed by seed."""
    path = tmp_path / "sweep.csv"
    rows = ["method,teacher_cache,seed,split,holdout_miou,train_s"]
    cached, online = [0.80, 0.82, 0.81, 0.79], [0.79, 0.80, 0.82, 0.78]
    rows += [f"baseline,,{s},holdout,0.75,1" for s in range(4)]
    rows += [f"response,True,{s},holdout,{v},1" for s, v in enumerate(cached)]
    rows += [f"response,False,{s},holdout,{v},1" for s, v in enumerate(online)]
    path.write_text("\n".join(rows) + "\n")
    md = sweep.table_markdown(path)
    diffs = [a - b for a, b in zip(cached, online)]
    half = stats.t.ppf(0.975, 3) * np.std(diffs, ddof=1) / 2
    assert f"teacher_cache=True minus teacher_cache=False, paired by seed over 4 seeds: {np.mean(diffs):+.4f}" in md
    assert f"t-interval {np.mean(diffs) - half:+.4f} to {np.mean(diffs) + half:+.4f}), not distinguishable" in md
