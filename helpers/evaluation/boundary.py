"""Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation", CVPR 2021), for semantic segmentation.

mIoU counts every pixel alike, so a large object dominates and a wrong outline hardly shows.
Boundary IoU compares only the pixels near each class's contour: for class c, G_d and P_d are the
pixels of the ground-truth and the predicted mask of c within distance d of that mask's contour
(the mask minus its erosion by d), and IoU_c = |G_d ∩ P_d| / |G_d ∪ P_d|.

As in the paper's reference code (boundary-iou-api, `mask_to_boundary`): d = round(0.02 × the
image diagonal), at least 1; the erosion is by a (2d+1)×(2d+1) SQUARE (cv2.erode with a 3×3 kernel,
d iterations: distance is the chessboard distance); and the image border counts as contour (it pads
the mask with one row/column of 0 "so mask truncated by the image border is also considered as
boundary"). `border="replicate"` is the other choice: pad with the mask's own values, so the image
border is not a contour. Pixels labelled void (ignore_index) in the ground truth are left out of
both counts. The counts add up over images, so the dataset-level score (per class: summed
intersections / summed unions; mean over classes with a union) and its intervals are built like
mIoU's from the confusion matrix (`metrics.boundary_as_counts`).

How it is computed: a pixel of label c is in the band of c exactly when the square around it holds
another label (or, border="contour", reaches past the image), i.e. when the window's max and min
labels differ. So one max filter and one min filter per label map (scipy.ndimage, separable, O(1)
per pixel whatever d) give the bands of all classes at once; per-class counts are then bincounts.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.voc import IGNORE_INDEX

BORDERS = ("contour", "replicate")


def dilation_width(h: int, w: int, ratio: float = 0.02) -> int:
    """d = round(ratio × image diagonal), at least 1 pixel (2 px at 64×64, 12 px at 500×375)."""
    return max(1, int(round(ratio * math.hypot(h, w))))


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on the GPU
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x.astype(np.uint8) if x.dtype == bool else x


def _near_other(labels: np.ndarray, d: int, border: str) -> np.ndarray:
    """True where the (2d+1)² square around a pixel (in the last two axes) holds another label, or,
    border="contour", reaches past the image: the pixels not in their own label's erosion."""
    from scipy import ndimage

    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, not {border!r}")
    size = (1,) * (labels.ndim - 2) + (2 * d + 1,) * 2
    out = ndimage.maximum_filter(labels, size=size, mode="nearest") != ndimage.minimum_filter(
        labels, size=size, mode="nearest"
    )
    if border == "contour":
        out[..., :d, :] = out[..., -d:, :] = True
        out[..., :, :d] = out[..., :, -d:] = True
    return out


def boundary_band(mask, d: int, border: str = "contour"):
    """The pixels of a binary mask within distance d of its contour: the mask minus its erosion by
    a (2d+1)² square. mask: (H, W) or (K, H, W) bool, numpy or torch; returns the same kind (a tensor
    on the mask's device). border: "contour" (the reference code: the image border is a contour) or
    "replicate" (it is not)."""
    if d < 1:
        raise ValueError(f"boundary_band: d must be >= 1, not {d}")
    m = _as_numpy(mask).astype(bool)
    band = m & _near_other(m.astype(np.uint8), d, border)
    if hasattr(mask, "detach"):
        import torch

        return torch.from_numpy(band).to(mask.device)
    return band


def _per_class(labels: np.ndarray, where: np.ndarray, n: int) -> np.ndarray:
    v = labels[where]
    return np.bincount(v[(v >= 0) & (v < n)].astype(np.int64), minlength=n)


def boundary_counts(
    pred,
    target,
    num_classes: int,
    ratio: float = 0.02,
    ignore_index: int = IGNORE_INDEX,
    border: str = "contour",
    d: int | None = None,
) -> np.ndarray:
    """(num_classes, 2) int64 [intersection, union] of the boundary bands of each class in one image.

    pred, target: (H, W) integer class ids (tensor or array). For class c: |G_d ∩ P_d| and
    |G_d ∪ P_d| with G_d = band(target == c), P_d = band(pred == c), counted only where target !=
    ignore_index. d: the band width in pixels, default `dilation_width(H, W, ratio)`. Classes absent
    from both get (0, 0); labels outside [0, num_classes) in pred are no class."""
    pred, target = _as_numpy(pred), _as_numpy(target)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"boundary_counts: pred {pred.shape} and target {target.shape} must be the same (H, W)")
    d = dilation_width(*target.shape, ratio) if d is None else int(d)
    if d < 1:
        raise ValueError(f"boundary_counts: d must be >= 1, not {d}")
    valid = target != ignore_index
    in_g = valid & _near_other(target, d, border)  # a pixel in the band of its own ground-truth class
    in_p = valid & _near_other(pred, d, border)  # ... of its own predicted class
    g = _per_class(target, in_g, num_classes)
    p = _per_class(pred, in_p, num_classes)
    both = _per_class(target, in_g & in_p & (target == pred), num_classes)
    return np.stack([both, g + p - both], axis=1).astype(np.int64)


def boundary_iou_per_class(counts) -> np.ndarray:
    """(C, 2) counts, or (N, C, 2) per image (summed here) -> (C,) IoU, NaN where the union is 0."""
    c = np.asarray(counts, dtype=np.float64)
    c = c.reshape(-1, *c.shape[-2:]).sum(0)
    return np.divide(c[:, 0], c[:, 1], out=np.full(len(c), np.nan), where=c[:, 1] > 0)


def boundary_miou(counts) -> float:
    """The mean boundary IoU over classes with a union (NaN if none); counts as in
    `boundary_iou_per_class` (dataset level: intersections and unions summed before dividing)."""
    iou = boundary_iou_per_class(counts)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
