"""A row's accuracy statistics from the per-image evaluations of its seeds: mIoU (mean ± std over seeds, its
seed-level interval, per-class IoU), boundary IoU and the agreement with the teacher, each with the paired Δ
against the baseline (every row but the baseline's and the teacher's) and, for KD rows of a run that has it,
against the compute-matched baseline. All intervals are `metrics.paired_delta_ci`'s construction.
"""

from __future__ import annotations

import numpy as np

from .. import kd
from ..config.knobs import Config
from ..data.voc import CLASSES
from ..evaluation import metrics

MATCHED = "baseline_matched"


def eval_keys(cfg: Config, method: str, seeds) -> list[str]:
    """The evaluation keys of a row: "teacher", or the method for its first seed and <method>_seed<s> after."""
    return ["teacher"] if method == "teacher" else [method if s == cfg.seed else f"{method}_seed{s}" for s in seeds]


def _stack(evals: dict, keys: list, field: str) -> np.ndarray:
    return np.stack([np.asarray(evals[k][field]) for k in keys])


def _references(method: str, evals: dict) -> dict:
    """{field suffix: reference method} the row's Δs are taken against."""
    refs = {}
    if method not in ("baseline", "teacher") and "baseline" in evals:
        refs["vs_baseline"] = "baseline"
    if method not in ("teacher", "baseline", MATCHED) and MATCHED in evals and kd.get(method).loss is not None:
        refs["vs_matched"] = MATCHED
    return refs


def row_accuracy(cfg: Config, evals: dict, agreement: dict, method: str, seeds) -> dict:
    """The accuracy fields of one row of the table (see the module docstring)."""
    keys = eval_keys(cfg, method, seeds)
    cms = _stack(evals, keys, "per_image_cm")
    mious = [float(evals[k]["miou"]) for k in keys]
    per_class = np.array([[np.nan if v is None else v for v in evals[k]["iou_per_class"]] for k in keys], float)
    seen = (~np.isnan(per_class)).sum(0)  # mean over seeds; NaN where a class never occurred
    iou = np.where(seen > 0, np.nansum(per_class, 0) / np.maximum(seen, 1), np.nan)
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
    for suffix, ref in _references(method, evals).items():
        d = metrics.paired_delta_ci(
            cms, _stack(evals, eval_keys(cfg, ref, seeds), "per_image_cm"), cfg.bootstrap_resamples, rng=cfg.seed
        )
        out[f"diff_{suffix}"] = dict(d, diff=d["delta"])
    boundary = {k: metrics.boundary_as_counts(np.asarray(evals[k]["per_image_boundary"])) for k in evals}
    out.update(_from_counts(cfg, boundary, method, seeds, "boundary", "boundary_iou"))
    if method != "teacher" and all(k in agreement for k in keys):
        out.update(
            _from_counts(
                cfg,
                {k: metrics.boundary_as_counts(v) for k, v in agreement.items()},
                method,
                seeds,
                "agreement",
                "agreement",
            )
        )
    return out


def _from_counts(cfg: Config, counts: dict, method: str, seeds, prefix: str, name: str) -> dict:
    """{name, prefix_std, prefix_ci, prefix_diff_vs_baseline[, _vs_matched]} of a score kept as per-image
    [tp, fp, fn] counts (boundary IoU; agreement as agreeing / non-void pixels)."""
    keys = eval_keys(cfg, method, seeds)
    mine = np.stack([counts[k] for k in keys])
    ci = metrics.seed_ci_from_counts(mine, cfg.bootstrap_resamples, rng=cfg.seed)
    out = {
        name: ci["miou"],
        f"{prefix}_std": float(np.std(ci["per_seed"], ddof=1)) if len(keys) > 1 else None,
        f"{prefix}_per_seed": ci["per_seed"],
        f"{prefix}_ci": [ci["low"], ci["high"]],
        f"{prefix}_diff_vs_baseline": None,
    }
    for suffix, ref in _references(method, counts).items():
        theirs = np.stack([counts[k] for k in eval_keys(cfg, ref, seeds)])
        d = metrics.paired_delta_from_counts(mine, theirs, cfg.bootstrap_resamples, rng=cfg.seed)
        out[f"{prefix}_diff_{suffix}"] = dict(d, diff=d["delta"])
    return out
