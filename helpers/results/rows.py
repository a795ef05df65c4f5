"""A results dict read as a table: its rows in the run's order, numbers as text, and the Δ fields."""

from __future__ import annotations

import math

from ..core.errors import UserError


def num(x) -> float | None:
    """A finite float, or None for None/NaN/inf/non-numbers."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt(x, spec: str = ".4f", missing: str = "n/a") -> str:
    x = num(x)
    return missing if x is None else format(x, spec)


def _fmt_std(s) -> str:
    s = num(s)
    if s is None:
        return "n/a"
    return f"{s:.1f}" if s >= 1 else f"{s:.2f}" if s >= 0.01 else f"{s:.3f}"


def row_label(row: dict) -> str:
    return row.get("label") or str(row.get("method"))


def fmt_miou(row: dict) -> str:
    text = fmt(row.get("miou"))
    if (row.get("n_seeds") or 1) > 1 and num(row.get("miou_std")) is not None:
        text += f" ± {fmt(row['miou_std'])}"
    return text


def fmt_params(row: dict) -> str:
    if row.get("params_str"):
        return str(row["params_str"])
    p = num(row.get("params"))
    return "n/a" if p is None else f"{p / 1e6:.2f}M"


def fmt_latency(row: dict) -> str:
    lat = num(row.get("latency_ms"))
    if lat is None:
        return "n/a"
    std = num(row.get("latency_std_ms"))
    return f"{lat:.2f}" if std is None else f"{lat:.2f} ± {_fmt_std(std)}"


def significant(d: dict) -> bool:
    if "significant" in d and d["significant"] is not None:
        return bool(d["significant"])
    low, high = num(d.get("low")), num(d.get("high"))
    return low is not None and high is not None and (low > 0 or high < 0)


def fmt_ci(d: dict | None) -> str:
    if not d or num(d.get("diff")) is None:
        return "n/a"
    return f"{d['diff']:+.4f} [{fmt(d.get('low'), '+.4f')}, {fmt(d.get('high'), '+.4f')}]"


def verdict(d: dict) -> str:
    return "distinguishable from 0" if significant(d) else "not distinguishable from 0"


def ci_level(results: dict) -> str:
    for row in results["rows"]:
        d = row.get("diff_vs_baseline") or {}
        if num(d.get("level")) is not None:
            return f"{100 * d['level']:g}%"
    return "95%"


def diff_seeds(results: dict) -> int:
    """Seeds behind the Δ intervals (their "n_seeds"); 0 when the rows do not say (older tables)."""
    ks = [
        int(d["n_seeds"])
        for r in results["rows"]
        if isinstance(d := r.get("diff_vs_baseline"), dict) and num(d.get("n_seeds")) is not None
    ]
    return max(ks, default=0)


def fmt_per_seed(values, spec: str = "+.4f") -> str:
    return ", ".join(fmt(v, spec) for v in values or [])


def ordered_rows(results: dict) -> list[dict]:
    """The rows in the run's order of methods (results["students"]: baseline first), the teacher last."""
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise UserError(
            "results must be a dict with a 'rows' list (one dict per method); "
            f"got {type(results).__name__}. Build it in 05_compare.ipynb."
        )
    for row in results["rows"]:
        if not isinstance(row, dict) or "method" not in row or "miou" not in row:
            raise UserError(f"each row of results['rows'] needs at least 'method' and 'miou'; got {row!r}")
    rank = {m: i for i, m in enumerate(results.get("students") or [r["method"] for r in results["rows"]])}
    return sorted(results["rows"], key=lambda r: (r["method"] == "teacher", rank.get(r["method"], len(rank))))


def student_rows(results: dict) -> list[dict]:
    return [r for r in ordered_rows(results) if r["method"] != "teacher"]


def by_method(results: dict, method: str) -> dict | None:
    return next((r for r in results["rows"] if r.get("method") == method), None)


# --------------------------------------------------------------------------- the four files
def class_deltas(results: dict, reference: str = "baseline") -> dict[str, list[float]]:
    """{label: per-class IoU of the method minus the reference's} for the KD rows, in class order
    (NaN where either is missing): what notebook 05's per-class chart draws."""
    ref = by_method(results, reference) or {}
    base = ref.get("iou_per_class") or {}
    out = {}
    for r in student_rows(results):
        if r["method"] == reference:
            continue
        mine = r.get("iou_per_class") or {}
        out[r.get("label") or row_label(r)] = [
            (mine[c] - base[c]) if num(mine.get(c)) is not None and num(base.get(c)) is not None else float("nan")
            for c in base
        ]
    return out
