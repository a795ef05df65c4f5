"""Keeping a run's table files in step with its report when notebook 05 runs again.

Evaluation is deterministic (the same models give the same mIoU to the digit), latency is not: a
second measurement on a busy machine can be far noisier than the one the report shows. So, when the
table files already hold the same models measured under the same conditions, every latency
measurement is kept in `kd_comparison_results.json` ("latency" → "measurements") and the quietest
one (smallest worst-row std / mean) is the one shown, in the files and in the notebook alike. A
partial table (some methods not trained yet) never replaces a complete one.
"""
from __future__ import annotations

from pathlib import Path

from .paths import portable
from .table import TABLE_STEM, num, read_table_json, write_table_files

KEEP = 10  # measurements kept per run
_CONDITIONS = ("device", "threads", "dtype", "input_size", "path")


def _noise(rows: dict) -> float:
    """The worst row's relative spread, std / mean, of one measurement {method: [mean, std]}."""
    return max((s / m for m, s in rows.values() if num(m) and num(s) is not None), default=0.0)


def measurement(results: dict) -> dict:
    """This table's latency measurement: {"time", "noise", "rows": {method: [mean ms, std ms]}}."""
    rows = {r["method"]: [r.get("latency_ms"), r.get("latency_std_ms")] for r in results["rows"]}
    return {"time": (results.get("latency") or {}).get("time"), "noise": _noise(rows), "rows": rows}


def same_models(old: dict, new: dict) -> bool:
    """Whether two tables hold the same methods, with the same per-seed mIoU, measured alike."""
    accuracy = {r["method"]: r.get("per_seed_miou") for r in old.get("rows", [])}
    conditions = [(t.get("latency") or {}).get(k) for t in (old, new) for k in _CONDITIONS]
    return accuracy == {r["method"]: r.get("per_seed_miou") for r in new["rows"]} and \
        conditions[:len(_CONDITIONS)] == conditions[len(_CONDITIONS):]


def merge_latency(results: dict, old: dict | None) -> str:
    """Show the quietest latency measurement of these models in `results` (changed in place); returns
    a sentence when an earlier one is shown instead of this session's, else ""."""
    new = measurement(results)
    earlier = (old.get("latency") or {}).get("measurements") or [measurement(old)] if old else []
    history = (earlier if old and same_models(old, results) else []) + [new]
    shown = min(history, key=lambda m: m["noise"])
    results["latency"].update(measurements=history[-KEEP:], shown=shown["time"])
    if shown is new:
        return ""
    for r in results["rows"]:
        r["latency_ms"], r["latency_std_ms"] = shown["rows"].get(r["method"], [None, None])
    return (f"Latency: this session's measurement (std up to {100 * new['noise']:.0f}% of the mean) is noisier than "
            f"the one of {str(shown['time'])[:16].replace('T', ' ')} ({100 * shown['noise']:.0f}%), so the table and "
            f"its files show that one; every measurement is kept in {TABLE_STEM}.json (latency.measurements).")


def _old_table(out_dir: Path) -> dict | None:
    try:
        return read_table_json(out_dir) if (out_dir / f"{TABLE_STEM}.json").is_file() else None
    except ValueError:  # a damaged file is replaced
        return None


def write_results(results: dict, out_dir) -> str:
    """Write the table files unless a partial table would replace a complete one; returns what happened
    (one or two sentences, which notebook 05 prints). Sets results["written"]."""
    out_dir = Path(out_dir)
    old = _old_table(out_dir)
    where = f"{portable(out_dir)}/{TABLE_STEM}.{{txt,md,csv,json}}"
    if results.get("partial") and old is not None and not old.get("partial"):
        results["written"] = False
        return (f"not written: {where} hold a complete table, which a partial one never replaces; the partial "
                "table is shown here only.")
    note = merge_latency(results, old)
    changed = old is None or measurement(old)["rows"] != measurement(results)["rows"] or not same_models(old, results)
    write_table_files(results, out_dir)
    results["written"] = True
    report = out_dir / "report.html"
    stale = (f" The report {portable(report)} shows the earlier table: `python -m helpers run` (it reuses every "
             "finished model) rebuilds it.") if changed and report.is_file() else ""
    return f"written: {where}." + (f" {note}" if note else "") + stale


def save_beside_table(fig, results: dict, path) -> str:
    """Save a figure of the table (e.g. headline.png) only when the table files were written with it."""
    from .viz import save_figure

    if not results.get("written"):
        return f"{portable(path)} left as it is (the table files were not written)"
    save_figure(fig, path)
    return f"saved {portable(path)}"
