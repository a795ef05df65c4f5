"""Saying what long work is doing: one line for work that is reused, and a per-epoch view of training
(a table updated in place in JupyterLab, fastai-style; one plain line per epoch under papermill, in the
terminal and in logs)."""

from __future__ import annotations

import html
import sys


def span(values) -> str:
    """Seeds as a reader writes them: "0", "0–2" for a run of consecutive ones, else "0, 2, 5"."""
    values = sorted(values)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(map(str, values))


def in_jupyter() -> bool:
    """Whether this code runs in a Jupyter kernel (JupyterLab, papermill), not a terminal or a script."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return bool(shell) and type(shell).__name__ == "ZMQInteractiveShell"


def epoch_row(history: dict, i: int = -1) -> dict:
    """Epoch `i` of a training history as {column: text}: epoch, loss parts, lr, monitor mIoU, time."""
    epoch = history["epoch"][i]
    row = {"epoch": str(epoch)}
    for k in ["loss"] + [k for k in history if k not in _NOT_PARTS]:
        if len(history.get(k) or []) == len(history["epoch"]):
            row[k] = f"{history[k][i]:.4f}"
    monitor = dict(zip(history.get("monitor_epoch", []), history.get("monitor_miou", [])))
    row["monitor mIoU"] = f"{monitor[epoch]:.4f}" if epoch in monitor else ""
    row["time"] = f"{history['time_s'][i]:.1f} s"
    return row


_NOT_PARTS = {"epoch", "loss", "lr", "time_s", "monitor_epoch", "monitor_miou"}


class EpochView:
    """What a training shows after each epoch. `live=True` (JupyterLab; `cfg.interactive`): one HTML
    table, redrawn in place as rows arrive; otherwise one line per epoch, prefixed with the method and
    seed ("baseline seed 0 epoch 3/10 loss=0.4121 ce=0.4121 monitor_miou=0.6012 time=4.2s")."""

    def __init__(self, title: str, epochs: int, live: bool):
        self.title, self.epochs, self.rows, self.handle = title, epochs, [], None
        self.live = live and in_jupyter()

    def update(self, history: dict) -> None:
        row = epoch_row(history)
        self.rows.append(row)
        if not self.live:
            parts = " ".join(
                f"{k.replace(' ', '_').replace('mIoU', 'miou')}={v}"
                for k, v in row.items()
                if k not in ("epoch", "time") and v
            )
            print(
                f"{self.title} epoch {row['epoch']}/{self.epochs} {parts} time={row['time'].replace(' ', '')}",
                flush=True,
            )
            return
        from IPython.display import HTML, display

        if self.handle is None:
            self.handle = display(HTML(self.html()), display_id=True)
        else:
            self.handle.update(HTML(self.html()))

    def html(self) -> str:
        cols = list(dict.fromkeys(k for r in self.rows for k in r))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in self.rows
        )
        return (
            f"<b>{html.escape(self.title)}</b>: epoch {self.rows[-1]['epoch']} of {self.epochs}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
