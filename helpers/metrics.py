"""Segmentation metrics: confusion matrix, IoU, per-image scores and paired bootstrap CIs.

Everything starts from int64 confusion matrices, rows = ground truth, columns = prediction, with
void pixels (label 255) left out. mIoU is computed once from the dataset-level matrix (the sum of
the per-image matrices); a class absent from both ground truth and prediction has IoU NaN and is
left out of the mean, as in torchvision's `references/segmentation/utils.py`.

Bootstrap CIs resample *images* (with replacement) and recompute the dataset-level mIoU of each
resample from the summed per-class counts; the interval is the percentile interval.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import UserError
from .voc import IGNORE_INDEX


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
        raise UserError(f"confusion_matrix: pred shape {tuple(pred.shape)} != target shape "
                        f"{tuple(target.shape)}; pass class ids (argmax of the logits), not logits.")
    if pred.is_floating_point() or target.is_floating_point():
        raise UserError("confusion_matrix: pred and target must be integer class ids "
                        "(take logits.argmax(1) first).")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).to(pred.device).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    for name, t in (("target", target), ("pred", pred)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise UserError(f"confusion_matrix: {name} holds ids outside [0, {num_classes}) other "
                            f"than {ignore_index} (min {int(t.min())}, max {int(t.max())}).")
    idx = target * num_classes + pred
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes).cpu()


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


def _resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, N) how often each image is drawn in each bootstrap resample (each row sums to N)."""
    if n < 1:
        raise UserError("bootstrap needs at least one image.")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise UserError(f"level must be in (0, 1), got {level}.")
    low, high = np.nanquantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_miou(cms, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap CI of one model's dataset-level mIoU, resampling images.

    cms: (N, C, C) per-image confusion matrices. Returns {"miou", "low", "high", "n_resamples",
    "level"}; "miou" is the value on the full set.
    """
    counts = _counts(cms)  # (N, C, 3)
    n, c, _ = counts.shape
    w = _resample_weights(n, n_resamples, seed)  # (B, N)
    boot = _miou_from_counts((w @ counts.reshape(n, -1)).reshape(-1, c, 3))  # (B,)
    low, high = _interval(boot, level)
    return {"miou": float(_miou_from_counts(counts.sum(0))), "low": low, "high": high,
            "n_resamples": n_resamples, "level": level}


def bootstrap_miou_diff(cms_a, cms_b, n_resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Paired bootstrap CI of mIoU(b) - mIoU(a): is model b better than model a?

    cms_a, cms_b: (N, C, C) per-image confusion matrices of the same N images in the same order.
    Each resample draws N image indices with replacement, the *same* ones for both models, sums
    each model's per-class tp/fp/fn over them and takes the difference of the two mIoUs.
    Returns {"diff": mIoU(b) - mIoU(a) on the full set, "low", "high" (percentile interval),
    "n_resamples", "level", "significant": the interval excludes 0}.
    """
    ca, cb = _counts(cms_a), _counts(cms_b)
    if ca.shape != cb.shape:
        raise UserError(f"bootstrap_miou_diff: the two models' per-image matrices differ in shape "
                        f"{ca.shape[:2]} vs {cb.shape[:2]}; they must cover the same images.")
    n, c, _ = ca.shape
    w = _resample_weights(n, n_resamples, seed)  # (B, N)
    both = w @ np.concatenate([ca, cb], axis=1).reshape(n, -1)  # (B, 2C*3)
    both = both.reshape(-1, 2, c, 3)
    boot = _miou_from_counts(both[:, 1]) - _miou_from_counts(both[:, 0])  # (B,)
    low, high = _interval(boot, level)
    diff = float(_miou_from_counts(cb.sum(0)) - _miou_from_counts(ca.sum(0)))
    return {"diff": diff, "low": low, "high": high, "n_resamples": n_resamples, "level": level,
            "significant": bool(low > 0 or high < 0)}


def summarize(per_image_cm, ids) -> dict:
    """The numbers a notebook or the report shows for one model on one split.

    per_image_cm: (N, C, C); ids: the N image ids in the same order. Returns {"miou", "pixel_acc",
    "iou_per_class": list of C floats (None where NaN), "per_image": (N,) np.ndarray of
    per-image scores, "ids": list of N ids, "num_images": N}.
    """
    cms = _as_tensor(per_image_cm)
    ids = list(ids)
    if cms.ndim != 3 or len(ids) != cms.shape[0]:
        raise UserError(f"summarize: got {len(ids)} ids for per-image matrices of shape "
                        f"{tuple(cms.shape)}; expected (N, C, C) with N == len(ids).")
    cm = cms.sum(0)
    iou = iou_per_class(cm).tolist()
    return {"miou": mean_iou(cm), "pixel_acc": pixel_accuracy(cm),
            "iou_per_class": [None if v != v else v for v in iou],
            "per_image": per_image_scores(cms), "ids": ids, "num_images": len(ids)}
