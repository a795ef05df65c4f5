"""The comparison and qualitative commands on tiny trained models: seeds, table files, figures."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import compare, engine

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def cli(*args):
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, demo_root):
    """Every student trained for seeds 0 and 1 (one epoch each) on the tiny demo set."""
    from conftest import TINY_SCALE
    from helpers.config import Config

    base = tmp_path_factory.mktemp("cmp")
    cfg = Config(run_name="two", checkpoints_dir=str(base / "ckpt"), reports_dir=str(base / "reports"),
                 data_root=str(demo_root), demo_size=32, demo_scale=TINY_SCALE, crop_size=32, base_size=32,
                 epochs=1, teacher_epochs=1, batch_size=4, warmup_iters=1, device="cpu", seeds=2,
                 bootstrap_resamples=100, latency_size=32, latency_min_time=0.01)
    for method in compare.STUDENTS:
        for s in compare.seeds_of(cfg):
            engine.fit(cfg, method, seed=s, progress=False)
    return cfg


def test_compare_cli_with_two_seeds_shows_mean_and_std(two_seeds):
    cfg = two_seeds
    overrides = []
    for k in ("checkpoints_dir", "reports_dir", "data_root", "demo_size", "demo_scale", "crop_size", "base_size",
              "epochs", "teacher_epochs", "batch_size", "warmup_iters", "device", "seeds", "bootstrap_resamples",
              "latency_size", "latency_min_time"):
        overrides += ["-p", k, str(getattr(cfg, k))]
    res = cli("compare", "--run", cfg.run_name, *overrides)
    assert res.returncode == 0, res.stderr
    assert "COMPARISON TABLE" in res.stdout
    data = json.loads((Path(cfg.reports_dir) / cfg.run_name / "kd_comparison_results.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    for m in compare.STUDENTS:
        assert rows[m]["n_seeds"] == 2 and rows[m]["miou_std"] is not None
    line = next(l for l in res.stdout.splitlines() if l.startswith("Response-Based"))
    assert re.search(r"\d\.\d{4} ± \d\.\d{4}", line), line  # mean ± std over the two seeds
    assert data["seeds"] == [0, 1]


def test_qualitative_cli_writes_the_guide_layout(two_seeds, tmp_path):
    ckpt = engine.checkpoint_path(two_seeds, "response")
    out = tmp_path / "qualitative_results_response"
    res = cli("qualitative", "--checkpoint", str(ckpt), "--output-dir", str(out), "--num-success", "3",
              "--num-failure", "2")
    assert res.returncode == 0, res.stderr
    assert len(list((out / "successful_cases").glob("success_rank*_sample*_iou*.png"))) == 3
    assert len(list((out / "failure_cases").glob("failure_rank*_sample*_iou*.png"))) == 2
    assert (out / "iou_distribution.png").is_file() and "mIoU" in (out / "evaluation_metrics.txt").read_text()
    bad = cli("qualitative", "--checkpoint", str(tmp_path / "missing.pt"), "--output-dir", str(out))
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
