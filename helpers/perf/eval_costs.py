"""What the evaluation protocol costs (the bench's `evaluation` section): boundary IoU's per-image counts and
the seed-level interval's bootstrap, timed on inputs of VOC's size. Timings live here, not in the tests."""

from __future__ import annotations

import time

import numpy as np

from ..evaluation import boundary, metrics


def evaluation_costs(
    image_size: int = 500, images: int = 1449, classes: int = 21, seeds: int = 3, resamples: int = 2000, rounds: int = 3
) -> dict:
    """{"boundary_ms_per_image", "interval_s"}: medians over `rounds` of boundary_counts on one random
    label map of image_size^2 (blocky regions, as segmentation maps are) and of paired_delta_ci for `seeds`
    seeds of `images` per-image matrices (VOC val: 1,449 images, 21 classes)."""
    rng = np.random.default_rng(0)
    cells = max(1, image_size // 25)
    gt = rng.integers(0, classes, (cells, cells)).repeat(25, 0).repeat(25, 1)[:image_size, :image_size]
    pred = np.roll(gt, 5, 1)
    cms = rng.integers(0, 500, size=(seeds, images, classes, classes))
    better = cms + np.eye(classes, dtype=np.int64) * 50
    boundary_s, interval_s = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        boundary.boundary_counts(pred, gt, classes)
        boundary_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        metrics.paired_delta_ci(better, cms, resamples)
        interval_s.append(time.perf_counter() - t0)
    return {
        "image_size": image_size,
        "images": images,
        "classes": classes,
        "seeds": seeds,
        "resamples": resamples,
        "boundary_ms_per_image": 1e3 * float(np.median(boundary_s)),
        "interval_s": float(np.median(interval_s)),
    }
