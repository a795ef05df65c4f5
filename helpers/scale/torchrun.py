"""One training run as a torchrun job: `fit_torchrun` starts `python -m torch.distributed.run ... -m helpers
train ...` in the project root, streams its one line per epoch into the notebook or terminal, and loads the
checkpoint it wrote. Notebooks and the runner use it when nproc > 1 (docs/many_gpus.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import torch

from ..config.knobs import Config
from ..core import checkpoint, paths
from ..core.errors import UserError
from ..core.runtime import resolve_device
from ..models import checkpoint_path, load_model

EPOCH_LINES = "HELPERS_EPOCH_LINES"  # set (to 1) for a torchrun child: one line per epoch, no progress bars
CHILD = "HELPERS_CHILD"  # set (to 1) for a training started by this process: it leaves the run's record alone


def fit_torchrun(cfg: Config, method: str, seed: int, timeout_s: float | None = None) -> tuple[torch.nn.Module, dict]:
    """`fit(cfg, method, seed)` in cfg.nproc processes: runs `python -m torch.distributed.run --standalone
    --nproc-per-node N -m helpers train --method M --seed S --resume --preset <the run's settings as YAML>` in
    the project root, prints its lines as they come (one per epoch; no progress bars), raises UserError with
    its last lines if it fails, then loads the checkpoint it wrote. A finished checkpoint is reused and an
    unfinished one continued, as `fit`."""
    import yaml

    path = checkpoint_path(cfg, method, seed)
    with tempfile.TemporaryDirectory(prefix="helpers-torchrun-") as tmp:
        preset = Path(tmp) / "settings.yaml"
        preset.write_text(yaml.safe_dump({**cfg.to_dict(), "force": False}, sort_keys=False))
        train = f"-m helpers train --method {method} --seed {seed} --resume --no-progress --preset".split()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(cfg.nproc)]
        print(f"{method} seed {seed}: training in {cfg.nproc} processes (torchrun)", flush=True)
        shown = (f"{method} seed {seed} epoch ", "saved ")
        rc, last = stream([*cmd, *train, str(preset)], lambda line: line.startswith(shown), timeout_s)
    if rc != 0:
        raise UserError(
            f"Training '{method}' (seed {seed}) with nproc={cfg.nproc} failed (torchrun exit status {rc}); "
            f"its last lines:\n{last}\nFinished epochs are saved; run again to continue, or set nproc=1."
        )
    state = checkpoint.load(path) if path.is_file() else None
    if not (state and state.get("complete")):
        raise UserError(f"torchrun ended without a finished checkpoint at '{path}'; its last lines:\n{last}")
    return load_model(path, resolve_device(cfg.device))[0], state["history"]


def stream(cmd: list, show, timeout_s: float | None = None) -> tuple[int, str]:
    """Run `cmd` in the project root (one line per epoch: EPOCH_LINES), print the lines `show(line)` accepts as
    they come; returns (exit status, its last 30 lines). Ctrl-C stops it too."""
    env = {**os.environ, EPOCH_LINES: "1", CHILD: "1", "PYTHONUNBUFFERED": "1"}
    last, t0 = deque(maxlen=30), time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=str(paths.root()), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        for line in proc.stdout:
            last.append(line.rstrip("\n"))
            if show(line):
                print(line, end="", flush=True)
            if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                proc.kill()
                break
        return proc.wait(), "\n".join(last)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
