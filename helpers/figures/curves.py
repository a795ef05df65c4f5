"""Training curves: the loss parts of every method (one colour per method, one line style per part) and the
monitor mIoU, per epoch, on the run's epoch axis."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .viz import new_figure


def _series(hist: dict, key: str) -> list:
    """hist[key] as a list ([] when missing or None); None entries become NaN (a gap)."""
    values = hist.get(key)
    return [] if values is None else [np.nan if v is None else float(v) for v in values]


def _epoch_axis(histories: dict[str, dict], epochs: int | None = None) -> tuple[int, int]:
    """(first, last) epoch of the x axes: from 1 (0 if some history holds an epoch 0) to `epochs`, or
    else the largest epoch any history (losses or monitor) holds; never a single point."""
    seen = [e for h in histories.values() for k in ("epoch", "monitor_epoch") for e in _series(h, k) if np.isfinite(e)]
    last = int(epochs) if epochs is not None else int(np.ceil(max(seen, default=1)))
    first = 0 if (seen and min(seen) < 1) or last <= 1 else 1
    return first, max(last, first + 1)


LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))  # one per loss part, in order
_NOT_PARTS = {"epoch", "lr", "time_s", "monitor_epoch", "monitor_miou"}


def loss_parts(histories: dict[str, dict]) -> list[str]:
    """The loss parts the histories log: "loss", "ce", then the KD terms' parts in order of appearance."""
    found = dict.fromkeys(["loss", "ce"])
    for hist in histories.values():
        found.update(dict.fromkeys(k for k in hist if k not in _NOT_PARTS))
    return list(found)


def training_curves(
    histories: dict[str, dict], parts=None, log_loss: bool = False, epochs: int | None = None
) -> Figure:
    """Loss parts (one colour per method, one line style per part) and monitor mIoU per epoch.

    histories: {method: {"epoch": [...], "loss": [...], "ce": [...], the KD term's parts (optional),
    "monitor_epoch": [...], "monitor_miou": [...]}}; `parts` (default: every loss part in them, "loss" and
    "ce" first) get one line style each; monitor values are drawn at their monitor_epoch;
    missing or empty parts are skipped, None plots as a gap. Both x axes span the run, from epoch 0 or
    1 to `epochs` (default: the last epoch in the histories), with integer ticks, so a monitor measured
    once still sits on the run's epoch axis.
    """
    span = _epoch_axis(histories, epochs)
    parts = parts or loss_parts(histories)
    styles = {p: LINE_STYLES[i % len(LINE_STYLES)] for i, p in enumerate(parts)}
    fig = new_figure((12, 4.2))
    ax_loss, ax_miou = fig.subplots(1, 2)
    used = set()
    for i, (method, hist) in enumerate(histories.items()):
        used |= _draw(ax_loss, ax_miou, method, hist, parts, styles, f"C{i % 10}")
    _legends(ax_loss, ax_miou, list(histories), [p for p in parts if p in used], styles)
    if log_loss:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Losses")
    ax_miou.set(xlabel="epoch", ylabel="mIoU", title="Monitor mIoU")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.set_xlim(*span)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _draw(ax_loss, ax_miou, method: str, hist: dict, parts, styles: dict, color) -> set:
    """One method's loss parts and monitor mIoU; returns the parts it drew."""
    drawn = set()
    for part in parts:
        values = _series(hist, part)
        if not values:
            continue
        epochs = _series(hist, "epoch") or list(range(1, len(values) + 1))
        ax_loss.plot(
            epochs[: len(values)],
            values,
            color=color,
            linestyle=styles[part],
            linewidth=1.5,
            marker="o" if len(values) == 1 else None,
            markersize=3,
            clip_on=False,
        )
        drawn.add(part)
    miou = _series(hist, "monitor_miou")
    if miou:  # at the evaluated epochs (a point on the last epoch stays whole: clip_on=False)
        epochs = _series(hist, "monitor_epoch") or list(range(1, len(miou) + 1))
        ax_miou.plot(epochs[: len(miou)], miou, color=color, marker="o", markersize=3, label=method, clip_on=False)
    return drawn


def _legends(ax_loss, ax_miou, methods: list, parts: list, styles: dict) -> None:
    if methods:
        handles = [Line2D([], [], color=f"C{i % 10}", label=m) for i, m in enumerate(methods)]
        ax_loss.add_artist(ax_loss.legend(handles=handles, loc="upper right", fontsize=8, title="method"))
    if parts:
        handles = [Line2D([], [], color="0.2", linestyle=styles[p], label=p) for p in parts]
        ax_loss.legend(handles=handles, loc="upper center", fontsize=8, title="part")
    if ax_miou.lines:
        ax_miou.legend(fontsize=8)
