"""Metrics: hand-computed confusion matrices and IoUs, per-image scores, bootstrap intervals."""

import math

import numpy as np
import pytest
import torch

from helpers.core.errors import UserError
from helpers.evaluation.metrics import (
    confusion_matrix,
    iou_per_class,
    mean_iou,
    paired_delta_ci,
    per_image_scores,
    pixel_accuracy,
    seed_miou_ci,
    summarize,
)


def test_confusion_matrix_hand_case_rows_are_ground_truth():
    pred = torch.tensor([[0, 1], [1, 2]])
    target = torch.tensor([[0, 1], [255, 1]])  # the void pixel (predicted 1) is left out
    cm = confusion_matrix(pred, target, num_classes=3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    iou = iou_per_class(cm)
    assert iou.dtype == torch.float64
    assert iou.tolist() == pytest.approx([1.0, 0.5, 0.0])  # class 2: predicted once, never true
    assert mean_iou(cm) == pytest.approx(0.5)
    assert pixel_accuracy(cm) == pytest.approx(2 / 3)


def test_confusion_matrix_accepts_numpy_and_matches_a_loop():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(3, 7, 9))
    target[rng.random(target.shape) < 0.2] = 255
    pred = rng.integers(0, 5, size=(3, 7, 9)).astype(np.uint8)
    expected = np.zeros((5, 5), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            expected[t, p] += 1
    assert confusion_matrix(pred, target, 5).numpy().tolist() == expected.tolist()


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    target = torch.tensor([0, 0, 255, 255])
    a = confusion_matrix(torch.tensor([0, 0, 0, 0]), target, 2)
    b = confusion_matrix(torch.tensor([0, 0, 1, 1]), target, 2)
    assert torch.equal(a, b) and int(a.sum()) == 2


def test_absent_class_is_nan_and_left_out_of_the_mean():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    cm = confusion_matrix(pred, target, 4)
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(2 / 3)
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((0.5 + 2 / 3) / 2)


def test_perfect_prediction_is_one_and_all_wrong_is_zero():
    target = torch.randint(0, 21, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    assert mean_iou(confusion_matrix(target, target, 21)) == pytest.approx(1.0)
    assert pixel_accuracy(confusion_matrix(target, target, 21)) == pytest.approx(1.0)
    wrong = (target + 1) % 21
    assert mean_iou(confusion_matrix(wrong, target, 21)) == 0.0
    assert pixel_accuracy(confusion_matrix(wrong, target, 21)) == 0.0


def test_bad_inputs_raise_user_error():
    with pytest.raises(UserError):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 3)
    with pytest.raises(UserError):  # a label that is neither a class nor void
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 7, 255]), 3)
    with pytest.raises(UserError):  # logits instead of class ids
        confusion_matrix(torch.zeros(4), torch.zeros(4, dtype=torch.long), 3)


def _cm(pred, target, c=3):
    return confusion_matrix(torch.tensor(pred), torch.tensor(target), c)


def test_per_image_scores_hand_case():
    cms = torch.stack(
        [
            _cm([0, 0, 1, 1], [0, 0, 1, 1]),  # perfect on classes {0, 1} -> 1
            _cm([0, 0, 1, 1], [0, 0, 0, 0]),  # class 0: 2/4, class 1: 0/2 -> 0.25
            _cm([0, 2, 2, 2], [255, 255, 255, 255]),  # all void -> NaN
        ]
    )
    scores = per_image_scores(cms)
    assert scores.shape == (3,)
    assert scores[:2].tolist() == pytest.approx([1.0, 0.25])
    assert math.isnan(scores[2])


def _random_per_image_cms(n, c=5, seed=0, correct=0.6):
    """(n, c, c) per-image matrices of a model right on about `correct` of the pixels."""
    g = torch.Generator().manual_seed(seed)
    cms = []
    for _ in range(n):
        target = torch.randint(0, c, (8, 8), generator=g)
        noise = torch.randint(0, c, (8, 8), generator=g)
        pred = torch.where(torch.rand(8, 8, generator=g) < correct, target, noise)
        cms.append(confusion_matrix(pred, target, c))
    return torch.stack(cms)


def bootstrap_miou_diff(cms_a, cms_b, n_resamples=1000, seed=0, level=0.95):
    """mIoU(b) - mIoU(a) with its paired image bootstrap: `paired_delta_ci` with one seed."""
    res = paired_delta_ci(torch.as_tensor(cms_b)[None], torch.as_tensor(cms_a)[None], n_resamples, level, seed)
    return {
        "diff": res["delta"],
        "n_resamples": n_resamples,
        "level": level,
        **{k: res[k] for k in ("low", "high", "significant")},
    }


def test_bootstrap_identical_models_give_zero_diff_and_zero_interval():
    cms = _random_per_image_cms(30)
    res = bootstrap_miou_diff(cms, cms.clone(), n_resamples=200)
    assert res["diff"] == 0.0 and res["low"] == 0.0 and res["high"] == 0.0
    assert res["significant"] is False
    assert res["n_resamples"] == 200 and res["level"] == 0.95


def test_bootstrap_b_better_on_every_image_is_significant_both_ways():
    worse = _random_per_image_cms(40, correct=0.5)
    perfect = torch.diag_embed(worse.sum(2))  # same ground truth, every pixel right
    res = bootstrap_miou_diff(worse, perfect, n_resamples=500, seed=1)
    assert res["diff"] > 0 and res["low"] > 0 and res["significant"] is True
    assert res["low"] <= res["diff"] <= res["high"]
    flipped = bootstrap_miou_diff(perfect, worse, n_resamples=500, seed=1)
    assert flipped["high"] < 0 and flipped["significant"] is True
    assert flipped["diff"] == pytest.approx(-res["diff"])


def test_bootstrap_matches_a_plain_loop_over_resamples():
    a, b = _random_per_image_cms(25, seed=1), _random_per_image_cms(25, seed=2, correct=0.7)
    res = bootstrap_miou_diff(a, b, n_resamples=300, seed=3, level=0.9)
    # Same draws as the vectorised code: counts per image from one multinomial per resample.
    w = np.random.default_rng(3).multinomial(25, np.full(25, 1 / 25), size=300)
    diffs = []
    for row in w:
        idx = torch.tensor(np.repeat(np.arange(25), row))
        diffs.append(mean_iou(b[idx].sum(0)) - mean_iou(a[idx].sum(0)))
    low, high = np.quantile(diffs, [0.05, 0.95])
    assert res["low"] == pytest.approx(low) and res["high"] == pytest.approx(high)
    assert res["diff"] == pytest.approx(mean_iou(b.sum(0)) - mean_iou(a.sum(0)))


def test_one_seed_miou_interval_covers_the_observed_value_and_is_reproducible():
    cms = _random_per_image_cms(30)
    res = seed_miou_ci(cms[None], resamples=300, rng=5)
    assert res["miou"] == pytest.approx(mean_iou(cms.sum(0)))
    assert res["low"] < res["miou"] < res["high"]
    assert seed_miou_ci(cms[None], resamples=300, rng=5) == res
    one = seed_miou_ci(cms[None, :1], resamples=50)  # one image: every resample is that image
    assert one["low"] == pytest.approx(one["miou"]) and one["high"] == pytest.approx(one["miou"])


def test_summarize():
    cms = torch.stack([_cm([0, 0, 1, 1], [0, 0, 1, 1]), _cm([0, 0, 1, 1], [0, 0, 0, 0])])
    s = summarize(cms, ["a", "b"])
    # total: gt0 -> 4 right + 2 wrong (pred 1); gt1 -> 2 right. IoU0 = 4/6, IoU1 = 2/4, class 2 absent.
    assert s["iou_per_class"][:2] == pytest.approx([4 / 6, 0.5]) and s["iou_per_class"][2] is None
    assert s["miou"] == pytest.approx((4 / 6 + 0.5) / 2)
    assert s["pixel_acc"] == pytest.approx(6 / 8)
    assert s["per_image"].tolist() == pytest.approx([1.0, 0.25])
    assert s["ids"] == ["a", "b"] and s["num_images"] == 2
    with pytest.raises(UserError):
        summarize(cms, ["a"])


# --------------------------------------------------------------------------- seed-level intervals
def test_paired_delta_ci_with_one_seed_is_the_paired_image_bootstrap():
    a, b = _random_per_image_cms(25, seed=1, correct=0.7), _random_per_image_cms(25, seed=2)
    res = paired_delta_ci(a[None], b[None], resamples=300, level=0.9, rng=3)
    # the same draws by a plain loop: counts per image from one multinomial per resample
    w = np.random.default_rng(3).multinomial(25, np.full(25, 1 / 25), size=300)
    diffs = [
        mean_iou(a[torch.tensor(np.repeat(np.arange(25), row))].sum(0))
        - mean_iou(b[torch.tensor(np.repeat(np.arange(25), row))].sum(0))
        for row in w
    ]
    assert (res["low"], res["high"]) == pytest.approx(tuple(np.quantile(diffs, [0.05, 0.95])))
    assert res["delta"] == pytest.approx(mean_iou(a.sum(0)) - mean_iou(b.sum(0)))
    assert res["per_seed"] == [res["delta"]] and res["n_seeds"] == 1
    assert res["resamples"] == 300 and res["level"] == 0.9 and "bootstrap" in res["method"]


def test_paired_delta_ci_delta_is_the_mean_of_per_seed_deltas():
    a = torch.stack([_random_per_image_cms(20, seed=s, correct=0.55 + 0.05 * s) for s in range(3)])
    b = torch.stack([_random_per_image_cms(20, seed=10 + s, correct=0.6) for s in range(3)])
    res = paired_delta_ci(a, b, resamples=200, rng=0)
    want = [mean_iou(a[s].sum(0)) - mean_iou(b[s].sum(0)) for s in range(3)]
    assert res["per_seed"] == pytest.approx(want) and res["delta"] == pytest.approx(np.mean(want))
    assert res["low"] < res["delta"] < res["high"] and res["n_seeds"] == 3 and "t-interval" in res["method"]
    assert paired_delta_ci(a, b, resamples=200, rng=0) == res  # reproducible
    ci = seed_miou_ci(a, resamples=200, rng=0)
    assert ci["per_seed"] == pytest.approx([mean_iou(m.sum(0)) for m in a])
    assert ci["miou"] == pytest.approx(np.mean(ci["per_seed"])) and ci["low"] < ci["miou"] < ci["high"]
    same = paired_delta_ci(a, a.clone(), resamples=50)
    assert same["delta"] == same["low"] == same["high"] == 0.0 and same["significant"] is False


def test_paired_delta_ci_rejects_mismatched_shapes():
    a = torch.stack([_random_per_image_cms(6, seed=s) for s in range(3)])
    with pytest.raises(UserError):  # different numbers of seeds
        paired_delta_ci(a, a[:2])
    with pytest.raises(UserError):  # different images
        paired_delta_ci(a, a[:, :5])
    with pytest.raises(UserError):  # (N, C, C) instead of (S, N, C, C)
        paired_delta_ci(a[0], a[0])
    with pytest.raises(UserError):
        seed_miou_ci(a[0])


SIM_CLASSES, SIM_IMAGES, SIM_PIXELS = 4, 40, 300
SEED_SD = 0.25  # training noise: per (method, seed, class) shift of the logit of a pixel being right
IMAGE_SD = 0.6  # how hard each image/class is, shared by all models
METHOD_IMAGE_SD = 0.1  # per (method, image, class), shared by a method's seeds: val-sampling noise
EFFECT = 0.8  # true effect (logit): about +0.17 mIoU, ~6x the seed sd of one seed's mIoU (0.026)


def _simulated_study(rng, seeds: int, effect: float):
    """(cms_a, cms_b), each (S, N, C, C): a fresh val set, then S training runs of a and of b.

    A pixel of class c in image i is right with probability sigmoid(base_c + effect + seed shift
    + image difficulty + method x image term), wrong pixels go to the other classes uniformly;
    the seed shifts are drawn independently per method and seed (same distribution for a and b).
    Training noise (per-seed mIoU sd ~0.026) is ~3x the image noise of one seed's delta (~0.008).
    """
    c, n = SIM_CLASSES, SIM_IMAGES
    gt = rng.multinomial(SIM_PIXELS, rng.dirichlet(np.full(c, 0.8), size=n))  # (N, C) pixels per class
    hard = rng.normal(0, IMAGE_SD, (n, c)) + np.linspace(0.5, 1.5, c)
    others = [[j for j in range(c) if j != k] for k in range(c)]

    def method(shift):
        logit = shift + hard + rng.normal(0, SEED_SD, (seeds, 1, c)) + rng.normal(0, METHOD_IMAGE_SD, (n, c))
        right = rng.binomial(gt, 1 / (1 + np.exp(-logit)))  # (S, N, C)
        wrong = rng.multinomial(gt - right, np.full(c - 1, 1 / (c - 1)))  # (S, N, C, C-1)
        cms = np.zeros((seeds, n, c, c), np.int64)
        for k in range(c):
            cms[:, :, k, k] = right[:, :, k]
            cms[:, :, k, others[k]] = wrong[:, :, k]
        return cms

    return method(effect), method(0.0)


def _rejection_rates(seeds: int, effect: float, studies: int) -> tuple[float, float]:
    """(share of studies whose seed-level interval excludes 0, same for the old pooled bootstrap)."""
    rng = np.random.default_rng(100 + seeds)
    new = old = 0
    for i in range(studies):
        a, b = _simulated_study(rng, seeds, effect)
        new += paired_delta_ci(a, b, resamples=200, rng=i)["significant"]
        # the old table: per-image matrices summed over seeds, images resampled, seeds held fixed
        old += bootstrap_miou_diff(b.sum(0), a.sum(0), n_resamples=200, seed=i)["significant"]
    return new / studies, old / studies


@pytest.mark.parametrize("seeds", [3, 5])
def test_seed_level_interval_is_calibrated_when_there_is_no_effect(seeds):
    new, old = _rejection_rates(seeds, 0.0, studies=400)
    print(
        f"\nno effect, S={seeds}: seed-level interval excludes 0 in {new:.1%} of studies, "
        f"pooled image-only bootstrap in {old:.1%} (nominal 5%)"
    )
    assert new <= 0.10
    assert old >= 0.30  # seeds held fixed: the old interval calls noise "distinguishable" (~60%)


@pytest.mark.parametrize("seeds", [3, 5])
def test_seed_level_interval_finds_a_true_effect(seeds):
    new, _ = _rejection_rates(seeds, EFFECT, studies=300)
    print(f"\ntrue effect, S={seeds}: the interval excludes 0 in {new:.1%} of studies")
    assert new >= 0.80
