"""Independent trainings side by side (`jobs`, `threads`; scale/jobs.py): the same checkpoint as alone, a failing
job stops its batch with its message, a killed batch resumes every job from its last epoch."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import training
from helpers.config import Config, study
from helpers.core import checkpoint
from helpers.core.errors import UserError
from helpers.models import store as runs
from helpers.scale import jobs

ROOT = Path(__file__).resolve().parents[1]


def _weights(cfg, method, seed) -> dict:
    return checkpoint.load(runs.checkpoint_path(cfg, method, seed))["model"]


def test_plan_auto_and_explicit(tiny_cfg, monkeypatch):
    monkeypatch.setattr(jobs, "cores", lambda: 8)
    cfg = tiny_cfg.replace(jobs="auto", threads="auto")
    assert jobs.plan(cfg, 3) == jobs.Plan(3, 2)  # the whole batch at once, cores / jobs threads each
    assert jobs.plan(cfg, 20) == jobs.Plan(16, 1)  # at most two per core
    assert jobs.plan(cfg, 1, total=3) == jobs.Plan(1, 2)  # threads follow the batch, not what is left of it
    assert jobs.plan(cfg, 1) == jobs.Plan(1, 8)  # one training alone: the whole machine
    assert jobs.plan(cfg.replace(jobs=2), 3) == jobs.Plan(2, 4)
    assert jobs.plan(cfg.replace(jobs=2), 1) == jobs.Plan(1, 4)
    assert jobs.plan(cfg.replace(jobs=2, threads=3), 5) == jobs.Plan(2, 3)
    assert jobs.plan(cfg.replace(nproc=2), 3).jobs == 1  # one DDP training at a time
    with pytest.raises(UserError, match="give one of them"):
        jobs.plan(cfg.replace(nproc=2, jobs=2), 3)
    for bad in ("many", 0, True):
        with pytest.raises(UserError, match="jobs"):
            tiny_cfg.replace(jobs=bad)


def test_side_by_side_gives_bitwise_the_checkpoints_of_alone(tiny_cfg, capsys):
    """Two seeds of response KD (teacher and logit cache made once by this process) trained as two jobs with 1
    thread each = the same two trainings one after another in this process with 1 thread, bit for bit."""
    cfg = tiny_cfg.replace(seeds=2, epochs=2, teacher_cache=True, threads=1)
    alone, together = cfg.replace(run_name="alone", jobs=1), cfg.replace(run_name="together", jobs=2)
    training.fit_seeds(alone, "response", progress=False)
    capsys.readouterr()
    study.record(together, "demo", "test")
    training.fit_seeds(together, "response", progress=False)
    out = capsys.readouterr().out
    assert "response: 2 trainings, 2 side by side, 1 thread each" in out
    for seed in (0, 1):  # one line per epoch per job, prefixed with method and seed
        assert all(f"response seed {seed} epoch {e}/2 " in out for e in (1, 2)), out
        a, b = _weights(alone, "response", seed), _weights(together, "response", seed)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), seed
        state = checkpoint.load(runs.checkpoint_path(together, "response", seed))
        assert state["threads"] == 1 and state["side_by_side"] == 2  # recorded with the checkpoint
    assert checkpoint.load(runs.checkpoint_path(alone, "response", 0))["side_by_side"] == 1
    recorded = study.read_record(together.checkpoints_dir, "together")["trainings"]  # the run's settings.json
    assert recorded == {"response": {"side_by_side": 2, "threads_each": 1, "cores": jobs.cores()}}
    assert jobs.recorded(together).startswith("students: 1 thread each, 2 side by side (2 trainings); teacher: ")
    assert not torch.equal(
        _weights(alone, "response", 0)["classifier.weight"], _weights(alone, "response", 1)["classifier.weight"]
    )


def test_a_failing_job_stops_the_batch_with_its_message(tiny_cfg):
    """Seed 1 cannot continue its checkpoint (made with another lr): its message ends the batch, seed 0 (running)
    is stopped, seed 2 never starts; nothing finished is lost."""
    cfg = tiny_cfg.replace(seeds=3, epochs=400, jobs=2, threads=1)
    training.fit(cfg.replace(lr=0.5), "baseline", seed=1, progress=False, stop_after_epoch=1)
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        training.fit_seeds(cfg, "baseline", progress=False)
    msg = str(e.value)
    assert msg.startswith("Training baseline seed 1 failed (exit status 2): ") and "lr: 0.5" in msg, msg
    assert "other trainings of this batch were stopped" in msg and "error:" not in msg and "Traceback" not in msg
    assert time.monotonic() - t0 < 120
    seed0 = runs.checkpoint_path(cfg, "baseline", 0)
    assert not seed0.is_file() or not checkpoint.load(seed0)["complete"]  # stopped, not finished
    assert not runs.checkpoint_path(cfg, "baseline", 2).exists()  # never started
    assert checkpoint.load(runs.checkpoint_path(cfg, "baseline", 1))["epoch"] == 1  # kept


def _train_cmd(cfg: Config, *extra) -> list:
    pairs = [("data_root", cfg.data_root), ("checkpoints_dir", cfg.checkpoints_dir), ("reports_dir", cfg.reports_dir)]
    pairs += [(k, str(getattr(cfg, k))) for k in ("demo_size", "demo_scale", "crop_size", "base_size", "epochs")]
    pairs += [(k, str(getattr(cfg, k))) for k in ("batch_size", "seeds", "jobs", "threads", "min_teacher_miou")]
    params = [x for k, v in pairs for x in ("-p", k, v)]
    return [sys.executable, "-m", "helpers", "train", "--method", "baseline", "--preset", "demo", *params, *extra]


def test_a_killed_batch_resumes_every_job_from_its_last_epoch(tiny_cfg):
    """`train --method baseline` without --seed trains every seed side by side; Ctrl-C mid-way stops the batch;
    `--resume` continues each seed after its last saved epoch, printing only the epochs it trains."""
    cfg = tiny_cfg.replace(run_name="demo", seeds=2, epochs=60, jobs=2, threads=1)
    paths = [runs.checkpoint_path(cfg, "baseline", s) for s in (0, 1)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_train_cmd(cfg), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not all(p.is_file() and checkpoint.load(p)["epoch"] >= 2 for p in paths):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the two jobs never saved two epochs each"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out = proc.communicate(timeout=60)[0].decode()
    saved = [checkpoint.load(p)["epoch"] for p in paths]
    assert all(2 <= e < 60 for e in saved), (saved, out[-2000:])
    again = subprocess.run(_train_cmd(cfg, "--resume"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for seed, done in zip((0, 1), saved):  # said before the batch starts
        assert f"baseline seed {seed}: continues after epoch {done}\n" in again.stdout, again.stdout[:2000]
    assert again.stdout.count("saved ") == 2  # one line per seed, from the parent
    for seed, done in zip((0, 1), saved):
        epochs = [int(m) for m in re.findall(rf"^baseline seed {seed} epoch (\d+)/60 ", again.stdout, re.M)]
        assert epochs == list(range(done + 1, 61)), (seed, done, epochs[:5])
        state = checkpoint.load(paths[seed])
        assert state["complete"] and state["history"]["epoch"] == list(range(1, 61))


def test_an_interrupted_batch_reads_as_one_paragraph_in_a_notebook(tiny_cfg, monkeypatch, capsys):
    """The stop button in JupyterLab during a batch: the jobs are stopped and the cell shows one red paragraph
    that says how to continue, not a traceback through the pool's threads."""
    from IPython.core.interactiveshell import InteractiveShell

    from helpers.core.errors import install_ipython_handler

    def interrupted(self, waiting, timeout_s):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs._Pool, "run", interrupted)
    shell = InteractiveShell.instance()
    try:
        assert install_ipython_handler()
        shell.user_ns.update(jobs=jobs, batch=[jobs.Job(tiny_cfg, "baseline", 0)])
        result = shell.run_cell("jobs.run(batch, jobs.Plan(2, 1))")
    finally:
        InteractiveShell.clear_instance()
    out = capsys.readouterr().out
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert "KeyboardInterrupt: the trainings of this batch were stopped; every finished epoch is saved" in out
    assert "Traceback" not in out and "queue.py" not in out
