"""The comparison: evaluate every model on the reported split, measure it, and fill the table.

Protocol (fixed): single scale, each image at full resolution, one dataset-level confusion matrix
per model, label 255 ignored, on `eval_split` (val). The models compared are the final-epoch
checkpoints; nothing here chooses among checkpoints, so val never takes part in model selection.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import torch

from .. import kd, perf
from ..config.knobs import Config
from ..core import checkpoint, runtime
from ..data import loaders as data
from ..data.voc import CLASSES
from ..evaluation import metrics
from ..evaluation.protocol import evaluate_cached
from ..models import store as runs
from ..models import teacher as teachers
from ..models.store import reports_dir, seeds_of
from ..scale import distributed
from . import notes
from .files import write_results


def _find_models(cfg: Config, device):
    """({key: model}, {key: checkpoint path}, missing [(method, seed, path, why)]) of the run's finished
    models; a method counts only with every seed finished (its other seeds are not loaded)."""
    models, missing, paths = {}, [], {}
    try:
        models["teacher"] = teachers.load_teacher(cfg, device)
    except runs.NotTrained as e:
        missing += e.missing
    for method in cfg.students:
        found, lacking = {}, []
        for s in seeds_of(cfg):
            key, path = runs.model_key(cfg, method, s), runs.checkpoint_path(cfg, method, s)
            state = checkpoint.load(path) if path.is_file() else None
            if state is None or not state.get("complete"):
                why = f"unfinished, epoch {state.get('epoch')} of {state.get('epochs')}" if state else "not there"
                lacking.append((method, s, path, why))
            else:
                found[key] = path
        missing += lacking
        if not lacking:
            paths.update(found)
            models.update({k: runs.load_model(p, device)[0] for k, p in found.items()})
    return models, paths, missing


def load_all(cfg: Config, progress=True):
    """({key: model}, {key: eval result}, the eval split) for the teacher and every student/seed.

    Keys: "teacher", each method of cfg.students (its first seed), and "<method>_seed<s>" for other seeds.
    Only loads: a missing or unfinished model (teacher included) is never trained here, it raises
    `runs.NotTrained`, one message listing all of them, before anything is evaluated.
    """
    return load_finished(cfg, progress, partial=False)[:3]


def load_finished(cfg: Config, progress=True, partial: bool = True):
    """`load_all` for what is finished: the methods whose every seed is finished are evaluated and the
    others returned as a fourth item, missing [(method, seed, path, why)]; NotTrained only when no
    student method is finished (or, with partial=False, when anything is missing)."""
    device = runtime.resolve_device(cfg.device)
    models, paths, missing = _find_models(cfg, device)
    if missing and not (partial and paths):
        raise runs.NotTrained(cfg, missing)
    distributed.current(cfg.device).first(data.prepare_data, cfg, progress)
    ds = data.dataset(cfg, cfg.eval_split)
    evals = {}
    if "teacher" in models:
        src = runs.checkpoint_path(cfg, "teacher")  # (a file only for teachers trained here)
        cache = reports_dir(cfg) / "eval" / f"teacher-{teachers.teacher_identity(cfg)}.npz"
        evals["teacher"] = evaluate_cached(
            models["teacher"], ds, cache, src if src.is_file() else None, device, progress, "eval teacher"
        )
    for key, path in paths.items():
        evals[key] = evaluate_cached(
            models[key], ds, reports_dir(cfg) / "eval" / f"{key}.npz", path, device, progress, f"eval {key}"
        )
    return models, evals, ds, missing


def seed_summary(cfg: Config, method: str, students: dict, device, val=None, teacher=None) -> str:
    """Val mIoU of `students` ({seed: model}, one method) beside the baseline of the same seed, as text.

    What notebooks 02-04 print after training; a missing baseline is said, not hidden. The verdict
    on each difference is notebook 05's (its interval: seed-level with several seeds, image-level with one),
    not this quick look's.
    """
    val = val if val is not None else data.dataset(cfg, cfg.eval_split)
    lines = [
        f"{cfg.eval_split} mIoU ({len(val)} images), final-epoch models of run '{cfg.run_name}':",
        f"{'seed':<6}{kd.label(method):>24}" + (f"{kd.label('baseline'):>24}{'Δ':>10}" if method != "baseline" else ""),
    ]
    if teacher is not None:
        lines.insert(0, f"teacher mIoU {_evaluate(cfg, 'teacher', teacher, val, device)['miou']:.4f}")
    missing = []
    for s, model in students.items():
        m = _evaluate(cfg, runs.model_key(cfg, method, s), model, val, device)["miou"]
        row = f"{s:<6}{m:>24.4f}"
        if method != "baseline":
            path = runs.checkpoint_path(cfg, "baseline", s)
            if path.is_file():
                b = _evaluate(cfg, runs.model_key(cfg, "baseline", s), None, val, device)["miou"]
                row += f"{b:>24.4f}{m - b:>+10.4f}"
            else:
                missing.append(s)
        lines.append(row)
    if missing:
        lines.append(
            f"No baseline for seed(s) {', '.join(map(str, missing))} of run '{cfg.run_name}' yet: run "
            "notebook 02_baseline (or `python -m helpers train --method baseline --seed S`) to compare."
        )
    if method != "baseline":
        scope = (
            "seed-level interval"
            if cfg.seeds > 1
            else "image-level interval (paired bootstrap over val images; one seed cannot show training noise)"
        )
        lines.append(f"Whether a difference is more than noise is decided in notebook 05, by its {scope}.")
    return "\n".join(lines)


def _evaluate(cfg: Config, key: str, model, ds, device) -> dict:
    """One model's evaluation on `ds` with a progress bar, cached as notebook 05 caches it (so 05 does not
    evaluate it again); `model` None: loaded from its checkpoint when the cache can't answer."""
    if key == "teacher":
        src = runs.checkpoint_path(cfg, "teacher")
        cache = reports_dir(cfg) / "eval" / f"teacher-{teachers.teacher_identity(cfg)}.npz"
        src = src if src.is_file() else None
    else:
        src = runs.run_dir(cfg) / f"{key}.pt"
        cache = reports_dir(cfg) / "eval" / f"{key}.npz"
    if model is None:
        model = _Lazy(src, device)
    return evaluate_cached(model, ds, cache, src, device, True, f"eval {key}")


class _Lazy(torch.nn.Module):
    """A checkpoint's model, loaded on its first call (the evaluation cache usually makes that unneeded)."""

    def __init__(self, path, device):
        super().__init__()
        self.path, self.device, self.model = path, device, None

    def forward(self, x):
        if self.model is None:
            self.model = runs.load_model(self.path, self.device)[0]
        return self.model(x)


def _stacked(evals, method, seeds, cfg):
    """((S, N, C, C) per-seed per-image matrices, the eval keys used); the teacher has one seed."""
    keys = ["teacher"] if method == "teacher" else [method if s == cfg.seed else f"{method}_seed{s}" for s in seeds]
    return np.stack([np.asarray(evals[k]["per_image_cm"]) for k in keys]), keys


def _accuracy(evals, method, seeds, cfg) -> dict:
    """A row's accuracy fields: means over seeds, per-seed mIoUs, seed-level CIs (see metrics).

    "diff_vs_baseline" (KD rows) is `metrics.paired_delta_ci(method, baseline)` with "diff" =
    its "delta", the mean over seeds of the paired per-seed differences: the difference of the
    rows' "miou" (mean over seeds of each seed's dataset-level mIoU)."""
    cms, keys = _stacked(evals, method, seeds, cfg)
    mious = [float(evals[k]["miou"]) for k in keys]
    per_seed = np.array([[np.nan if v is None else v for v in evals[k]["iou_per_class"]] for k in keys], float)
    seen = (~np.isnan(per_seed)).sum(0)  # mean over seeds; NaN where a class never occurred
    iou = np.where(seen > 0, np.nansum(per_seed, 0) / np.maximum(seen, 1), np.nan)
    ci = metrics.seed_miou_ci(cms, cfg.bootstrap_resamples, rng=cfg.seed)
    out = {
        "miou": float(np.mean(mious)),
        "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else None,
        "per_seed_miou": mious,
        "n_seeds": len(keys),
        "pixel_acc": float(np.mean([evals[k]["pixel_acc"] for k in keys])),
        "iou_per_class": {c: (None if np.isnan(v) else float(v)) for c, v in zip(CLASSES, iou)},
        "miou_ci": [ci["low"], ci["high"]],
        "miou_ci_method": ci["method"],
        "diff_vs_baseline": None,
    }
    if method not in ("baseline", "teacher") and "baseline" in evals:
        base, _ = _stacked(evals, "baseline", seeds, cfg)
        d = metrics.paired_delta_ci(cms, base, cfg.bootstrap_resamples, rng=cfg.seed)
        out["diff_vs_baseline"] = dict(d, diff=d["delta"])
    return {**out, **_boundary(evals, method, keys, seeds, cfg)}


def _boundary_counts(evals, keys) -> np.ndarray:
    return metrics.boundary_as_counts(np.stack([np.asarray(evals[k]["per_image_boundary"]) for k in keys]))


def _boundary(evals, method, keys, seeds, cfg) -> dict:
    """Boundary IoU (boundary.py) of a row: mean over seeds, its seed-level interval, and for KD rows
    the paired Δ against the baseline with its interval, built exactly like the mIoU's."""
    counts = _boundary_counts(evals, keys)
    ci = metrics.seed_ci_from_counts(counts, cfg.bootstrap_resamples, rng=cfg.seed)
    per_seed = ci["per_seed"]
    out = {
        "boundary_iou": ci["miou"],
        "boundary_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
        "boundary_ci": [ci["low"], ci["high"]],
        "boundary_diff_vs_baseline": None,
    }
    if method not in ("baseline", "teacher") and "baseline" in evals:
        base = _boundary_counts(evals, _stacked(evals, "baseline", seeds, cfg)[1])
        d = metrics.paired_delta_from_counts(counts, base, cfg.bootstrap_resamples, rng=cfg.seed)
        out["boundary_diff_vs_baseline"] = dict(d, diff=d["delta"])
    return out


def compare(cfg: Config, progress=True, write=True, partial=True) -> dict:
    """Evaluate, measure and write the table files; returns the results dict (see table.write_table_files).

    With `partial` (notebook 05, `compare`), what is finished is compared: results["missing"] names the
    rest and the notebooks that train them, and the table says it is partial. Writing keeps the files in
    step with the report (`files.write_results`): a partial table never replaces a complete one, and a
    noisier latency never replaces a quieter one of the same models."""
    models, evals, ds, missing = load_finished(cfg, progress, partial)
    if not distributed.current(cfg.device).main:
        return {}  # under torchrun: the other ranks took part in the sharded evaluation only
    seeds = seeds_of(cfg)
    size = (1, 3, cfg.latency_size, cfg.latency_size)
    device = runtime.resolve_device(cfg.device)
    present = [m for m in [*cfg.students, "teacher"] if m in evals]
    # the deployed networks (no KD adapter), measured interleaved in this process
    deployed = {k: perf.optimize_for_inference(models[k], cfg.inference_path, size) for k in present}
    lat = perf.latency(deployed, size, device=str(device), min_run_time=cfg.latency_min_time)
    rows = [_row(cfg, method, models, evals, seeds, lat, size) for method in present]
    interval = next((r["diff_vs_baseline"]["method"] for r in rows if r["diff_vs_baseline"]), "none (no KD row)")
    any_lat = next(iter(lat.values()))
    results = {
        "run": cfg.run_name,
        "rows": rows,
        "latency": {
            "device": any_lat["device"],
            "threads": any_lat["threads"],
            "dtype": any_lat["dtype"],
            "input_size": any_lat["input_size"],
            "path": cfg.inference_path,
            "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        },
        "protocol": (
            f"single-scale, full resolution, dataset-level confusion matrix, label 255 ignored; "
            f"boundary IoU: bands of 2% of the image diagonal (Cheng et al., 2021); "
            f"split: {cfg.eval_split} ({len(ds)} images); final-epoch checkpoints; "
            f"Δ mIoU CI: {interval}, {cfg.bootstrap_resamples} paired bootstrap resamples of images"
        ),
        "dataset": cfg.dataset,
        "seeds": seeds,
        "students": list(cfg.students),
        "partial": bool(missing),
        "missing": _missing(missing),
    }
    if missing:
        print(notes.partial_note(results), flush=True)
    results["files"] = write_results(results, reports_dir(cfg)) if write else "not written (write=False)"
    return results


def _row(cfg: Config, method: str, models: dict, evals: dict, seeds, lat: dict, size) -> dict:
    row = {
        "method": method,
        "label": kd.label(method),
        "arch": cfg.teacher_arch if method == "teacher" else cfg.student_arch,
        **_accuracy(evals, method, seeds, cfg),
        "params": perf.count_parameters(models[method]),
        "gflops": perf.gflops(models[method], size),
        "latency_ms": lat[method]["mean_ms"],
        "latency_std_ms": lat[method]["std_ms"],
    }
    row["params_str"] = perf.format_params(row["params"])
    return row


def _missing(missing: list) -> list[dict]:
    """The methods left out of a partial table, with their seeds, why, and what trains them."""
    out = {}
    for method, seed, _, why in missing:
        item = out.setdefault(
            method,
            {"method": method, "label": kd.label(method), "notebook": kd.trained_by(method), "seeds": [], "why": why},
        )
        if seed is not None:
            item["seeds"].append(seed)
    return list(out.values())
