"""`python -m helpers bench`: where the time goes (training throughput, KD overhead, data waiting)
and inference latency.

`python -m helpers bench` calls `main`, which measures in ONE process and writes bench.json:

1. Training steps on synthetic batches (random images, random masks with ~10 % void, so data
   loading is excluded), each kind through `training.train_one_epoch` itself:
   one per method of the preset's `students` (`throughput.step_kinds`): the baseline (CE only), each KD
   method with the online teacher (its head skipped when the method reads only its feature), and
   "<method>_cached" for a method that reads only logits, its maps coming with the batch as
   `scale.logit_cache.WithTeacherLogits` provides them; plus the teacher's full inference on the same batches.
   Warm-up first, then `rounds` rounds round-robin over the kinds (order reversed every other
   round), `steps` steps per kind and round; a kind's step time is the median over rounds, so a
   drift of the machine hits every kind alike. Derived:
   kd_overhead[k] = step[k] / step[baseline];
   efficiency[k]  = (step[baseline] + teacher forward per batch) / step[k] for each online KD kind:
   1.0 means KD costs the student step plus one teacher forward and nothing more.
2. The share of a real training step spent waiting for data: a short baseline run over the
   preset's training split through `data.loader`, with `next()` on the loader timed inside the
   loop, for each `num_workers` setting (the first step, which starts the workers, is excluded).
3. Real epochs (`cached_epochs`): over the first `epoch_images` training images, the one-time
   teacher pass that caches their logits, then baseline and cached-response epochs through
   `data.loader` (real files, augmentation, cfg.batch_size, cfg.crop_size), interleaved; the
   ratio cached / baseline is the cost of response KD once the teacher is out of the loop.
4. Batch-1 inference latency of student and teacher at `image_size`: eager fp32 and the faster
   paths of `perf.optimize_for_inference` (fused, jit, onnxruntime; int8 for a compact (plain conv) student
   on CPU, kept only if its agreement is at least `int8_min_agreement`), interleaved by
   `perf.latency`, with GFLOPs and achieved GFLOP/s (the fp32 model's FLOPs / latency), and
   `perf.argmax_agreement` of every faster path with eager fp32 on real validation images
   (eval_split through `data.dataset`). The paths are built by the same function as the
   comparison table's latency column (`compare.compare`), so each agreement is that of the path
   the table times with that `inference_path`. GFLOPs as `perf.FLOP_CONVENTION` states.
5. On CUDA: the peak memory of each step kind (bf16/fp16 autocast when cfg.amp, as in training).

Weights: a finished checkpoint of the preset's run (baseline student, teacher) is used when one
exists, otherwise random initialisation (enough for throughput; nothing is downloaded).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import perf  # (the package's names: the table's latency column calls the same ones)
from ..config.knobs import Config
from ..config.presets import from_preset
from ..core import runtime
from ..core.errors import UserError
from ..data import loaders as datasets
from ..data import voc
from ..models import store as runs
from ..models.nets import build_model
from ..models.teacher import freeze
from .bench_latency import inference
from .bench_table import format_table
from .eval_costs import evaluation_costs
from .throughput import cached_epochs, data_wait, step_kinds, training_throughput


def make_config(preset: str | None = "demo", overrides: dict | None = None, device: str = "cpu") -> Config:
    """The preset's Config with `overrides` (e.g. data_root, checkpoints_dir) and `device` applied."""
    return from_preset(preset, {**(overrides or {}), "device": device})


def _load_or_build(cfg: Config, method: str, arch: str) -> tuple[torch.nn.Module, str]:
    """A finished checkpoint of `method` with this architecture if there is one, else a random init."""
    path = runs.checkpoint_path(cfg, method)
    if path.is_file():
        try:
            model, state = runs.load_model(path)
            if state.get("complete") and state.get("arch") == arch:
                return model, str(path)
        except UserError:
            pass
    torch.manual_seed(cfg.seed)
    return build_model(arch, voc.NUM_CLASSES).eval(), "random init"


@dataclass
class Settings:
    """What the bench measures and how long (defaults: about a minute on 2 idle cores, demo preset)."""

    image_size: int = 64
    batch_size: int = 16
    rounds: int = 6  # interleaved rounds of training steps
    steps: int = 4  # steps per kind and round
    warmup: int = 2
    data_steps: int = 10
    workers: tuple = (0, 1, 2)  # num_workers settings for the data wait
    epoch_images: int = 320  # real epochs baseline vs cached KD (0: skipped)
    epoch_rounds: int = 3
    latency_rounds: int = 3
    latency_min_time: float = 0.2
    agreement_images: int = 4
    int8: bool = True
    int8_min_agreement: float = 0.98
    threads: int | None = None
    verbose: bool = True


def main(
    device: str = "cpu",
    out="reports/bench.json",
    preset: str | None = "demo",
    overrides: dict | None = None,
    **settings,
) -> dict:
    """Run the bench (see the module docstring) with `Settings(**settings)`, write `out` (JSON) and print a
    table; returns the written dict. `overrides` are Config values applied over the preset (tests pass
    data_root, checkpoints_dir). Raise rounds, steps and latency_min_time for steadier numbers."""
    s = Settings(**settings)
    if s.image_size < 8 or s.batch_size < 1 or s.rounds < 1 or s.steps < 1 or s.data_steps < 1:
        raise UserError(
            f"bench: need image_size >= 8, batch_size >= 1, rounds >= 1, steps >= 1, data_steps >= 1 "
            f"(got {s.image_size}, {s.batch_size}, {s.rounds}, {s.steps}, {s.data_steps})."
        )
    cfg = make_config(preset, overrides, device)
    dev = runtime.resolve_device(cfg.device)
    s.malloc_tuned, s.threads, s.preset = runtime.keep_freed_memory(), int(s.threads or torch.get_num_threads()), preset
    old_threads, t_start = torch.get_num_threads(), time.perf_counter()
    torch.set_num_threads(s.threads)
    try:
        measured = _measure(cfg, dev, s)
    finally:
        torch.set_num_threads(old_threads)
    result = _result(cfg, dev, s, measured, time.perf_counter() - t_start)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if s.verbose:
        print(format_table(result) + f"\n\nwritten to {out}")
    return result


def _measure(cfg: Config, dev: torch.device, s) -> dict:
    """Every measurement of the bench, in order (the models: a finished checkpoint, else a random init)."""
    datasets.prepare_data(cfg, progress=s.verbose)
    student, student_src = _load_or_build(cfg, "baseline", cfg.student_arch)
    teacher, teacher_src = _load_or_build(cfg, "teacher", cfg.teacher_arch)
    train_teacher = freeze(copy.deepcopy(teacher).to(dev), cfg)
    _log(s.verbose, f"bench: {cfg.student_arch} student, {cfg.teacher_arch} teacher, {dev}, {s.threads} threads")
    _log(s.verbose, "bench: training steps (synthetic batches, interleaved) ...")
    train = training_throughput(
        student, train_teacher, cfg, dev, s.image_size, s.batch_size, s.rounds, s.steps, s.warmup
    )
    _log(s.verbose, "bench: data loading ...")
    data = data_wait(student, cfg, dev, s.batch_size, s.workers, s.data_steps)
    cached = [k.removesuffix("_cached") for k in step_kinds(cfg) if k.endswith("_cached")]
    epochs = None
    if s.epoch_images > 0 and cached:
        _log(s.verbose, f"bench: real epochs, baseline and cached {cached[0]} KD ({s.epoch_images} images) ...")
        epochs = cached_epochs(student, train_teacher, cfg, dev, s.epoch_images, s.epoch_rounds, cached[0])
    del train_teacher
    _log(s.verbose, "bench: inference paths ...")
    opts = dict(rounds=s.latency_rounds, min_run_time=s.latency_min_time, images=s.agreement_images, int8=s.int8)
    inf = inference(
        student, teacher, cfg, dev, s.image_size, s.threads, **opts, int8_min_agreement=s.int8_min_agreement
    )
    _log(s.verbose, "bench: evaluation protocol (boundary IoU, seed-level interval at VOC size) ...")
    costs = evaluation_costs(rounds=max(1, s.latency_rounds))
    weights = {"student": student_src, "teacher": teacher_src}
    return {"train": train, "data": data, "epochs": epochs, "inference": inf, "evaluation": costs, "weights": weights}


def _result(cfg: Config, dev: torch.device, s, m: dict, seconds: float) -> dict:
    """bench.json: the measurements and what is derived from them (images/s, KD overhead, efficiency)."""
    step = {k: v["median"] / 1e3 for k, v in m["train"]["step_ms"].items()}  # seconds per batch
    kinds = step_kinds(cfg)
    online = [k for k in kinds if k != "baseline" and not k.endswith("_cached")]
    _, amp_dtype = runtime.autocast(dev, cfg)
    inf = m["inference"]
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "image_size": s.image_size,
        "batch_size": s.batch_size,
        "threads": s.threads,
        "preset": s.preset,
        "torch": torch.__version__,
        "models": {"student": cfg.student_arch, "teacher": cfg.teacher_arch},
        "weights": m["weights"],
        "train_dtype": str(amp_dtype).replace("torch.", ""),
        "freed_memory_kept": s.malloc_tuned,
        "rounds": s.rounds,
        "steps_per_round": s.steps,
        "step_kinds": list(kinds),
        "step_ms": m["train"]["step_ms"],
        "train_images_per_s": {k: s.batch_size / step[k] for k in kinds},
        "teacher_images_per_s": s.batch_size / step["teacher"],
        "kd_overhead": {k: step[k] / step["baseline"] for k in kinds if k != "baseline"},
        "efficiency": {k: (step["baseline"] + step["teacher"]) / step[k] for k in online},
        "data_wait_share": {k: v["share"] for k, v in m["data"].items()},
        "data_wait": m["data"],
        "cached_epoch": m["epochs"],
        "evaluation": m["evaluation"],
        **{
            k: inf[k]
            for k in ("latency_ms", "gflops", "gflop_per_s", "argmax_agreement", "agreement_images", "agreement_split")
        },
        "flop_convention": perf.FLOP_CONVENTION,
        "cuda_peak_mem_mb": dict(m["train"]["peaks"]) if dev.type == "cuda" else None,
        "notes": inf["notes"] + _data_notes(m["data"], s.data_steps),
        "seconds": seconds,
    }


def _data_notes(data: dict, steps: int) -> list[str]:
    per_epoch = next(iter(data.values()))["batches_per_epoch"] if data else steps + 1
    if per_epoch > steps:
        return []
    return [
        f"the training split holds {per_epoch} batch(es) per epoch: the data-wait steps cross "
        "epochs, and workers restart at each (persistent_workers=False), so wait shares with "
        "workers are pessimistic here"
    ]


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(msg, flush=True)
