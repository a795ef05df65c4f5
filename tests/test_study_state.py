"""What a student sees of a study's state: reused work said in one line, a new teacher announced with
why and how long, a per-epoch view of training, every run listed, the settings a message asks for
named, a partial comparison, and table files that stay in step with the report."""

import pytest

from helpers import kd, training
from helpers.config import study as session
from helpers.core.progress import EpochView, span
from helpers.models import store as runs
from helpers.results import analysis, compare, files, summary, table
from helpers.training import seeds as launch


def test_span_writes_seeds_as_a_reader_would():
    assert (span([0]), span([0, 1]), span([2, 0, 1]), span([0, 2, 5])) == ("0", "0, 1", "0–2", "0, 2, 5")


def test_reuse_is_one_line_and_a_new_teacher_says_why_and_how_long(tiny_cfg, capsys):
    cfg = tiny_cfg.replace(seeds=2)
    training.get_teacher(cfg, "cpu")
    first = capsys.readouterr().out
    assert "teacher: training a new one (compact_l, 1 epoch on 60 'teacher' images)" in first
    assert "no teacher has been trained here yet" in first and "No earlier teacher" in first
    assert "teacher epoch 1/1 loss=" in first  # one line per epoch outside JupyterLab
    training.get_teacher(cfg, "cpu", progress=False)
    assert "teacher: finished, reused (" in capsys.readouterr().out
    # another teacher setting: the announcement names it and estimates from the one trained before
    other = cfg.replace(teacher_epochs=2)
    training.get_teacher(other, "cpu", progress=False)
    out = capsys.readouterr().out
    assert "teacher_epochs 1 → 2" in out and "Expect about" in out and "ms per image and epoch" in out
    launch.fit_seeds(cfg, "baseline")
    trained = capsys.readouterr().out
    assert "finished, reused" not in trained and "baseline seed 1 epoch 2/2 loss=" in trained
    launch.fit_seeds(cfg, "baseline", progress=False)
    again = capsys.readouterr().out
    assert "baseline seeds 0, 1: finished, reused (" in again and "force=True retrains" in again
    assert "epoch 1/2" not in again


def test_the_epoch_view_is_a_table_updated_in_place_in_jupyter(monkeypatch):
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj.data))

    import IPython.display

    monkeypatch.setattr(
        IPython.display, "display", lambda obj, display_id: shown.append(("show", obj.data)) or Handle()
    )
    monkeypatch.setattr("helpers.core.progress.in_jupyter", lambda: True)
    view = EpochView("response seed 0", 3, live=True)
    history = {
        "epoch": [],
        "loss": [],
        "ce": [],
        "kd": [],
        "lr": [],
        "time_s": [],
        "monitor_epoch": [],
        "monitor_miou": [],
    }
    for e in (1, 2):
        for k, v in (("epoch", e), ("loss", 1.0 / e), ("ce", 0.6 / e), ("kd", 0.4 / e), ("lr", 0.01), ("time_s", 2.5)):
            history[k].append(v)
        if e == 2:
            history["monitor_epoch"].append(2)
            history["monitor_miou"].append(0.4321)
        view.update(history)
    assert [kind for kind, _ in shown] == ["show", "update"]
    last = shown[-1][1]
    assert "epoch 2 of 3" in last and last.count("<tr>") == 3  # header + 2 rows, one table
    assert all(h in last for h in ("<th>loss</th>", "<th>ce</th>", "<th>kd</th>", "<th>monitor mIoU</th>"))
    assert "0.4321" in last and "2.5 s" in last


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEG_ROOT", str(tmp_path))
    return tmp_path


def test_the_settings_line_shows_what_differs_and_a_switch_of_run_is_said(root, capsys):
    session.start({"preset": None, "run_name": None, "overrides": {}}, "01_data")
    assert (
        "run 'demo' · settings: preset demo (a new run) · data demo data in the VOC layout" in capsys.readouterr().out
    )
    session.start({"preset": None, "run_name": "trial", "overrides": {"epochs": 2}, "seeds": 1}, "02_baseline")
    out = capsys.readouterr().out
    assert "settings: preset demo (a new run) + seeds=1, epochs=2 · data" in out
    assert "current run: 'trial' (was 'demo';" in out and "run_name='demo' goes back" in out
    session.start({"preset": None, "run_name": None, "overrides": {}}, "05_compare")  # follows, unedited
    out = capsys.readouterr().out
    assert "differs from preset demo: seeds=1, epochs=2" in out and "following the current run 'trial'" in out


def test_runs_lists_every_run_with_what_is_finished(tiny_cfg, monkeypatch, capsys):
    from helpers.cli import main

    session.record(tiny_cfg, "demo", "test")
    session.record(tiny_cfg.replace(run_name="other", seeds=2), "demo", "test")
    training.fit(tiny_cfg, "baseline", progress=False)
    (runs.reports_dir(tiny_cfg)).mkdir(parents=True)
    (runs.reports_dir(tiny_cfg) / "report.html").write_text("<html></html>")
    capsys.readouterr()
    assert main(["runs", "--checkpoints-dir", tiny_cfg.checkpoints_dir]) == 0
    out = capsys.readouterr().out
    assert "* other: preset demo + " in out and "seeds=2" in out  # the current run, marked
    assert "baseline 1/1 · response 0/1 · feature 0/1 seeds finished" in out
    assert "baseline 0/2 · response 0/2 · feature 0/2 seeds finished · report: not built yet" in out
    assert "  t: preset demo + " in out and f"report: {runs.reports_dir(tiny_cfg) / 'report.html'}" in out


def test_not_trained_names_the_settings_the_notebook_needs(tiny_cfg):
    cfg = tiny_cfg.replace(epochs=3)
    session.record(cfg, "demo", "02_baseline")
    with pytest.raises(runs.NotTrained) as e:
        compare.load_all(cfg)
    msg = str(e.value)
    assert "its settings (preset demo + " in msg and "epochs=3" in msg
    assert "'t' is the current run, so the notebook run as it is uses them" in msg


def _fake_results(latency=(1.0, 0.1), miou=0.5, partial=False):
    rows = [
        {
            "method": m,
            "label": kd.label(m),
            "miou": miou + i / 10,
            "per_seed_miou": [miou + i / 10],
            "n_seeds": 1,
            "latency_ms": latency[0],
            "latency_std_ms": latency[1],
            "params": 10,
        }
        for i, m in enumerate(["baseline"] + ([] if partial else ["response", "feature"]) + ["teacher"])
    ]
    missing = (
        [
            {"method": m, "label": kd.label(m), "notebook": kd.trained_by(m), "seeds": [0], "why": "not there"}
            for m in ("response", "feature")
        ]
        if partial
        else []
    )
    return {
        "run": "r",
        "rows": rows,
        "partial": partial,
        "missing": missing,
        "latency": {
            "device": "cpu",
            "threads": 1,
            "dtype": "float32",
            "input_size": [1, 3, 8, 8],
            "path": "eager",
            "time": f"2026-12-0{2 + partial}T10:00:00",
        },
    }


def test_a_noisier_latency_never_replaces_a_quieter_one(tmp_path):
    quiet = _fake_results(latency=(3.75, 0.33))
    assert files.write_results(quiet, tmp_path).startswith("written:")
    (tmp_path / "report.html").write_text("<html>the report</html>")
    noisy = _fake_results(latency=(30.3, 18.3))
    noisy["latency"]["time"] = "2026-12-03T12:00:00"
    note = files.write_results(noisy, tmp_path)
    assert "noisier than the one of 2026-12-02 10:00" in note and "report" not in note.split("kept")[-1]
    saved = files.read_table_json(tmp_path)
    assert [r["latency_ms"] for r in saved["rows"]] == [3.75] * 4 == [r["latency_ms"] for r in noisy["rows"]]
    assert len(saved["latency"]["measurements"]) == 2 and "quietest of 2 measurements" in table.table_text(saved)
    quieter = _fake_results(latency=(3.5, 0.05))
    note = files.write_results(quieter, tmp_path)
    assert "shows the earlier table" in note  # the report no longer matches: said, with the way to rebuild it
    assert files.read_table_json(tmp_path)["rows"][0]["latency_ms"] == 3.5
    retrained = _fake_results(latency=(9.0, 8.0), miou=0.6)  # other models: their own latency, no merging
    files.write_results(retrained, tmp_path)
    assert files.read_table_json(tmp_path)["rows"][0]["latency_ms"] == 9.0


def test_a_partial_table_is_marked_and_never_replaces_a_complete_one(tmp_path):
    partial = _fake_results(partial=True)
    text = table.table_text(partial)
    assert (
        "Partial table: it compares what is finished; not finished yet: Response-Based (seeds 0, not there; "
        "notebook 03_response_kd trains it); Feature-Based" in text
    )
    assert files.write_results(partial, tmp_path).startswith("written:")  # nothing complete there yet
    files.write_results(_fake_results(), tmp_path)
    before = (tmp_path / "kd_comparison_results.json").read_text()
    note = files.write_results(_fake_results(partial=True), tmp_path)
    assert note.startswith("not written:") and (tmp_path / "kd_comparison_results.json").read_text() == before
    assert "left as it is" in files.save_beside_table(None, {"written": False}, tmp_path / "headline.png")
    assert not (tmp_path / "headline.png").exists()


@pytest.mark.slow
def test_05_compares_what_is_finished(tiny_cfg, capsys):
    training.fit(tiny_cfg, "teacher", progress=False)
    training.fit(tiny_cfg, "baseline", progress=False)
    training.fit(tiny_cfg, "response", progress=False)
    results = compare.compare(tiny_cfg, progress=False)
    assert [r["method"] for r in results["rows"]] == ["baseline", "response", "teacher"]
    assert results["partial"] and [m["method"] for m in results["missing"]] == ["feature"]
    assert (
        "not finished yet: Feature-Based (seeds 0, not there; notebook 04_feature_kd trains it)"
        in capsys.readouterr().out
    )
    assert results["rows"][1]["diff_vs_baseline"]["diff"] is not None
    assert "Partial table" in (runs.reports_dir(tiny_cfg) / "kd_comparison_results.md").read_text()
    assert "Agreement with the teacher" in analysis.analysis_text(results)
    no_kd = {**results, "rows": [r for r in results["rows"] if r["method"] != "response"]}  # only the baseline
    text = analysis.analysis_text(no_kd)
    assert text and "; ." not in text and "Agreement with the teacher" not in text


def test_the_analysis_says_when_the_teacher_is_weaker_than_the_students():
    results = _fake_results()
    results["rows"][-1]["miou"] = 0.33  # teacher below the baseline's 0.5
    text = analysis.analysis_text(results)
    assert "The teacher (0.3300) is weaker than the baseline student it should teach (0.5000)" in text


def test_the_title_says_what_the_data_is():
    from helpers.report import build as report

    assert "demo data in the VOC layout" in report.title_for({"dataset": "demo"})
    assert report.title_for({"dataset": "voc"}).endswith("(PASCAL VOC 2012)")


def test_long_steps_show_progress(tiny_cfg, monkeypatch):
    """06's figure writing advances a bar per figure; 02-04's evaluations draw a bar (and are cached for 05)."""
    from helpers.data import loaders as data
    from helpers.evaluation import protocol as evaluation
    from helpers.results import qualitative

    model, _ = training.fit(tiny_cfg, "baseline", progress=False)
    ds = data.dataset(tiny_cfg, "val")
    ev = evaluation.evaluate(model, ds, "cpu")
    ticks = []
    written = qualitative.write_cases(
        model, ds, ev, tiny_cfg.reports_dir, 2, 1, "cpu", on_figure=lambda: ticks.append(1)
    )
    assert len(ticks) == 3 == len(written["success"]) + len(written["failure"])
    bars = []
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: bars.append(k.get("progress")) or real(*a, **k))
    summary._evaluate(tiny_cfg, "baseline", model, ds, "cpu")
    assert bars == [True]
    summary._evaluate(tiny_cfg, "baseline", model, ds, "cpu")  # cached: no second evaluation
    assert bars == [True]
