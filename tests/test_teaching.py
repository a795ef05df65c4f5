"""teaching: the numbers behind the KD teaching figures agree with distill's losses; every figure builds."""

import math

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from torch import nn  # noqa: E402

from helpers import figures as teaching  # noqa: E402
from helpers import kd  # noqa: E402
from helpers.data.voc import CLASSES, NUM_CLASSES  # noqa: E402
from helpers.figures import response as response_figures  # noqa: E402
from helpers.kd.feature import FeatureAdapter, cwd_loss, hint_loss  # noqa: E402
from helpers.kd.response import response_kd_loss  # noqa: E402
from helpers.models import CompactSegNet, build_model  # noqa: E402

TINY = dict(widths=(4, 8, 8), blocks=(1, 1, 1), decoder=8)


def batch(seed=0, n=2, size=32):
    """Normalised-looking images (n, 3, size, size) and masks with a different void count per image."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n, size, size), generator=g)
    y[0, :5] = 255
    y[-1, :, :2] = 255
    return x, y


def bn_stats(model):
    return [b.clone() for name, b in model.named_buffers() if "running" in name]


class OneHotTeacher(nn.Module):
    """Logits 30 * one_hot(class id written in the image's first channel): a certain teacher."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return 30.0 * F.one_hot(x[:, 0].round().long(), NUM_CLASSES).permute(0, 3, 1, 2).float()


# ----------------------------------------------------------------------------- soft labels


def test_soft_labels_sum_to_one_and_entropy_grows_to_ln_c_with_temperature():
    torch.manual_seed(0)
    logits = 3 * torch.randn(2, NUM_CLASSES, 5, 6)
    p = teaching.soft_labels(logits, 2.0)
    assert torch.allclose(p.sum(dim=1), torch.ones(2, 5, 6), atol=1e-6)
    assert torch.allclose(teaching.soft_labels(logits[0], 2.0), p[0])  # (C, H, W) works the same
    ents = [teaching.entropy_map(teaching.soft_labels(logits, T)) for T in (0.5, 1.0, 2.0, 4.0, 8.0, 1e4)]
    for lower, higher in zip(ents, ents[1:]):
        assert (higher >= lower - 1e-6).all()  # per pixel, entropy never falls as T rises
    assert torch.allclose(ents[-1], torch.full((2, 5, 6), math.log(NUM_CLASSES)), atol=1e-4)
    assert ents[0].mean() < 0.5 * math.log(NUM_CLASSES)


def test_entropy_map_known_values():
    probs = torch.zeros(4, 1, 2)
    probs[:, 0, 0] = 0.25  # uniform over 4 classes: ln 4
    probs[2, 0, 1] = 1.0  # one-hot: 0 (0 log 0 taken as 0, not nan)
    assert torch.allclose(teaching.entropy_map(probs), torch.tensor([[math.log(4), 0.0]]), atol=1e-6)


# ----------------------------------------------------------------------------- class similarity


def test_class_similarity_of_a_certain_teacher_is_the_identity_on_present_classes():
    present = [0, 3, 4, 12]
    data = []
    for k, (h, w) in enumerate([(32, 32), (24, 40)]):  # images of different sizes: no batching
        mask = torch.tensor(present).repeat_interleave(h * w // 4).reshape(h, w).roll(k, 0)
        image = torch.zeros(3, h, w)
        image[0] = mask.float()
        mask[:3] = 255  # void pixels (image says class 0/3 there)
        data.append((image, mask))
    sim = teaching.class_similarity(OneHotTeacher(), data, T=1.0)
    expected = np.zeros((NUM_CLASSES, NUM_CLASSES))
    expected[present, present] = 1.0
    np.testing.assert_allclose(sim, expected, atol=1e-9)


def test_class_similarity_rows_are_pooled_mean_soft_labels():
    torch.manual_seed(0)
    teacher = CompactSegNet(NUM_CLASSES, **TINY)
    teacher.train()
    before = bn_stats(teacher)
    data = [
        (torch.randn(3, 32, 32), torch.randint(0, 4, (32, 32))),
        (torch.randn(3, 24, 40), torch.randint(2, 6, (24, 40))),
    ]
    data[1][1][:4] = 255
    sim = teaching.class_similarity(teacher, data, T=3.0)
    assert teacher.training and all(torch.equal(a, b) for a, b in zip(before, bn_stats(teacher)))
    np.testing.assert_allclose(sim.sum(axis=1)[:6], 1.0, atol=1e-6)
    assert (sim[6:] == 0).all()  # classes with no pixel: zero rows
    teacher.eval()
    with torch.no_grad():  # class 3 by hand, pooled over both images
        pix = [F.softmax(teacher(x[None])[0] / 3.0, dim=0)[:, m == 3] for x, m in data]
    np.testing.assert_allclose(sim[3], torch.cat(pix, dim=1).mean(dim=1).numpy(), atol=1e-6)
    first = teaching.class_similarity(teacher, data, T=3.0, max_images=1)
    assert (first[4:] == 0).all() and abs(first[3].sum() - 1) < 1e-6


def test_class_similarity_on_the_demo_dataset(demo_root):
    from helpers.data import transforms, voc

    ds = voc.get_dataset(demo_root, "val", transforms.eval_transform())
    torch.manual_seed(0)
    sim = teaching.class_similarity(CompactSegNet(NUM_CLASSES, **TINY), ds, T=4.0, max_images=3)
    present = sorted({int(c) for i in range(3) for c in ds[i][1].unique() if c != 255})
    rows = sim.sum(axis=1)
    np.testing.assert_allclose(rows[present], 1.0, atol=1e-6)
    assert np.count_nonzero(rows) == len(present)


def test_top_confusable_pairs_merges_both_directions_and_skips_the_diagonal():
    sim = np.diag([0.9, 0.5, 0.6, 0.7])
    sim[0, 1], sim[1, 0] = 0.1, 0.3  # a-b: 0.4
    sim[2, 3] = 0.35  # c-d: 0.35 (one way only)
    sim[0, 2], sim[2, 0] = 0.2, 0.25  # a-c: 0.45
    sim[1, 3] = 0.05  # b-d: 0.05
    pairs = teaching.top_confusable_pairs(sim, ["a", "b", "c", "d"], k=3)
    assert [p[:2] for p in pairs] == [("a", "c"), ("a", "b"), ("c", "d")]
    assert [p[2] for p in pairs] == pytest.approx([0.45, 0.4, 0.35])
    assert len(teaching.top_confusable_pairs(sim, ["a", "b", "c", "d"], k=10)) == 6


# ----------------------------------------------------------------------------- KL maps and loss parts


def test_kl_map_zero_where_equal_and_on_void_and_a_known_value():
    torch.manual_seed(0)
    t = torch.randn(NUM_CLASSES, 6, 7)
    s = t.clone()
    s[:, 0, 0] += torch.randn(NUM_CLASSES)
    target = torch.zeros(6, 7, dtype=torch.long)
    kl = teaching.kl_map(s, t, 4.0)
    assert kl.shape == (6, 7) and kl[0, 0] > 0
    assert torch.allclose(kl.flatten()[1:], torch.zeros(41), atol=1e-6)
    target[0, 0] = 255
    assert teaching.kl_map(s, t, 4.0, target)[0, 0] == 0
    T = 2.0  # teacher uniform over 2 classes, student (3/4, 1/4): T^2 * 0.5 ln(4/3)
    two_t, two_s = torch.zeros(2, 1, 1), torch.tensor([math.log(3) * T, 0.0]).view(2, 1, 1)
    assert teaching.kl_map(two_s, two_t, T).item() == pytest.approx(T * T * 0.5 * math.log(4 / 3), abs=1e-6)


def test_kl_map_mean_over_valid_pixels_is_response_kd_loss():
    torch.manual_seed(1)
    x, y = batch()
    s, t = 2 * torch.randn(2, NUM_CLASSES, 32, 32), 2 * torch.randn(2, NUM_CLASSES, 32, 32)
    for T in (1.0, 4.0):
        kl = teaching.kl_map(s, t, T, y)
        assert kl.shape == (2, 32, 32) and (kl[y == 255] == 0).all()
        mean = kl.sum() / (y != 255).sum()  # pooled over the batch, as response_kd_loss averages
        assert mean.item() == pytest.approx(response_kd_loss(s, t, y, T).item(), abs=1e-5)
        assert torch.allclose(teaching.kl_map(s[1], t[1], T, y[1]), kl[1])


def test_loss_parts_match_distill_loss_and_leave_the_models_as_they_were():
    torch.manual_seed(0)
    student, teacher = build_model("compact_s"), build_model("compact_l")
    student.train()
    teacher.eval()
    x, y = batch()
    x[1] *= 4  # images that differ, one mostly void: the KD mean must pool pixels
    y[0, :28] = 255
    before = bn_stats(student)
    cfg = SimpleNamespace(**{**vars(kd.contract.defaults()), "alpha": 0.3, "temperature": 2.0})
    parts = teaching.loss_parts("response", student, teacher, x, y, cfg)
    assert student.training and not teacher.training
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(student)))
    student.eval()
    with torch.no_grad():
        ref = kd.objective("response", student.forward_features(x), y, teacher.forward_features(x), None, cfg)
    assert set(parts) == {"ce", "kd", "loss"}
    for k in parts:
        assert parts[k] == pytest.approx(ref[k].item(), rel=1e-5, abs=1e-6)
    assert parts["kd"] > 0


# ----------------------------------------------------------------------------- feature path and PCA


def test_feature_path_table_compact_s_to_compact_l():
    student, teacher = build_model("compact_s"), build_model("compact_l")
    adapter = FeatureAdapter(student.feature_channels, teacher.feature_channels)
    adapter.train()
    before = bn_stats(adapter)
    rows = teaching.feature_path_table(student, adapter, teacher, input_size=(64, 64))
    assert rows == [
        ("input", (3, 64, 64), 1),
        ("student feature", (48, 8, 8), 8),
        ("adapted student", (128, 8, 8), 8),
        ("teacher feature", (128, 8, 8), 8),
    ]
    assert adapter.training and all(torch.equal(a, b) for a, b in zip(before, bn_stats(adapter)))
    rows = teaching.feature_path_table(student, adapter, teacher, input_size=(32, 48))
    assert rows[1] == ("student feature", (48, 4, 6), 8)
    lines = teaching.format_rows(rows).splitlines()
    assert len(lines) == 6 and "48 x 4 x 6" in lines[3]
    col = lines[0].index("shape")
    assert all(line[col - 2 : col] == "  " and line[col] != " " for line in lines[2:])


def test_pca_rgb_shape_range_and_planted_direction():
    g = torch.Generator().manual_seed(0)
    signal = torch.linspace(-1, 1, 5 * 7).reshape(5, 7)
    u = torch.randn(16, generator=g)
    feat = u[:, None, None] * signal * 10 + 0.1 * torch.randn(16, 5, 7, generator=g)
    (rgb,) = teaching.pca_rgb([feat[None]])  # (1, C, h, w) accepted too
    assert rgb.shape == (5, 7, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.allclose(rgb.reshape(-1, 3).min(0), 0) and np.allclose(rgb.reshape(-1, 3).max(0), 1)
    r = np.corrcoef(rgb[..., 0].ravel(), signal.numpy().ravel())[0, 1]
    assert abs(r) > 0.99  # first component = the planted direction
    assert teaching.pca_rgb([torch.randn(2, 3, 3)])[0].shape == (3, 3, 3)  # fewer than 3 channels
    with pytest.raises(ValueError, match="channel"):
        teaching.pca_rgb([torch.randn(4, 3, 3), torch.randn(5, 3, 3)])


def test_pca_rgb_is_one_joint_projection():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 4, 5, generator=g), torch.randn(8, 3, 5, generator=g)
    joint = teaching.pca_rgb([a, b])
    stacked = teaching.pca_rgb([torch.cat([a, b], dim=1)])[0]  # one map holding both: same colours
    np.testing.assert_allclose(np.concatenate(joint), stacked, atol=1e-6)
    same = teaching.pca_rgb([a, a.clone()])
    np.testing.assert_allclose(same[0], same[1])
    small = teaching.pca_rgb([a, 0.2 * a])  # a faint copy stays faint jointly...
    assert np.ptp(small[1]) < 0.5 * np.ptp(small[0])
    assert np.ptp(teaching.pca_rgb([0.2 * a])[0]) == pytest.approx(1.0)  # ...not in its own PCA

    stretched = teaching.pca_rgb([a, 0.2 * a], per_map=True)  # per-map stretch: the faint copy in full contrast
    np.testing.assert_allclose(stretched[1], stretched[0], atol=1e-6)
    np.testing.assert_allclose(np.concatenate(teaching.pca_rgb([a, b], per_map=True)), stacked, atol=0.6)
    assert all(np.allclose(m.reshape(-1, 3).min(0), 0) and np.allclose(m.reshape(-1, 3).max(0), 1) for m in stretched)


# ----------------------------------------------------------------------------- figures


def test_soft_label_figure_axes_and_top_classes():
    logits = torch.randn(NUM_CLASSES, 32, 32)
    logits[7] += 5
    logits[12] += 3
    image = torch.randn(3, 32, 32)
    fig = teaching.soft_label_figure(image, logits[None], temperatures=(1.0, 2.0, 4.0), top=2)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * (2 + 2) + 2  # rows x (image, 2 classes, entropy) + 2 colorbars
    assert CLASSES[7] in fig.axes[1].get_title() and CLASSES[12] in fig.axes[2].get_title()


def test_kl_figure_shares_one_scale_and_reports_valid_means():
    _, y = batch(n=1)
    before, after = 3 * torch.rand(32, 32), torch.rand(32, 32)
    before[y[0] == 255] = after[y[0] == 255] = 0
    fig = teaching.kl_figure(torch.randn(3, 32, 32), y[0], before, after)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    assert fig.axes[2].images[0].get_clim() == fig.axes[3].images[0].get_clim()
    valid = y[0] != 255
    assert f"{before[valid].mean():.3f}" in fig.axes[2].get_title()
    assert f"{after[valid].mean():.3f}" in fig.axes[3].get_title()


def test_class_similarity_figure_outlines_the_top_pairs():
    rng = np.random.default_rng(0)
    sim = rng.random((NUM_CLASSES, NUM_CLASSES)) + 5 * np.eye(NUM_CLASSES)
    sim /= sim.sum(axis=1, keepdims=True)
    fig = teaching.class_similarity_figure(sim, CLASSES, top_pairs=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # heatmap, pair list, colorbar
    heat = fig.axes[0]
    assert [t.get_text() for t in heat.get_yticklabels()] == list(CLASSES)
    assert sum(isinstance(p, Rectangle) for p in heat.patches) == 2 * 4
    shown = heat.images[0].get_array()
    assert shown.mask[np.diag_indices(NUM_CLASSES)].all()
    np.testing.assert_allclose(shown.filled(0).sum(axis=1), 1.0)  # rows renormalised off the diagonal


def test_feature_figure_titles_carry_the_hint_mse():
    torch.manual_seed(0)
    teacher = torch.randn(16, 4, 4)
    before, after = torch.randn(16, 4, 4), teacher + 0.1 * torch.randn(16, 4, 4)
    fig = teaching.feature_figure(torch.randn(3, 32, 32), torch.randn(6, 4, 4), before, after, teacher)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    for ax, f in ((fig.axes[2], before), (fig.axes[3], after)):
        assert f"{hint_loss(f[None], teacher[None]).item():.3f}" in ax.get_title()


def test_feature_figure_shows_the_structure_of_a_freshly_initialised_adapted_student():
    """The untrained student's adapted map is ~100x weaker than a trained teacher's; on the joint colour
    scale it was one flat colour. Each panel is stretched to its own range, so its noise shows."""
    from helpers import training
    from helpers.config import Config

    cfg = Config()
    student, teacher_net = training.initial_model(cfg), training.initial_model(cfg, "teacher")
    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = teaching.features_of(student, image, adapter=training.initial_adapter(student, teacher_net, 0))
    g = torch.Generator().manual_seed(1)
    signal = torch.linspace(-1, 1, before.shape[1] * before.shape[2]).reshape(before.shape[1:])
    teacher = 3 * torch.randn(before.shape[0], 1, 1, generator=g) * signal + torch.randn(before.shape, generator=g)
    assert before.std() < 0.05 * teacher.std()  # the situation of notebook 04
    fig = teaching.feature_figure(image, teaching.features_of(student, image), before, 0.5 * teacher, teacher)
    panel = fig.axes[2].images[0].get_array()
    assert "before" in fig.axes[2].get_title() and panel.reshape(-1, 3).std(0).min() > 0.1
    assert "each stretched to its own range" in " ".join(fig.get_suptitle().split())  # the caption says so


def test_cwd_channel_kl_matches_cwd_loss_and_figure_picks_the_most_varied_channel():
    torch.manual_seed(0)
    teacher, student = torch.randn(6, 8, 8), torch.randn(6, 4, 4)  # student resized as cwd_loss does
    teacher[4] *= 5
    per_channel = teaching.cwd_channel_kl(student, teacher, 2.0)
    ref = cwd_loss(student[None], teacher[None], 2.0).item()
    assert per_channel.mean().item() == pytest.approx(ref, abs=1e-5)
    fig = teaching.cwd_channel_figure(student[None], teacher, T=2.0)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert "channel 4" in fig.axes[0].get_title()
    one = cwd_loss(student[None, 4:5], teacher[None, 4:5], 2.0).item()
    assert f"{one:.4f}" in fig.get_suptitle()
    assert fig.axes[0].images[0].get_clim() == fig.axes[1].images[0].get_clim()
    assert "channel 1" in teaching.cwd_channel_figure(student, teacher, 2.0, channel=1).axes[1].get_title()


def test_temperature_widget_starts_at_the_runs_temperature_and_redraws_on_change(monkeypatch):
    pytest.importorskip("ipywidgets")
    calls, real = [], teaching.soft_label_figure

    def recorded(*a, temperatures):
        calls.append(temperatures)
        return real(*a, temperatures=temperatures)

    monkeypatch.setattr(response_figures, "soft_label_figure", recorded)
    image, logits = torch.randn(3, 8, 8), torch.randn(NUM_CLASSES, 8, 8)
    box = teaching.temperature_widget(image, logits, 2.0, (0.5, 8.0))  # starts at the run's T
    slider, picture = box.children
    assert (slider.min, slider.max, slider.value) == (0.5, 8.0, 2.0) and calls == [(2.0,)]
    first = picture.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    slider.value = 2.5
    assert calls[-1] == (2.5,) and len(calls) == 2 and picture.value != first
    assert teaching.temperature_widget(image, logits, 20.0, (0.5, 8.0)).children[0].value == 8.0  # clamped
