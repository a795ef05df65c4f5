"""Boundary IoU: the bands, hand-computed examples, what it sees that mIoU does not, void ignored,
counts that add up over images."""

import numpy as np
import pytest
import torch

from helpers.evaluation import boundary, metrics


def square(h, w, r0, r1, c0, c1, cls=1):
    m = np.zeros((h, w), dtype=np.int64)
    m[r0:r1, c0:c1] = cls
    return m


def reference_band(mask, d):
    """boundary-iou-api's mask_to_boundary with cv2 replaced by numpy: pad with one 0, erode d times
    with a 3x3 square (cv2.erode treats beyond the padded image as foreground), mask minus erosion."""
    h, w = mask.shape
    m = np.pad(mask.astype(bool), 1)
    for _ in range(d):
        p = np.pad(m, 1, constant_values=True)
        m = np.logical_and.reduce([p[i : i + h + 2, j : j + w + 2] for i in range(3) for j in range(3)])
    return mask.astype(bool) & ~m[1:-1, 1:-1]


def test_dilation_width_follows_the_image_diagonal():
    assert boundary.dilation_width(64, 64) == 2 and boundary.dilation_width(375, 500) == 12  # 12.5: round half even
    assert boundary.dilation_width(100, 100) == 3 and boundary.dilation_width(100, 100, ratio=0.05) == 7
    assert boundary.dilation_width(6, 6) == 1  # at least one pixel


def test_the_band_width_used_is_the_one_from_the_diagonal():
    gt = square(100, 100, 20, 80, 20, 80)  # d = 3: the band is the 60x60 square minus its 54x54 core
    pred = np.zeros_like(gt)
    assert boundary.boundary_counts(pred, gt, 2)[1].tolist() == [0, 60 * 60 - 54 * 54]
    assert boundary.boundary_counts(pred, gt, 2, ratio=0.05)[1].tolist() == [0, 60 * 60 - 46 * 46]  # d = 7
    assert boundary.boundary_counts(pred, gt, 2, d=1)[1].tolist() == [0, 60 * 60 - 58 * 58]


def test_the_band_is_the_reference_implementations():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(3, 40, 2)
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.95)
        d = int(rng.integers(1, 5))
        assert np.array_equal(boundary.boundary_band(mask, d), reference_band(mask, d))
    band = boundary.boundary_band(torch.from_numpy(mask), 2)  # tensors in, tensor out
    assert isinstance(band, torch.Tensor) and np.array_equal(band.numpy(), reference_band(mask, 2))


def test_a_hand_computed_example():
    """6x6, d = 1: a 4x4 square (rows/cols 1-4) and the same square one pixel to the right, touching
    the right border. Class 1: each band is the square's 12-pixel ring (the border is contour), they
    share rows 1 and 4 at cols 2-4: 6 of 18. Class 0 (the rest): the ground truth's is its whole
    20-pixel frame; the prediction's is rows 0 and 5 plus cols 0-1 (20 pixels); they share 16 of 24."""
    gt, pred = square(6, 6, 1, 5, 1, 5), square(6, 6, 1, 5, 2, 6)
    counts = boundary.boundary_counts(pred, gt, num_classes=3)
    assert counts.dtype == np.int64 and counts.tolist() == [[16, 24], [6, 18], [0, 0]]
    iou = boundary.boundary_iou_per_class(counts)
    assert iou[:2] == pytest.approx([2 / 3, 1 / 3]) and np.isnan(iou[2])
    assert boundary.boundary_miou(counts) == pytest.approx(0.5)  # class 2 (no union) left out
    band = boundary.boundary_band(pred == 1, 1)
    assert band.sum() == 12 and not band[2:4, 3:5].any() and band[2:4, 5].all()


def test_a_hand_computed_example_with_the_image_border_not_a_contour():
    """The same with border="replicate": the prediction's ring loses (2,5) and (3,5) (inside once the
    border is replicated): class 1 shares 6 of 12 + 10 - 6 = 16; class 0's predicted band loses col 0
    (its windows see only background): 14 pixels, sharing rows 0 and 5 at cols 1-5 (10) of 24."""
    gt, pred = square(6, 6, 1, 5, 1, 5), square(6, 6, 1, 5, 2, 6)
    counts = boundary.boundary_counts(pred, gt, num_classes=2, border="replicate")
    assert counts.tolist() == [[10, 24], [6, 16]]
    with pytest.raises(ValueError):
        boundary.boundary_counts(pred, gt, 2, border="zero")


def test_identical_masks_score_one():
    gt = square(64, 64, 5, 40, 10, 50, cls=7)
    gt[45:60, 3:20] = 3
    counts = boundary.boundary_counts(torch.from_numpy(gt), gt, 21)  # tensor and array accepted
    assert boundary.boundary_miou(counts) == 1.0 and (counts[:, 1] > 0).sum() == 3


def mask_and_boundary_iou(pred, gt):
    mask_iou = float(metrics.iou_per_class(metrics.confusion_matrix(pred, gt, 2))[1])
    return mask_iou, float(boundary.boundary_iou_per_class(boundary.boundary_counts(pred, gt, 2))[1])


def test_a_shifted_outline_costs_far_more_boundary_iou_than_mask_iou():
    gt = square(64, 64, 8, 56, 8, 56)
    mask_iou, b_iou = mask_and_boundary_iou(np.roll(gt, 3, axis=1), gt)
    assert mask_iou > 0.85 and b_iou < 0.4


def test_a_large_objects_interior_does_not_dilute_boundary_errors():
    """The same 3-pixel outline shift on a 16-pixel and a 48-pixel square: mask IoU forgives the large
    object (its many interior pixels are right), boundary IoU scores the outline alike."""
    small, large = square(64, 64, 24, 40, 24, 40), square(64, 64, 8, 56, 8, 56)
    m_small, b_small = mask_and_boundary_iou(np.roll(small, 3, axis=1), small)
    m_large, b_large = mask_and_boundary_iou(np.roll(large, 3, axis=1), large)
    assert m_large - m_small > 0.15 and abs(b_large - b_small) < 0.05


def test_interior_pixels_are_not_counted():
    """Everything farther than d inside both masks is out of both bands; an error in a large object's
    interior only counts through the new outline it makes (a hole has a contour)."""
    gt = square(64, 64, 4, 60, 4, 60)
    d = boundary.dilation_width(64, 64)
    one = boundary.boundary_counts(gt, gt, 2)
    assert one[1].tolist() == [56 * 56 - (56 - 2 * d) ** 2] * 2
    pred = gt.copy()
    pred[30, 30] = 0  # one wrong pixel deep inside
    holed = boundary.boundary_counts(pred, gt, 2)
    assert holed[1, 0] == one[1, 0] and holed[1, 1] == one[1, 1] + (2 * d + 1) ** 2 - 1


def test_void_pixels_are_left_out():
    gt = square(40, 40, 2, 14, 2, 14)
    gt[20:, :] = 255  # the truth is unknown (void) in the lower part
    pred = np.where(gt == 255, 0, gt)
    extra = pred.copy()
    extra[24:36, 10:30] = 1  # an extra object predicted well inside the void region
    assert np.array_equal(boundary.boundary_counts(extra, gt, 2), boundary.boundary_counts(pred, gt, 2))
    counts = boundary.boundary_counts(extra, gt, 2)
    assert counts[1, 0] == counts[1, 1] > 0
    as_zero = np.where(gt == 255, 0, gt)  # the same pixels counted as background: the extra object counts
    assert boundary.boundary_counts(extra, as_zero, 2)[1, 1] > counts[1, 1]


def test_counts_add_up_over_images_like_a_confusion_matrix():
    """Two images side by side with a void gap between them, at a fixed d, give the sum of their
    counts (the band is local; the gap stands for the image borders); the dataset-level score is
    summed intersections / summed unions, not the mean of per-image scores."""
    rng = np.random.default_rng(0)
    pairs = [
        (rng.integers(0, 3, (5, 6)).repeat(4, 0).repeat(4, 1), rng.integers(0, 3, (5, 6)).repeat(4, 0).repeat(4, 1))
        for _ in range(2)
    ]
    per_image = np.stack([boundary.boundary_counts(p, g, 3, d=2) for p, g in pairs])
    gap = np.full((20, 5), 255)
    side = [np.hstack([pairs[0][k], gap, pairs[1][k]]) for k in range(2)]
    assert np.array_equal(boundary.boundary_counts(*side, 3, d=2), per_image.sum(0))
    total = per_image.sum(0)
    assert boundary.boundary_miou(per_image) == boundary.boundary_miou(total)
    per_image_mean = np.nanmean([boundary.boundary_miou(c) for c in per_image])
    assert boundary.boundary_miou(total) != pytest.approx(per_image_mean)
    pooled = metrics.seed_ci_from_counts(metrics.boundary_as_counts(per_image)[None], resamples=10)["miou"]
    assert pooled == pytest.approx(boundary.boundary_miou(total))
