"""The comparison and qualitative commands on tiny trained models: seeds, table files, figures."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import perf as costs
from helpers import training
from helpers.data.voc import CLASSES
from helpers.evaluation import metrics
from helpers.models import store as runs
from helpers.results import analysis, compare, files, summary

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, demo_root):
    """Every student trained for seeds 0 and 1 (one epoch each) on the tiny demo set."""
    from conftest import tiny_config

    base = tmp_path_factory.mktemp("cmp")  # (monitor_every and teacher_cache: the defaults)
    cfg = tiny_config(base, demo_root, run_name="two", epochs=1, seeds=2, monitor_every=5, teacher_cache=True)
    for method in cfg.students:
        for s in compare.seeds_of(cfg):
            training.fit(cfg, method, seed=s, progress=False)
    return cfg


def _fake_evals(cfg, n_images=30):
    """{eval key: eval result} like `load_all`'s, from random per-image matrices (no model runs)."""
    rng = np.random.default_rng(0)
    c = len(CLASSES)
    evals = {}
    keys = ["teacher"] + [m if s == cfg.seed else f"{m}_seed{s}" for m in cfg.students for s in compare.seeds_of(cfg)]
    for key in keys:
        cms = rng.integers(0, 20, size=(n_images, c, c)) + np.eye(c, dtype=np.int64) * rng.integers(20, 200)
        inter = rng.integers(0, 50, size=(n_images, c))
        bounds = np.stack([inter, inter + rng.integers(1, 30, size=(n_images, c))], axis=-1)
        evals[key] = dict(
            metrics.summarize(cms, [f"val_{j:05d}" for j in range(n_images)]),
            per_image_cm=cms,
            per_image_boundary=bounds,
        )
    return evals


@pytest.mark.parametrize("seeds", [1, 3])
def test_table_delta_is_the_difference_of_its_mIoU_column(seeds, tmp_path, monkeypatch):
    """compare() on precomputed evals: Δ = difference of the rows' mIoU (means over seeds); the
    interval is seed-level with several seeds and says so; the image bootstrap with one seed."""
    from helpers.config import Config

    cfg = Config(
        run_name="fake", reports_dir=str(tmp_path), device="cpu", seeds=seeds, bootstrap_resamples=200, latency_size=32
    )
    evals = _fake_evals(cfg)
    models = {k: torch.nn.Conv2d(3, len(CLASSES), 1) for k in ("teacher", *cfg.students)}
    monkeypatch.setattr(
        compare, "load_finished", lambda cfg, progress=True, partial=True: (models, evals, list(range(30)), [])
    )
    monkeypatch.setattr(compare, "_agreement", lambda *a: {})  # (no images behind these evaluations)
    monkeypatch.setattr(costs, "optimize_for_inference", lambda m, path, size: m)
    monkeypatch.setattr(costs, "gflops", lambda m, size: 0.1)
    fake_lat = {
        "mean_ms": 1.0,
        "std_ms": 0.1,
        "device": "cpu",
        "threads": 1,
        "dtype": "float32",
        "input_size": [1, 3, 32, 32],
    }
    monkeypatch.setattr(costs, "latency", lambda models, *a, **k: {m: dict(fake_lat) for m in models})
    results = compare.compare(cfg, progress=False)
    rows = {r["method"]: r for r in results["rows"]}
    for m in ("response", "feature"):
        d, r = rows[m]["diff_vs_baseline"], rows[m]
        assert d["diff"] == pytest.approx(r["miou"] - rows["baseline"]["miou"], abs=1e-12)
        assert len(d["per_seed"]) == seeds == d["n_seeds"] == r["n_seeds"]
        assert d["per_seed"] == pytest.approx(np.subtract(r["per_seed_miou"], rows["baseline"]["per_seed_miou"]))
        assert r["miou"] == pytest.approx(np.mean(r["per_seed_miou"]))
        assert d["low"] <= d["diff"] <= d["high"] and d["significant"] == (d["low"] > 0 or d["high"] < 0)
    assert rows["teacher"]["n_seeds"] == 1 and rows["teacher"]["diff_vs_baseline"] is None
    assert all(r["miou_ci"][0] <= r["miou"] <= r["miou_ci"][1] for r in rows.values())
    for m in ("response", "feature"):  # boundary IoU: the same construction, on the boundary counts
        b, r = rows[m]["boundary_diff_vs_baseline"], rows[m]
        assert b["diff"] == pytest.approx(r["boundary_iou"] - rows["baseline"]["boundary_iou"], abs=1e-12)
        assert b["low"] <= b["diff"] <= b["high"] and r["boundary_ci"][0] <= r["boundary_iou"] <= r["boundary_ci"][1]
    keys = ["baseline"] + [f"baseline_seed{s}" for s in compare.seeds_of(cfg)[1:]]
    per_seed = [
        np.nanmean(evals[k]["per_image_boundary"][..., 0].sum(0) / evals[k]["per_image_boundary"][..., 1].sum(0))
        for k in keys
    ]
    assert rows["baseline"]["boundary_iou"] == pytest.approx(np.mean(per_seed))
    data = files.read_table_json(tmp_path / "fake")
    assert data["rows"][0]["per_seed_miou"] == rows[data["rows"][0]["method"]]["per_seed_miou"]
    text = analysis.analysis_text(results)
    if seeds == 1:
        assert "paired percentile bootstrap" in results["protocol"]
        assert "One seed: the interval covers the choice of val images, not training noise" in text
    else:
        assert "seed-level t-interval over 3 seeds" in results["protocol"]
        assert "per seed: " + ", ".join(f"{v:+.4f}" for v in rows["response"]["diff_vs_baseline"]["per_seed"]) in text
        assert "seed-level" in text and "training noise" in text
        assert "per seed:" in (tmp_path / "fake" / "kd_comparison_results.txt").read_text()


def test_compare_cli_with_two_seeds_shows_mean_and_std(two_seeds):
    cfg = two_seeds
    overrides = []
    for k in (
        "checkpoints_dir",
        "reports_dir",
        "data_root",
        "demo_size",
        "demo_scale",
        "crop_size",
        "base_size",
        "epochs",
        "teacher_epochs",
        "batch_size",
        "warmup_iters",
        "device",
        "seeds",
        "bootstrap_resamples",
        "latency_size",
        "latency_min_time",
    ):
        overrides += ["-p", k, str(getattr(cfg, k))]
    res = cli("compare", "--run-name", cfg.run_name, *overrides)
    assert res.returncode == 0, res.stderr
    assert "COMPARISON TABLE" in res.stdout
    data = json.loads((Path(cfg.reports_dir) / cfg.run_name / "kd_comparison_results.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    for m in cfg.students:
        assert rows[m]["n_seeds"] == 2 and rows[m]["miou_std"] is not None
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("Response-Based"))
    assert re.search(r"\d\.\d{4} ± \d\.\d{4}", line), line  # mean ± std over the two seeds
    assert data["seeds"] == [0, 1]


def test_qualitative_cli_writes_the_guide_layout(two_seeds, tmp_path):
    ckpt = runs.checkpoint_path(two_seeds, "response")
    out = tmp_path / "qualitative_results_response"
    res = cli(
        "qualitative", "--checkpoint", str(ckpt), "--output-dir", str(out), "--num-success", "3", "--num-failure", "2"
    )
    assert res.returncode == 0, res.stderr
    assert len(list((out / "successful_cases").glob("success_rank*_sample*_iou*.png"))) == 3
    assert len(list((out / "failure_cases").glob("failure_rank*_sample*_iou*.png"))) == 2
    assert (out / "iou_distribution.png").is_file() and "mIoU" in (out / "evaluation_metrics.txt").read_text()
    bad = cli("qualitative", "--checkpoint", str(tmp_path / "missing.pt"), "--output-dir", str(out))
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("seeds", [1, 3])
def test_seed_summary_names_the_interval_the_run_will_get(seeds, tmp_path, monkeypatch):
    """Notebooks 03/04's printout promises notebook 05's interval: seed-level only with several seeds."""
    from helpers.config import Config

    monkeypatch.setattr(summary, "_evaluate", lambda cfg, key, model, val, device: {"miou": 0.5})
    cfg = Config(run_name="s", checkpoints_dir=str(tmp_path / "ckpt"), reports_dir=str(tmp_path / "r"), seeds=seeds)
    text = summary.seed_summary(cfg, "response", {s: None for s in range(seeds)}, "cpu", val=[0] * 6)
    image_level = "image-level interval (paired bootstrap over val images; one seed cannot show training noise)"
    assert (image_level in text) == (seeds == 1) and ("seed-level interval" in text) == (seeds > 1)
    assert "interval" not in summary.seed_summary(cfg, "baseline", {0: None}, "cpu", val=[0] * 6)
