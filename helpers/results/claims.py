"""What the table can claim: for each KD row, how many seeds the seed-level test would need to call its
observed Δ (and a stated smaller one, SMALLER) distinguishable with TARGET power (`evaluation.power`), and,
with several KD rows against one baseline, Holm-adjusted verdicts. Assumptions: notebook 05."""

from __future__ import annotations

from .. import kd
from ..evaluation import power
from .rows import ci_level, num

SMALLER = 0.01  # a smaller Δ a study might want to resolve: +0.01 mIoU
TARGET = 0.8  # power


def kd_rows(results: dict) -> list[dict]:
    """The rows of KD methods (a loss term) with a Δ against the baseline."""

    def is_kd(method: str) -> bool:
        try:
            return kd.get(method).loss is not None
        except Exception:  # noqa: BLE001 - a table read back without its method file: judge by the Δ
            return True

    return [
        r
        for r in results["rows"]
        if r["method"] not in ("baseline", "teacher")
        and is_kd(r["method"])
        and (r.get("diff_vs_baseline") or {}).get("diff") is not None
    ]


def claims(results: dict) -> dict:
    """{"level", "power", "smaller", "rows": {method: {"delta", "seeds", "needed_observed", "needed_smaller"}},
    "holm": {method: {"p", "p_adjusted", "distinguishable"}} (two or more KD rows)}."""
    level = float(ci_level(results).rstrip("%")) / 100
    out = {"level": level, "power": TARGET, "smaller": SMALLER, "rows": {}, "holm": {}}
    rows = kd_rows(results)
    for r in rows:
        d = r["diff_vs_baseline"]
        var_s, var_i = num(d.get("var_seeds")), num(d.get("var_images")) or 0.0
        out["rows"][r["method"]] = {
            "delta": d["diff"],
            "seeds": d.get("n_seeds"),
            "needed_observed": power.seeds_needed(d["diff"], var_s, var_i, level, TARGET),
            "needed_smaller": power.seeds_needed(SMALLER, var_s, var_i, level, TARGET),
        }
    pvalues = {r["method"]: r["diff_vs_baseline"]["p"] for r in rows if num(r["diff_vs_baseline"].get("p")) is not None}
    if len(pvalues) >= 2:
        out["holm"] = {
            m: {"p": pvalues[m], "p_adjusted": p_adj, "distinguishable": bool(ok)}
            for m, (p_adj, ok) in power.holm(pvalues, level).items()
        }
    return out
