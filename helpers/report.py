"""The study's outputs for a reader: the comparison table files, the analysis text, one report.

- `write_table_files` writes kd_comparison_results.{txt,md,csv,json} from one `results` dict
  (see its docstring); `read_table_json` reads it back.
- `analysis_text` turns the numbers into a few sentences (nothing in it is pre-written).
- `build_report` merges the executed notebooks of a run into ONE self-contained report.html:
  every image inline as a data: URI, no script needed from the internet, code hidden behind a
  "Show code" button. `export_pdf` prints it with headless Chromium when Chromium is installed.
- `check_report_in_browser` loads a report in headless Chromium and says whether the table is
  there and whether any image is broken (the tests use it).
"""
from __future__ import annotations

import base64
import csv
import io
import html
import json
import logging
import math
import mimetypes
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from .errors import UserError

TABLE_STEM = "kd_comparison_results"
# The row labels and column layout of the user's guide.
GUIDE_LABELS = {"baseline": "Without KD (Baseline)", "response": "Response-Based",
                "feature": "Feature-Based", "teacher": "Teacher (reference)"}
METHOD_ORDER = ["baseline", "response", "feature"]
COLUMNS = ["Knowledge Distillation", "mIoU", "# Parameters", "Inference Speed (ms)"]
TXT_WIDTHS = [36, 13, 19]  # the last column takes what it needs
CSV_FIELDS = ["method", "label", "miou", "miou_std", "n_seeds", "per_seed_miou", "pixel_acc", "params",
              "params_str", "gflops", "latency_ms", "latency_std_ms", "arch", "diff_vs_baseline",
              "diff_low", "diff_high", "diff_significant", "diff_per_seed", "diff_method"]
DEFAULT_TITLE = "Knowledge distillation for semantic segmentation (PASCAL VOC 2012)"
PDF_NOTICE = ("report.pdf skipped: Chromium not found; install Debian's chromium package "
              "(apt-get install chromium) to get a PDF")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]
MATHJAX_URL = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js?config=TeX-AMS_CHTML"


# --------------------------------------------------------------------------- numbers as text
def _num(x) -> float | None:
    """A finite float, or None for None/NaN/inf/non-numbers."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(x, spec: str = ".4f", missing: str = "n/a") -> str:
    x = _num(x)
    return missing if x is None else format(x, spec)


def _fmt_std(s) -> str:
    s = _num(s)
    if s is None:
        return "n/a"
    return f"{s:.1f}" if s >= 1 else f"{s:.2f}" if s >= 0.01 else f"{s:.3f}"


def _label(row: dict) -> str:
    return GUIDE_LABELS.get(row.get("method"), row.get("label") or str(row.get("method")))


def _fmt_miou(row: dict) -> str:
    text = _fmt(row.get("miou"))
    if (row.get("n_seeds") or 1) > 1 and _num(row.get("miou_std")) is not None:
        text += f" ± {_fmt(row['miou_std'])}"
    return text


def _fmt_params(row: dict) -> str:
    if row.get("params_str"):
        return str(row["params_str"])
    p = _num(row.get("params"))
    return "n/a" if p is None else f"{p / 1e6:.2f}M"


def _fmt_latency(row: dict) -> str:
    lat = _num(row.get("latency_ms"))
    if lat is None:
        return "n/a"
    std = _num(row.get("latency_std_ms"))
    return f"{lat:.2f}" if std is None else f"{lat:.2f} ± {_fmt_std(std)}"


def _significant(d: dict) -> bool:
    if "significant" in d and d["significant"] is not None:
        return bool(d["significant"])
    low, high = _num(d.get("low")), _num(d.get("high"))
    return low is not None and high is not None and (low > 0 or high < 0)


def _fmt_ci(d: dict | None) -> str:
    if not d or _num(d.get("diff")) is None:
        return "n/a"
    return f"{d['diff']:+.4f} [{_fmt(d.get('low'), '+.4f')}, {_fmt(d.get('high'), '+.4f')}]"


def _verdict(d: dict) -> str:
    return "distinguishable from 0" if _significant(d) else "not distinguishable from 0"


def _level(results: dict) -> str:
    for row in results["rows"]:
        d = row.get("diff_vs_baseline") or {}
        if _num(d.get("level")) is not None:
            return f"{100 * d['level']:g}%"
    return "95%"


def _diff_seeds(results: dict) -> int:
    """Seeds behind the Δ intervals (their "n_seeds"); 0 when the rows do not say (older tables)."""
    ks = [int(d["n_seeds"]) for r in results["rows"] if isinstance(d := r.get("diff_vs_baseline"), dict)
          and _num(d.get("n_seeds")) is not None]
    return max(ks, default=0)


def _fmt_per_seed(values, spec: str = "+.4f") -> str:
    return ", ".join(_fmt(v, spec) for v in values or [])


def _ci_heading(results: dict) -> str:
    k, level = _diff_seeds(results), _level(results)
    if k >= 2:
        return (f"Δ mIoU vs baseline (mean over {k} seeds of the paired per-seed differences), seed-level "
                f"{level} CI (covers training noise and the choice of val images):")
    return f"Δ mIoU vs baseline, paired bootstrap {level} CI over validation images:"


def _ci_note(results: dict) -> str | None:
    """What the Δ interval covers: seed-level with several seeds, the val images only with one."""
    k = _diff_seeds(results)
    if k >= 2:
        return (f"Δ CI: seed-level, a t-interval (t, {k - 1} df) around the mean of the {k} per-seed paired "
                f"differences, variance = between-seed variance / {k} + val-image bootstrap variance: it "
                f"covers training noise (seed to seed) and the choice of val images.")
    if k == 1:
        return ("Δ CI: paired percentile bootstrap over val images. One seed: the interval covers the "
                "choice of val images, not training noise; use seeds ≥ 3.")
    return None


def _rows(results: dict) -> list[dict]:
    """The rows in the guide's order (baseline, response, feature, others), the teacher last."""
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise UserError("results must be a dict with a 'rows' list (one dict per method); "
                        f"got {type(results).__name__}. Build it in 05_compare.ipynb.")
    for row in results["rows"]:
        if not isinstance(row, dict) or "method" not in row or "miou" not in row:
            raise UserError(f"each row of results['rows'] needs at least 'method' and 'miou'; got {row!r}")
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(results["rows"], key=lambda r: (r["method"] == "teacher",
                                                  rank.get(r["method"], len(rank))))


def _students(results: dict) -> list[dict]:
    return [r for r in _rows(results) if r["method"] != "teacher"]


def _by_method(results: dict, method: str) -> dict | None:
    return next((r for r in results["rows"] if r.get("method") == method), None)


def _notes(results: dict) -> list[str]:
    """The conditions under the table: seeds, latency conditions, protocol, run."""
    lines = []
    seeds = sorted({int(r.get("n_seeds") or 1) for r in _students(results)})
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
    if any(_num(r.get("gflops")) is not None for r in results["rows"]):
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
    rows = _rows(results)
    cells = [[_label(r), _fmt_miou(r), _fmt_params(r), _fmt_latency(r)] for r in rows]
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
        width = max(len(_label(r)) for r in diffs) + 2
        for r in diffs:
            d = r.get("diff_vs_baseline")
            verdict = _verdict(d) if d and _num(d.get("diff")) is not None else "no per-image CI"
            if d and len(d.get("per_seed") or []) > 1:
                verdict += f"; per seed: {_fmt_per_seed(d['per_seed'])}"
            out.append(f"  {_label(r).ljust(width)}{_fmt_ci(d)}  {verdict}")
    out += [""] + _notes(results)
    return "\n".join(out) + "\n"


def table_markdown(results: dict) -> str:
    """The markdown table (guide's columns + pixel acc, GFLOPs, Δ mIoU vs baseline [CI]) + notes."""
    head = COLUMNS + ["Pixel acc.", "GFLOPs", f"Δ mIoU vs baseline [{_level(results)} CI]"]
    out = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in _rows(results):
        d = r.get("diff_vs_baseline")
        delta = "—" if r["method"] == "baseline" or (r["method"] == "teacher" and not d) else _fmt_ci(d)
        if delta != "n/a" and d:
            delta += f", {_verdict(d)}"
        vals = [_label(r), _fmt_miou(r), _fmt_params(r), _fmt_latency(r),
                _fmt(r.get("pixel_acc")), _fmt(r.get("gflops"), ".3f"), delta]
        out.append("| " + " | ".join(v.replace("|", "\\|") for v in vals) + " |")
    return "\n".join(out) + "\n\n" + "\n\n".join(_notes(results)) + "\n"


def _csv_list(values) -> str | None:
    """Per-seed numbers in one CSV cell, space-separated ("0.581234 0.590012"); None when absent."""
    return " ".join(_fmt(v, ".6f") for v in values) if values else None


def _csv_rows(results: dict) -> tuple[list[str], list[dict]]:
    classes = []
    for r in results["rows"]:
        classes += [c for c in (r.get("iou_per_class") or {}) if c not in classes]
    fields = CSV_FIELDS + [f"iou_{c}" for c in classes]
    out = []
    for r in _rows(results):
        d = r.get("diff_vs_baseline") or {}
        rec = {k: r.get(k) for k in CSV_FIELDS if k in r and not isinstance(r.get(k), (dict, list))}
        rec.update(diff_vs_baseline=d.get("diff"), diff_low=d.get("low"), diff_high=d.get("high"),
                   diff_significant=_significant(d) if d else None, diff_method=d.get("method"),
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
    _rows(results)  # validates
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


# --------------------------------------------------------------------------- analysis text
def _diff_sentence(row: dict, base: dict, level: str) -> str:
    name, d = row.get("label") or _label(row), row.get("diff_vs_baseline")
    if not d or _num(d.get("diff")) is None:
        raw = _num(row.get("miou")) - _num(base.get("miou")) if _num(row.get("miou")) is not None \
            and _num(base.get("miou")) is not None else None
        return (f"{name}: no per-image confidence interval is available, so the raw difference of "
                f"{_fmt(raw, '+.4f')} mIoU cannot be told apart from noise.")
    ci = f"{d['diff']:+.4f} mIoU ({level} CI {_fmt(d.get('low'), '+.4f')} to {_fmt(d.get('high'), '+.4f')})"
    if len(d.get("per_seed") or []) > 1:
        ci += f"; per seed: {_fmt_per_seed(d['per_seed'])}"
    if not _significant(d):
        seeds = [v for v in d.get("per_seed") or [] if _num(v) is not None]
        same_sign = len(seeds) > 1 and (all(v > 0 for v in seeds) or all(v < 0 for v in seeds))
        return (f"{name} vs Without KD: {ci}; the interval includes 0, so the difference is not "
                f"distinguishable from zero: on this evidence {name} KD did not help measurably"
                + (f" (every seed moved the same way, but {len(seeds)} seeds leave the interval wide; more "
                   f"seeds would narrow it)." if same_sign else ", the difference is within the noise."))
    if d["diff"] > 0:
        return (f"{name} vs Without KD: {ci}; the interval excludes 0, so this gain is "
                f"distinguishable from zero on this split.")
    return (f"{name} vs Without KD: {ci}; the interval excludes 0: {name} KD made the student "
            f"worse, distinguishably from zero.")


def _seed_sentence(students: list[dict]) -> str | None:
    """Seed-to-seed spread, and what the Δ intervals cover (training noise, or the val images only)."""
    k, scope = _diff_seeds({"rows": students}), None
    if k >= 2:
        scope = (f"The intervals are seed-level: they cover training noise (the spread of the {k} seeds' paired "
                 f"differences) as well as the choice of val images.")
    elif k == 1:
        scope = "One seed: the interval covers the choice of val images, not training noise; use seeds ≥ 3."
    multi = [r for r in students if (r.get("n_seeds") or 1) > 1 and _num(r.get("miou_std")) is not None]
    if not multi:
        return scope
    std = max(r["miou_std"] for r in multi)
    text = (f"Across {max(r['n_seeds'] for r in multi)} seeds the mIoU varies by up to ±{std:.4f} "
            f"(std); differences of that size come from the seed alone.")
    return f"{text} {scope}" if scope else text


def _gap_sentence(students: list[dict], base: dict, teacher: dict) -> str | None:
    t, b = _num(teacher.get("miou")), _num(base.get("miou"))
    if t is None or b is None:
        return None
    gap = t - b
    if gap <= 0:
        return (f"The teacher ({t:.4f}) is not above the baseline student ({b:.4f}), so there is no "
                f"teacher–student gap to close.")
    parts = []
    for r in students:
        if r["method"] == "baseline" or _num(r.get("miou")) is None:
            continue
        frac = (r["miou"] - b) / gap
        parts.append(f"{r.get('label') or _label(r)} {100 * frac:.0f}%")
    if not parts:
        return None
    return (f"Teacher–student gap: the teacher reaches {t:.4f}, {gap:.4f} above the baseline; "
            f"fraction of that gap recovered: {', '.join(parts)} (negative: below the baseline).")


def _params_sentence(students: list[dict], teacher: dict | None) -> str | None:
    params = {r.get("params") for r in students if r.get("params") is not None}
    if not params:
        return None
    if len(params) == 1:
        text = (f"All students have the same number of parameters ({_fmt_params(students[0])}): "
                f"distillation changes training only, not the deployed model.")
    else:
        text = "The students differ in size: " + ", ".join(
            f"{r.get('label') or _label(r)} {_fmt_params(r)}" for r in students) + "."
    if teacher and _num(teacher.get("params")) and _num(students[0].get("params")):
        text += (f" The teacher has {_fmt_params(teacher)} "
                 f"({teacher['params'] / students[0]['params']:.1f}× the baseline student).")
    return text


def _latency_sentence(students: list[dict], base: dict) -> str | None:
    b, bs = _num(base.get("latency_ms")), _num(base.get("latency_std_ms")) or 0.0
    if b is None:
        return None
    parts = []
    for r in students:
        lat, s = _num(r.get("latency_ms")), _num(r.get("latency_std_ms")) or 0.0
        if r["method"] == "baseline" or lat is None:
            continue
        diff, spread = lat - b, math.hypot(bs, s)
        name = r.get("label") or _label(r)
        if spread > 0 and abs(diff) <= 2 * spread:
            parts.append(f"{name} {diff:+.2f} ms ({abs(diff) / spread:.1f}× the combined std of "
                         f"{spread:.2f} ms: within measurement noise)")
        else:
            ratio = f"{abs(diff) / spread:.1f}× the combined std" if spread > 0 else "no std measured"
            parts.append(f"{name} {diff:+.2f} ms ({'slower' if diff > 0 else 'faster'}; {ratio})")
    if not parts:
        return None
    return f"Latency vs Without KD ({b:.2f} ms): " + "; ".join(parts) + "."


def analysis_text(results: dict) -> str:
    """A few sentences computed from the numbers: best method, each difference with its CI and
    whether it is distinguishable from zero, teacher-student gap recovered, params, latency."""
    students = _students(results)
    base, teacher = _by_method(results, "baseline"), _by_method(results, "teacher")
    scored = [r for r in students if _num(r.get("miou")) is not None]
    if not scored:
        return "No student has an mIoU yet: nothing to analyse."
    level = _level(results)
    best = max(scored, key=lambda r: r["miou"])
    name = best.get("label") or _label(best)
    out = [f"Highest student mIoU: {name} ({best['miou']:.4f})."]
    if base is not None and best is not base:
        d = best.get("diff_vs_baseline")
        if not (d and _significant(d) and d.get("diff", 0) > 0):
            out[0] = (f"{name} has the highest mean student mIoU ({best['miou']:.4f} vs "
                      f"{base['miou']:.4f} without KD), but its lead over the baseline is not "
                      f"established: see the interval below.")
    elif base is not None and len(scored) > 1:
        out[0] += " Neither KD method is above the baseline."
    if base is not None:
        out += [_diff_sentence(r, base, level) for r in students if r is not base]
        if not any(_significant(r.get("diff_vs_baseline") or {}) and r["diff_vs_baseline"]["diff"] > 0
                   for r in students if r is not base):
            out.append("In short: in this run KD did not help measurably.")
    for extra in (_seed_sentence(students),
                  _gap_sentence(students, base, teacher) if base and teacher else None,
                  _params_sentence(students, teacher),
                  _latency_sentence(students, base) if base else None):
        if extra:
            out.append(extra)
    return " ".join(out)


# --------------------------------------------------------------------------- environment
def environment_info() -> dict[str, str]:
    """Versions and machine: python, torch, torchvision, device, CPU threads, platform, date."""
    info = {"python": platform.python_version()}
    try:
        import torch
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["device"] = f"cuda ({torch.cuda.get_device_name(0)})"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            info["device"] = "mps"
        else:
            info["device"] = "cpu"
        threads = torch.get_num_threads()
    except ImportError:
        info.update(torch="not installed", device="cpu")
        threads = None
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = "not installed"
    info["cpu_threads"] = f"{threads} used by torch, {os.cpu_count()} logical CPUs" if threads \
        else f"{os.cpu_count()} logical CPUs"
    info["platform"] = platform.platform()
    info["date"] = datetime.now().astimezone().isoformat(timespec="seconds")
    return {k: info[k] for k in ("python", "torch", "torchvision", "device", "cpu_threads",
                                 "platform", "date")}


# --------------------------------------------------------------------------- the HTML report
_MD_IMG = re.compile(r'(!\[[^\]]*\]\(\s*<?)([^)\s>]+)(>?(?:\s+"[^"]*")?\s*\))')
_HTML_IMG = re.compile(r'(<img\b[^>]*?\bsrc\s*=\s*)(["\'])(.*?)\2', re.IGNORECASE | re.DOTALL)


def _data_uri(src: str, base_dir: Path) -> str | None:
    """A local image file (relative to base_dir, or absolute) as a data: URI; None if not local."""
    if re.match(r"^(data:|https?:|attachment:|//|#)", src, re.IGNORECASE):
        return None
    path = Path(unquote(src.split("?")[0].split("#")[0]))
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        return None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _inline_local_images(text: str, base_dir: Path) -> str:
    """Replace markdown ![..](file) and <img src="file"> references by data: URIs."""
    def md(m):
        uri = _data_uri(m.group(2), base_dir)
        return m.group(0) if uri is None else m.group(1) + uri + m.group(3)

    def tag(m):
        uri = _data_uri(html.unescape(m.group(3)), base_dir)
        return m.group(0) if uri is None else f"{m.group(1)}{m.group(2)}{uri}{m.group(2)}"

    return _HTML_IMG.sub(tag, _MD_IMG.sub(md, text))


def _strip_tags(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", str(text))).strip()


def _widget_text(state: dict, model_id: str, depth: int = 0) -> str:
    """Readable text for a saved ipywidget (a tqdm bar is an HBox of HTML, progress, HTML)."""
    model = state.get(model_id) or {}
    s = model.get("state") or {}
    if depth > 10:
        return ""
    if isinstance(s.get("children"), list):
        parts = [_widget_text(state, str(c).replace("IPY_MODEL_", ""), depth + 1) for c in s["children"]]
        return " ".join(p for p in parts if p)
    if "Progress" in str(model.get("model_name", "")) and _num(s.get("value")) is not None:
        lo, hi = _num(s.get("min")) or 0.0, _num(s.get("max")) or 1.0
        frac = min(max((s["value"] - lo) / (hi - lo), 0.0), 1.0) if hi > lo else 0.0
        return "|" + "█" * round(20 * frac) + " " * (20 - round(20 * frac)) + "|"
    return _strip_tags(s.get("value", "")) if isinstance(s.get("value"), str) else ""


def _widget_hidden(state: dict, model_id: str) -> bool:
    """A widget JupyterLab no longer shows: a tqdm bar with leave=False is hidden when it closes
    (its saved text is then a stale refresh, e.g. 84%)."""
    layout = str((state.get(model_id) or {}).get("state", {}).get("layout", "")).replace("IPY_MODEL_", "")
    look = (state.get(layout) or {}).get("state", {})
    return look.get("visibility") == "hidden" or look.get("display") == "none"


def _prepare_notebook(nb, base_dir: Path, index: int) -> list:
    """The cells of one executed notebook, ready to merge: unique ids, local images inlined,
    saved widgets (tqdm bars) replaced by their text so no widget JavaScript is needed, and
    widgets that were hidden (finished leave=False bars) left out."""
    import nbformat
    state = (nb.metadata.get("widgets") or {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    cells = []
    for j, cell in enumerate(nb.cells):
        cell = nbformat.from_dict(dict(cell))
        cell["id"] = f"nb{index}-cell{j}"
        if cell.cell_type == "markdown":
            cell.source = _inline_local_images(cell.source, base_dir)
        outputs = cell.get("outputs", [])
        for out in outputs:
            data = out.get("data") or {}
            view = data.get("application/vnd.jupyter.widget-view+json")
            if view is not None and _widget_hidden(state, view.get("model_id", "")):
                out["data"] = {}  # dropped below
            elif view is not None:
                text = _widget_text(state, view.get("model_id", "")) or data.get("text/plain", "")
                out["data"] = {"text/plain": text}
            elif isinstance(data.get("text/html"), (str, list)):
                src = "".join(data["text/html"]) if isinstance(data["text/html"], list) else data["text/html"]
                data["text/html"] = _inline_local_images(src, base_dir)
        if "outputs" in cell:
            cell["outputs"] = [o for o in outputs if o.get("output_type") == "stream" or o.get("data")
                               or o.get("output_type") == "error"]
        cells.append(cell)
    return cells


def _md_table(mapping: dict, key: str, value: str) -> str:
    def cell(v):
        v = json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v)
        return html.escape(v, quote=False).replace("|", "\\|").replace("\n", " ")
    rows = [f"| `{cell(k)}` | {cell(v)} |" for k, v in mapping.items()]
    return "\n".join([f"| {key} | {value} |", "|---|---|"] + rows)


def _header_markdown(run_dir: Path, params: dict, env: dict, title: str, names: list[str]) -> list[str]:
    """The cells that open the report: title, comparison table + analysis, parameters, environment."""
    md_path, json_path = run_dir / f"{TABLE_STEM}.md", run_dir / f"{TABLE_STEM}.json"
    head = f"# {title}\n\nRun **{html.escape(run_dir.name)}**, report built {env.get('date', '')}."
    table = "## Comparison table\n\n"
    if md_path.is_file():
        table += md_path.read_text(encoding="utf-8")
    elif json_path.is_file():
        table += table_markdown(read_table_json(json_path))
    else:
        table += (f"> **No comparison table yet:** `{TABLE_STEM}.md` was not found in "
                  f"`{run_dir}`. Run `05_compare.ipynb` for this run (it writes the table files), "
                  f"then build the report again.")
    if json_path.is_file():
        try:
            table += "\n\n**What the numbers say.** " + html.escape(analysis_text(read_table_json(json_path)),
                                                                   quote=False)
        except (UserError, TypeError, ValueError, KeyError) as err:
            table += f"\n\n(analysis unavailable: {html.escape(str(err), quote=False)})"
    contents = "## Notebooks\n\n" + "\n".join(
        f"{i}. [{html.escape(n)}](#nb-{i})" for i, n in enumerate(names, 1))
    parameters = "## Parameters of this run\n\n" + (
        _md_table(params, "parameter", "value") if params else "No parameters were recorded.")
    environment = "## Environment\n\n" + _md_table(env, "item", "value")
    return [head, table, parameters, environment, contents]


def _papermill_params(notebooks: list) -> dict:
    params = {}
    for nb in notebooks:
        for k, v in ((nb.metadata.get("papermill") or {}).get("parameters") or {}).items():
            params.setdefault(k, v)
    return params


_CSS = """
body.kd-hide-code .jp-CodeCell .jp-Cell-inputWrapper { display: none !important; }
body.kd-hide-code .jp-CodeCell.jp-mod-noOutputs { display: none !important; }
.kd-code-toggle { position: fixed; top: 10px; right: 14px; z-index: 1000; padding: 5px 12px;
  font: 13px/1.3 system-ui, sans-serif; border: 1px solid #888; border-radius: 4px;
  background: #f4f4f4; cursor: pointer; }
.kd-code-toggle:hover { background: #e4e4e4; }
.jp-RenderedMarkdown table { margin-left: 0; }
.kd-nb-heading { border-top: 3px solid #bbb; margin-top: 2.5em; padding-top: 0.5em; }
@media print { .kd-code-toggle { display: none; } }
"""
_JS = """
(function () {
  var button = document.getElementById('kd-code-toggle');
  if (!button) { return; }
  button.addEventListener('click', function () {
    var hidden = document.body.classList.toggle('kd-hide-code');
    button.textContent = hidden ? 'Show code' : 'Hide code';
    button.setAttribute('aria-pressed', hidden ? 'false' : 'true');
  });
})();
"""
# MathJax only when the page has formulas, only after the page has loaded, and only if the
# network answers: offline the formulas stay readable as TeX and nothing waits for it.
_MATHJAX = """
<script type="text/x-mathjax-config">
MathJax.Hub.Config({tex2jax: {inlineMath: [['$','$'], ['\\\\(','\\\\)']], processEscapes: true,
  processEnvironments: true}, messageStyle: 'none'});
</script>
<script>
window.addEventListener('load', function () {
  var text = Array.prototype.map.call(document.querySelectorAll('.jp-MarkdownOutput'),
                                      function (e) { return e.textContent; }).join('\\n');
  if (!/\\$[^$]+\\$|\\\\\\(|\\\\\\[/.test(text)) { return; }
  var s = document.createElement('script');
  s.async = true; s.src = '%s';
  document.head.appendChild(s);
});
</script>
""" % MATHJAX_URL
# Our template: JupyterLab's look, without the CDN scripts (require.js, widget manager, eager
# MathJax), with the code hidden by default and a button to show it.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}""" + _MATHJAX + """{%- endblock html_head_js_mathjax -%}
{% block extra_css %}<style type="text/css">""" + _CSS + """</style>{% endblock extra_css %}
{%- block body_header -%}
<body class="jp-Notebook kd-hide-code" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<button id="kd-code-toggle" class="kd-code-toggle" type="button" aria-pressed="false">Show code</button>
<main>
{%- endblock body_header -%}
{% block footer_js %}<script>""" + _JS + """</script>{% endblock footer_js %}
"""


def _nbconvert_log() -> logging.Logger:
    """nbconvert's logger for us, without its warning about figures lacking alt text (every
    matplotlib output lacks it; nbconvert then adds a generic one)."""
    log = logging.getLogger("helpers.report.nbconvert")
    if not log.filters:
        log.addFilter(lambda rec: "Alternative text is missing" not in rec.getMessage())
    return log


def _find_notebook(path, run_dir: Path) -> Path:
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (run_dir / path).exists():
        return run_dir / path
    return path


def build_report(run_dir, notebooks: list, out_html=None, params: dict | None = None,
                 env: dict | None = None, title: str = DEFAULT_TITLE) -> Path:
    """Merge a run's executed notebooks into ONE self-contained HTML file; returns its path.

    It opens with the comparison table (kd_comparison_results.md in run_dir, or a note when
    absent) and its analysis, then the run's parameters (default: those papermill recorded in the
    notebooks), the environment (default: `environment_info()`), then each notebook in order.
    Images are inlined as data: URIs; code cells are hidden until "Show code" is pressed.
    """
    import nbformat
    from nbconvert import HTMLExporter

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"build_report: run folder {run_dir} does not exist; run the notebooks first "
                        "(python -m helpers run --preset demo).")
    out_html = Path(out_html) if out_html else run_dir / "report.html"
    paths = [_find_notebook(p, run_dir) for p in notebooks]
    loaded = [nbformat.read(p, as_version=4) if p.is_file() else None for p in paths]
    env = dict(env) if env is not None else environment_info()
    env.setdefault("date", datetime.now().astimezone().isoformat(timespec="seconds"))
    if params is None:
        params = _papermill_params([nb for nb in loaded if nb is not None])

    merged = nbformat.v4.new_notebook()
    first = next((nb for nb in loaded if nb is not None), None)
    if first is not None:
        merged.metadata = {k: v for k, v in first.metadata.items() if k in ("kernelspec", "language_info")}
    merged.metadata["title"] = title
    cells = [nbformat.v4.new_markdown_cell(_inline_local_images(text, run_dir))
             for text in _header_markdown(run_dir, params, env, title, [p.name for p in paths])]
    for i, (path, nb) in enumerate(zip(paths, loaded), 1):
        heading = (f'<a id="nb-{i}"></a>\n<div class="kd-nb-heading">Notebook {i} of {len(paths)}: '
                   f'<code>{html.escape(path.name)}</code></div>')
        if nb is None:
            heading += f"\n\n> **{html.escape(path.name)} was not found** ({html.escape(str(path))}): " \
                       "this notebook did not run, so its results are missing from the report."
        cells.append(nbformat.v4.new_markdown_cell(heading))
        if nb is not None:
            cells += _prepare_notebook(nb, path.parent, i)
    merged.cells = cells

    exporter = HTMLExporter(template_name="lab", embed_images=True, raw_template=_TEMPLATE,
                            log=_nbconvert_log())
    body, _ = exporter.from_notebook_node(
        merged, resources={"metadata": {"name": title, "path": str(run_dir)}})
    leftovers = sorted({m.group(3)[:120] for m in _HTML_IMG.finditer(body)
                        if not m.group(3).startswith("data:")})
    if leftovers:
        print(f"report.html: {len(leftovers)} image(s) could not be inlined (not found?): "
              + ", ".join(leftovers))
    out_html.parent.mkdir(parents=True, exist_ok=True)
    return _write_atomic(out_html, body)


# --------------------------------------------------------------------------- Chromium
def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM, else chromium / chromium-browser on PATH; or None."""
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser"]
    for name in filter(None, candidates):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run_chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile; kill its whole process group on timeout."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium")
    profile = tempfile.mkdtemp(prefix="kd-chromium-")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _stderr_tail(err: str) -> str:
    lines = [ln for ln in (err or "").splitlines() if ln.strip() and "dbus" not in ln.lower()]
    return lines[-1][:300] if lines else "no message"


def export_pdf(html_path, pdf_path=None, timeout: float = 120) -> Path | None:
    """Print report.html to PDF with headless Chromium; returns the PDF path, or None (with one
    printed line saying why) when Chromium is not installed or fails."""
    html_path = Path(html_path).resolve()
    pdf_path = Path(pdf_path) if pdf_path else html_path.with_suffix(".pdf")
    if find_chromium() is None:
        print(PDF_NOTICE)
        return None
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pdf_path.with_name(pdf_path.name + ".tmp.pdf").resolve()
    start = time.perf_counter()
    try:
        res = _run_chromium([f"--print-to-pdf={tmp}", "--no-pdf-header-footer",
                             "--virtual-time-budget=5000", html_path.as_uri()], timeout)
    except subprocess.TimeoutExpired:
        print(f"report.pdf skipped: Chromium did not finish within {timeout:.0f} s")
        return None
    if res.returncode != 0 or not tmp.is_file() or tmp.read_bytes()[:4] != b"%PDF":
        tmp.unlink(missing_ok=True)
        print(f"report.pdf skipped: Chromium failed (exit {res.returncode}): {_stderr_tail(res.stderr)}")
        return None
    os.replace(tmp, pdf_path)
    print(f"wrote {pdf_path} ({pdf_path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return pdf_path


_CHECK_JS = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); })
    .map(function (im) { var s = im.getAttribute('src') || ''; return s.length > 100 ? s.slice(0, 100) + '...' : s; });
  var tables = Array.prototype.slice.call(document.querySelectorAll('table'));
  var idx = tables.findIndex(function (t) { return t.textContent.indexOf('Knowledge Distillation') >= 0; });
  var input = document.querySelector('.jp-CodeCell .jp-Cell-inputWrapper');
  var pre = document.createElement('pre'); pre.id = '__check';
  pre.textContent = JSON.stringify({table: idx >= 0, table_first: idx === 0, images: imgs.length,
    broken: broken, code_hidden: input ? getComputedStyle(input).display === 'none' : null});
  document.body.appendChild(pre);
}, 0); });
</script>"""


def check_report_in_browser(html_path, timeout: float = 120) -> dict:
    """Load a copy of the report, alone in an empty folder, in headless Chromium.

    Returns {"table": a table containing "Knowledge Distillation" exists, "table_first": it is the
    page's first table, "images": number of <img>, "broken": srcs of images that did not load,
    "code_hidden": the first code input is hidden (None without code cells), "seconds": wall time}.
    Relative or http(s) image sources show up as broken: the page must stand alone offline.
    """
    html_path = Path(html_path)
    if find_chromium() is None:
        raise UserError("check_report_in_browser needs Chromium: install Debian's chromium package "
                        "(apt-get install chromium) or set CHROMIUM to its path.")
    text = html_path.read_text(encoding="utf-8")
    cut = text.lower().rfind("</body>")
    text = text[:cut] + _CHECK_JS + text[cut:] if cut >= 0 else text + _CHECK_JS
    with tempfile.TemporaryDirectory(prefix="kd-check-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(text, encoding="utf-8")
        start = time.perf_counter()
        res = _run_chromium(["--virtual-time-budget=10000", "--dump-dom", page.as_uri()], timeout)
    m = re.search(r'<pre id="__check">(.*?)</pre>', res.stdout, re.DOTALL)
    if m is None:
        raise RuntimeError(f"Chromium did not report on {html_path} (exit {res.returncode}): "
                           f"{_stderr_tail(res.stderr)}")
    summary = json.loads(html.unescape(m.group(1)))
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary
