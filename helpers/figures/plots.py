"""Charts of data and results: class frequencies, training curves, intervals, per-class bars, the
accuracy/latency trade-off and histograms. Each returns a `matplotlib.figure.Figure` (see viz)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..data.voc import CLASSES, NUM_CLASSES, PALETTE
from .viz import new_figure


def _class_bar_colors(n: int) -> np.ndarray:
    return PALETTE[:n] / 255.0


def class_frequency_chart(pixel_counts, image_counts=None, log: bool = True) -> Figure:
    """Horizontal bars per class in VOC colours: pixels per class (and images containing it).

    pixel_counts, image_counts: length-21 sequences indexed by class id. With `log`, the count
    axis is logarithmic (background dwarfs the rest). Bars are labelled with their share in %.
    """
    pixels = np.asarray(pixel_counts, dtype=np.float64)
    if pixels.shape != (NUM_CLASSES,):
        raise ValueError(f"pixel_counts must have {NUM_CLASSES} entries (one per class), got {pixels.shape}.")
    panels = [(pixels, "pixels")]
    if image_counts is not None:
        panels.append((np.asarray(image_counts, dtype=np.float64), "images containing the class"))
    fig = new_figure((5.2 * len(panels), 6.2))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    y = np.arange(NUM_CLASSES)
    for ax, (counts, xlabel) in zip(axes, panels):
        ax.barh(y, counts, color=_class_bar_colors(NUM_CLASSES), edgecolor="0.3", linewidth=0.5)
        total = counts.sum() if xlabel == "pixels" else None
        for yi, v in zip(y, counts):
            if v > 0:
                text = f"{100 * v / total:.1f}%" if total else f"{int(v)}"
                ax.text(v, yi, " " + text, va="center", fontsize=7)
        if log and (counts > 0).any():
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # (labelled minor ticks collide on a short axis)
        ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
        ax.margins(x=0.15)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, CLASSES)
    axes[0].invert_yaxis()
    fig.suptitle("Class frequency", fontsize=12)
    return fig


def scatter_tradeoff(points: list[dict], title: str | None = None, log_x: bool = False) -> Figure:
    """Accuracy vs latency: one point per model (x = latency ± std, y = mIoU), area ~ parameters.

    points: dicts with name, latency_ms, latency_std, miou, params (count of parameters). The labels
    stand in a column right of the axes, in the order of the points' mIoU, each joined to its point
    by a thin line, so near-equal models (three students of one architecture) never overlap.
    """
    fig = new_figure((7.5, 4.5))
    ax = fig.subplots()
    params = np.array([float(p["params"]) for p in points]) if points else np.zeros(0)
    top = params.max() if params.size and params.max() > 0 else 1.0
    for i, p in enumerate(points):
        ax.errorbar(
            p["latency_ms"], p["miou"], xerr=p.get("latency_std") or 0, fmt="none", ecolor="0.4", capsize=3, zorder=1
        )
        ax.scatter(
            p["latency_ms"],
            p["miou"],
            s=40 + 600 * float(p["params"]) / top,
            color=f"C{i % 10}",
            alpha=0.8,
            edgecolor="0.2",
            zorder=2,
        )
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="latency (ms per image)", ylabel="mIoU", title=title or "Accuracy vs latency")
    ax.margins(x=0.15, y=0.2)
    ax.grid(alpha=0.3)
    order = sorted(range(len(points)), key=lambda i: points[i]["miou"])
    for slot, i in enumerate(order):
        p = points[i]
        y = 0.08 + 0.84 * (slot + 0.5) / len(points)
        ax.annotate(
            f"{p['name']}: {p['miou']:.3f}, {p['latency_ms']:.2f} ms, {float(p['params']) / 1e6:.2f}M",
            (p["latency_ms"], p["miou"]),
            xytext=(1.03, y),
            textcoords="axes fraction",
            va="center",
            fontsize=8,
            color=f"C{i % 10}",
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": f"C{i % 10}", "alpha": 0.5, "linewidth": 0.8},
        )
    return fig


def headline(rows: list[dict], level: str = "95%") -> Figure:
    """The result in one picture: each student's mIoU with its interval (seed-level with several
    seeds), each seed as a dot, the baseline's mean as a dotted line and the teacher as a dashed
    reference line. rows: the table's rows (method, label, miou, miou_ci, per_seed_miou)."""
    students = [r for r in rows if r["method"] != "teacher"]
    teacher = next((r for r in rows if r["method"] == "teacher"), None)
    fig = new_figure((7.5, 0.75 * len(students) + 1.6))
    ax = fig.subplots()
    for y, r in enumerate(reversed(students)):
        low, high = r["miou_ci"]
        color = f"C{len(students) - 1 - y}"  # the methods' colours of every chart: baseline C0, response C1, ...
        ax.errorbar(
            r["miou"],
            y,
            xerr=[[r["miou"] - low], [high - r["miou"]]],
            fmt="o",
            color=color,
            capsize=5,
            markersize=8,
            linewidth=2,
            zorder=3,
        )
        seeds = r.get("per_seed_miou") or []
        ax.scatter(seeds, [y + 0.18] * len(seeds), s=14, color=color, alpha=0.6, zorder=2)
    base = next((r for r in students if r["method"] == "baseline"), None)
    if base:
        ax.axvline(base["miou"], color="0.5", linestyle=":", linewidth=1, label="baseline mean")
    if teacher:
        ax.axvline(teacher["miou"], color="0.2", linestyle="--", linewidth=1.2, label=f"teacher {teacher['miou']:.3f}")
    ax.set_yticks(
        range(len(students)),
        [f"{r['label']}\n{r['miou']:.3f} [{r['miou_ci'][0]:.3f}, {r['miou_ci'][1]:.3f}]" for r in reversed(students)],
    )
    ax.set_ylim(-0.6, len(students) - 0.4)
    ax.set_xlabel(f"mIoU (val), {level} interval; dots: seeds")
    ax.margins(x=0.08)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def class_deltas(class_names, deltas: dict[str, list[float]], reference: str = "baseline") -> Figure:
    """Per-class IoU difference of each method against `reference`: one row per class (names on the
    y axis, legible at any width), one bar per method; classes absent from val are left out."""
    vals = {m: np.asarray(v, dtype=float) for m, v in deltas.items()}
    keep = [i for i in range(len(class_names)) if any(np.isfinite(v[i]) for v in vals.values())]
    fig = new_figure((7.5, 0.26 * len(keep) * max(1, len(vals)) / 1.6 + 1.4))
    ax = fig.subplots()
    if not vals:  # no KD row finished yet: say so instead of an empty frame
        ax.text(
            0.5,
            0.5,
            f"No KD method is finished yet: nothing to compare with {reference}.",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return fig
    height = 0.8 / max(1, len(vals))
    y = np.arange(len(keep))[::-1]
    for j, (m, v) in enumerate(vals.items()):
        ax.barh(y + 0.4 - height * (j + 0.5), np.nan_to_num(v[keep]), height, label=m, color=f"C{j + 1}")
    ax.set_yticks(y, [class_names[i] for i in keep], fontsize=8)
    ax.axvline(0, color="0.2", linewidth=0.8)
    ax.set_xlabel(f"IoU difference vs {reference} (mean over seeds)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


SCORE_BINS = np.linspace(0.0, 1.0, 21)  # per-image scores lie in [0, 1]: one set of bins for every model


def score_histogram(
    scores,
    title: str,
    xlabel: str = "per-image mIoU",
    bins=SCORE_BINS,
    ymax: float | None = None,
    reference: tuple[float, str] | None = None,
) -> Figure:
    """Histogram of scores (NaN dropped) with the mean and median as labelled vertical lines.

    bins: the bin edges; the x axis spans them, so histograms drawn with the same bins and `ymax` (the
    top of the y axis; default: this histogram's own) can be compared panel to panel. reference:
    (value, label) of a dotted line, e.g. the dataset-level mIoU beside the per-image scores.
    """
    s = np.asarray(scores, dtype=float)
    s = s[~np.isnan(s)]
    fig = new_figure((6, 4))
    ax = fig.subplots()
    if s.size:
        ax.hist(s, bins=bins, color="C0", alpha=0.75, edgecolor="white")
        ax.axvline(s.mean(), color="C3", linestyle="-", linewidth=2, label=f"mean = {s.mean():.3f}")
        ax.axvline(np.median(s), color="C2", linestyle="--", linewidth=2, label=f"median = {np.median(s):.3f}")
    else:
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
    if reference is not None:
        ax.axvline(reference[0], color="0.2", linestyle=":", linewidth=2, label=f"{reference[1]} = {reference[0]:.3f}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, loc="best")
    ax.set_xlim(bins[0], bins[-1])
    if ymax is not None:
        ax.set_ylim(0, ymax)
    ax.set(xlabel=xlabel, ylabel="images", title=f"{title} (n = {s.size})")
    ax.grid(axis="y", alpha=0.3)
    return fig


def shared_ymax(score_lists, bins=SCORE_BINS) -> float:
    """The y-axis top that fits the tallest bar of every score list (NaN dropped), with room for the legend."""
    counts = [
        np.histogram(s[~np.isnan(s)], bins=bins)[0].max(initial=0)
        for s in (np.asarray(x, dtype=float) for x in score_lists)
    ]
    return 1.3 * max(max(counts, default=0), 1)


def count_histogram(counts, xlabel: str) -> Figure:
    """Bar chart of how many images have each integer count (e.g. objects per image)."""
    c = np.asarray(counts, dtype=int)
    fig = new_figure((6, 3.2))
    ax = fig.subplots()
    values, freq = np.unique(c, return_counts=True)
    ax.bar(values, freq, color="C0", alpha=0.8)
    ax.set(xlabel=xlabel, ylabel="images", title=f"{xlabel} (mean {c.mean():.2f})" if c.size else xlabel)
    ax.grid(axis="y", alpha=0.3)
    return fig
