"""Is KD worth it: training cost (FLOPs counted, time measured), the compute-matched baseline, fidelity to the
teacher, how many seeds a claim needs (checked by simulation), Holm's verdicts, and the teacher's pre-flight."""

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import kd, training
from helpers.core import checkpoint
from helpers.core.errors import UserError
from helpers.evaluation import fidelity, power
from helpers.models import build_model
from helpers.perf import gflops
from helpers.training import cost
from helpers.training.teacher import preflight


# --------------------------------------------------------------------------- how many seeds
def _study(rng, delta, var_seeds, var_images, n):
    """One simulated study of n seeds: per-seed deltas around the truth plus the val images' shared error."""
    per_seed = rng.normal(delta + rng.normal(0, np.sqrt(var_images)), np.sqrt(var_seeds), n)
    se = np.sqrt(per_seed.var(ddof=1) / n + var_images)  # the table's seed-level standard error
    return abs(per_seed.mean()) / se > stats.t.ppf(0.975, n - 1)


@pytest.mark.parametrize("delta, var_seeds, var_images", [(0.03, 0.02**2, 0.004**2), (0.01, 0.01**2, 0.002**2)])
def test_seeds_needed_reaches_the_power_it_promises_in_simulation(delta, var_seeds, var_images):
    n = power.seeds_needed(delta, var_seeds, var_images)
    assert n is not None and n >= 2
    rng = np.random.default_rng(0)
    at_n = np.mean([_study(rng, delta, var_seeds, var_images, n) for _ in range(4000)])
    below = np.mean([_study(rng, delta, var_seeds, var_images, n - 1) for _ in range(4000)]) if n > 2 else 0.0
    assert at_n >= 0.77 and below < 0.8, (n, at_n, below)  # 0.8 up to the simulation's noise (~0.007)


def test_seeds_needed_says_when_no_seed_count_can_do_it():
    assert power.seeds_needed(0.001, 0.01**2, 0.004**2) is None  # the images' noise alone hides it
    assert power.seeds_needed(0.03, None, 0.0) is None  # one seed: no between-seed variance to plan with
    n = power.seeds_needed(0.05, 0.01**2, 0.0)  # a large effect: few seeds, and the fewest that do
    assert 2 <= n <= 4 and power.power(0.05, 0.01**2, 0.0, n) >= 0.8 > power.power(0.05, 0.01**2, 0.0, n - 1)


def test_holm_adjusts_step_down():
    out = power.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert out["a"] == (pytest.approx(0.03), True)  # 3 x 0.01
    assert out["c"] == (pytest.approx(0.06), False) and out["b"] == (pytest.approx(0.06), False)  # monotone


# --------------------------------------------------------------------------- training FLOPs
def test_training_flops_are_counted_per_part(tiny_cfg):
    cfg = tiny_cfg.replace(students=["baseline", "response", "feature", "baseline_matched"])
    crop = (1, 3, cfg.crop_size, cfg.crop_size)
    student, teacher = gflops(build_model(cfg.student_arch), crop), gflops(build_model(cfg.teacher_arch), crop)
    base = cost.step_gflops(cfg, "baseline")
    assert 2.5 * student < base < 3.5 * student  # forward + backward (about twice the forward)
    online = cost.step_gflops(cfg, "response", cached=False)
    assert online - cost.step_gflops(cfg, "response", cached=True) == pytest.approx(teacher, rel=1e-6)
    assert cost.step_gflops(cfg, "feature") - base < teacher  # its teacher skips the head; + the adapter's
    n = cost.images_per_epoch(cfg, cfg.train_split)
    assert n == 12 and cost.seed_gflops(cfg, "baseline") == pytest.approx(base * n * cfg.epochs)
    share = cost.cache_pass_gflops(cfg) / (1 * cfg.seeds)  # one method of the run reads the cache
    assert cost.seed_gflops(cfg.replace(teacher_cache=True), "response") == pytest.approx(
        cost.step_gflops(cfg, "response", cached=True) * n * cfg.epochs + share
    )


def test_the_compute_matched_baseline_trains_as_long_as_the_costliest_kd_row(tiny_cfg):
    cfg = tiny_cfg.replace(students=["baseline", "response", "feature", "baseline_matched"])
    epochs = cost.matched_epochs(cfg)
    costliest = max(cost.seed_gflops(cfg, m) for m in ("response", "feature"))
    per_epoch = cost.step_gflops(cfg, "baseline") * cost.images_per_epoch(cfg, cfg.train_split)
    assert epochs == round(costliest / per_epoch) and epochs > cfg.epochs
    assert cost.epochs_of(cfg, "baseline_matched") == epochs and cost.epochs_of(cfg, "response") == cfg.epochs
    assert cost.matched_epochs(cfg.replace(students=["baseline", "baseline_matched"])) == cfg.epochs


@pytest.mark.slow
def test_the_compute_matched_baseline_is_a_row_with_its_own_comparisons(tiny_cfg):
    from helpers.results import analysis, compare, table

    cfg = tiny_cfg.replace(students=["baseline", "response", "baseline_matched"], teacher_cache=True)
    for method in cfg.students:
        training.fit(cfg, method, progress=False)
    state = checkpoint.load(training.setup.store.checkpoint_path(cfg, "baseline_matched"))
    assert state["epochs"] == cost.matched_epochs(cfg) == len(state["history"]["epoch"]) and state["device"] == "cpu"
    results = compare.compare(cfg, progress=False)
    rows = {r["method"]: r for r in results["rows"]}
    assert rows["response"]["diff_vs_matched"]["diff"] == pytest.approx(
        rows["response"]["miou"] - rows["baseline_matched"]["miou"]
    )
    assert rows["baseline_matched"]["diff_vs_baseline"] is not None and "diff_vs_matched" not in rows["baseline"]
    assert rows["baseline_matched"]["train_tflops_ratio"] == pytest.approx(cost.matched_epochs(cfg) / cfg.epochs)
    assert rows["response"]["train_s"] > 0 and 0 <= rows["response"]["agreement"] <= 1
    assert results["matched"] == {"in_run": True, "epochs": cost.matched_epochs(cfg), "by": "FLOPs"}
    md, text = table.table_markdown(results), analysis.analysis_text(results)
    assert "Δ mIoU vs compute-matched" in md and "Training TFLOPs / seed" in md and "Agreement with teacher" in md
    assert "Against the baseline trained as long" in text and "the baseline's training FLOPs" in text
    n = rows["response"]["train_threads"]  # (from its checkpoint: trained here, alone)
    assert n >= 1 and rows["response"]["train_side_by_side"] == 1
    assert f"epochs on cpu, {n} thread{'s' if n != 1 else ''} each, 1 side by side; a method" in md
    grown = cfg.replace(students=["baseline", "response", "feature", "baseline_matched"])  # a costlier KD row now
    with pytest.raises(UserError, match="epochs in the checkpoint"):
        training.fit(grown, "baseline_matched", progress=False)


# --------------------------------------------------------------------------- fidelity
def test_agreement_counts_agreeing_non_void_pixels(demo_root, tiny_cfg):
    from helpers.data import loaders

    ds = loaders.dataset(tiny_cfg, "val")
    torch.manual_seed(0)
    teacher, other = build_model("compact_s").eval(), build_model("compact_s").eval()
    counts = fidelity.agreement_counts({"same": teacher, "other": other}, teacher, ds, "cpu")
    valid = [int((torch.as_tensor(ds[i][1]) != 255).sum()) for i in range(len(ds))]
    assert counts["same"][:, 0, 0].tolist() == valid == counts["same"][:, 0, 1].tolist()  # all of them, void out
    assert (counts["other"][:, 0, 0] <= counts["other"][:, 0, 1]).all() and counts["other"][:, 0, 0].sum() < sum(valid)


# --------------------------------------------------------------------------- the teacher's pre-flight
class Oracle(torch.nn.Module):
    """A teacher that knows the answer (the ground truth of each image, found by its pixels), optionally with
    its classes in another order."""

    def __init__(self, ds, order=None):
        super().__init__()
        self.answers = {self.key(ds[i][0]): ds[i][1] for i in range(len(ds))}
        self.order = order

    @staticmethod
    def key(image) -> tuple:
        return tuple(round(v, 3) for v in image[:, :3, :3].flatten().tolist())

    def forward(self, x):
        out = []
        for image in x:
            labels = self.answers[self.key(image)].clamp(max=20)
            onehot = torch.nn.functional.one_hot(labels, 21).permute(2, 0, 1).float()
            out.append(onehot if self.order is None else onehot[self.order])
        return torch.stack(out)


def test_preflight_passes_a_good_teacher_and_stops_a_shuffled_one(tiny_cfg):
    from helpers.data import loaders

    cfg = tiny_cfg.replace(min_teacher_miou=0.1)
    ds = loaders.dataset(cfg, cfg.monitor_split)
    assert preflight(cfg, Oracle(ds), "cpu") == pytest.approx(1.0)
    shuffled = Oracle(ds, order=torch.roll(torch.arange(21), 1))  # classes shifted by one: background is class 20
    with pytest.raises(UserError, match="Pre-flight check.*no better than predicting background.*class order"):
        preflight(cfg, shuffled, "cpu")


def test_a_teacher_file_with_untrained_weights_stops_before_distillation(tiny_cfg, tmp_path):
    torch.manual_seed(3)
    model = build_model(tiny_cfg.teacher_arch)
    path = tmp_path / "broken_teacher.pt"
    checkpoint.save(
        {
            "method": "teacher",
            "arch": tiny_cfg.teacher_arch,
            "num_classes": 21,
            "complete": True,
            "model": model.state_dict(),
        },
        path,
    )
    cfg = tiny_cfg.replace(teacher_weights=str(path), min_teacher_miou=0.2)
    with pytest.raises(UserError, match="Pre-flight check: the teacher .*min_teacher_miou|background"):
        training.fit(cfg, "response", progress=False)
    assert not (tmp_path / "ckpt").exists() or not list((tmp_path / "ckpt").rglob("response*.pt"))  # nothing trained
    assert kd.get("baseline").teacher is None  # (the baseline never needs the check)
