"""README figures from the files a run writes: `python -m helpers docs --results DIR --sweep DIR --teacher CKPT`.

Every number the README quotes from the demo comes from a command; this module copies them in, between
`<!-- NAME:start -->` and `<!-- NAME:end -->` markers, so the README is regenerated rather than edited:
- timings: a run folder's `timings.json` (written by the runner);
- results: its `kd_comparison_results.json` (the table, then every seed's mIoU and Δ);
- teacher: teacher checkpoints' holdout mIoU after each epoch (their history);
- calibration: `sweep.md` of each sweep folder.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError


def replace_block(text: str, name: str, content: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise UserError(f"README.md lacks the markers {start} ... {end}.")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content.rstrip()}\n{end}{tail}"


def _read_json(path: Path, made_by: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path} not found: {made_by} writes it.")
    return json.loads(path.read_text(encoding="utf-8"))


def timings_markdown(run_dir) -> str:
    t = _read_json(Path(run_dir) / "timings.json", "`python -m helpers run` (make report)")
    steps = [k for k in t if k != "total"]
    return ("| " + " | ".join(steps) + " | **total** |\n|" + "---:|" * (len(steps) + 1) + "\n| "
            + " | ".join(f"{t[k]:.0f} s" for k in steps) + f" | **{t['total']:.0f} s ({t['total'] / 60:.1f} min)** |\n")


def results_markdown(run_dir) -> str:
    """The run's markdown table, then mIoU and Δ of every seed (from kd_comparison_results.json)."""
    from . import table

    results = _read_json(Path(run_dir) / "kd_comparison_results.json", "notebook 05_compare")
    out = [table.table_markdown(results).rstrip()]
    seeds = results.get("seeds") or []
    rows = [r for r in results["rows"] if len(r.get("per_seed_miou") or []) == len(seeds)]  # not the teacher
    if rows and len(seeds) > 1:
        out += ["", f"Every seed (val mIoU; Δ: paired with the baseline of the same seed):", "",
                "| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
                "|---|" + "---:|" * (len(seeds) + 1)]
        for r in rows:
            vals = r["per_seed_miou"]
            std = f" ± {r['miou_std']:.4f}" if r.get("miou_std") is not None else ""
            out.append(f"| {r['label']} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {r['miou']:.4f}{std} |")
        for r in rows:
            d = r.get("diff_vs_baseline") or {}
            if len(d.get("per_seed") or []) == len(seeds):
                out.append(f"| Δ {r['label']} | " + " | ".join(f"{v:+.4f}" for v in d["per_seed"])
                           + f" | {d['diff']:+.4f} |")
    return "\n".join(out) + "\n"


def teacher_markdown(checkpoints) -> str:
    """A row per teacher checkpoint: its seed, holdout mIoU after each monitored epoch, training time."""
    from . import checkpoint

    rows, width = [], 0
    for path in checkpoints:
        state = checkpoint.load(path)
        h = state["history"]
        rows.append((state["seed"], h["monitor_epoch"], h["monitor_miou"], sum(h["time_s"])))
        width = max(width, len(h["monitor_epoch"]))
    if not rows:
        raise UserError("--teacher: give at least one teacher checkpoint (checkpoints/teachers/*.pt).")
    epochs = max((r[1] for r in rows), key=len)
    head = "| teacher seed | " + " | ".join(f"ep {e}" for e in epochs) + " | training |"
    out = [head, "|---|" + "---:|" * (len(epochs) + 1)]
    for seed, _, miou, secs in sorted(rows):
        cells = [f"{v:.3f}" for v in miou] + [""] * (len(epochs) - len(miou))
        cells[len(miou) - 1] = f"**{miou[-1]:.3f}**"
        out.append(f"| {seed} | " + " | ".join(cells) + f" | {secs:.0f} s |")
    return "\n".join(out) + "\n"


def calibration_markdown(sweep_dirs) -> str:
    from . import sweep

    out = []
    for d in sweep_dirs:
        meta = _read_json(Path(d) / "sweep.json", "`python -m helpers sweep`")
        how = ""
        if meta.get("method") == "response" and "teacher_cache" in meta.get("settings", {}):
            how = ", cached teacher logits" if meta["settings"]["teacher_cache"] else ", online teacher"
        out += [f"**{meta.get('method', Path(d).name)} KD**{how} (`{Path(d).name}`):", "",
                sweep.table_markdown(Path(d) / "sweep.csv").rstrip(), ""]
    return "\n".join(out)


def regenerate(text: str, results=None, sweeps=(), teachers=()) -> str:
    """README text with each block for which a source was given regenerated."""
    if results:
        text = replace_block(text, "timings", timings_markdown(results))
        text = replace_block(text, "results", results_markdown(results))
    if teachers:
        text = replace_block(text, "teacher", teacher_markdown(teachers))
    if sweeps:
        text = replace_block(text, "calibration", calibration_markdown(sweeps))
    return text
