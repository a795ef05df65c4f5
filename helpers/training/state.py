"""A training run's state on disk and in view: its checkpoint (saved each epoch, continued, refused when
made with other settings, deleted by force=True), its history, and what it shows after each epoch."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ..config.knobs import Config, portable_value, shaping_keys
from ..core import checkpoint
from ..core.errors import UserError
from ..core.progress import EpochView, epoch_row
from ..data import voc
from ..evaluation import evaluate
from ..models import checkpoint_path, seeds_of, trains_here
from ..scale import distributed
from ..scale.jobs import SIDE_BY_SIDE
from ..scale.torchrun import EPOCH_LINES
from .cost import epochs_of


def read(path: Path) -> dict | None:
    """The checkpoint at `path`, or None when there is none."""
    return checkpoint.load(path) if Path(path).is_file() else None


def check_settings(cfg: Config, method: str, state: dict, path) -> None:
    """Refuse a checkpoint made with other values of the knobs that shape `method`'s weights (or for another
    number of epochs, e.g. a compute-matched baseline whose KD methods changed): reusing or continuing it
    would silently mix two set-ups in one study."""
    saved, now = state.get("config", {}), cfg.to_dict()  # (paths compared in their root-relative form)
    diffs = [
        f"{k}: {saved[k]!r} in the checkpoint, {now[k]!r} now"
        for k in shaping_keys(method)
        if k in saved and portable_value(k, saved[k]) != now[k]
    ]
    if state.get("epochs") is not None and state["epochs"] != (wanted := epochs_of(cfg, method)):
        diffs.append(f"{state['epochs']} epochs in the checkpoint, {wanted} now")
    if diffs:
        raise UserError(
            f"'{path}' was trained with other settings ({'; '.join(diffs)}); reusing or continuing it "
            "would mix two set-ups. Choose another run_name, set force=True in the notebook (`--force` "
            "with `python -m helpers train`) to train it again, or go back to the checkpoint's settings."
        )


def forget(cfg: Config, method: str, seeds=None) -> list[Path]:
    """Delete `method`'s checkpoints (and their _history.json) for `seeds` (default: every seed of the run),
    so the next `fit` trains them again: what force=True does in notebooks 02-04 and `train --force`. For
    the teacher: the one trained here for these settings and its cached logits (a teacher_weights file of
    yours is never deleted). Returns what was deleted."""
    if method == "teacher":
        if not trains_here(cfg):
            return []
        ckpts = [checkpoint_path(cfg, "teacher")]
        caches = sorted(ckpts[0].parent.glob(f"{cfg.teacher_key()}-logits-*"))
    else:
        ckpts = [checkpoint_path(cfg, method, s) for s in (seeds_of(cfg) if seeds is None else seeds)]
        caches = []
    gone = [p for c in ckpts for p in (c, c.with_name(c.stem + "_history.json")) if p.is_file()]
    for p in gone:
        p.unlink()
    for folder in caches:
        shutil.rmtree(folder, ignore_errors=True)
    return gone + caches


def new_history() -> dict:
    return {"epoch": [], "loss": [], "ce": [], "lr": [], "time_s": [], "monitor_epoch": [], "monitor_miou": []}


def restore(state: dict, path, run) -> tuple[dict, int]:
    """Continue an unfinished run: weights, adapter, optimizer, schedule and scaler; returns (history, epoch)."""
    checkpoint.load_weights(run.model, state, path)
    if run.adapter is not None and state.get("adapter"):
        run.adapter.load_state_dict(state["adapter"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    return state["history"], state["epoch"]


def record(history: dict, parts: dict, run, seconds: float, epoch: int, monitor_ds) -> None:
    """Append one epoch to `history`: loss parts, lr, time, and monitor mIoU every monitor_every epochs."""
    history["epoch"].append(epoch + 1)
    for k, v in parts.items():
        history.setdefault(k, []).append(v)
    history["lr"].append(run.optimizer.param_groups[0]["lr"])
    history["time_s"].append(seconds)
    if monitor_ds is not None and ((epoch + 1) % run.cfg.monitor_every == 0 or epoch + 1 == run.epochs):
        history["monitor_epoch"].append(epoch + 1)
        history["monitor_miou"].append(evaluate(distributed.unwrap(run.model), monitor_ds, run.device)["miou"])


def save(path: Path, run, epoch: int, seed: int, history: dict, images: int) -> None:
    """The run's checkpoint after `epoch` (atomic; plain data); refuses non-finite weights."""
    cfg = run.cfg
    model, adapter = distributed.unwrap(run.model), distributed.unwrap(run.adapter) if run.adapter else None
    model_state = {k: v.contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in model_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(
            f"Training of '{run.title}' produced non-finite weights in epoch {epoch} ({bad[0]}, ...); "
            "they are not saved, the previous epoch's checkpoint is kept. Lower lr and run again."
        )
    checkpoint.save(
        {
            "method": run.name,
            "arch": cfg.teacher_arch if run.name == "teacher" else cfg.student_arch,
            "num_classes": voc.NUM_CLASSES,
            "seed": seed,
            "model": model_state,
            "adapter": adapter.state_dict() if adapter is not None else None,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "epoch": epoch,
            "epochs": run.epochs,
            "complete": epoch >= run.epochs,
            "rng": checkpoint.rng_state(),
            "device": str(run.device),
            "threads": torch.get_num_threads(),  # (float results depend on it)
            "side_by_side": int(os.environ.get(SIDE_BY_SIDE, "1")),  # trainings its batch ran at once
            "config": cfg.to_dict(),
            "history": history,
            "images": images,
        },
        path,
    )
    checkpoint.write_text_atomic(path.with_name(path.stem + "_history.json"), json.dumps(history, indent=1))


class _Silent:
    def update(self, history: dict) -> None:
        pass


def epoch_view(run, history: dict, progress: bool):
    """What training shows per epoch (core.progress.EpochView): a table updated in place in JupyterLab
    (cfg.interactive), else one line per epoch; also for a torchrun child (EPOCH_LINES); nothing when progress
    is off otherwise, or on another rank than 0. A resumed run shows its earlier epochs first."""
    if not (progress or os.environ.get(EPOCH_LINES) == "1") or not distributed.current(run.cfg.device).main:
        return _Silent()
    view = EpochView(run.title, run.epochs, live=run.cfg.interactive and progress)
    view.rows = [epoch_row(history, i) for i in range(len(history["epoch"]))]
    return view
