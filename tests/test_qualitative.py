"""The qualitative browser's lists: success / failure / all, sorted by a model's score or by a gain."""

import numpy as np
import pytest

from helpers.results import qualitative


def test_image_options_success_failure_all_with_scores():
    ids = ["a", "b", "c", "d"]
    score = np.array([0.5, np.nan, 0.9, 0.1])
    assert qualitative.image_options(ids, score, "success", n=2) == [("c · 0.9000", 2), ("a · 0.5000", 0)]
    assert qualitative.image_options(ids, score, "failure", n=2) == [("b · n/a", 1), ("d · 0.1000", 3)]
    assert [i for _, i in qualitative.image_options(ids, score, "all")] == [2, 0, 3, 1]
    with pytest.raises(ValueError, match="show must be one of"):
        qualitative.image_options(ids, score, "best")


def test_sort_keys_offer_each_model_and_its_gain_over_the_baseline():
    evals = {"base": {"per_image": [0.5, 0.6]}, "kd": {"per_image": [0.7, 0.4]}}
    keys = qualitative.sort_keys(evals, "base")
    assert list(keys) == ["base", "kd", "gain of kd"]
    assert np.allclose(keys["gain of kd"], [0.2, -0.2])
    best_gain = qualitative.image_options(["x", "y"], keys["gain of kd"], "success", n=1, signed=True)
    assert best_gain == [("x · +0.2000", 0)]


def test_histograms_of_all_models_share_bins_and_axes_and_show_the_dataset_miou():
    """The saved iou_distribution.png of each model: the same bins, x and y limits, so they compare."""
    rng = np.random.default_rng(0)
    evals = {
        name: {"per_image": np.append(rng.beta(a, 2, 40 * k), np.nan), "ids": ["x"] * (40 * k + 1), "miou": m}
        for k, (name, a, m) in enumerate((("base", 2, 0.7), ("kd", 5, 0.8), ("teacher", 9, 0.9)), 1)
    }
    figs = qualitative.histograms(evals)
    axes = [figs[n].axes[0] for n in evals]
    edges = [
        sorted(
            {round(p.get_x(), 9) for p in ax.patches} | {round(max(p.get_x() + p.get_width() for p in ax.patches), 9)}
        )
        for ax in axes
    ]
    assert all(e == edges[0] for e in edges) and len(edges[0]) == 21  # one set of bins, over [0, 1]
    assert all(ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == axes[0].get_ylim() for ax in axes)
    assert axes[0].get_ylim()[1] >= max(p.get_height() for ax in axes for p in ax.patches)  # tallest bar fits
    dotted = [ln for ln in axes[1].get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_xdata()[0] == 0.8
    assert any("dataset-level mIoU = 0.800" in t.get_text() for t in axes[1].get_legend().get_texts())


def test_score_gap_measures_why_the_per_image_mean_is_below_the_dataset_miou():
    """Two images, each right on its two classes but for one stray pixel of a class it lacks: per image
    2/3 (the stray class scores IoU 0), pooled the stray pixels hardly count."""
    from helpers.evaluation import metrics

    cms = np.zeros((2, 21, 21), dtype=np.int64)
    cms[0, 0, 0], cms[0, 1, 1], cms[0, 0, 2] = 99, 100, 1  # stray "bicycle" pixel in image 0
    cms[1, 0, 0], cms[1, 2, 2], cms[1, 0, 1] = 99, 100, 1  # stray "aeroplane" pixel in image 1
    ev = dict(metrics.summarize(cms, ["a", "b"]), per_image_cm=cms)
    assert np.allclose(ev["per_image"], [(0.99 + 1 + 0) / 3] * 2) and ev["miou"] > 0.98
    line = qualitative.score_gap(ev, "m")
    assert line.startswith("m: per-image mIoU 0.663 (mean over images), dataset-level 0.990;") and "only 0.995" in line
    assert "100% of images hold a predicted class absent from their ground truth (1.0 per image" in line
    text = " ".join(qualitative.metrics_text(ev, "m", {}).split())  # (wrapped at 100 characters)
    assert "one confusion matrix" in text and "100% of images" in text
