"""Every run at a glance: its settings (preset + what differs), what is finished per method (seeds),
the teacher, and where its report is. What `python -m helpers runs` prints and notebook 01 shows."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..config.knobs import Config
from ..config.study import RECORD, current_run, describe, from_settings, read_record
from ..core import paths
from ..core.checkpoint import load
from ..core.errors import UserError
from ..models import store
from ..models.teacher import trains_here


def _finished(path: Path) -> str:
    """ "finished", "epoch 3 of 10" or "" (not there) for one checkpoint."""
    if not path.is_file():
        return ""
    try:
        state = load(path)
    except UserError:
        return "unreadable"
    return "finished" if state.get("complete") else f"epoch {state.get('epoch')} of {state.get('epochs')}"


def run_status(cfg: Config) -> dict:
    """{"teacher": status, method: (finished seeds, seeds), "report": path or None} of one run."""
    out = {
        "teacher": (_finished(store.checkpoint_path(cfg, "teacher")) or "not trained")
        if trains_here(cfg)
        else "given weights"
    }
    for method in cfg.students:
        states = [_finished(store.checkpoint_path(cfg, method, s)) for s in store.seeds_of(cfg)]
        out[method] = (sum(st == "finished" for st in states), len(states))
    report = store.reports_dir(cfg) / "report.html"
    out["report"] = paths.portable(report) if report.is_file() else None
    return out


def overview(checkpoints_dir=Config.checkpoints_dir) -> str:
    """Every run under `checkpoints_dir`: its settings (preset + what differs), what is finished per
    method (seeds), the teacher, and where its report is; the current run marked with *. What
    `python -m helpers runs` prints and notebook 01 shows."""
    folder = paths.resolve(checkpoints_dir)
    current = (current_run(folder) or {}).get("run_name")
    names_ = sorted(p.parent.name for p in folder.glob(f"*/{RECORD}"))
    if not names_:
        return f"No runs under {paths.portable(folder)} yet: notebook 01 (or `python -m helpers run`) starts one."
    now = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    lines = [
        f"Runs under {paths.portable(folder)} as they stand at {now} (* = the current run, followed by "
        "notebooks left at their defaults):"
    ]
    for name in names_:
        rec = read_record(folder, name) or {}
        try:
            cfg = from_settings(rec.get("settings") or {})
        except UserError as e:
            lines.append(f"  {name}: its settings no longer load ({e})")
            continue
        st = run_status(cfg)
        done = " · ".join(f"{m} {st[m][0]}/{st[m][1]}" for m in st if isinstance(st[m], tuple))
        lines.append(
            f"{'*' if name == current else ' '} {name}: {describe(cfg, rec.get('preset'))}\n"
            f"    teacher {st['teacher']} · {done} seeds finished · report: {st['report'] or 'not built yet'}"
        )
    return "\n".join(lines)
