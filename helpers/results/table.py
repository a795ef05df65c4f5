"""The comparison table as text: the rows of one `results` dict (built by `compare`) in the run's order of
methods, with the guide's columns, the Δ intervals, boundary IoU and the notes that say how it was
measured. `files` writes it as kd_comparison_results.{txt,md,csv,json}.
"""

from __future__ import annotations

from .notes import ci_heading, notes
from .rows import (  # noqa: F401  (also read through table by notebook 05)
    by_method,
    ci_level,
    class_deltas,
    fmt,
    fmt_ci,
    fmt_latency,
    fmt_miou,
    fmt_params,
    fmt_per_seed,
    num,
    ordered_rows,
    row_label,
    significant,
    verdict,
)
from .worth import worth_markdown, worth_text

TABLE_STEM = "kd_comparison_results"
COLUMNS = ["Knowledge Distillation", "mIoU", "# Parameters", "Inference Speed (ms)"]
TXT_WIDTHS = [36, 13, 19]  # the last column takes what it needs
CSV_FIELDS = [
    "method",
    "label",
    "miou",
    "miou_std",
    "n_seeds",
    "per_seed_miou",
    "pixel_acc",
    "params",
    "params_str",
    "gflops",
    "latency_ms",
    "latency_std_ms",
    "arch",
    "diff_vs_baseline",
    "diff_low",
    "diff_high",
    "diff_significant",
    "diff_per_seed",
    "diff_method",
    "boundary_iou",
    "boundary_std",
    "boundary_diff",
    "boundary_low",
    "boundary_high",
]


def table_text(results: dict) -> str:
    """The .txt table in the layout of the user's guide, then the CI, latency and protocol lines."""
    rows = ordered_rows(results)
    cells = [[row_label(r), fmt_miou(r), fmt_params(r), fmt_latency(r)] for r in rows]
    widths = [max([w] + [len(c[i]) + 2 for c in cells]) for i, w in enumerate(TXT_WIDTHS)]

    def line(vals):
        return "".join(v.ljust(w) for v, w in zip(vals, widths)) + vals[-1]

    rule = "-" * max(90, len(line(COLUMNS)))
    out = ["=" * 80, "COMPARISON TABLE", "=" * 80, "", line(COLUMNS), rule]
    for row, c in zip(rows, cells):
        if row["method"] == "teacher":
            out.append(rule)
        out.append(line(c))
    diffs = [r for r in rows if r["method"] not in ("baseline", "teacher")]
    if diffs:
        out += ["", ci_heading(results)]
        width = max(len(row_label(r)) for r in diffs) + 2
        for r in diffs:
            d = r.get("diff_vs_baseline")
            said = verdict(d) if d and num(d.get("diff")) is not None else "no per-image CI"
            if d and len(d.get("per_seed") or []) > 1:
                said += f"; per seed: {fmt_per_seed(d['per_seed'])}"
            out.append(f"  {row_label(r).ljust(width)}{fmt_ci(d)}  {said}")
    out += _boundary_text(rows)
    out += [""] + notes(results) + worth_text(results)
    return "\n".join(out) + "\n"


def _boundary_cells(r: dict) -> tuple[str, str]:
    """(boundary IoU [± std], Δ vs baseline [CI], verdict) as text, for a row that has them."""
    value = fmt(r.get("boundary_iou"))
    if num(r.get("boundary_std")) is not None:
        value += f" ± {fmt(r['boundary_std'])}"
    d = r.get("boundary_diff_vs_baseline")
    return value, (f"{fmt_ci(d)}, {verdict(d)}" if d and num(d.get("diff")) is not None else "—")


def _boundary_text(rows: list[dict]) -> list[str]:
    rows = [r for r in rows if num(r.get("boundary_iou")) is not None]
    if not rows:
        return []
    width = max(len(row_label(r)) for r in rows) + 2
    return ["", "Boundary IoU (bands of 2% of the image diagonal; Δ vs baseline with the same interval as mIoU):"] + [
        f"  {row_label(r).ljust(width)}{'  '.join(_boundary_cells(r))}" for r in rows
    ]


def _boundary_markdown(rows: list[dict]) -> str:
    rows = [r for r in rows if num(r.get("boundary_iou")) is not None]
    if not rows:
        return ""
    out = ["| Knowledge Distillation | Boundary IoU | Δ Boundary IoU vs baseline |", "|---|---:|---|"]
    out += ["| " + " | ".join([row_label(r), *_boundary_cells(r)]) + " |" for r in rows]
    return (
        "\n\n"
        + "\n".join(out)
        + "\n\nBoundary IoU (Cheng et al., CVPR 2021): IoU of the pixels within 2% of the image diagonal "
        "of each class's outline, in the ground truth and in the prediction; it shows boundary quality that mIoU, "
        "dominated by object interiors, hardly sees."
    )


def table_markdown(results: dict) -> str:
    """The markdown table (guide's columns + pixel acc, GFLOPs, Δ mIoU vs baseline [CI]) + notes."""
    head = COLUMNS + ["Pixel acc.", "GFLOPs", f"Δ mIoU vs baseline [{ci_level(results)} CI]"]
    out = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in ordered_rows(results):
        d = r.get("diff_vs_baseline")
        delta = "—" if r["method"] == "baseline" or (r["method"] == "teacher" and not d) else fmt_ci(d)
        if delta != "n/a" and d:
            delta += f", {verdict(d)}"
        vals = [
            row_label(r),
            fmt_miou(r),
            fmt_params(r),
            fmt_latency(r),
            fmt(r.get("pixel_acc")),
            fmt(r.get("gflops"), ".3f"),
            delta,
        ]
        out.append("| " + " | ".join(v.replace("|", "\\|") for v in vals) + " |")
    body = "\n".join(out) + _boundary_markdown(ordered_rows(results)) + "\n\n" + "\n\n".join(notes(results))
    return body + worth_markdown(results) + "\n"
