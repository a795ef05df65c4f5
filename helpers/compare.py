"""The comparison: evaluate every model on the reported split, measure it, and fill the table.

Protocol (fixed): single scale, each image at full resolution, one dataset-level confusion matrix
per model, label 255 ignored, on `eval_split` (val). The models compared are the final-epoch
checkpoints; nothing here chooses among checkpoints, so val never takes part in model selection.
"""
from __future__ import annotations


import numpy as np

from . import costs, data, evaluation, metrics, runs, runtime, table, teachers
from .config import Config
from .evaluation import evaluate_cached
from .runs import STUDENTS, reports_dir, seeds_of
from .table import LABELS
from .voc import CLASSES


def load_all(cfg: Config, progress=True):
    """({key: model}, {key: eval result}) for the teacher and every student/seed on eval_split.

    Keys: "teacher", "baseline", "response", "feature", and "<method>_seed<s>" for extra seeds.
    Only loads: a missing or unfinished model (teacher included) is never trained here, it raises
    `runs.NotTrained`, one message listing all of them, before anything is evaluated.
    """
    device = runtime.resolve_device(cfg.device)
    models, missing, paths = {}, [], {}
    try:
        models["teacher"] = teachers.load_teacher(cfg, device)
    except runs.NotTrained as e:
        missing += e.missing
    for method in STUDENTS:
        for s in seeds_of(cfg):
            key, path = runs.model_key(cfg, method, s), runs.checkpoint_path(cfg, method, s)
            if not path.is_file():
                missing.append((method, s, path, "not there"))
                continue
            models[key], state = runs.load_model(path, device)
            paths[key] = path
            if not state.get("complete"):
                missing.append((method, s, path, f"unfinished, epoch {state.get('epoch')} of {state.get('epochs')}"))
    if missing:
        raise runs.NotTrained(cfg, missing)
    if _main_process():
        data.prepare_data(cfg, progress)
    _barrier()
    ds = data.dataset(cfg, cfg.eval_split)
    evals = {}
    teacher = models["teacher"]
    src = runs.checkpoint_path(cfg, "teacher")  # (a file only for teachers trained here)
    cache = reports_dir(cfg) / "eval" / f"teacher-{teachers.teacher_identity(cfg)}.npz"
    evals["teacher"] = evaluate_cached(teacher, ds, cache, src if src.is_file() else None, device, progress,
                                       "eval teacher")
    for key, path in paths.items():
        evals[key] = evaluate_cached(models[key], ds, reports_dir(cfg) / "eval" / f"{key}.npz", path, device,
                                     progress, f"eval {key}")
    return models, evals, ds


def seed_summary(cfg: Config, method: str, students: dict, device, val=None, teacher=None) -> str:
    """Val mIoU of `students` ({seed: model}, one method) beside the baseline of the same seed, as text.

    What notebooks 02-04 print after training; a missing baseline is said, not hidden. The verdict
    on each difference is notebook 05's (seed-level interval), not this quick look's.
    """
    val = val if val is not None else data.dataset(cfg, cfg.eval_split)
    lines = [f"{cfg.eval_split} mIoU ({len(val)} images), final-epoch models of run '{cfg.run_name}':",
             f"{'seed':<6}{LABELS[method]:>24}" + (f"{LABELS['baseline']:>24}{'Δ':>10}" if method != "baseline" else "")]
    if teacher is not None:
        lines.insert(0, f"teacher mIoU {evaluation.evaluate(teacher, val, device)['miou']:.4f}")
    missing = []
    for s, model in students.items():
        m = evaluation.evaluate(model, val, device)["miou"]
        row = f"{s:<6}{m:>24.4f}"
        if method != "baseline":
            path = runs.checkpoint_path(cfg, "baseline", s)
            if path.is_file():
                b = evaluation.evaluate(runs.load_model(path, device)[0], val, device)["miou"]
                row += f"{b:>24.4f}{m - b:>+10.4f}"
            else:
                missing.append(s)
        lines.append(row)
    if missing:
        lines.append(f"No baseline for seed(s) {', '.join(map(str, missing))} of run '{cfg.run_name}' yet: run "
                     "notebook 02_baseline (or `python -m helpers train --method baseline --seed S`) to compare.")
    if method != "baseline":
        lines.append("Whether a difference is more than noise is decided in notebook 05 (seed-level interval).")
    return "\n".join(lines)


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
    out = {"miou": float(np.mean(mious)), "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else None,
           "per_seed_miou": mious, "n_seeds": len(keys),
           "pixel_acc": float(np.mean([evals[k]["pixel_acc"] for k in keys])),
           "iou_per_class": {c: (None if np.isnan(v) else float(v)) for c, v in zip(CLASSES, iou)},
           "miou_ci": [ci["low"], ci["high"]], "miou_ci_method": ci["method"], "diff_vs_baseline": None}
    if method in ("response", "feature"):
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
    out = {"boundary_iou": ci["miou"], "boundary_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
           "boundary_ci": [ci["low"], ci["high"]], "boundary_diff_vs_baseline": None}
    if method in ("response", "feature"):
        base = _boundary_counts(evals, _stacked(evals, "baseline", seeds, cfg)[1])
        d = metrics.paired_delta_from_counts(counts, base, cfg.bootstrap_resamples, rng=cfg.seed)
        out["boundary_diff_vs_baseline"] = dict(d, diff=d["delta"])
    return out


def _main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def compare(cfg: Config, progress=True, write=True) -> dict:
    """Evaluate, measure and write the table files; returns the results dict (see table.write_table_files)."""
    models, evals, ds = load_all(cfg, progress)
    if not _main_process():
        return {}  # under torchrun: the other ranks took part in the sharded evaluation only
    seeds = seeds_of(cfg)
    size = (1, 3, cfg.latency_size, cfg.latency_size)
    device = runtime.resolve_device(cfg.device)
    # the deployed networks (no KD adapter), measured interleaved in this process
    deployed = {k: costs.optimize_for_inference(models[k], cfg.inference_path, size)
                for k in ("baseline", "response", "feature", "teacher")}
    lat = costs.latency(deployed, size, device=str(device), min_run_time=cfg.latency_min_time)
    rows = []
    for method in STUDENTS + ("teacher",):
        row = {"method": method, "label": LABELS[method],
               "arch": cfg.teacher_arch if method == "teacher" else cfg.student_arch,
               **_accuracy(evals, method, seeds, cfg),
               "params": costs.count_parameters(models[method]), "gflops": costs.gflops(models[method], size),
               "latency_ms": lat[method]["mean_ms"], "latency_std_ms": lat[method]["std_ms"]}
        row["params_str"] = costs.format_params(row["params"])
        rows.append(row)
    interval = next(r["diff_vs_baseline"]["method"] for r in rows if r["diff_vs_baseline"])
    any_lat = next(iter(lat.values()))
    results = {
        "run": cfg.run_name, "rows": rows,
        "latency": {"device": any_lat["device"], "threads": any_lat["threads"], "dtype": any_lat["dtype"],
                    "input_size": any_lat["input_size"], "path": cfg.inference_path},
        "protocol": (f"single-scale, full resolution, dataset-level confusion matrix, label 255 ignored; "
                     f"boundary IoU: bands of 2% of the image diagonal (Cheng et al., 2021); "
                     f"split: {cfg.eval_split} ({len(ds)} images); final-epoch checkpoints; "
                     f"Δ mIoU CI: {interval}, {cfg.bootstrap_resamples} paired bootstrap resamples of images"),
        "dataset": cfg.dataset, "seeds": seeds,
    }
    if write:
        table.write_table_files(results, reports_dir(cfg))
    return results
