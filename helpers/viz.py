"""Pictures of masks and plots of results: palette colouring, 4-panel figures, grids and charts.

Every plotting function returns a `matplotlib.figure.Figure` and leaves showing or saving to the
caller: end a notebook cell with the figure to see it inline, or call `save_figure(fig, path)`.
Figures are made through pyplot (so Jupyter's inline display is set up) and then closed in pyplot
at once, with a fresh Agg canvas: a figure shows once when a cell returns it, never twice, and a
loop that saves hundreds of figures keeps none of them open. No backend is chosen here.

Masks are (H, W) integer class ids (numpy or torch) with 0 = background and 255 = void; they are
coloured with the VOC palette and always drawn with `interpolation="nearest"`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .voc import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VOID_COLOR = tuple(int(v) for v in PALETTE[IGNORE_INDEX])  # (224, 224, 192), the VOC cream
# Class colours use channel values in {0, 64, 128, 192}: the cream (224 in R and G) can't clash.
assert all(tuple(PALETTE[c]) != VOID_COLOR for c in range(NUM_CLASSES))

LOSS_STYLES = {"loss": "-", "ce": "--", "kd": ":", "feat": "-."}  # one line style per loss part
MASK_KW = {"interpolation": "nearest"}


# ----------------------------------------------------------------------------- arrays

def _as_labels(labels) -> np.ndarray:
    """(H, W) or (1, H, W) class ids (numpy/torch) -> (H, W) int64 array, checked."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"Expected a (H, W) mask of class ids, got shape {arr.shape}.")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | ((arr >= NUM_CLASSES) & (arr != IGNORE_INDEX))
    if bad.any():
        raise ValueError(f"Mask holds values {np.unique(arr[bad])[:5].tolist()} outside 0..{NUM_CLASSES - 1} "
                         f"and {IGNORE_INDEX} (void); pass class ids, not palette colours or logits.")
    return arr


def colorize(labels) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 VOC colours; void (255) is the cream (224, 224, 192)."""
    return PALETTE[_as_labels(labels)]


def denormalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Any image we hand around -> (H, W, 3) uint8 for display.

    Accepts a (3, H, W) or (1, 3, H, W) float tensor normalised with ImageNet mean/std (undone
    and clipped), a (3, H, W) uint8 tensor, a PIL image, or a (H, W, 3) uint8 array (returned as is).
    """
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    if hasattr(image, "detach"):  # torch
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"Expected a (3, H, W) image tensor, got shape {tuple(t.shape)}.")
        if t.is_floating_point():
            m = t.new_tensor(mean).view(3, 1, 1)
            s = t.new_tensor(std).view(3, 1, 1)
            t = ((t * s + m).clamp(0, 1) * 255).round()
        return t.permute(1, 2, 0).numpy().astype(np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"Expected a (H, W, 3) uint8 image, a PIL image or a normalised (3, H, W) tensor; "
                         f"got {arr.dtype} array of shape {arr.shape}.")
    return arr


def overlay(image, labels, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 image with class colours blended in at `alpha`; background and void untinted."""
    img = denormalize(image)
    lab = _as_labels(labels)
    if img.shape[:2] != lab.shape:
        raise ValueError(f"Image is {img.shape[:2]} but mask is {lab.shape}; they must be the same size.")
    out = img.copy()
    fg = (lab != 0) & (lab != IGNORE_INDEX)
    blend = (1 - alpha) * img[fg].astype(np.float32) + alpha * PALETTE[lab[fg]].astype(np.float32)
    out[fg] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return out


def present_classes(*masks) -> list[int]:
    """Sorted class ids found in any of the masks (void, if present, comes last)."""
    ids = set()
    for m in masks:
        ids.update(np.unique(_as_labels(m)).tolist())
    return sorted(ids, key=lambda c: (c == IGNORE_INDEX, c))


# ----------------------------------------------------------------------------- figure plumbing

def _new_figure(figsize, dpi: int = 100) -> Figure:
    """A constrained-layout Figure, made by pyplot (sets up inline display) but not kept by it."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize, dpi=dpi, layout="constrained")
    plt.close(fig)  # pyplot forgets it: no double display in Jupyter, no pile-up in loops
    FigureCanvasAgg(fig)  # a plain canvas that draws, saves and offers buffer_rgba() anywhere
    return fig


def _image_axis(ax, title: str | None = None, fontsize: float = 10) -> None:
    """No ticks, no frame (unlike axis('off'), a y label still shows)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=fontsize)


def legend_handles(class_ids) -> list[Patch]:
    """One coloured patch per class id (255 -> "void"), in the order given."""
    handles = []
    for c in class_ids:
        c = int(c)
        name = "void" if c == IGNORE_INDEX else CLASSES[c]
        handles.append(Patch(facecolor=PALETTE[c] / 255.0, edgecolor="0.35", linewidth=0.6, label=name))
    return handles


def _class_legend(fig: Figure, class_ids, max_cols: int = 8) -> None:
    """A shared legend of classes under the axes (constrained layout makes room for it)."""
    if not class_ids:
        return
    fig.legend(handles=legend_handles(class_ids), loc="outside lower center",
               ncol=min(len(class_ids), max_cols), frameon=False, fontsize=9,
               handlelength=1.4, columnspacing=1.2)


def save_figure(fig: Figure, path, dpi: int = 100) -> Path:
    """Write `fig` to `path` (parents made; format from the suffix), trimmed tight; then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)  # no-op for our figures, frees a caller's pyplot figure
    return path


# ----------------------------------------------------------------------------- segmentation figures

def four_panel(image, gt, pred, title: str, alpha: float = 0.5) -> Figure:
    """Image | Ground truth | Prediction | Overlay (prediction on image), with a class legend.

    image: anything `denormalize` takes, (H, W) after conversion; gt, pred: (H, W) class ids.
    `title` is the caller's text (e.g. id and per-image mIoU) and goes on top.
    """
    img, gt, pred = denormalize(image), _as_labels(gt), _as_labels(pred)
    if not (img.shape[:2] == gt.shape == pred.shape):
        raise ValueError(f"Sizes differ: image {img.shape[:2]}, gt {gt.shape}, prediction {pred.shape}.")
    fig = _new_figure((13, 3.8))
    axes = fig.subplots(1, 4)
    panels = [(img, "Image"), (colorize(gt), "Ground truth"), (colorize(pred), "Prediction"),
              (overlay(img, pred, alpha), "Overlay")]
    for ax, (picture, name) in zip(axes, panels):
        ax.imshow(picture, **MASK_KW)
        _image_axis(ax, name)
    fig.suptitle(title, fontsize=11)
    _class_legend(fig, present_classes(gt, pred))
    return fig


def progression_grid(rows: list[dict], columns: list[str], title: str | None = None) -> Figure:
    """One row per image: image | ground truth | one prediction per column, plus a class legend.

    rows: dicts {"image": (H, W, 3) uint8 (or anything `denormalize` takes), "gt": (H, W) ids,
    "preds": {column: (H, W) ids}, "label": row caption, optional "scores": {column: float}}
    (a score is added to that cell's title). columns: the prediction columns, in order.
    """
    if not rows:
        raise ValueError("progression_grid needs at least one row.")
    ncols = 2 + len(columns)
    h, w = _as_labels(rows[0]["gt"]).shape
    row_height = 2.3 * min(max(h / w, 0.5), 2.0) + 0.4  # cell width 2.3 in; room for the cell titles
    fig = _new_figure((2.3 * ncols, row_height * len(rows) + 0.9))
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    ids = []
    for r, row in enumerate(rows):
        missing = [c for c in columns if c not in row["preds"]]
        if missing:
            raise ValueError(f"Row {r} ({row.get('label', '')}) has no prediction for {missing}.")
        masks = [_as_labels(row["gt"])] + [_as_labels(row["preds"][c]) for c in columns]
        ids.extend(present_classes(*masks))
        scores = row.get("scores") or {}
        cells = [(denormalize(row["image"]), "Image"), (colorize(masks[0]), "Ground truth")]
        for c, m in zip(columns, masks[1:]):
            name = f"{c} · {scores[c]:.2f}" if c in scores else c
            cells.append((colorize(m), name))
        for ax, (picture, name) in zip(axes[r], cells):
            ax.imshow(picture, **MASK_KW)
            _image_axis(ax, name, fontsize=9)
        axes[r, 0].set_ylabel(row.get("label", ""), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=12)
    _class_legend(fig, sorted(set(ids), key=lambda c: (c == IGNORE_INDEX, c)))
    return fig


def sample_grid(samples, ncols: int = 4, alpha: float = 0.5) -> Figure:
    """Dataset samples as pairs image | mask overlay, `ncols` pairs per row, with a class legend.

    samples: list of (id, image, labels) with image (H, W, 3) uint8 (or anything `denormalize`
    takes) and labels (H, W) class ids.
    """
    if not samples:
        raise ValueError("sample_grid needs at least one sample.")
    ncols = max(1, min(ncols, len(samples)))
    nrows = math.ceil(len(samples) / ncols)
    h, w = _as_labels(samples[0][2]).shape
    fig = _new_figure((3.6 * ncols, (1.8 * min(max(h / w, 0.5), 2.0) + 0.35) * nrows + 0.8))
    axes = fig.subplots(nrows, 2 * ncols, squeeze=False)
    ids = []
    for i, (sid, image, labels) in enumerate(samples):
        img, lab = denormalize(image), _as_labels(labels)
        ids.extend(present_classes(lab))
        ax_img, ax_ov = axes[i // ncols, 2 * (i % ncols)], axes[i // ncols, 2 * (i % ncols) + 1]
        ax_img.imshow(img)
        _image_axis(ax_img, str(sid), fontsize=9)
        ax_ov.imshow(overlay(img, lab, alpha), **MASK_KW)
        _image_axis(ax_ov, "mask overlay", fontsize=9)
    for ax in axes.flat[2 * len(samples):]:
        ax.set_axis_off()
    _class_legend(fig, sorted(set(ids), key=lambda c: (c == IGNORE_INDEX, c)))
    return fig


# ----------------------------------------------------------------------------- data and result charts

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
    fig = _new_figure((5.2 * len(panels), 6.2))
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
        ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
        ax.margins(x=0.15)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, CLASSES)
    axes[0].invert_yaxis()
    fig.suptitle("Class frequency", fontsize=12)
    return fig


def _series(hist: dict, key: str) -> list:
    """hist[key] as a list ([] when missing or None); None entries become NaN (a gap)."""
    values = hist.get(key)
    return [] if values is None else [np.nan if v is None else float(v) for v in values]


def training_curves(histories: dict[str, dict], parts=tuple(LOSS_STYLES), log_loss: bool = False) -> Figure:
    """Loss parts (one colour per method, one line style per part) and monitor mIoU per epoch.

    histories: {method: {"epoch": [...], "loss": [...], "ce": [...], "kd"/"feat": [...] (optional),
    "monitor_epoch": [...], "monitor_miou": [...]}}; monitor values are drawn at their monitor_epoch;
    missing or empty parts are skipped, None plots as a gap.
    """
    fig = _new_figure((12, 4.2))
    ax_loss, ax_miou = fig.subplots(1, 2)
    colors = [f"C{i}" for i in range(10)]
    used_parts = []
    for i, (method, hist) in enumerate(histories.items()):
        color = colors[i % 10]
        for part in parts:
            values = _series(hist, part)
            if not values:
                continue
            epochs = _series(hist, "epoch") or list(range(1, len(values) + 1))
            ax_loss.plot(epochs[:len(values)], values, color=color,
                         linestyle=LOSS_STYLES.get(part, "-"), linewidth=1.5)
            used_parts.append(part)
        miou = _series(hist, "monitor_miou")
        if miou:
            epochs = _series(hist, "monitor_epoch") or list(range(1, len(miou) + 1))  # evaluated epochs
            ax_miou.plot(epochs[:len(miou)], miou, color=color, marker="o",
                         markersize=3, label=method)
    method_handles = [Line2D([], [], color=colors[i % 10], label=m) for i, m in enumerate(histories)]
    part_handles = [Line2D([], [], color="0.2", linestyle=LOSS_STYLES.get(p, "-"), label=p)
                    for p in parts if p in used_parts]
    if method_handles:
        first = ax_loss.legend(handles=method_handles, loc="upper right", fontsize=8, title="method")
        ax_loss.add_artist(first)
    if part_handles:
        ax_loss.legend(handles=part_handles, loc="upper center", fontsize=8, title="part")
    if log_loss:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Losses")
    ax_miou.set(xlabel="epoch", ylabel="mIoU", title="Monitor mIoU")
    if ax_miou.lines:
        ax_miou.legend(fontsize=8)
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def bar_with_ci(names, values, lows, highs, ylabel: str, title: str | None = None) -> Figure:
    """One bar per name with an asymmetric error bar from low to high (e.g. a bootstrap CI)."""
    values, lows, highs = (np.asarray(a, dtype=float) for a in (values, lows, highs))
    if not (len(names) == len(values) == len(lows) == len(highs)):
        raise ValueError("names, values, lows and highs must have the same length.")
    yerr = np.clip(np.stack([values - lows, highs - values]), 0, None)
    fig = _new_figure((max(4.5, 1.3 * len(names) + 1.5), 4))
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x, values, yerr=yerr, capsize=5, color=[f"C{i % 10}" for i in x], edgecolor="0.3",
           error_kw={"elinewidth": 1.2})
    for xi, v, hi in zip(x, values, highs):
        ax.text(xi, hi, f"{v:.3f}\n", ha="center", va="bottom", fontsize=8, linespacing=0.8)
    ax.set_xticks(x, names)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


def grouped_bars(class_names, series: dict[str, list[float]], ylabel: str, title: str | None = None) -> Figure:
    """Per-class values (e.g. IoU) as groups of bars, one bar per method; NaN values are skipped."""
    n, k = len(class_names), max(1, len(series))
    fig = _new_figure((max(8, 0.26 * n * k + 2), 4.2))
    ax = fig.subplots()
    x = np.arange(n)
    width = 0.8 / k
    for j, (method, vals) in enumerate(series.items()):
        vals = np.asarray(vals, dtype=float)
        if vals.shape != (n,):
            raise ValueError(f"Series '{method}' has {vals.size} values for {n} classes.")
        keep = ~np.isnan(vals)
        ax.bar(x[keep] - 0.4 + width * (j + 0.5), vals[keep], width, label=method, color=f"C{j % 10}")
    ax.set_xticks(x, class_names, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_xlim(-0.6, n - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(k, 4))
    if title:
        ax.set_title(title)
    return fig


def scatter_tradeoff(points: list[dict], title: str | None = None, log_x: bool = False) -> Figure:
    """Accuracy vs latency: one point per model (x = latency ± std, y = mIoU), area ~ parameters.

    points: dicts with name, latency_ms, latency_std, miou, params (count of parameters).
    """
    fig = _new_figure((6.5, 4.5))
    ax = fig.subplots()
    params = np.array([float(p["params"]) for p in points]) if points else np.zeros(0)
    top = params.max() if params.size and params.max() > 0 else 1.0
    for i, p in enumerate(points):
        size = 40 + 600 * float(p["params"]) / top
        ax.errorbar(p["latency_ms"], p["miou"], xerr=p.get("latency_std") or 0, fmt="none",
                    ecolor="0.4", capsize=3, zorder=1)
        ax.scatter(p["latency_ms"], p["miou"], s=size, color=f"C{i % 10}", alpha=0.8,
                   edgecolor="0.2", zorder=2)
        ax.annotate(f"{p['name']}\n{float(p['params']) / 1e6:.2f}M params", (p["latency_ms"], p["miou"]),
                    xytext=(8, 8), textcoords="offset points", fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="latency (ms per image)", ylabel="mIoU", title=title or "Accuracy vs latency")
    ax.margins(x=0.25, y=0.2)
    ax.grid(alpha=0.3)
    return fig


def score_histogram(scores, title: str, xlabel: str = "per-image mIoU") -> Figure:
    """Histogram of scores (NaN dropped) with the mean and median as labelled vertical lines."""
    s = np.asarray(scores, dtype=float)
    s = s[~np.isnan(s)]
    fig = _new_figure((6, 4))
    ax = fig.subplots()
    if s.size:
        ax.hist(s, bins=min(30, max(5, s.size // 4)), color="C0", alpha=0.75, edgecolor="white")
        ax.axvline(s.mean(), color="C3", linestyle="-", linewidth=2, label=f"mean = {s.mean():.3f}")
        ax.axvline(np.median(s), color="C2", linestyle="--", linewidth=2,
                   label=f"median = {np.median(s):.3f}")
        ax.legend(fontsize=9)
    else:
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel=xlabel, ylabel="images", title=f"{title} (n = {s.size})")
    ax.grid(axis="y", alpha=0.3)
    return fig


def count_histogram(counts, xlabel: str) -> Figure:
    """Bar chart of how many images have each integer count (e.g. objects per image)."""
    c = np.asarray(counts, dtype=int)
    fig = _new_figure((6, 3.2))
    ax = fig.subplots()
    values, freq = np.unique(c, return_counts=True)
    ax.bar(values, freq, color="C0", alpha=0.8)
    ax.set(xlabel=xlabel, ylabel="images", title=f"{xlabel} (mean {c.mean():.2f})" if c.size else xlabel)
    ax.grid(axis="y", alpha=0.3)
    return fig
