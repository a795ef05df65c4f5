"""One training loop for every model: the teacher, the baseline and every registered KD method.

    for each epoch:  for each batch:  s = student(x); t = the teacher's outputs (online, or cached);
                                      loss = CE + w * term(s, t, y)   (kd.objective); one optimizer step
                     record the epoch (loss parts, lr, time, monitor mIoU); save the checkpoint (atomic)

`fit` is that loop and what surrounds it: a finished checkpoint is loaded, an unfinished one continued
(to the same weights as an uninterrupted run), one made with other settings refused. Two seams keep it
short: `scale.distributed.current()` (this process in a torchrun job, or alone, where every shared
step is a no-op) and `teacher.TeacherFeed` (the teacher's outputs for a batch, online or cached).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..config.knobs import Config
from ..core.errors import UserError
from ..core.runtime import autocast, keep_freed_memory, threads
from ..data.loaders import dataset, prepare_data
from ..kd import objective
from ..models import store
from ..scale import distributed
from . import setup, state


@dataclass
class Trainee:
    """What one training run updates and reads (built by `setup.trainee`)."""

    name: str  # "teacher", or the student's method
    title: str  # "baseline seed 0": how progress names it
    cfg: Config
    device: torch.device
    model: torch.nn.Module  # wrapped for DDP under torchrun
    adapter: torch.nn.Module | None  # the feature adapter (methods registered with adapter=True)
    teacher: object  # a teacher.TeacherFeed, or None
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    epochs: int

    @property
    def objective(self) -> str:
        """The KD method whose loss trains it (the teacher learns from the labels alone: "baseline")."""
        return "baseline" if self.name == "teacher" else self.name


def train_one_epoch(run: Trainee, batches, epoch: int, progress: bool = True) -> dict:
    """One pass over `batches` ((images, masks[, cached maps, crop geometry]) each); returns the mean of
    each loss part. Raises a UserError on a non-finite loss."""
    from tqdm.auto import tqdm

    run.model.train()
    if run.adapter is not None:
        run.adapter.train()
    amp_ctx, _ = autocast(run.device, run.cfg)
    fmt = torch.channels_last if run.cfg.channels_last else torch.contiguous_format
    sums, n = {}, 0
    bar = tqdm(batches, desc=f"{run.title} epoch {epoch + 1}/{run.epochs}", disable=not progress, leave=False)
    for step, (images, masks, *cached) in enumerate(bar):
        images = images.to(run.device, non_blocking=True).contiguous(memory_format=fmt)
        masks = masks.to(run.device, non_blocking=True)
        with amp_ctx:
            teacher_out = run.teacher(images, masks, cached) if run.teacher is not None else None
            parts = objective(
                run.objective, run.model.forward_features(images), masks, teacher_out, run.adapter, run.cfg
            )
        _check_finite(parts, run, epoch, step)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(parts["loss"]).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        n += 1
        bar.set_postfix({k: f"{v.item():.3f}" for k, v in parts.items()})
    return {k: v / max(n, 1) for k, v in sums.items()}


def fit(cfg: Config, method: str, seed=None, resume=True, progress=True, stop_after_epoch=None) -> tuple:
    """Train one model, saving it after each epoch; returns (model in eval mode, history).

    method: "teacher" (teacher_arch on teacher_split) or a registered KD method (the student on train_split:
    every method of one seed starts from the same weights and sees the same batches, only the loss differs).
    Under torchrun every process runs this (batch_size is the global batch; rank 0 saves and shows progress).
    A student trains with cfg.threads CPU threads when that is a number (the teacher: the whole machine).
    `stop_after_epoch` ends early (tests: an interruption)."""
    with threads(None if method == "teacher" else cfg.threads):
        return _fit(cfg, method, seed, resume, progress, stop_after_epoch)


def _fit(cfg: Config, method: str, seed, resume: bool, progress: bool, stop_after_epoch) -> tuple:
    seed = cfg.seed if seed is None else seed
    job = distributed.current(cfg.device)
    progress = progress and job.main
    path, saved = _start(cfg, method, seed, job, resume, progress)
    if saved is not None and saved.get("complete"):
        return store.load_model(path, job.device)[0], saved["history"]
    run, train_ds = setup.trainee(cfg, method, seed, job, progress, saved)
    history, start = state.restore(saved, path, run) if saved is not None else (state.new_history(), 0)
    run.model, run.adapter = job.wrap(run.model, cfg.sync_bn), job.wrap(run.adapter, cfg.sync_bn)
    monitor = dataset(cfg, cfg.monitor_split) if cfg.monitor_split else None
    view = state.epoch_view(run, history, progress)
    for epoch in range(start, run.epochs):
        t0 = time.perf_counter()
        parts = job.mean(_epoch(run, setup.epoch_batches(train_ds, cfg, seed, epoch, job), epoch, progress))
        state.record(history, parts, run, time.perf_counter() - t0, epoch, monitor)
        if job.main:
            state.save(path, run, epoch + 1, seed, history, len(train_ds))
        view.update(history)
        job.barrier()  # the checkpoint is on disk before any rank goes on (or reads it)
        if stop_after_epoch is not None and stop_after_epoch <= epoch + 1 < run.epochs:
            break
    return distributed.unwrap(run.model).eval(), history


def _start(cfg: Config, method: str, seed: int, job, resume: bool, progress: bool):
    """(checkpoint path, its state or None): the data prepared (rank 0 first), every rank deciding from rank
    0's reading of the checkpoint, which must have been made with these settings."""
    keep_freed_memory()
    distributed.per_process_batch(cfg.batch_size, job.world_size)  # (refuses a batch N does not divide, first)
    job.first(prepare_data, cfg, progress)
    path = store.checkpoint_path(cfg, method, seed)
    saved = job.broadcast(state.read(path) if job.main and resume else None)
    if saved is not None:
        state.check_settings(cfg, method, saved, path)
    return path, saved


def _epoch(run: Trainee, batches, epoch: int, progress: bool) -> dict:
    try:
        return train_one_epoch(run, batches, epoch, progress)
    except torch.cuda.OutOfMemoryError:
        raise UserError(
            f"CUDA ran out of memory training '{run.title}' with batch_size={run.cfg.batch_size} and "
            f"crop_size={run.cfg.crop_size}. Use a smaller batch_size (e.g. {max(1, run.cfg.batch_size // 2)}) "
            "or crop_size; the last epoch's checkpoint is kept."
        ) from None


def _check_finite(parts: dict, run: Trainee, epoch: int, step: int) -> None:
    if not torch.isfinite(parts["loss"]):
        detail = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
        raise UserError(
            f"Training of '{run.name}' ({run.title}) diverged at epoch {epoch + 1}, step {step + 1}: the loss is not "
            f"finite ({detail}). The last good checkpoint (previous epoch) is kept. Lower lr (or the "
            "method's weight or temperature) and run again."
        )
