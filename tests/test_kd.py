"""The KD losses: what each one computes (checked against an independent computation), where its
gradient goes (never into void pixels), and how the feature adapter is trained but never deployed."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from helpers import kd, training
from helpers.core import checkpoint
from helpers.kd.feature import FeatureAdapter, cwd_loss, hint_loss
from helpers.kd.relation import affinity, pairwise_loss
from helpers.kd.response import response_kd_loss
from helpers.models import build_model
from helpers.models import store as runs


def knobs(**kw):
    """The registered methods' knobs at their defaults, some changed: a cfg for kd.objective."""
    return SimpleNamespace(**{**vars(kd.contract.defaults()), **kw})


def distill_loss(method, student_out, target, teacher_out=None, adapter=None, **kw):
    return kd.objective(method, student_out, target, teacher_out, adapter, knobs(**kw))


VOID = 255


def logits_and_target(seed=0, n=2, c=5, h=3, w=4, void_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, h, w, generator=g) * 2
    t = torch.randn(n, c, h, w, generator=g) * 2
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < void_frac] = VOID
    assert (target != VOID).any() and ((target == VOID).any() or void_frac == 0)
    return s, t, target


def kd_by_loops(s, t, target, T):
    """T^2 x mean over non-void pixels of KL(softmax(t/T) || softmax(s/T)), pixel by pixel."""
    total, count = 0.0, 0
    n, _, h, w = s.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                if target[i, y, x] == VOID:
                    continue
                p_t = Categorical(logits=t[i, :, y, x].double() / T)
                p_s = Categorical(logits=s[i, :, y, x].double() / T)
                total += float(kl_divergence(p_t, p_s))
                count += 1
    return T * T * total / count


# --- response KD ---------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_response_kd_is_zero_when_student_equals_teacher(T):
    s, _, target = logits_and_target()
    assert response_kd_loss(s, s.clone(), target, T).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_response_kd_equals_t_squared_times_mean_kl_over_valid_pixels(T):
    s, t, target = logits_and_target(seed=int(T))
    got = response_kd_loss(s, t, target, T).item()
    assert got == pytest.approx(kd_by_loops(s, t, target, T), rel=1e-5)
    # a second, vectorised reference: F.kl_div over classes, averaged over valid pixels only
    kl = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="none").sum(1)
    valid = target != VOID
    assert got == pytest.approx(T * T * kl[valid].mean().item(), rel=1e-5)
    # void pixels really are left out: the plain mean over all pixels differs
    assert got != pytest.approx(T * T * kl.mean().item(), rel=1e-3)


def test_response_kd_t_squared_keeps_the_scale_for_large_t():
    """Hinton et al.: for large T, T^2 * KL -> (1 / 2C) * sum_c (d_c - mean d)^2 with d = z_t - z_s,
    so the T^2 factor makes the loss independent of T (a missing or doubled factor fails)."""
    s, t, target = logits_and_target(seed=3, void_frac=0.0)
    d = t - s
    limit = ((d - d.mean(1, keepdim=True)) ** 2).sum(1).mean() / (2 * s.shape[1])
    for T in (50.0, 200.0):
        assert response_kd_loss(s, t, target, T).item() == pytest.approx(limit.item(), rel=0.03)


def test_response_kd_sends_no_gradient_into_void_pixels():
    s, t, target = logits_and_target(seed=4)
    s.requires_grad_(True)
    response_kd_loss(s, t, target, 4.0).backward()
    void = (target == VOID).unsqueeze(1).expand_as(s)
    assert torch.all(s.grad[void] == 0)
    per_pixel = s.grad.abs().sum(1)  # (N, H, W)
    assert torch.all(per_pixel[target != VOID] > 0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_response_kd_gradient_matches_autograd_of_the_formula_in_double(channels_last):
    """The loss writes its gradient out by hand (T (p_s - p_t) valid / n); it must equal what
    autograd gives for the plain composition, in either memory layout and under a scaled loss."""
    s, t, target = logits_and_target(seed=6, n=2, c=21, h=8, w=8)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    s, t = s.contiguous(memory_format=fmt), t.contiguous(memory_format=fmt)
    T, alpha = 4.0, 0.7
    s1 = s.clone().requires_grad_(True)
    t1 = t.clone().requires_grad_(True)
    (alpha * response_kd_loss(s1, t1, target, T)).backward()
    s2 = s.double().requires_grad_(True)
    kl = F.kl_div(F.log_softmax(s2 / T, 1), F.log_softmax(t.double() / T, 1), log_target=True, reduction="none").sum(1)
    (alpha * T * T * kl[target != VOID].mean()).backward()
    assert torch.allclose(s1.grad.double(), s2.grad, atol=1e-7, rtol=1e-5)
    assert t1.grad is None  # the teacher's logits are a constant target


def test_response_kd_with_only_void_pixels_is_zero_and_finite():
    s, t, target = logits_and_target(seed=5)
    s.requires_grad_(True)
    loss = response_kd_loss(s, t, torch.full_like(target, VOID), 4.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(loss)
    assert torch.all(s.grad == 0)


# --- feature KD ----------------------------------------------------------------------------------


def test_hint_loss_resizes_the_student_map_to_the_teachers_size():
    # a +-1 checkerboard teacher at 8x8 and a constant student at 4x4: upsampling the student gives
    # MSE = 1 exactly; downsampling the teacher instead (the wrong way) would average it away to 0
    t = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0
    t = t.expand(2, 3, 8, 8).clone()
    s = torch.full((2, 3, 4, 4), 0.5, requires_grad=True)
    loss = hint_loss(s, t)
    assert loss.item() == pytest.approx(1.0 + 0.25)
    loss.backward()
    assert s.grad.shape == (2, 3, 4, 4) and s.grad.abs().sum() > 0


def test_hint_loss_is_mse_over_all_elements():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 6, 5, 5, generator=g), torch.randn(2, 6, 5, 5, generator=g)
    assert hint_loss(s, t).item() == pytest.approx(((s - t) ** 2).sum().item() / s.numel(), rel=1e-6)
    assert hint_loss(t, t).item() == 0.0


def test_cwd_loss_is_zero_for_equal_maps_and_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 4, 6, 6, generator=g)
    assert cwd_loss(t.clone(), t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert cwd_loss(torch.randn(2, 4, 6, 6, generator=g), t, 4.0).item() > 1e-3
    # a student map at a coarser stride is resized, not refused
    assert cwd_loss(torch.randn(2, 4, 3, 3, generator=g), t, 4.0).item() > 1e-3
    # each channel is a distribution over positions: a per-channel constant shift changes nothing
    assert cwd_loss(t + torch.randn(2, 4, 1, 1, generator=g), t, 4.0).item() == pytest.approx(0.0, abs=1e-6)


# --- the combined loss ---------------------------------------------------------------------------


def test_distill_loss_returns_its_parts():
    s, t, target = logits_and_target(seed=6)
    fs, ft = torch.randn(2, 8, 2, 2), torch.randn(2, 16, 2, 2)
    adapter = FeatureAdapter(8, 16)
    ce = F.cross_entropy(s, target, ignore_index=VOID)

    base = distill_loss("baseline", (s, fs), target)
    assert set(base) == {"loss", "ce"}
    assert base["loss"].item() == pytest.approx(ce.item())

    resp = distill_loss("response", (s, fs), target, (t, ft), alpha=0.3, temperature=2.0)
    assert set(resp) == {"loss", "ce", "kd"}
    assert resp["kd"].item() == pytest.approx(kd_by_loops(s, t, target, 2.0), rel=1e-5)
    assert resp["loss"].item() == pytest.approx(ce.item() + 0.3 * resp["kd"].item(), rel=1e-6)

    for kind in ("hint", "cwd"):
        feat = distill_loss("feature", (s, fs), target, (t, ft), adapter, beta=2.0, feature_loss=kind)
        assert set(feat) == {"loss", "ce", "kd"}
        assert feat["kd"].item() > 0
        assert feat["loss"].item() == pytest.approx(ce.item() + 2.0 * feat["kd"].item(), rel=1e-6)

    pair = distill_loss("pairwise", (s, fs), target, (t, ft), pairwise_weight=3.0)
    assert pair["loss"].item() == pytest.approx(ce.item() + 3.0 * pair["kd"].item(), rel=1e-6)


def test_feature_adapter_gets_gradients_from_the_feature_loss():
    s, t, target = logits_and_target(seed=7)
    fs, ft = torch.randn(2, 8, 2, 2, requires_grad=True), torch.randn(2, 16, 2, 2)
    adapter = FeatureAdapter(8, 16)
    distill_loss("feature", (s, fs), target, (t, ft), adapter)["loss"].backward()
    for name, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert fs.grad.abs().sum() > 0  # and through it into the student's feature


def test_fit_trains_the_adapter_but_the_student_does_not_keep_it(tiny_cfg, monkeypatch):
    made = []

    class Recorded(FeatureAdapter):
        def __init__(self, *a):
            super().__init__(*a)
            self.initial = {k: v.clone() for k, v in self.state_dict().items()}
            made.append(self)

    monkeypatch.setattr(training.setup, "FeatureAdapter", Recorded)
    model, _ = training.fit(tiny_cfg, "feature", progress=False)
    assert len(made) == 1
    adapter = made[0]
    weight = adapter.proj[0].weight
    assert not torch.equal(weight.detach(), adapter.initial["proj.0.weight"])  # trained
    saved = checkpoint.load(runs.checkpoint_path(tiny_cfg, "feature"))
    assert torch.equal(saved["adapter"]["proj.0.weight"], weight.detach().contiguous())

    baseline = build_model(tiny_cfg.student_arch)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == count(baseline)
    assert not any(isinstance(m, FeatureAdapter) for m in model.modules())
    assert set(saved["model"]) == set(baseline.state_dict())
    assert math.isfinite(sum(saved["history"]["kd"]))


@pytest.mark.parametrize("arch", ["compact_l", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_a_feature_only_forward_gives_the_same_feature_without_logits(arch):
    """Feature KD runs the teacher with logits=False (its head skipped): same feature map."""
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        logits, feat = model.forward_features(x)
        none, feat_only = model.forward_features(x, logits=False)
    assert none is None and logits.shape == (1, 21, 64, 64)
    assert torch.equal(feat, feat_only) and feat.shape[1] == model.feature_channels


# --- relation KD (pair-wise) ---------------------------------------------------------------------


def test_pairwise_affinity_is_the_cosine_similarity_of_max_pooled_nodes():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(2, 5, 4, 6, generator=g)
    a = affinity(f, (2, 3))  # 2 x 2 patches -> 2 x 3 nodes
    nodes = F.max_pool2d(f, 2).flatten(2)  # (N, C, 6)
    cos = F.cosine_similarity(nodes[:, :, :, None], nodes[:, :, None, :], dim=1)
    assert a.shape == (2, 6, 6) and torch.allclose(a, cos, atol=1e-6)


def test_pairwise_loss_compares_structure_not_channels_or_scale():
    g = torch.Generator().manual_seed(4)
    t = torch.randn(2, 16, 8, 8, generator=g)
    assert pairwise_loss(t * 3.0, t, patch=2).item() == pytest.approx(0.0, abs=1e-6)  # a scale changes no angle
    s = torch.randn(2, 4, 8, 8, generator=g)  # other channel count, other structure
    assert pairwise_loss(s, t, patch=2).item() > 1e-3
    # a student map at a coarser stride: both are pooled to the student's node grid
    assert pairwise_loss(torch.randn(2, 4, 4, 4, generator=g), t, patch=2).shape == ()
