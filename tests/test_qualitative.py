"""The qualitative browser's lists: success / failure / all, sorted by a model's score or by a gain."""
import numpy as np
import pytest

from helpers import qualitative


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
