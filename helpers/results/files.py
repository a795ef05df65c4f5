"""The table files, kd_comparison_results.{txt,md,csv,json}: written from one `results` dict
(`write_table_files`, atomically), read back (`read_table_json`), and kept in step with the report when
notebook 05 runs again (`write_results`).

Evaluation is deterministic (the same models give the same mIoU to the digit), latency is not: a
second measurement on a busy machine can be far noisier than the one the report shows. So, when the
table files already hold the same models measured under the same conditions, every latency
measurement is kept in `kd_comparison_results.json` ("latency" → "measurements") and the quietest
one (smallest mean std / mean over the rows) is the one shown, in the files and in the notebook alike. A
partial table (some methods not trained yet) never replaces a complete one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..core.checkpoint import write_text_atomic
from ..core.errors import UserError
from ..core.paths import portable
from .rows import fmt, num, ordered_rows, significant
from .table import CSV_FIELDS, TABLE_STEM, table_markdown, table_text


def _csv_list(values) -> str | None:
    """Per-seed numbers in one CSV cell, space-separated ("0.581234 0.590012"); None when absent."""
    return " ".join(fmt(v, ".6f") for v in values) if values else None


def _csv_rows(results: dict) -> tuple[list[str], list[dict]]:
    classes = []
    for r in results["rows"]:
        classes += [c for c in (r.get("iou_per_class") or {}) if c not in classes]
    fields = CSV_FIELDS + [f"iou_{c}" for c in classes]
    out = []
    for r in ordered_rows(results):
        d = r.get("diff_vs_baseline") or {}
        rec = {k: r.get(k) for k in CSV_FIELDS if k in r and not isinstance(r.get(k), (dict, list))}
        b = r.get("boundary_diff_vs_baseline") or {}
        rec.update(boundary_diff=b.get("diff"), boundary_low=b.get("low"), boundary_high=b.get("high"))
        rec.update(
            diff_vs_baseline=d.get("diff"),
            diff_low=d.get("low"),
            diff_high=d.get("high"),
            diff_significant=significant(d) if d else None,
            diff_method=d.get("method"),
            diff_per_seed=_csv_list(d.get("per_seed")),
            per_seed_miou=_csv_list(r.get("per_seed_miou")),
        )
        rec.update({f"iou_{c}": v for c, v in (r.get("iou_per_class") or {}).items()})
        out.append(
            {k: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for k, v in rec.items()}
        )
    return fields, out


def _jsonable(obj):
    """results -> plain JSON types; NaN/inf -> None, numpy/torch scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(obj.tolist())
    return str(obj)


def write_table_files(results: dict, out_dir) -> dict[str, Path]:
    """Write kd_comparison_results.{txt,md,csv,json} into out_dir; returns {"txt": path, ...}.

    results = {"rows": [{"method": "baseline"|"response"|"feature"|"teacher", "label", "miou",
    "miou_std" (std over seeds, or None), "n_seeds", "pixel_acc", "iou_per_class": {class: IoU|None},
    "params", "params_str", "gflops", "latency_ms", "latency_std_ms", "arch",
    "diff_vs_baseline": None | {"diff", "low", "high", "significant"}}, ...],
    "latency": {"device", "threads", "dtype", "input_size", "path"}, "protocol": str, "run": str}.
    The .json is `results` itself with NaN written as null.
    """
    ordered_rows(results)  # validates
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{TABLE_STEM}.{ext}" for ext in ("txt", "md", "csv", "json")}
    write_text_atomic(paths["txt"], table_text(results))
    write_text_atomic(paths["md"], table_markdown(results))
    fields, recs = _csv_rows(results)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(recs)
    write_text_atomic(paths["csv"], buf.getvalue())
    write_text_atomic(paths["json"], json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n")
    return paths


def read_table_json(path) -> dict:
    """Read kd_comparison_results.json (path to the file, or to the run folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{TABLE_STEM}.json"
    if not path.is_file():
        raise UserError(
            f"{path} not found: run notebooks/05_compare.ipynb (it writes the table files) for this run first."
        )
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- kept in step with the report
KEEP = 10  # measurements kept per run
_CONDITIONS = ("device", "threads", "dtype", "input_size", "path")


def _noise(rows: dict) -> float:
    """The mean relative spread, std / mean, over the rows of one measurement {method: [mean, std]}: every
    model counts (the worst row alone let one quiet teacher row call a noisier measurement quieter)."""
    spreads = [s / m for m, s in rows.values() if num(m) and num(s) is not None]
    return sum(spreads) / len(spreads) if spreads else 0.0


def measurement(results: dict) -> dict:
    """This table's latency measurement: {"time", "noise", "rows": {method: [mean ms, std ms]}}."""
    rows = {r["method"]: [r.get("latency_ms"), r.get("latency_std_ms")] for r in results["rows"]}
    return {"time": (results.get("latency") or {}).get("time"), "noise": _noise(rows), "rows": rows}


def same_models(old: dict, new: dict) -> bool:
    """Whether two tables hold the same methods, with the same per-seed mIoU, measured alike."""
    accuracy = {r["method"]: r.get("per_seed_miou") for r in old.get("rows", [])}
    conditions = [(t.get("latency") or {}).get(k) for t in (old, new) for k in _CONDITIONS]
    return (
        accuracy == {r["method"]: r.get("per_seed_miou") for r in new["rows"]}
        and conditions[: len(_CONDITIONS)] == conditions[len(_CONDITIONS) :]
    )


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
    return (
        f"Latency: this session's measurement (std up to {100 * new['noise']:.0f}% of the mean) is noisier than "
        f"the one of {str(shown['time'])[:16].replace('T', ' ')} ({100 * shown['noise']:.0f}%), so the table and "
        f"its files show that one; every measurement is kept in {TABLE_STEM}.json (latency.measurements)."
    )


def _old_table(out_dir: Path) -> dict | None:
    try:
        return read_table_json(out_dir) if (out_dir / f"{TABLE_STEM}.json").is_file() else None
    except ValueError:  # a damaged file is replaced
        return None


def _methods(results: dict) -> set:
    return {r["method"] for r in results.get("rows", [])}


def write_results(results: dict, out_dir) -> str:
    """Write the table files unless a partial table would replace a complete one; returns what happened
    (one or two sentences, which notebook 05 prints). Sets results["written"]."""
    out_dir = Path(out_dir)
    old = _old_table(out_dir)
    where = f"{portable(out_dir)}/{TABLE_STEM}.{{txt,md,csv,json}}"
    fewer = old is not None and not old.get("partial") and _methods(results) < _methods(old)
    if old is not None and not old.get("partial") and (results.get("partial") or fewer):
        results["written"] = False
        what = "a partial one" if results.get("partial") else f"one of fewer methods ({', '.join(_methods(results))})"
        return (
            f"not written: {where} hold a complete table of {', '.join(_methods(old))}, which {what} never "
            "replaces; this table is shown here only."
        )
    note = merge_latency(results, old)
    changed = old is None or measurement(old)["rows"] != measurement(results)["rows"] or not same_models(old, results)
    write_table_files(results, out_dir)
    results["written"] = True
    report = out_dir / "report.html"
    stale = (
        (
            f" The report {portable(report)} shows the earlier table: `python -m helpers run` (it reuses every "
            "finished model) rebuilds it."
        )
        if changed and report.is_file()
        else ""
    )
    return f"written: {where}." + (f" {note}" if note else "") + stale


def save_beside_table(fig, results: dict, path) -> str:
    """Save a figure of the table (e.g. headline.png) only when the table files were written with it."""
    from ..figures.viz import save_figure

    if not results.get("written"):
        return f"{portable(path)} left as it is (the table files were not written)"
    save_figure(fig, path)
    return f"saved {portable(path)}"
