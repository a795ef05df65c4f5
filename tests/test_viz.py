"""viz: masks get the exact VOC colours, panels show what they claim, every plot renders and saves."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from helpers.data.voc import NUM_CLASSES, PALETTE  # noqa: E402
from helpers.figures import curves, plots, viz  # noqa: E402

DOG = 12


def dog_mask(h=60, w=80):
    """Left half dog, right half background, a void band across the middle rows."""
    m = np.zeros((h, w), dtype=np.int64)
    m[:, : w // 2] = DOG
    m[h // 2 - 2 : h // 2 + 2, :] = 255
    return m


def rgb_of(fig):
    """Rendered figure as a (H, W, 3) uint8 array (row 0 = top)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def pixel_at(rgb, ax, fx, fy):
    """Colour at fraction (fx, fy) of an axes box; fy measured from the top."""
    box = ax.get_window_extent()
    x = int(box.x0 + fx * box.width)
    y = int(rgb.shape[0] - (box.y1 - fy * box.height))
    return tuple(int(v) for v in rgb[y, x])


def test_colorize_gives_exact_palette_colours_with_distinct_void():
    m = np.array([[0, 12, 255], [15, 1, 20]])
    out = viz.colorize(torch.from_numpy(m))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 1]) == tuple(PALETTE[12]) == (64, 0, 128)
    assert tuple(out[0, 2]) == (224, 224, 192)
    assert tuple(out[1, 0]) == (192, 128, 128)
    assert tuple(out[1, 2]) == tuple(PALETTE[20])
    class_colours = {tuple(c) for c in PALETTE[:NUM_CLASSES]}
    assert len(class_colours) == NUM_CLASSES and (224, 224, 192) not in class_colours


def test_colorize_rejects_values_that_are_not_class_ids():
    with pytest.raises(ValueError, match="outside"):
        viz.colorize(np.array([[0, 21]]))


def test_denormalize_inverts_imagenet_normalisation():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(viz.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(viz.IMAGENET_STD).view(3, 1, 1)
    back = viz.denormalize((t - mean) / std)
    assert back.shape == (5, 7, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - img.astype(int)).max() <= 1
    assert viz.denormalize(img) is img


def test_overlay_tints_objects_only():
    img = np.full((60, 80, 3), 100, dtype=np.uint8)
    m = dog_mask()
    out = viz.overlay(img, m, alpha=0.5)
    untouched = (m == 0) | (m == 255)
    assert np.array_equal(out[untouched], img[untouched])
    expected = np.round(0.5 * 100 + 0.5 * PALETTE[DOG].astype(float)).astype(np.uint8)
    assert np.array_equal(out[5, 5], expected)


def test_four_panel_draws_ground_truth_colours_where_they_belong():
    img = np.full((60, 80, 3), 150, dtype=np.uint8)
    gt = dog_mask()
    fig = viz.four_panel(img, gt, np.zeros_like(gt), "2007_000063 · mIoU 0.50")
    assert [ax.get_title() for ax in fig.axes] == ["Image", "Ground truth", "Prediction", "Overlay"]
    rgb = rgb_of(fig)
    gt_ax = fig.axes[1]
    assert pixel_at(rgb, gt_ax, 0.25, 0.2) == tuple(PALETTE[DOG])
    assert pixel_at(rgb, gt_ax, 0.75, 0.2) == (0, 0, 0)
    assert pixel_at(rgb, gt_ax, 0.75, 0.5) == (224, 224, 192)
    assert pixel_at(rgb, fig.axes[2], 0.25, 0.2) == (0, 0, 0)  # prediction: all background
    assert pixel_at(rgb, fig.axes[3], 0.25, 0.2) == (150, 150, 150)  # nothing to tint
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["background", "dog", "void"]
    assert "mIoU 0.50" in fig.get_suptitle()


def test_progression_grid_has_one_image_per_cell():
    rng = np.random.default_rng(1)
    columns = ["Without KD", "Response KD", "Feature KD", "Teacher"]
    rows = [
        {
            "image": rng.integers(0, 256, (40, 50, 3), dtype=np.uint8),
            "gt": dog_mask(40, 50),
            "preds": {c: rng.integers(0, 3, (40, 50)) for c in columns},
            "label": f"2007_00006{i} · success",
            "scores": {"Teacher": 0.8},
        }
        for i in range(3)
    ]
    fig = viz.progression_grid(rows, columns, title="From no KD to teacher")
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 3 * (2 + len(columns))
    assert image_axes[0].get_ylabel() == "2007_000060 · success"
    assert image_axes[5].get_title() == "Teacher · 0.80"
    with pytest.raises(ValueError, match="no prediction"):
        viz.progression_grid([{**rows[0], "preds": {}}], columns)


def all_figures():
    rng = np.random.default_rng(2)
    img, m = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), dog_mask(30, 40)
    hist = {
        "epoch": [1, 2, 3],
        "loss": [1.0, 0.8, 0.7],
        "ce": [0.9, 0.7, 0.6],
        "kd": [0.1, None, 0.1],
        "monitor_miou": [0.2, 0.3, 0.35],
    }
    return {
        "four_panel": viz.four_panel(img, m, m, "x"),
        "score_histogram": plots.score_histogram(rng.random(50).tolist() + [float("nan")], "baseline"),
        "progression_grid": viz.progression_grid([{"image": img, "gt": m, "preds": {"A": m}, "label": "r"}], ["A"]),
        "sample_grid": viz.sample_grid([(f"id{i}", img, m) for i in range(5)], ncols=4),
        "class_frequency_chart": plots.class_frequency_chart(rng.integers(0, 1000, 21), rng.integers(0, 9, 21)),
        "training_curves": curves.training_curves({"baseline": {**hist, "kd": None}, "response": hist}),
        "scatter_tradeoff": plots.scatter_tradeoff(
            [
                {"name": "student", "latency_ms": 5.0, "latency_std": 0.5, "miou": 0.5, "params": 2e6},
                {"name": "teacher", "latency_ms": 40.0, "latency_std": 2.0, "miou": 0.7, "params": 4e7},
            ]
        ),
        "headline": plots.headline(ROWS),
        "class_deltas": plots.class_deltas(["bg", "dog", "cat"], {"a": [0.1, np.nan, -0.2], "b": [0.0, 0.3, 0.1]}),
    }


ROWS = [
    {"method": m, "label": m, "miou": v, "miou_ci": [v - 0.02, v + 0.03], "per_seed_miou": [v - 0.01, v + 0.01]}
    for m, v in (("baseline", 0.70), ("response", 0.74), ("feature", 0.73), ("teacher", 0.88))
]


def test_latency_labels_never_overlap():
    """Three students with the same size and nearly the same latency and mIoU: their labels still
    stand apart (a column beside the axes, in mIoU order)."""
    points = [
        {"name": n, "latency_ms": 2.0 + 0.01 * i, "latency_std": 0.1, "miou": 0.80 + 0.001 * i, "params": 1e5}
        for i, n in enumerate(("Without KD (Baseline)", "Response-Based", "Feature-Based"))
    ]
    fig = plots.scatter_tradeoff(
        points + [{"name": "Teacher", "latency_ms": 9, "latency_std": 1, "miou": 0.88, "params": 9e5}]
    )
    fig.canvas.draw()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t) for t in fig.axes[0].texts]  # the text alone, not its line
    assert len(boxes) == 4
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    order = [t.get_text().split(":")[0] for t in sorted(fig.axes[0].texts, key=lambda t: t.get_position()[1])]
    assert order == ["Without KD (Baseline)", "Response-Based", "Feature-Based", "Teacher"]


def test_headline_draws_each_interval_and_the_teacher_line():
    fig = plots.headline(ROWS)
    ax = fig.axes[0]
    assert [t.get_text().split("\n")[0] for t in ax.get_yticklabels()] == ["feature", "response", "baseline"]
    assert ax.get_yticklabels()[1].get_text() == "response\n0.740 [0.720, 0.770]"
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == 0.88


def test_class_deltas_leave_out_classes_absent_everywhere():
    fig = plots.class_deltas(["bg", "dog", "cat"], {"a": [0.1, np.nan, -0.2], "b": [0.0, np.nan, 0.1]})
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["bg", "cat"]


def test_every_plot_returns_a_figure_and_saves_a_png(tmp_path):
    for name, fig in all_figures().items():
        assert isinstance(fig, Figure), name
        path = viz.save_figure(fig, tmp_path / "nested" / f"{name}.png")
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name


def test_training_curves_draw_monitor_values_at_their_epochs():
    hist = {
        "epoch": list(range(1, 11)),
        "loss": [1.0] * 10,
        "ce": [1.0] * 10,
        "monitor_epoch": [5, 10],
        "monitor_miou": [0.2, 0.4],
    }
    fig = curves.training_curves({"baseline": hist})
    line = fig.axes[1].get_lines()[0]
    assert list(line.get_xdata()) == [5, 10] and list(line.get_ydata()) == [0.2, 0.4]


def test_training_curves_span_the_run_with_integer_ticks_for_a_single_monitor_point():
    """A 2-epoch run whose monitor was measured once (epoch 2): the axes run 1..2, not 1.9..2.1."""
    hist = {"epoch": [1, 2], "loss": [1.0, 0.8], "ce": [1.0, 0.8], "monitor_epoch": [2], "monitor_miou": [0.3]}
    fig = curves.training_curves({"baseline": hist})
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        assert ax.get_xlim() == (1.0, 2.0)
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 2]
        assert ticks == [1.0, 2.0], ticks
    assert curves.training_curves({"b": {**hist, "epoch": [], "loss": []}}).axes[1].get_xlim() == (1.0, 2.0)
    assert curves.training_curves({"b": hist}, epochs=5).axes[1].get_xlim() == (1.0, 5.0)  # the run's epochs
    one = {"epoch": [1], "loss": [1.0], "monitor_epoch": [1], "monitor_miou": [0.3]}  # a 1-epoch run: 0..1
    assert curves.training_curves({"b": one}).axes[1].get_xlim() == (0.0, 1.0)
    assert curves.training_curves({}).axes[0].get_xlim() == (0.0, 1.0)  # nothing to draw yet
