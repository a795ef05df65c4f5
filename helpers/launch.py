"""Training every seed of a method for a run, as notebooks 02-04 do: in this process, or, with
nproc > 1, as one torchrun job per seed (`fit_torchrun`) whose epoch lines stream into the notebook."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import torch

from . import checkpoint
from .config import Config, portable_value
from .errors import UserError
from .paths import portable
from .progress import span
from .runs import checkpoint_path, load_model, seeds_of
from .runtime import resolve_device
from .training import EPOCH_LINES, _context, fit, forget


def fit_seeds(cfg: Config, method: str, progress: bool = True) -> tuple[dict, dict]:
    """Train (or load) `method` for every seed of the run, as notebooks 02-04 do; with cfg.force the
    run's checkpoints of `method` are deleted first. Returns ({seed: model}, {name: history}) with the
    baseline's first-seed curve added for KD methods (a missing baseline is said, not hidden)."""
    if cfg.force:
        for p in forget(cfg, method):
            print(f"force=True: deleted {portable_value('checkpoints_dir', str(p))}")
    students, curves = {}, {}
    _say_reused(cfg, method)
    for s in seeds_of(cfg):
        if cfg.nproc > 1 and not _context(cfg).active:  # a notebook: one torchrun job per seed
            students[s], curves[f"{method} (seed {s})"] = fit_torchrun(cfg, method, s)
        else:
            students[s], curves[f"{method} (seed {s})"] = fit(cfg, method, seed=s, progress=progress)
    if method not in ("baseline", "teacher"):
        path = checkpoint_path(cfg, "baseline")
        if path.is_file():
            curves[f"baseline (seed {cfg.seed})"] = checkpoint.load(path)["history"]
        else:
            print(f"No baseline for run '{cfg.run_name}' yet: run 02_baseline to compare against it.")
    return students, curves


def _say_reused(cfg: Config, method: str) -> None:
    """One line for the seeds whose finished checkpoint `fit` will load instead of training."""
    done = [s for s in seeds_of(cfg) if (st := _state(checkpoint_path(cfg, method, s))) and st.get("complete")]
    if done:
        where = portable(checkpoint_path(cfg, method, done[0]).parent)
        print(f"{method} seed{'s' if len(done) > 1 else ''} {span(done)}: finished, reused ({where}); "
              "force=True retrains", flush=True)


def _state(path: Path) -> dict | None:
    return checkpoint.load(path) if path.is_file() else None


def fit_torchrun(cfg: Config, method: str, seed: int, timeout_s: float | None = None) -> tuple[torch.nn.Module, dict]:
    """`fit(cfg, method, seed)` in cfg.nproc processes: runs
    `python -m torch.distributed.run --standalone --nproc-per-node N -m helpers train --method M --seed S
    --resume --preset <the run's settings as YAML>` in the project root, prints its lines as they come
    (one per epoch; no progress bars), raises UserError with its last lines if it fails, then loads
    the checkpoint it wrote. A finished checkpoint is reused and an unfinished one continued, as `fit`."""
    import yaml

    from . import paths

    path = checkpoint_path(cfg, method, seed)
    settings = {**cfg.to_dict(), "force": False}
    with tempfile.TemporaryDirectory(prefix="helpers-torchrun-") as tmp:
        preset = Path(tmp) / "settings.yaml"
        preset.write_text(yaml.safe_dump(settings, sort_keys=False))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(cfg.nproc),
               "-m", "helpers", "train", "--method", method, "--seed", str(seed), "--resume", "--no-progress",
               "--preset", str(preset)]
        env = {**os.environ, EPOCH_LINES: "1", "PYTHONUNBUFFERED": "1"}
        print(f"{method} seed {seed}: training in {cfg.nproc} processes (torchrun)", flush=True)
        last = deque(maxlen=30)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=str(paths.root()), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        try:
            for line in proc.stdout:
                last.append(line.rstrip("\n"))
                if line.startswith(f"{method} seed {seed} epoch ") or line.startswith("saved "):
                    print(line, end="", flush=True)
                if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                    proc.kill()
                    break
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    if rc != 0:
        tail = "\n".join(last)
        raise UserError(f"Training '{method}' (seed {seed}) with nproc={cfg.nproc} failed (torchrun exit status "
                        f"{rc}); its last lines:\n{tail}\nFinished epochs are saved; run again to continue, or "
                        "set nproc=1.")
    state = checkpoint.load(path) if path.is_file() else None
    if not (state and state.get("complete")):
        raise UserError(f"torchrun ended without a finished checkpoint at '{path}'; its last lines:\n" + "\n".join(last))
    return load_model(path, resolve_device(cfg.device))[0], state["history"]
