"""The comparison table: one source of the methods' names, labels and order, and the four table
files kd_comparison_results.{txt,md,csv,json} written from one `results` dict (see
`write_table_files`); `read_table_json` reads it back.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .errors import UserError

# The methods in the order of the user's guide, with the guide's row labels; the teacher is a reference row.
LABELS = {"baseline": "Without KD (Baseline)", "response": "Response-Based", "feature": "Feature-Based",
          "teacher": "Teacher (reference)"}
STUDENTS = ("baseline", "response", "feature")
TABLE_STEM = "kd_comparison_results"
COLUMNS = ["Knowledge Distillation", "mIoU", "# Parameters", "Inference Speed (ms)"]
TXT_WIDTHS = [36, 13, 19]  # the last column takes what it needs
CSV_FIELDS = ["method", "label", "miou", "miou_std", "n_seeds", "per_seed_miou", "pixel_acc", "params",
              "params_str", "gflops", "latency_ms", "latency_std_ms", "arch", "diff_vs_baseline",
              "diff_low", "diff_high", "diff_significant", "diff_per_seed", "diff_method", "boundary_iou",
              "boundary_std", "boundary_diff", "boundary_low", "boundary_high"]


# --------------------------------------------------------------------------- numbers as text
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
    return LABELS.get(row.get("method"), row.get("label") or str(row.get("method")))


def _fmt_miou(row: dict) -> str:
    text = fmt(row.get("miou"))
    if (row.get("n_seeds") or 1) > 1 and num(row.get("miou_std")) is not None:
        text += f" ± {fmt(row['miou_std'])}"
    return text


def fmt_params(row: dict) -> str:
    if row.get("params_str"):
        return str(row["params_str"])
    p = num(row.get("params"))
    return "n/a" if p is None else f"{p / 1e6:.2f}M"


def _fmt_latency(row: dict) -> str:
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


def _fmt_ci(d: dict | None) -> str:
    if not d or num(d.get("diff")) is None:
        return "n/a"
    return f"{d['diff']:+.4f} [{fmt(d.get('low'), '+.4f')}, {fmt(d.get('high'), '+.4f')}]"


def _verdict(d: dict) -> str:
    return "distinguishable from 0" if significant(d) else "not distinguishable from 0"


def ci_level(results: dict) -> str:
    for row in results["rows"]:
        d = row.get("diff_vs_baseline") or {}
        if num(d.get("level")) is not None:
            return f"{100 * d['level']:g}%"
    return "95%"


def diff_seeds(results: dict) -> int:
    """Seeds behind the Δ intervals (their "n_seeds"); 0 when the rows do not say (older tables)."""
    ks = [int(d["n_seeds"]) for r in results["rows"] if isinstance(d := r.get("diff_vs_baseline"), dict)
          and num(d.get("n_seeds")) is not None]
    return max(ks, default=0)


def fmt_per_seed(values, spec: str = "+.4f") -> str:
    return ", ".join(fmt(v, spec) for v in values or [])


def _ci_heading(results: dict) -> str:
    k, level = diff_seeds(results), ci_level(results)
    if k >= 2:
        return (f"Δ mIoU vs baseline (mean over {k} seeds of the paired per-seed differences), seed-level "
                f"{level} CI (covers training noise and the choice of val images):")
    return f"Δ mIoU vs baseline, paired bootstrap {level} CI over validation images:"


def _ci_note(results: dict) -> str | None:
    """What the Δ interval covers: seed-level with several seeds, the val images only with one."""
    k = diff_seeds(results)
    if k >= 2:
        return (f"Δ CI: seed-level, a t-interval (t, {k - 1} df) around the mean of the {k} per-seed paired "
                f"differences, variance = between-seed variance / {k} + val-image bootstrap variance: it "
                f"covers training noise (seed to seed) and the choice of val images.")
    if k == 1:
        return ("Δ CI: paired percentile bootstrap over val images. One seed: the interval covers the "
                "choice of val images, not training noise; use seeds ≥ 3.")
    return None


def ordered_rows(results: dict) -> list[dict]:
    """The rows in the guide's order (baseline, response, feature, others), the teacher last."""
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise UserError("results must be a dict with a 'rows' list (one dict per method); "
                        f"got {type(results).__name__}. Build it in 05_compare.ipynb.")
    for row in results["rows"]:
        if not isinstance(row, dict) or "method" not in row or "miou" not in row:
            raise UserError(f"each row of results['rows'] needs at least 'method' and 'miou'; got {row!r}")
    rank = {m: i for i, m in enumerate(STUDENTS)}
    return sorted(results["rows"], key=lambda r: (r["method"] == "teacher",
                                                  rank.get(r["method"], len(rank))))


def student_rows(results: dict) -> list[dict]:
    return [r for r in ordered_rows(results) if r["method"] != "teacher"]


def by_method(results: dict, method: str) -> dict | None:
    return next((r for r in results["rows"] if r.get("method") == method), None)


def partial_note(results: dict) -> str:
    """"Partial table: ... not finished yet: Feature-Based (seeds 0–2, not there; notebook 04_feature_kd ...)"."""
    from .progress import span

    items = [f"{m['label']} ({'seeds ' + span(m['seeds']) + ', ' if m['seeds'] else ''}{m['why']}; notebook "
             f"{m['notebook']} trains it)" for m in results.get("missing") or []]
    return ("Partial table: it compares what is finished; not finished yet: " + "; ".join(items) +
            ". Run those notebooks, then this one again, for the full table.") if items else ""


def _notes(results: dict) -> list[str]:
    """The conditions under the table: partial or not, seeds, latency conditions, protocol, run."""
    lines = [partial_note(results)] if results.get("partial") else []
    seeds = sorted({int(r.get("n_seeds") or 1) for r in student_rows(results)})
    if seeds and max(seeds) > 1:
        lines.append(f"mIoU: mean ± std over {'/'.join(map(str, seeds))} seeds (training runs); Δ mIoU: mean "
                     f"over seeds of the paired per-seed differences (the difference of the mIoU column).")
    if _ci_note(results):
        lines.append(_ci_note(results))
    lat = results.get("latency") or {}
    if lat:
        size = lat.get("input_size")
        size = "x".join(map(str, size)) if isinstance(size, (list, tuple)) else size
        lines.append(f"Latency: mean ± std in ms per forward pass; device {lat.get('device', '?')}, "
                     f"{lat.get('threads', '?')} threads, {lat.get('dtype', '?')}, input {size}, "
                     f"path: {lat.get('path', '?')}.")
        if len(lat.get("measurements") or []) > 1:
            lines.append(f"Latency shown: the quietest of {len(lat['measurements'])} measurements of these models "
                         f"({str(lat.get('shown'))[:16].replace('T', ' ')}); all are in the JSON file.")
    noisy = [row_label(r) for r in results["rows"] if num(r.get("latency_std_ms")) is not None
             and num(r.get("latency_ms")) and r["latency_std_ms"] > 0.5 * r["latency_ms"]]
    if noisy:
        lines.append(f"Latency was noisy (std above half the mean for {', '.join(noisy)}): the machine was busy "
                     "while it was measured; run 05 again on an idle machine before reading the speed column.")
    if any(num(r.get("gflops")) is not None for r in results["rows"]):
        lines.append("GFLOPs: per forward pass at the latency input size; 10^9 floating-point operations, a "
                     "multiply-add counted as 2 (torch.utils.flop_counter).")
    if results.get("protocol"):
        lines.append(f"Protocol: {results['protocol']}.".replace("..", "."))
    if results.get("run"):
        lines.append(f"Run: {results['run']}.")
    return lines


# --------------------------------------------------------------------------- the four files
def table_text(results: dict) -> str:
    """The .txt table in the layout of the user's guide, then the CI, latency and protocol lines."""
    rows = ordered_rows(results)
    cells = [[row_label(r), _fmt_miou(r), fmt_params(r), _fmt_latency(r)] for r in rows]
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
        out += ["", _ci_heading(results)]
        width = max(len(row_label(r)) for r in diffs) + 2
        for r in diffs:
            d = r.get("diff_vs_baseline")
            verdict = _verdict(d) if d and num(d.get("diff")) is not None else "no per-image CI"
            if d and len(d.get("per_seed") or []) > 1:
                verdict += f"; per seed: {fmt_per_seed(d['per_seed'])}"
            out.append(f"  {row_label(r).ljust(width)}{_fmt_ci(d)}  {verdict}")
    out += _boundary_text(rows)
    out += [""] + _notes(results)
    return "\n".join(out) + "\n"


def _boundary_cells(r: dict) -> tuple[str, str]:
    """(boundary IoU [± std], Δ vs baseline [CI], verdict) as text, for a row that has them."""
    value = fmt(r.get("boundary_iou"))
    if num(r.get("boundary_std")) is not None:
        value += f" ± {fmt(r['boundary_std'])}"
    d = r.get("boundary_diff_vs_baseline")
    return value, (f"{_fmt_ci(d)}, {_verdict(d)}" if d and num(d.get("diff")) is not None else "—")


def _boundary_text(rows: list[dict]) -> list[str]:
    rows = [r for r in rows if num(r.get("boundary_iou")) is not None]
    if not rows:
        return []
    width = max(len(row_label(r)) for r in rows) + 2
    return ["", "Boundary IoU (bands of 2% of the image diagonal; Δ vs baseline with the same interval as mIoU):"] + \
        [f"  {row_label(r).ljust(width)}{'  '.join(_boundary_cells(r))}" for r in rows]


def _boundary_markdown(rows: list[dict]) -> str:
    rows = [r for r in rows if num(r.get("boundary_iou")) is not None]
    if not rows:
        return ""
    out = ["| Knowledge Distillation | Boundary IoU | Δ Boundary IoU vs baseline |", "|---|---:|---|"]
    out += ["| " + " | ".join([row_label(r), *_boundary_cells(r)]) + " |" for r in rows]
    return "\n\n" + "\n".join(out) + "\n\nBoundary IoU (Cheng et al., CVPR 2021): IoU of the pixels within 2% of the image diagonal " \
        "of each class's outline, in the ground truth and in the prediction; it shows boundary quality that mIoU, " \
        "dominated by object interiors, hardly sees."


def table_markdown(results: dict) -> str:
    """The markdown table (guide's columns + pixel acc, GFLOPs, Δ mIoU vs baseline [CI]) + notes."""
    head = COLUMNS + ["Pixel acc.", "GFLOPs", f"Δ mIoU vs baseline [{ci_level(results)} CI]"]
    out = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in ordered_rows(results):
        d = r.get("diff_vs_baseline")
        delta = "—" if r["method"] == "baseline" or (r["method"] == "teacher" and not d) else _fmt_ci(d)
        if delta != "n/a" and d:
            delta += f", {_verdict(d)}"
        vals = [row_label(r), _fmt_miou(r), fmt_params(r), _fmt_latency(r),
                fmt(r.get("pixel_acc")), fmt(r.get("gflops"), ".3f"), delta]
        out.append("| " + " | ".join(v.replace("|", "\\|") for v in vals) + " |")
    return "\n".join(out) + _boundary_markdown(ordered_rows(results)) + "\n\n" + "\n\n".join(_notes(results)) + "\n"


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
        rec.update(diff_vs_baseline=d.get("diff"), diff_low=d.get("low"), diff_high=d.get("high"),
                   diff_significant=significant(d) if d else None, diff_method=d.get("method"),
                   diff_per_seed=_csv_list(d.get("per_seed")), per_seed_miou=_csv_list(r.get("per_seed_miou")))
        rec.update({f"iou_{c}": v for c, v in (r.get("iou_per_class") or {}).items()})
        out.append({k: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
                    for k, v in rec.items()})
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


def _write_atomic(path: Path, text: str) -> Path:
    """Temporary file + os.replace; a full disk raises a UserError and keeps the previous file."""
    from .checkpoint import write_text_atomic

    return write_text_atomic(path, text)


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
    _write_atomic(paths["txt"], table_text(results))
    _write_atomic(paths["md"], table_markdown(results))
    fields, recs = _csv_rows(results)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(recs)
    _write_atomic(paths["csv"], buf.getvalue())
    _write_atomic(paths["json"], json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n")
    return paths


def read_table_json(path) -> dict:
    """Read kd_comparison_results.json (path to the file, or to the run folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{TABLE_STEM}.json"
    if not path.is_file():
        raise UserError(f"{path} not found: run notebooks/05_compare.ipynb (it writes the table "
                        "files) for this run first.")
    return json.loads(path.read_text(encoding="utf-8"))



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
            for c in base]
    return out
