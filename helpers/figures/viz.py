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
from matplotlib.patches import Patch

from ..data.voc import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VOID_COLOR = tuple(int(v) for v in PALETTE[IGNORE_INDEX])  # (224, 224, 192), the VOC cream
# Class colours use channel values in {0, 64, 128, 192}: the cream (224 in R and G) can't clash.
assert all(tuple(PALETTE[c]) != VOID_COLOR for c in range(NUM_CLASSES))

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
        raise ValueError(
            f"Mask holds values {np.unique(arr[bad])[:5].tolist()} outside 0..{NUM_CLASSES - 1} "
            f"and {IGNORE_INDEX} (void); pass class ids, not palette colours or logits."
        )
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
        raise ValueError(
            f"Expected a (H, W, 3) uint8 image, a PIL image or a normalised (3, H, W) tensor; "
            f"got {arr.dtype} array of shape {arr.shape}."
        )
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


def new_figure(figsize, dpi: int = 100) -> Figure:
    """A constrained-layout Figure, made by pyplot (sets up inline display) but not kept by it."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize, dpi=dpi, layout="constrained")
    plt.close(fig)  # pyplot forgets it: no double display in Jupyter, no pile-up in loops
    FigureCanvasAgg(fig)  # a plain canvas that draws, saves and offers buffer_rgba() anywhere
    return fig


def image_axis(ax, title: str | None = None, fontsize: float = 10) -> None:
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
    fig.legend(
        handles=legend_handles(class_ids),
        loc="outside lower center",
        ncol=min(len(class_ids), max_cols),
        frameon=False,
        fontsize=9,
        handlelength=1.4,
        columnspacing=1.2,
    )


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
    fig = new_figure((13, 3.8))
    axes = fig.subplots(1, 4)
    panels = [
        (img, "Image"),
        (colorize(gt), "Ground truth"),
        (colorize(pred), "Prediction"),
        (overlay(img, pred, alpha), "Overlay"),
    ]
    for ax, (picture, name) in zip(axes, panels):
        ax.imshow(picture, **MASK_KW)
        image_axis(ax, name)
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
    fig = new_figure((2.3 * ncols, row_height * len(rows) + 0.9))
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
            image_axis(ax, name, fontsize=9)
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
    fig = new_figure((3.6 * ncols, (1.8 * min(max(h / w, 0.5), 2.0) + 0.35) * nrows + 0.8))
    axes = fig.subplots(nrows, 2 * ncols, squeeze=False)
    ids = []
    for i, (sid, image, labels) in enumerate(samples):
        img, lab = denormalize(image), _as_labels(labels)
        ids.extend(present_classes(lab))
        ax_img, ax_ov = axes[i // ncols, 2 * (i % ncols)], axes[i // ncols, 2 * (i % ncols) + 1]
        ax_img.imshow(img)
        image_axis(ax_img, str(sid), fontsize=9)
        ax_ov.imshow(overlay(img, lab, alpha), **MASK_KW)
        image_axis(ax_ov, "mask overlay", fontsize=9)
    for ax in axes.flat[2 * len(samples) :]:
        ax.set_axis_off()
    _class_legend(fig, sorted(set(ids), key=lambda c: (c == IGNORE_INDEX, c)))
    return fig


# ----------------------------------------------------------------------------- data and result charts
