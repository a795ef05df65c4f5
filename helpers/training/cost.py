"""What training costs in FLOPs, and the epochs of the compute-matched baseline.

One convention, as everywhere in the project: torch.utils.flop_counter, a multiply-add counted as 2, only the
ops it has formulas for (convolutions, matmuls; BatchNorm, activations, pooling, interpolation are free).
A training step's FLOPs are counted, not estimated: one image at the training crop through `kd.objective`
(the student's forward and backward, the adapter's, the loss) and, for a method whose teacher runs online,
the teacher's forward. A method that reads cached logits instead pays its share of the one-time teacher
pass over the training images at full resolution: the pass divided evenly over every (method, seed) of the
run that reads the cache. The teacher's own training is its forward and backward per image and epoch.

The compute-matched baseline (`kd` registers `baseline_matched` with match_compute=True) trains the
baseline for as many epochs, same schedule shape, as make its training FLOPs per seed match the costliest
KD method of the run's students: matched by FLOPs, not by measured time, because FLOPs are exact and the
same on every machine while time depends on the machine and what else runs on it.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from .. import kd
from ..config.knobs import Config
from ..data import voc
from ..data.loaders import dataset
from ..kd.feature import FeatureAdapter
from ..models import build_model


def step_gflops(cfg: Config, method: str, cached: bool | None = None) -> float:
    """GFLOPs of one training step per image for `method` ("teacher": the teacher's own training) at
    cfg.crop_size; `cached` (default: what the run does) leaves the teacher out for a logits-only method."""
    return _step_gflops(
        cfg.student_arch,
        cfg.teacher_arch,
        cfg.crop_size,
        method,
        _cached(cfg, method, cached),
        _knob_values(cfg, method),
    )


def _cached(cfg: Config, method: str, cached: bool | None) -> bool:
    if method == "teacher":
        return False
    return kd.get(method).teacher == "logits" and (cfg.teacher_cache if cached is None else cached)


def _knob_values(cfg: Config, method: str) -> tuple:
    return () if method == "teacher" else tuple(sorted((k, getattr(cfg, k)) for k in kd.get(method).knobs))


@lru_cache(maxsize=64)
def _step_gflops(student_arch, teacher_arch, crop, method, cached, knobs) -> float:
    torch.manual_seed(0)
    arch = teacher_arch if method == "teacher" else student_arch
    student, m = build_model(arch, voc.NUM_CLASSES).train(), kd.get("baseline" if method == "teacher" else method)
    teacher = build_model(teacher_arch, voc.NUM_CLASSES).eval() if m.teacher else None
    adapter = FeatureAdapter(student.feature_channels, teacher.feature_channels) if m.adapter else None
    x, target = torch.randn(1, 3, crop, crop), torch.zeros(1, crop, crop, dtype=torch.long)
    cfg = dict(knobs)
    with FlopCounterMode(display=False) as counter:
        if cached:  # the maps come with the batch (sampling them is interpolation: free by the convention)
            t_out = (torch.randn(1, voc.NUM_CLASSES, crop, crop), None)
        else:
            t_out = kd.teacher_outputs(teacher, x, m.name) if teacher is not None else None
        parts = kd.objective(m.name, student.forward_features(x), target, t_out, adapter, _Knobs(cfg))
        parts["loss"].backward()
    return counter.get_total_flops() / 1e9


class _Knobs:
    def __init__(self, values: dict):
        self.__dict__.update(values)


def images_per_epoch(cfg: Config, split: str) -> int:
    """Training images one epoch uses: whole batches only (the last, incomplete one is dropped)."""
    n = len(dataset(cfg, split))
    return n // cfg.batch_size * cfg.batch_size


def cache_pass_gflops(cfg: Config) -> float:
    """GFLOPs of the one-time teacher pass that fills the logit cache: the teacher's forward (with its head)
    over every training image at full resolution (FLOPs grow with the pixels: counted at 64 x 64, scaled
    by the images' pixels, read from their headers)."""
    ds = dataset(cfg, cfg.train_split)
    pixels = 0
    for _, image_path, _ in ds.items:
        with Image.open(image_path) as im:
            pixels += im.width * im.height
    return _forward_gflops(cfg.teacher_arch) * pixels / (64 * 64)


@lru_cache(maxsize=8)
def _forward_gflops(arch: str) -> float:
    model = build_model(arch, voc.NUM_CLASSES).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    return counter.get_total_flops() / 1e9


def seed_gflops(cfg: Config, method: str, epochs: int | None = None) -> float:
    """GFLOPs of training one seed of `method` for `epochs` (default: what it trains), the cache share included."""
    split = cfg.teacher_split if method == "teacher" else cfg.train_split
    epochs = epochs if epochs is not None else epochs_of(cfg, method)
    total = step_gflops(cfg, method) * images_per_epoch(cfg, split) * epochs
    if _cached(cfg, method, None):
        readers = [m for m in cfg.students if _cached(cfg, m, None)] or [method]
        total += cache_pass_gflops(cfg) / (len(readers) * cfg.seeds)
    return total


def epochs_of(cfg: Config, method: str) -> int:
    """The epochs `method` trains for in this run: teacher_epochs for the teacher, the compute-matched number
    for a method registered with match_compute, else `epochs`."""
    if method == "teacher":
        return cfg.teacher_epochs
    return matched_epochs(cfg) if kd.get(method).match_compute else cfg.epochs


def matched_epochs(cfg: Config) -> int:
    """Epochs of the compute-matched baseline: the costliest KD method's training GFLOPs per seed (among the
    run's students) over the baseline's GFLOPs per epoch, rounded; cfg.epochs when no KD method is there."""
    kd_methods = [m for m in cfg.students if kd.get(m).loss is not None]
    if not kd_methods:
        return cfg.epochs
    per_epoch = step_gflops(cfg, "baseline") * images_per_epoch(cfg, cfg.train_split)
    return max(cfg.epochs, round(max(seed_gflops(cfg, m) for m in kd_methods) / per_epoch))
