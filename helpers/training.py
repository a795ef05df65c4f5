"""Training: one loop for every method (teacher, baseline, response, feature), checkpointed each
epoch, resumable, refusing to mix settings; `forget` is what force=True does."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from . import checkpoint, distributed, voc
from .config import Config, portable_value
from .data import data_seed, dataset, epoch_loader, loader, prepare_data
from .distill import FeatureAdapter, distill_loss
from .errors import UserError
from .evaluation import evaluate
from .models import build_model
from .runs import METHODS, checkpoint_path, load_model, seeds_of
from .runtime import autocast, keep_freed_memory, make_scaler, resolve_device, seed_all
from .paths import portable
from .progress import EpochView, epoch_row
from .teachers import WithTeacherLogits, load_teacher, new_teacher_note, teacher_cache, teacher_identity, trains_here
from .transforms import sample_cached


def get_teacher(cfg: Config, device, progress: bool = True, say: bool = True) -> torch.nn.Module:
    """The frozen teacher (see `teachers.load_teacher`), trained first when this project trains it
    and no finished one exists for these settings (cached in checkpoints/teachers/). With `say`, one
    line tells where a reused teacher comes from; a new one always announces itself (`fit`)."""
    ctx = _context(cfg)
    if trains_here(cfg):
        path = checkpoint_path(cfg, "teacher")
        state = checkpoint.load(path) if ((ctx.main or not ctx.active) and path.is_file()) else None
        state = distributed.broadcast_object({"complete": bool(state and state.get("complete"))} if state else None, ctx)
        if not (state and state.get("complete")):
            fit(cfg, "teacher", progress=progress)
        elif say and ctx.main:
            print(f"teacher: finished, reused ({portable(path)}; shared by every run with these teacher settings)")
    elif say and ctx.main:
        print(f"teacher: {teacher_identity(cfg)} (given weights, not trained here)")
    return load_teacher(cfg, device)


def forget(cfg: Config, method: str, seeds=None) -> list[Path]:
    """Delete `method`'s checkpoints (and their _history.json) for `seeds` (default: every seed of the
    run), so the next `fit` trains them again: what force=True does in notebooks 02-04 and
    `python -m helpers train --force`. For the teacher: the teacher trained here for these settings
    and its cached logits (a teacher_weights file of yours is never deleted). Returns what was deleted."""
    if method not in METHODS:
        raise UserError(f"Unknown method '{method}'; choose one of {METHODS}.")
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


def _poly(total: int, warmup: int):
    def f(it):
        if it < warmup:
            return (it + 1) / warmup
        return max(0.0, 1 - (it - warmup) / max(1, total - warmup)) ** 0.9
    return f


def make_optimizer(params, cfg: Config, lr: float) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum 0.9 (cfg.optimizer), with cfg.weight_decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def _teacher_outputs(teacher, cached, images, masks, method, amp_ctx, device):
    """The teacher's part of a batch: (logits, feature) or None (baseline, teacher training)."""
    if cached:  # cached teacher logits (response KD, teacher_cache=True): sampled at each crop
        maps, geometry = (c.to(device, non_blocking=True) for c in cached)
        return sample_cached(maps, geometry, masks.shape[-2:]), None
    if teacher is None:
        return None
    with torch.inference_mode(), amp_ctx:  # feature KD uses no teacher logits: its head is skipped
        t_logits, t_feat = teacher.forward_features(images, logits=method != "feature")
    # the hint loss saves the teacher map for backward, which an inference tensor can't be:
    # clone it outside inference mode (the logits enter response_kd_loss as a constant)
    return t_logits, t_feat.float().clone() if method == "feature" else None


def _check_finite(parts: dict, method: str, epoch: int, step: int) -> None:
    if not torch.isfinite(parts["loss"]):
        detail = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
        raise UserError(f"Training of '{method}' diverged at epoch {epoch + 1}, step {step + 1}: "
                        f"the loss is not finite ({detail}). The last good checkpoint (previous epoch) "
                        "is kept. Lower lr (or alpha/beta/temperature) and run again.")


def train_one_epoch(student, teacher, adapter, dl, optimizer, scheduler, scaler, method, cfg, device,
                    epoch, progress=True) -> dict:
    """One pass over `dl`; returns the mean of each loss part. Raises on a non-finite loss."""
    from tqdm.auto import tqdm

    student.train()
    if adapter is not None:
        adapter.train()
    amp_ctx, _ = autocast(device, cfg)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    total = cfg.teacher_epochs if method == "teacher" else cfg.epochs
    sums, n = {}, 0
    bar = tqdm(dl, desc=f"{method} epoch {epoch + 1}/{total}", disable=not progress, leave=False)
    for step, (images, masks, *cached) in enumerate(bar):
        images = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
        masks = masks.to(device, non_blocking=True)
        teacher_out = _teacher_outputs(teacher, cached, images, masks, method, amp_ctx, device)
        with amp_ctx:
            parts = distill_loss(method if method != "teacher" else "baseline", student.forward_features(images),
                                 masks, teacher_out, adapter, alpha=cfg.alpha, temperature=cfg.temperature,
                                 beta=cfg.beta, feature_loss=cfg.feature_loss, cwd_temperature=cfg.cwd_temperature)
        _check_finite(parts, method, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(parts["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        n += 1
        bar.set_postfix({k: f"{v.item():.3f}" for k, v in parts.items()})
    return {k: v / max(n, 1) for k, v in sums.items()}


def initial_model(cfg: Config, method: str = "baseline", seed: int | None = None) -> torch.nn.Module:
    """The network `fit` starts from: for a student, the same weights for every method of one seed."""
    seed_all(cfg.seed if seed is None else seed)  # identical initial weights for every student of this seed
    if method == "teacher":
        return build_model(cfg.teacher_arch, voc.NUM_CLASSES, pretrained=cfg.teacher_weights == "torchvision")
    return build_model(cfg.student_arch, voc.NUM_CLASSES, pretrained_backbone=cfg.student_pretrained_backbone)


def initial_adapter(student, teacher, seed: int) -> FeatureAdapter:
    """Feature KD's adapter as `fit` creates it (student channels -> teacher channels)."""
    torch.manual_seed(seed + 1)
    return FeatureAdapter(student.feature_channels, teacher.feature_channels)


def trained_adapter(cfg: Config, student, teacher, seed: int | None = None) -> FeatureAdapter:
    """The adapter saved with a finished feature-KD student (eval mode)."""
    state = checkpoint.load(checkpoint_path(cfg, "feature", seed))
    adapter = FeatureAdapter(student.feature_channels, teacher.feature_channels)
    adapter.load_state_dict(state["adapter"])
    return adapter.eval()


def _build(cfg: Config, method: str, seed: int, device, progress: bool, ctx=None):
    """(model, adapter, teacher, training set) of `method`: every student of one seed starts from
    the same weights; a cached-logit response run gets its teacher maps with the batch instead."""
    is_teacher = method == "teacher"
    teacher = None if is_teacher or method == "baseline" else get_teacher(cfg, device, progress, say=False)
    model = initial_model(cfg, method, seed).to(device)
    adapter = initial_adapter(model, teacher, seed).to(device) if method == "feature" else None
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_ds = dataset(cfg, cfg.teacher_split if is_teacher else cfg.train_split, train=True)
    if method == "response" and cfg.teacher_cache:
        if ctx is not None and ctx.active:  # rank 0 writes the cache (not sharded), the others wait and read
            if ctx.main:
                teacher_cache(cfg, teacher, device, progress)
            _barrier(ctx)
        train_ds = WithTeacherLogits(train_ds, teacher_cache(cfg, teacher, device, progress))
        teacher = None  # not run during training: its logits come with the batch
    return model, adapter, teacher, train_ds


def _optimization(cfg: Config, method: str, params: list, n_images: int, epochs: int, device):
    """(optimizer, poly scheduler with warm-up, gradient scaler) for `epochs` over `n_images`."""
    steps_per_epoch = n_images // cfg.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"batch_size={cfg.batch_size} is larger than the training split "
                        f"({n_images} images); lower batch_size.")
    optimizer = make_optimizer(params, cfg, cfg.teacher_lr if method == "teacher" else cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _poly(epochs * steps_per_epoch, cfg.warmup_iters))
    return optimizer, scheduler, make_scaler(device, cfg)


def _restore(state: dict, path, model, adapter, optimizer, scheduler, scaler) -> tuple[dict, int]:
    """Continue an unfinished run: weights, optimizer, schedule and scaler; returns (history, epoch)."""
    checkpoint.load_weights(model, state, path)
    if adapter is not None and state.get("adapter"):
        adapter.load_state_dict(state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return state["history"], state["epoch"]


def _out_of_memory(method: str, cfg: Config) -> UserError:
    return UserError(f"CUDA ran out of memory training '{method}' with batch_size={cfg.batch_size} and "
                     f"crop_size={cfg.crop_size}. Use a smaller batch_size (e.g. {max(1, cfg.batch_size // 2)}) "
                     "or crop_size; the last epoch's checkpoint is kept.")


def fit(cfg: Config, method: str, seed: int | None = None, resume: bool = True, progress: bool = True,
        stop_after_epoch: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Train one model with `method` and save it; returns (model, history).

    - teacher: the teacher architecture on `teacher_split` (from scratch or from torchvision weights)
    - baseline / response / feature: the student on `train_split`; same init, data order,
      augmentation and schedule for all three, only the loss differs.
    Each epoch is checkpointed atomically; with `resume`, an unfinished checkpoint is continued and
    ends with the same weights as an uninterrupted run (CPU, same seed). A finished one is loaded.
    `stop_after_epoch` ends early (used by tests to simulate an interruption).

    Under torchrun (a process group is active; docs/many_gpus.md) the same code runs in each of N
    processes: batch_size is the global batch (each rank takes its `distributed.GlobalOrderSampler`
    slice of the single process's batch, lr unchanged), the student (and feature adapter) are wrapped
    in DDP, the teacher is one frozen replica per rank, rank 0 alone writes checkpoints and shows
    progress, monitor evaluation is sharded. In one process every distributed step is a no-op.
    """
    if method not in METHODS:
        raise UserError(f"Unknown method '{method}'; choose one of {METHODS}.")
    seed = cfg.seed if seed is None else seed
    ctx = _context(cfg)
    device = ctx.device if ctx.active else resolve_device(cfg.device)
    progress = progress and ctx.main
    keep_freed_memory()
    distributed.per_process_batch(cfg.batch_size, ctx.world_size)  # (refuses a batch N does not divide, first)
    _prepare(cfg, ctx, progress)
    path = checkpoint_path(cfg, method, seed)
    epochs = cfg.teacher_epochs if method == "teacher" else cfg.epochs
    if method == "teacher" and epochs < 1:
        raise UserError("teacher_epochs must be at least 1 to train or fine-tune a teacher.")
    # every rank decides from the same file: rank 0's reading, broadcast
    state = distributed.broadcast_object(checkpoint.load(path) if (ctx.main and path.is_file() and resume) else None, ctx)
    if state is not None and method != "teacher":  # (a teacher's file name already hashes its settings)
        _check_settings(cfg, method, state, path)
    if state is not None and state.get("complete"):
        return load_model(path, device)[0], state["history"]
    model, adapter, teacher, train_ds = _build(cfg, method, seed, device, progress, ctx)
    if method == "teacher" and ctx.main:
        print(new_teacher_note(cfg, len(train_ds), state), flush=True)
    params = list(model.parameters()) + (list(adapter.parameters()) if adapter else [])
    opt, sched, scaler = _optimization(cfg, method, params, len(train_ds), epochs, device)
    history, start = {"epoch": [], "loss": [], "ce": [], "lr": [], "time_s": [], "monitor_epoch": [],
                      "monitor_miou": []}, 0
    if state is not None:
        history, start = _restore(state, path, model, adapter, opt, sched, scaler)
    ddp_model = distributed.wrap(model, ctx, sync_bn=cfg.sync_bn)  # (in one process: the model itself)
    ddp_adapter = distributed.wrap(adapter, ctx, sync_bn=cfg.sync_bn) if adapter is not None else None
    model = distributed.unwrap(ddp_model)  # (SyncBatchNorm-converted on CUDA: the module DDP trains)
    monitor_ds = dataset(cfg, cfg.monitor_split) if cfg.monitor_split else None
    from tqdm.auto import tqdm

    bar = tqdm(range(start, epochs), desc=method, disable=not progress, initial=start, total=epochs)
    view = _epoch_view(cfg, method, seed, epochs, history, progress and ctx.main) if ctx.main else None
    for epoch in bar:
        t0 = time.perf_counter()
        try:
            parts = train_one_epoch(ddp_model, teacher, ddp_adapter, _epoch_batches(train_ds, cfg, seed, epoch, ctx),
                                    opt, sched, scaler, method, cfg, device, epoch, progress)
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory(method, cfg) from None
        parts = _mean_over_ranks(parts, ctx)
        _record(history, parts, opt, time.perf_counter() - t0, epoch, epochs, cfg, model, monitor_ds, device)
        bar.set_postfix(loss=f"{parts['loss']:.3f}", monitor_miou=f"{(history['monitor_miou'] or [0])[-1]:.3f}")
        if ctx.main:
            _save(path, model, adapter, opt, sched, scaler, epoch + 1, epochs, method, seed, cfg, history,
                  len(train_ds))
        if view is not None:
            view.update(history)
        _barrier(ctx)  # the checkpoint is on disk before any rank goes on (or reads it)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < epochs:
            break
    return model.eval(), history


def _prepare(cfg: Config, ctx: distributed.Context, progress: bool) -> None:
    """The data folder: made (the demo) or checked by rank 0 first, then by the others."""
    if ctx.main:
        prepare_data(cfg, progress)
    _barrier(ctx)
    if not ctx.main:
        prepare_data(cfg, False)


def _epoch_batches(train_ds, cfg: Config, seed: int, epoch: int, ctx: distributed.Context):
    """The training batches of one epoch: in one process `data.epoch_loader`; under torchrun this
    rank's slice of every global batch, its augmentation drawn from the epoch's seed + its rank."""
    if not ctx.active:
        return epoch_loader(train_ds, cfg, seed, epoch)
    seed_all(data_seed(seed, epoch) + ctx.rank)
    return loader(train_ds, cfg, True, epoch, batch_size=distributed.per_process_batch(cfg.batch_size, ctx.world_size),
                  seed=seed, sampler=distributed.train_sampler(train_ds, ctx, seed, epoch))


EPOCH_LINES = "HELPERS_EPOCH_LINES"  # set (to 1) by fit_seeds for its torchrun child: one line per epoch


def _epoch_view(cfg: Config, method, seed, epochs, history, progress: bool) -> EpochView | None:
    """What training shows per epoch (progress.EpochView): a table updated in place in JupyterLab
    (cfg.interactive), else one line per epoch; also for a torchrun child (EPOCH_LINES), never when
    progress is off otherwise. A resumed run shows its earlier epochs first."""
    if not (progress or os.environ.get(EPOCH_LINES) == "1"):
        return None
    view = EpochView("teacher" if method == "teacher" else f"{method} seed {seed}", epochs,
                     live=cfg.interactive and progress)
    view.rows = [epoch_row(history, i) for i in range(len(history["epoch"]))]
    return view


def _context(cfg: Config) -> distributed.Context:
    """This process's distributed.Context when a process group is active (torchrun), else the
    single-process Context (nothing initialised, `fit` runs exactly as before)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return distributed.setup(cfg.device)
    return distributed.Context()


def _barrier(ctx: distributed.Context) -> None:
    import torch.distributed as dist

    if ctx.active:
        dist.barrier(device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None)


def _mean_over_ranks(parts: dict, ctx) -> dict:
    """The epoch's loss parts averaged over the ranks (the same numbers on every rank); as they are
    in one process."""
    if not ctx.active:
        return parts
    import torch.distributed as dist

    keys = sorted(parts)
    t = torch.tensor([float(parts[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist())}


def _record(history, parts, optimizer, seconds, epoch, epochs, cfg, model, monitor_ds, device) -> None:
    """Append one epoch to `history`: loss parts, lr, time, and monitor mIoU every monitor_every."""
    history["epoch"].append(epoch + 1)
    for k, v in parts.items():
        history.setdefault(k, []).append(v)
    history["lr"].append(optimizer.param_groups[0]["lr"])
    history["time_s"].append(seconds)
    if monitor_ds is not None and ((epoch + 1) % cfg.monitor_every == 0 or epoch + 1 == epochs):
        history["monitor_epoch"].append(epoch + 1)
        history["monitor_miou"].append(evaluate(model, monitor_ds, device)["miou"])


# The settings that shape a student's weights: a checkpoint made with other values is neither
# reused nor continued (that would silently mix two set-ups in one study).
_SHAPING = ("dataset", "demo_seed", "demo_size", "demo_scale", "train_split", "crop_size", "base_size",
            "scale_min", "scale_max", "student_arch", "student_pretrained_backbone", "epochs",
            "batch_size", "optimizer", "lr", "weight_decay", "warmup_iters")
_TEACHER_SHAPING = ("teacher_arch", "teacher_weights", "teacher_epochs", "teacher_lr", "teacher_split")
_SHAPING_BY_METHOD = {
    "baseline": (),
    "response": _TEACHER_SHAPING + ("alpha", "temperature", "teacher_cache", "cache_stride"),
    "feature": _TEACHER_SHAPING + ("beta", "feature_loss", "cwd_temperature"),
}


def _check_settings(cfg: Config, method: str, state: dict, path) -> None:
    saved, now = state.get("config", {}), cfg.to_dict()  # (paths compared in their root-relative form)
    diffs = [f"{k}: {saved[k]!r} in the checkpoint, {now[k]!r} now"
             for k in _SHAPING + _SHAPING_BY_METHOD[method] if k in saved and portable_value(k, saved[k]) != now[k]]
    if diffs:
        raise UserError(f"'{path}' was trained with other settings ({'; '.join(diffs)}); reusing or "
                        "continuing it would mix two set-ups. Choose another run_name, set force=True in the "
                        "notebook (`--force` with `python -m helpers train`) to train it again, or go back to "
                        "the checkpoint's settings.")


def _save(path, model, adapter, optimizer, scheduler, scaler, epoch, epochs, method, seed, cfg, history, images):
    arch = cfg.teacher_arch if method == "teacher" else cfg.student_arch
    complete = epoch >= epochs
    model, adapter = distributed.unwrap(model), distributed.unwrap(adapter) if adapter is not None else None
    model_state = {k: v.contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in model_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"Training of '{method}' produced non-finite weights in epoch {epoch} ({bad[0]}, ...); "
                        "they are not saved, the previous epoch's checkpoint is kept. Lower lr and run again.")
    checkpoint.save({
        "method": method, "arch": arch, "num_classes": voc.NUM_CLASSES, "seed": seed,
        "model": model_state,
        "adapter": adapter.state_dict() if adapter is not None else None,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(), "epoch": epoch, "epochs": epochs, "complete": complete,
        "rng": checkpoint.rng_state(), "config": cfg.to_dict(), "history": history, "images": images,
    }, path)
    checkpoint.write_text_atomic(path.with_name(path.stem + "_history.json"), json.dumps(history, indent=1))
