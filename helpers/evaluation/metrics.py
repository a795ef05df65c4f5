"""Segmentation metrics: confusion matrix, IoU, per-image scores and paired bootstrap CIs.

Everything starts from int64 confusion matrices, rows = ground truth, columns = prediction, with
void pixels (label 255) left out. mIoU is computed once from the dataset-level matrix (the sum of
the per-image matrices); a class absent from both ground truth and prediction has IoU NaN and is
left out of the mean, as in torchvision's `references/segmentation/utils.py`.

Bootstrap CIs resample *images* (with replacement) and recompute the dataset-level mIoU of each
resample from the summed per-class counts; with one seed the interval is the percentile interval.
With several seeds (training runs) `paired_delta_ci` and `seed_miou_ci` give seed-level intervals:
the seeds' spread (training noise) plus the image-bootstrap variance (choice of val images).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from ..core.errors import UserError
from ..data.voc import IGNORE_INDEX


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(C, C) int64 counts, rows = ground truth, cols = prediction.

    pred, target: integer class ids of the same shape (any shape, e.g. (H, W) or (N, H, W));
    torch tensors or numpy arrays. Pixels whose target == ignore_index are left out; any other
    id outside [0, num_classes) raises UserError (it would otherwise be silently dropped).
    """
    pred, target = _as_tensor(pred), _as_tensor(target)
    if pred.shape != target.shape:
        raise UserError(
            f"confusion_matrix: pred shape {tuple(pred.shape)} != target shape "
            f"{tuple(target.shape)}; pass class ids (argmax of the logits), not logits."
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise UserError("confusion_matrix: pred and target must be integer class ids (take logits.argmax(1) first).")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).to(pred.device).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    for name, t in (("target", target), ("pred", pred)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise UserError(
                f"confusion_matrix: {name} holds ids outside [0, {num_classes}) other "
                f"than {ignore_index} (min {int(t.min())}, max {int(t.max())})."
            )
    idx = target * num_classes + pred
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


def iou_per_class(cm) -> torch.Tensor:
    """(C,) float64 IoU = tp / (tp + fp + fn) from a (C, C) matrix; NaN where union == 0."""
    cm = _as_tensor(cm).double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(cm) -> float:
    """Mean IoU over the classes present in ground truth or prediction (NaN-mean); NaN if none."""
    iou = iou_per_class(cm)
    return float(iou.nanmean()) if (~iou.isnan()).any() else float("nan")


def pixel_accuracy(cm) -> float:
    """Fraction of non-void pixels predicted correctly: trace / total; NaN if no pixels."""
    cm = _as_tensor(cm).double()
    total = cm.sum()
    return float(cm.diag().sum() / total) if total > 0 else float("nan")


def _counts(cms) -> np.ndarray:
    """(N, C, C) per-image matrices -> (N, C, 3) float64 per-class [tp, fp, fn]."""
    cms = np.asarray(_as_tensor(cms).cpu().numpy(), dtype=np.float64)
    if cms.ndim != 3 or cms.shape[1] != cms.shape[2]:
        raise UserError(f"expected per-image confusion matrices of shape (N, C, C), got {cms.shape}.")
    tp = np.diagonal(cms, axis1=1, axis2=2)
    return np.stack([tp, cms.sum(1) - tp, cms.sum(2) - tp], axis=-1)


def _miou_from_counts(counts: np.ndarray) -> np.ndarray:
    """(..., C, 3) tp/fp/fn -> (...) mIoU over classes with union > 0 (NaN if there are none)."""
    tp, union = counts[..., 0], counts.sum(-1)
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    n = present.sum(-1)
    return np.divide(iou.sum(-1), n, out=np.full(n.shape, np.nan), where=n > 0)


def per_image_scores(per_image_cm) -> np.ndarray:
    """(N,) each image's own mIoU over the classes present in its GT or its prediction.

    per_image_cm: (N, C, C). Used to rank success / failure cases; an image whose pixels are all
    void scores NaN.
    """
    return _miou_from_counts(_counts(per_image_cm))


def _resample_weights(n: int, n_resamples: int, rng) -> np.ndarray:
    """(B, N) how often each image is drawn in each bootstrap resample (each row sums to N).

    rng: an int seed or a numpy Generator."""
    if n < 1:
        raise UserError("bootstrap needs at least one image.")
    if n_resamples < 2:
        raise UserError(f"bootstrap needs at least 2 resamples, got {n_resamples}.")
    gen = np.random.default_rng(rng)
    return gen.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise UserError(f"level must be in (0, 1), got {level}.")


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    _check_level(level)
    low, high = np.nanquantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _seed_counts(cms, name: str) -> np.ndarray:
    """(S, N, C, C) per-seed per-image matrices -> (S, N, C, 3) float64 tp/fp/fn."""
    arr = np.asarray(_as_tensor(cms).cpu().numpy())
    if arr.ndim != 4 or arr.shape[0] < 1 or arr.shape[2] != arr.shape[3]:
        raise UserError(
            f"{name}: expected per-seed per-image confusion matrices of shape (S, N, C, C), "
            f"got {arr.shape}; stack the seeds' (N, C, C) matrices (same images, same order)."
        )
    return np.stack([_counts(m) for m in arr])


def _boot_mious(counts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(S, N, C, 3) counts and (B, N) image weights -> (B, S): each seed's dataset-level mIoU on
    each resample (the same images for every seed)."""
    s, n, c, _ = counts.shape
    summed = w @ counts.transpose(1, 0, 2, 3).reshape(n, -1)  # (B, S*C*3)
    return _miou_from_counts(summed.reshape(-1, s, c, 3))


def _seed_level(values: np.ndarray, boot: np.ndarray, level: float) -> dict:
    """{"low", "high", "method", "p", "var_seeds", "var_images"} for the mean over seeds of a statistic.

    values: (S,) the statistic of each seed on the full val set; boot: (B, S) its image-bootstrap
    replicates (same images for all seeds per row). S == 1: percentile interval of boot, and p the
    two-sided bootstrap tail at 0. S >= 2: mean ± t_{S-1} · sqrt(var_seeds / S + var_images), with
    var_seeds the between-seed variance and var_images the image-bootstrap variance of the seed mean;
    p: the two-sided t-test of mean 0 with that standard error."""
    s, mean = values.size, float(np.mean(values))
    var_images = float(np.nanvar(np.nanmean(boot, axis=1), ddof=1))
    if s == 1:
        low, high = _interval(boot[:, 0], level)
        p = float(min(1.0, 2 * min(np.mean(boot[:, 0] <= 0), np.mean(boot[:, 0] >= 0)))) if mean else 1.0
        method = "paired percentile bootstrap over val images (1 seed: training noise not covered)"
        return {"low": low, "high": high, "method": method, "p": p, "var_seeds": None, "var_images": var_images}
    _check_level(level)
    var_seeds = float(np.var(values, ddof=1))
    se = float(np.sqrt(var_seeds / s + var_images))
    half = float(stats.t.ppf((1 + level) / 2, s - 1) * se)
    p = float(2 * stats.t.sf(abs(mean) / se, s - 1)) if se > 0 else float(mean == 0)
    method = f"seed-level t-interval over {s} seeds (t, {s - 1} df; between-seed + val-image bootstrap variance)"
    return {
        "low": mean - half,
        "high": mean + half,
        "method": method,
        "p": p,
        "var_seeds": var_seeds,
        "var_images": var_images,
    }


def paired_delta_ci(cms_a, cms_b, resamples: int = 2000, level: float = 0.95, rng=0) -> dict:
    """CI of the mean over seeds of mIoU(a) - mIoU(b), paired by seed and by image.

    cms_a, cms_b: (S, N, C, C) per-image confusion matrices of method a and baseline b, S seeds
    (seed s of a and of b share init and data order), the same N images in the same order. Each
    seed's mIoU is dataset-level (from its summed matrix); delta = mean over seeds of the per-seed
    paired deltas. The image bootstrap draws the same images for a, b and every seed.

    S == 1: the paired percentile bootstrap over images; it covers the
    choice of val images only, not training noise. S >= 2: delta ± t_{S-1} · SE with
    SE² = var(per-seed deltas) / S + image-bootstrap variance of the seed-mean delta. The seeds'
    spread measures training noise on this fixed val set, but not the val-image sampling noise,
    which all seeds share and which does not shrink with S, so the bootstrap term is added (the
    seed x image part is then counted twice: slightly conservative). A plain two-stage bootstrap
    over 3 seeds under-covers (its seed variance is biased by (S-1)/S and it has 10 distinct seed
    multisets); the t quantile with S-1 df accounts for estimating the seed variance from S runs.

    Returns {"delta", "low", "high", "level", "resamples", "significant" (interval excludes 0),
    "per_seed": S per-seed deltas, "method": the interval used, "n_seeds"}.
    """
    return paired_delta_from_counts(
        _seed_counts(cms_a, "paired_delta_ci"), _seed_counts(cms_b, "paired_delta_ci"), resamples, level, rng
    )


def paired_delta_from_counts(ca: np.ndarray, cb: np.ndarray, resamples: int = 2000, level: float = 0.95, rng=0) -> dict:
    """`paired_delta_ci` on per-seed per-image per-class counts (S, N, C, 3) [tp, fp, fn] (any score of
    the form tp / (tp + fp + fn) summed over images, e.g. boundary IoU via `boundary_as_counts`)."""
    if ca.shape != cb.shape:
        raise UserError(
            f"paired_delta_ci: the two methods' matrices differ in (seeds, images, classes): "
            f"{ca.shape[:3]} vs {cb.shape[:3]}; they must cover the same seeds and images."
        )
    s, n = ca.shape[:2]
    w = _resample_weights(n, resamples, rng)
    boot = _boot_mious(np.concatenate([ca, cb]), w)  # (B, 2S): a's seeds, then b's
    per_seed = _miou_from_counts(ca.sum(1)) - _miou_from_counts(cb.sum(1))  # (S,)
    ci = _seed_level(per_seed, boot[:, :s] - boot[:, s:], level)
    return {
        "delta": float(np.mean(per_seed)),
        **ci,
        "level": level,
        "resamples": resamples,
        "significant": bool(ci["low"] > 0 or ci["high"] < 0),
        "per_seed": [float(v) for v in per_seed],
        "n_seeds": s,
    }


def seed_miou_ci(cms, resamples: int = 2000, level: float = 0.95, rng=0) -> dict:
    """CI of one method's mIoU, the mean over seeds of each seed's dataset-level mIoU.

    cms: (S, N, C, C). Same construction as `paired_delta_ci` (S == 1: percentile image bootstrap;
    S >= 2: t-interval with between-seed + image-bootstrap variance). Returns {"miou", "low",
    "high", "level", "resamples", "per_seed", "method", "n_seeds"}.
    """
    return seed_ci_from_counts(_seed_counts(cms, "seed_miou_ci"), resamples, level, rng)


def seed_ci_from_counts(counts: np.ndarray, resamples: int = 2000, level: float = 0.95, rng=0) -> dict:
    """`seed_miou_ci` on per-seed per-image per-class counts (S, N, C, 3) [tp, fp, fn]."""
    per_seed = _miou_from_counts(counts.sum(1))
    boot = _boot_mious(counts, _resample_weights(counts.shape[1], resamples, rng))
    ci = _seed_level(per_seed, boot, level)
    return {
        "miou": float(np.mean(per_seed)),
        "low": ci["low"],
        "high": ci["high"],
        "level": level,
        "resamples": resamples,
        "per_seed": [float(v) for v in per_seed],
        "method": ci["method"].replace("paired ", ""),
        "n_seeds": counts.shape[0],
    }


def boundary_as_counts(boundary) -> np.ndarray:
    """(..., C, 2) boundary [intersection, union] counts -> (..., C, 3) [tp, fp, fn] with the same
    IoU = tp / (tp + fp + fn) (tp = intersection, fp = union - intersection, fn = 0), so the
    interval functions above apply to boundary IoU unchanged."""
    b = np.asarray(boundary, dtype=np.float64)
    return np.stack([b[..., 0], b[..., 1] - b[..., 0], np.zeros_like(b[..., 0])], axis=-1)


def summarize(per_image_cm, ids) -> dict:
    """The numbers a notebook or the report shows for one model on one split.

    per_image_cm: (N, C, C); ids: the N image ids in the same order. Returns {"miou", "pixel_acc",
    "iou_per_class": list of C floats (None where NaN), "per_image": (N,) np.ndarray of
    per-image scores, "ids": list of N ids, "num_images": N}.
    """
    cms = _as_tensor(per_image_cm)
    ids = list(ids)
    if cms.ndim != 3 or len(ids) != cms.shape[0]:
        raise UserError(
            f"summarize: got {len(ids)} ids for per-image matrices of shape "
            f"{tuple(cms.shape)}; expected (N, C, C) with N == len(ids)."
        )
    cm = cms.sum(0)
    iou = iou_per_class(cm).tolist()
    return {
        "miou": mean_iou(cm),
        "pixel_acc": pixel_accuracy(cm),
        "iou_per_class": [None if v != v else v for v in iou],
        "per_image": per_image_scores(cms),
        "ids": ids,
        "num_images": len(ids),
    }
