"""The project's commands under `torchrun` (2 CPU processes, Gloo): sharded evaluation equals one
process's bitwise, a 2-process training's checkpoint is loaded and continued by one process, a
failing rank ends the job with its message, and `fit_seeds` with nproc=2 launches torchrun itself."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import count_epochs

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _run(args, timeout=120):
    p = subprocess.run(TORCHRUN + args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def _params(cfg) -> list[str]:
    keys = (
        "run_name",
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
        "monitor_every",
        "device",
        "seeds",
        "teacher_cache",
    )
    out = []
    for k in keys:
        v = getattr(cfg, k)
        out += ["-p", k, str(v).lower() if isinstance(v, bool) else str(v)]
    return out


def test_sharded_evaluation_equals_one_process(tiny_cfg, tmp_path):
    """evaluation.evaluate over 2 ranks (6 val images... and an odd count) gathers the same per-image
    confusion matrices and boundary counts as one process, bitwise, on both ranks."""
    from helpers import training
    from helpers.data import loaders as data
    from helpers.evaluation import protocol as evaluation

    script = tmp_path / "shard_eval.py"
    script.write_text(
        textwrap.dedent(f"""
        import numpy as np, torch
        from torch.utils.data import Subset
        from helpers.data import loaders as data
        from helpers.scale import distributed
        from helpers.evaluation import protocol as evaluation
        from helpers import training
        from helpers.config import Config
        ctx = distributed.setup("cpu")
        cfg = Config.from_dict({tiny_cfg.to_dict()!r})
        ds = data.dataset(cfg, "val")
        model = training.initial_model(cfg, "baseline", 0)
        for name, d in (("all", ds), ("odd", Subset(ds, range(5)))):
            if name == "odd":
                d.ids = ds.ids[:5]
            out = evaluation.evaluate(model, d, "cpu", batch_size=2)
            np.savez({str(tmp_path)!r} + f"/{{name}}-rank{{ctx.rank}}.npz", cm=out["per_image_cm"],
                     b=out["per_image_boundary"], miou=out["miou"])
        distributed.teardown(ctx)
    """)
    )
    rc, out = _run([str(script)])
    assert rc == 0, out
    ds = data.dataset(tiny_cfg, "val")
    model = training.initial_model(tiny_cfg, "baseline", 0)
    from torch.utils.data import Subset

    odd = Subset(ds, range(5))
    odd.ids = ds.ids[:5]
    for name, d in (("all", ds), ("odd", odd)):
        ref = evaluation.evaluate(model, d, "cpu", batch_size=2)
        assert ref["per_image_cm"].sum() > 0
        for rank in (0, 1):
            z = np.load(tmp_path / f"{name}-rank{rank}.npz")
            assert z["cm"].dtype == np.int64 and z["b"].dtype == np.int64
            np.testing.assert_array_equal(z["cm"], ref["per_image_cm"])
            np.testing.assert_array_equal(z["b"], ref["per_image_boundary"])
            assert float(z["miou"]) == ref["miou"]


@pytest.mark.slow
def test_two_process_checkpoint_is_loaded_and_continued_in_one(tiny_cfg, monkeypatch):
    """`torchrun -m helpers train` stopped after epoch 1 of 2 writes an unfinished checkpoint (rank 0
    only, unwrapped keys) that runs.load_model loads; `fit` in one process continues it (epoch 2 only)."""
    from helpers import training
    from helpers.core import checkpoint
    from helpers.models import store as runs

    rc, out = _run(
        [
            "-m",
            "helpers",
            "train",
            "--method",
            "baseline",
            "--preset",
            "smoke",
            "--no-progress",
            "--stop-after-epoch",
            "1",
        ]
        + _params(tiny_cfg)
    )
    assert rc == 0, out
    path = runs.checkpoint_path(tiny_cfg, "baseline")
    state = checkpoint.load(path)
    assert state["epoch"] == 1 and not state["complete"]
    assert not any(k.startswith(("module.", "net.")) for k in state["model"])
    model, _ = runs.load_model(path, "cpu")
    assert model is not None
    trained = count_epochs(monkeypatch)
    model, history = training.fit(tiny_cfg, "baseline", progress=False)
    assert trained == [1] and history["epoch"] == [1, 2]
    assert checkpoint.load(path)["complete"]
    trained.clear()
    rc, out = _run(
        ["-m", "helpers", "train", "--method", "baseline", "--preset", "smoke", "--no-progress", "--resume"]
        + _params(tiny_cfg)
    )  # finished: reused by the 2-process job, not retrained
    assert rc == 0 and "saved" in out, out


def test_failing_rank_ends_the_job(tiny_cfg, tmp_path):
    """Rank 1 fails at the start of training while rank 0 waits in DDP's first collective: the job
    ends (non-zero) within the timeout, with rank 1's message."""
    script = tmp_path / "fail.py"
    script.write_text(
        textwrap.dedent("""
        import os, sys
        from helpers import cli as cli
        from helpers import training
        real = training.fit
        def fit(*a, **k):
            if os.environ["RANK"] == "1":
                raise RuntimeError("boom on rank 1")
            return real(*a, **k)
        training.fit = fit
        sys.exit(cli.main(sys.argv[1:]))
    """)
    )
    rc, out = _run(
        [str(script), "train", "--method", "baseline", "--preset", "smoke", "--no-progress"] + _params(tiny_cfg),
        timeout=90,
    )
    assert rc != 0
    assert "rank 1 failed: boom on rank 1" in out


@pytest.mark.slow
def test_fit_seeds_with_nproc_2_runs_torchrun(tiny_cfg, capsys):
    """A notebook's `fit_seeds` with nproc=2: one torchrun job per seed, one printed line per epoch,
    the finished checkpoint loaded; a failing job raises UserError with its last lines."""
    from helpers.core import checkpoint
    from helpers.core.errors import UserError
    from helpers.models import store as runs
    from helpers.training import seeds as launch

    cfg = tiny_cfg.replace(nproc=2, monitor_split="")
    students, curves = launch.fit_seeds(cfg, "baseline", progress=False)
    out = capsys.readouterr().out
    assert "baseline seed 0 epoch 1/2" in out and "baseline seed 0 epoch 2/2" in out, out
    assert set(students) == {0} and curves["baseline (seed 0)"]["epoch"] == [1, 2]
    assert checkpoint.load(runs.checkpoint_path(cfg, "baseline"))["complete"]
    with pytest.raises(UserError, match="nproc=2 failed"):
        launch.fit_seeds(cfg.replace(batch_size=3, run_name="odd"), "baseline", progress=False)


def test_bench_under_torchrun(tiny_cfg, tmp_path):
    """`torchrun -m helpers bench` measures data-parallel throughput; rank 0 writes the JSON."""
    import json

    out = tmp_path / "bench_ddp.json"
    rc, log = _run(
        ["-m", "helpers", "bench", "--preset", "smoke", "--image-size", "32", "--batch-size", "4", "--out", str(out)]
    )
    assert rc == 0, log
    r = json.loads(out.read_text())
    assert r["world_size"] == 2 and r["per_process_batch"] == 2 and len(r["per_process_images_per_s"]) == 2
    assert r["total_images_per_s"] > 0 and r["scaling_efficiency"] > 0
