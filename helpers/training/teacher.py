"""The teacher in training: trained once when this project trains it (and announced, with why and how
long), and fed to a student's training as its method needs it (`feed`): online, or from the logit cache."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import kd
from ..config.knobs import TEACHER_KEYS, Config, portable_value
from ..core import checkpoint
from ..core.errors import UserError
from ..core.paths import portable
from ..data.loaders import dataset
from ..data.transforms import sample_cached
from ..models import checkpoint_path, load_teacher, teacher_identity, trains_here
from ..scale import distributed
from ..scale.logit_cache import WithTeacherLogits, teacher_cache


def get_teacher(cfg: Config, device, progress: bool = True, say: bool = True) -> torch.nn.Module:
    """The frozen teacher (`models.load_teacher`), trained first when this project trains it and no
    finished one exists for these settings (cached in checkpoints/teachers/). With `say`, one line tells
    where a reused teacher comes from; a new one always announces itself (`new_teacher_note`)."""
    from .loop import fit

    job = distributed.current(cfg.device)
    if trains_here(cfg):
        path = checkpoint_path(cfg, "teacher")
        state = checkpoint.load(path) if job.main and path.is_file() else None
        done = job.broadcast(bool(state and state.get("complete")))
        if not done:
            fit(cfg, "teacher", progress=progress)
        elif say and job.main:
            print(f"teacher: finished, reused ({portable(path)}; shared by every run with these teacher settings)")
    elif say and job.main:
        print(f"teacher: {teacher_identity(cfg)} (given weights, not trained here)")
    return load_teacher(cfg, device)


class TeacherFeed:
    """The teacher's outputs for one training batch, as `method` reads them (`kd.teacher_outputs`): computed
    by the frozen teacher, or, for a batch that carries cached maps, sampled from them at its crops."""

    def __init__(self, method: str, teacher, device):
        self.method, self.teacher, self.device = method, teacher, device

    def __call__(self, images, masks, cached=()):
        if cached:  # (maps (B, C, h, w) fp16, crop geometry (B, 4)) from WithTeacherLogits
            maps, geometry = (c.to(self.device, non_blocking=True) for c in cached)
            return sample_cached(maps, geometry, masks.shape[-2:]), None
        return kd.teacher_outputs(self.teacher, images, self.method)


_CHECKED: set = set()  # the teachers this process has checked (by identity)
PREFLIGHT_IMAGES = 16


def preflight(cfg: Config, teacher, device) -> float:
    """Before any distillation: the teacher's mIoU on the first PREFLIGHT_IMAGES monitor_split images must reach
    cfg.min_teacher_miou and beat predicting background everywhere; otherwise one paragraph stops the run
    (weights that did not load, another normalisation or class order are the usual causes). Returns the mIoU."""
    from ..data import voc as voc_files
    from ..evaluation import metrics
    from ..evaluation.protocol import evaluate

    ds = dataset(cfg, cfg.monitor_split)
    few = voc_files.SegDataset(ds.items[:PREFLIGHT_IMAGES], ds.transform)
    ev = evaluate(teacher, few, device)
    truth = ev["per_image_cm"].sum(0).sum(1)  # pixels of each class in the ground truth
    background = torch.zeros((len(truth), len(truth)), dtype=torch.int64)
    background[:, 0] = torch.as_tensor(truth)  # every pixel predicted background
    floor = metrics.mean_iou(background)
    if ev["miou"] < cfg.min_teacher_miou or ev["miou"] <= floor:
        raise UserError(
            f"Pre-flight check: the teacher ({teacher_identity(cfg)}) reaches mIoU {ev['miou']:.4f} on {len(few)} "
            f"'{cfg.monitor_split}' images, "
            + (
                f"no better than predicting background everywhere ({floor:.4f})"
                if ev["miou"] <= floor
                else f"below min_teacher_miou={cfg.min_teacher_miou:g}"
            )
            + ". Distilling from it "
            "would teach the student noise. The usual causes: its weights did not load (a wrong or untrained "
            "teacher_weights file), another input normalisation than ImageNet's, or another class order than VOC's "
            "(background first). Check teacher_weights and teacher_arch; min_teacher_miou=0 turns the check off."
        )
    return ev["miou"]


def checked(cfg: Config, teacher, device) -> None:
    """`preflight` once per teacher in this process (and nothing when cfg.min_teacher_miou is 0)."""
    key = (teacher_identity(cfg), cfg.monitor_split)
    if cfg.min_teacher_miou > 0 and cfg.monitor_split and key not in _CHECKED:
        preflight(cfg, teacher, device)
        _CHECKED.add(key)


def feed(cfg: Config, method: str, teacher, train_ds, job: distributed.Context, progress: bool):
    """(training set, TeacherFeed or None) for `method`: nothing for a method without a teacher; the
    logit cache (filled by rank 0 first) for one that reads only logits when cfg.teacher_cache; else the
    online teacher."""
    m = kd.get("baseline" if method == "teacher" else method)
    if m.teacher is None:
        return train_ds, None
    checked(cfg, teacher, job.device)
    if m.teacher == "logits" and cfg.teacher_cache:
        folder = job.first(teacher_cache, cfg, teacher, job.device, progress)
        return WithTeacherLogits(train_ds, folder), TeacherFeed(method, None, job.device)
    return train_ds, TeacherFeed(method, teacher, job.device)


def prepare_shared(cfg: Config, method: str, progress: bool = True) -> None:
    """What every training of `method` in a batch of jobs shares, made once, in this process, with the whole
    machine: the data, the teacher (trained or loaded, pre-flight checked) and its logit cache."""
    from ..data.loaders import prepare_data

    device = distributed.current(cfg.device).device
    prepare_data(cfg, progress)
    m = kd.get(method)
    if m.teacher is None:
        return
    teacher = get_teacher(cfg, device, progress, say=False)
    checked(cfg, teacher, device)
    if m.teacher == "logits" and cfg.teacher_cache:
        teacher_cache(cfg, teacher, device, progress)


def _trained_teachers(folder: Path, exclude: Path) -> list[dict]:
    """The finished teachers trained here before: {path, config, seconds, epochs, images} each."""
    found = []
    for p in sorted(folder.glob("*.pt")):
        if p == exclude:
            continue
        try:
            state = checkpoint.load(p)
        except UserError:
            continue
        if state.get("method") == "teacher" and state.get("complete"):
            h = state.get("history") or {}
            found.append(
                {
                    "path": p,
                    "config": state.get("config") or {},
                    "seconds": sum(h.get("time_s") or []),
                    "epochs": len(h.get("time_s") or []),
                    "images": state.get("images"),
                }
            )
    return found


def _differences(cfg: Config, saved: dict) -> list[str]:
    now = cfg.to_dict()
    return [
        f"{k} {portable_value(k, saved[k])!r} → {now[k]!r}"
        for k in TEACHER_KEYS
        if k in saved and portable_value(k, saved[k]) != now[k]
    ]


def new_teacher_note(cfg: Config, images: int, state: dict | None = None) -> str:
    """What `fit` says before it trains a teacher: which file, why a new one (the settings that differ
    from the nearest teacher trained here before) and about how long, from that teacher's measured
    seconds per image and epoch (same architecture; an estimate: other settings change the speed)."""
    path = checkpoint_path(cfg, "teacher")
    what = (
        f"{cfg.teacher_arch}, {cfg.teacher_epochs} epoch{'s' if cfg.teacher_epochs != 1 else ''} on {images} "
        f"'{cfg.teacher_split}' images"
    )
    if state is not None:
        return (
            f"teacher: continuing the unfinished {portable(path)} from epoch "
            f"{state.get('epoch')} of {cfg.teacher_epochs} ({what})."
        )
    others = _trained_teachers(path.parent, path)
    if others:
        near = min(others, key=lambda t: len(_differences(cfg, t["config"])))
        why = (
            f"the settings differ from the teacher {near['path'].name} ({'; '.join(_differences(cfg, near['config']))})"
        )
    else:
        why = "no teacher has been trained here yet"
    rates = [
        t["seconds"] / (t["epochs"] * t["images"])
        for t in others
        if t["images"] and t["epochs"] and t["config"].get("teacher_arch") == cfg.teacher_arch
    ]
    if rates:
        est = rates[-1] * images * cfg.teacher_epochs
        when = f"about {est / 60:.0f} min" if est >= 90 else f"about {est:.0f} s"
        estimate = f"Expect {when} ({1000 * rates[-1]:.1f} ms per image and epoch, measured on the last one)."
    else:
        estimate = "No earlier teacher of this architecture to estimate its time from."
    return (
        f"teacher: training a new one ({what}) → {portable(path)}: {why}. "
        f"{estimate} Trained once, it is reused by every run with these teacher settings."
    )
