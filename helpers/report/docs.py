"""Generated documentation: `python -m helpers docs [--results DIR] [--sweep DIR]... [--teacher CKPT]...`.

Always: docs/parameters.md (every knob, from `config.specs()`) and environment.yml (from pyproject.toml, the
one list of dependencies). With run files, every number the README and docs/ quote from the demo is copied
in between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers, so they are regenerated, never edited:
- timings: a run folder's `timings.json` (written by the runner), and those of `--timings` folders (the same
  study with other `jobs`/`threads`) as further rows;
- results: its `kd_comparison_results.json` (the table, then every seed's mIoU and Δ);
- teacher: teacher checkpoints' holdout mIoU after each epoch (their history);
- calibration: `sweep.md` of each sweep folder.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from ..config.knobs import specs
from ..config.presets import available_presets, load_preset
from ..core.errors import UserError
from ..core.paths import PROJECT_ROOT


def replace_block(text: str, name: str, content: str, where: str = "README.md") -> str:
    """`text` with the block between the markers of `name` replaced by `content`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise UserError(f"{where} lacks the markers {start} ... {end}.")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content.rstrip()}\n{end}{tail}"


def _read_json(path: Path, made_by: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path} not found: {made_by} writes it.")
    return json.loads(path.read_text(encoding="utf-8"))


def timings_markdown(run_dir, more=()) -> str:
    """A row per run folder (`run_dir`, then `more`): its `timings.json`, labelled by how its trainings ran
    (jobs and threads, from its `run_params.yaml`)."""
    rows = []
    for d in [run_dir, *more]:
        t = _read_json(Path(d) / "timings.json", "`python -m helpers run` (make report)")
        params = Path(d) / "run_params.yaml"
        p = yaml.safe_load(params.read_text(encoding="utf-8")) if params.is_file() else {}
        schedule = f"jobs={p['jobs']}, threads={p['threads']}" if "jobs" in p else "one after another"
        rows.append((schedule, t))
    steps = [k for k in rows[0][1] if k != "total"]
    out = ["| trainings | " + " | ".join(steps) + " | **total** |", "|---|" + "---:|" * (len(steps) + 1)]
    for schedule, t in rows:
        cells = [f"{t[k]:.0f} s" if k in t else "—" for k in steps]
        out.append(f"| {schedule} | " + " | ".join(cells) + f" | **{t['total']:.0f} s ({t['total'] / 60:.1f} min)** |")
    return "\n".join(out) + "\n"


def results_markdown(run_dir) -> str:
    """The run's markdown table, then mIoU and Δ of every seed (from kd_comparison_results.json)."""
    from ..results import table

    results = _read_json(Path(run_dir) / "kd_comparison_results.json", "notebook 05_compare")
    out = [table.table_markdown(results).rstrip()]
    seeds = results.get("seeds") or []
    rows = [r for r in results["rows"] if len(r.get("per_seed_miou") or []) == len(seeds)]  # not the teacher
    if rows and len(seeds) > 1:
        out += [
            "",
            "Every seed (val mIoU; Δ: paired with the baseline of the same seed):",
            "",
            "| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
            "|---|" + "---:|" * (len(seeds) + 1),
        ]
        for r in rows:
            vals = r["per_seed_miou"]
            std = f" ± {r['miou_std']:.4f}" if r.get("miou_std") is not None else ""
            out.append(f"| {r['label']} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {r['miou']:.4f}{std} |")
        for r in rows:
            d = r.get("diff_vs_baseline") or {}
            if len(d.get("per_seed") or []) == len(seeds):
                out.append(
                    f"| Δ {r['label']} | " + " | ".join(f"{v:+.4f}" for v in d["per_seed"]) + f" | {d['diff']:+.4f} |"
                )
    return "\n".join(out) + "\n"


def teacher_markdown(checkpoints) -> str:
    """A row per teacher checkpoint: its seed, holdout mIoU after each monitored epoch, training time."""
    from ..core import checkpoint

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
    from ..perf import sweep

    out = []
    for d in sweep_dirs:
        meta = _read_json(Path(d) / "sweep.json", "`python -m helpers sweep`")
        how = ""
        if meta.get("method") == "response" and "teacher_cache" in meta.get("settings", {}):
            how = ", cached teacher logits" if meta["settings"]["teacher_cache"] else ", online teacher"
        out += [
            f"**{meta.get('method', Path(d).name)} KD**{how} (`{Path(d).name}`):",
            "",
            sweep.table_markdown(Path(d) / "sweep.csv").rstrip(),
            "",
        ]
    return "\n".join(out)


def regenerate(text: str, results=None, sweeps=(), teachers=(), where: str = "README.md", timings=()) -> str:
    """`text` with each block for which a source was given, and which it has, regenerated (`timings`: more run
    folders whose timings go under the results' own)."""
    blocks = {
        "timings": lambda: timings_markdown(results, timings) if results else None,
        "results": lambda: results_markdown(results) if results else None,
        "table": lambda: results_markdown(results).split("\n\n")[0] if results else None,
        "teacher": lambda: teacher_markdown(teachers) if teachers else None,
        "calibration": lambda: calibration_markdown(sweeps) if sweeps else None,
    }
    for name, content in blocks.items():
        if f"<!-- {name}:start -->" in text and (new := content()) is not None:
            text = replace_block(text, name, new, where)
    return text


def parameters_page(method_files=()) -> str:
    """docs/parameters.md: every knob (Config's fields, then the built-in methods' and those of `method_files`),
    its default, the values the presets change, and its meaning."""
    presets = {p: load_preset(p) for p in available_presets()}
    rows = ["| Name | Default | Presets | Meaning |", "|---|---|---|---|"]
    for k in specs(files=method_files):
        changed = ", ".join(
            f"{p}: `{_literal(v)}`"
            for p, values in presets.items()
            if (v := values.get(k.name, k.default)) != k.default
        )
        meaning = k.help + (f" ({k.group})" if k.group else "")
        rows.append(f"| `{k.name}` | `{_literal(k.default)}` | {changed} | {meaning.replace('|', '/')} |")
    return f"{GENERATED}\n# Parameters\n\n{PARAMETERS_INTRO}\n\n" + "\n".join(rows) + "\n"


GENERATED = "<!-- generated by `python -m helpers docs` from helpers/config and helpers/kd: do not edit -->"
PARAMETERS_INTRO = (
    "Every knob, with its default (the demo), the values the presets change (`helpers/config/presets/*.yaml` hold "
    "only those) and its meaning. A notebook's `overrides`, its own knobs and `-p NAME VALUE` go on top; unknown "
    "names (with a did-you-mean), wrong types and values outside the allowed ones are refused before anything "
    "runs. The knobs grouped as `method: NAME` are registered with that KD method (`helpers/kd`); a method file of "
    "yours adds its own (they appear here when it is imported)."
)


def _literal(v) -> str:
    return json.dumps(v) if isinstance(v, (str, list)) else repr(v)


def environment_yaml(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> str:
    """environment.yml for conda users: pyproject.toml's pinned dependencies and extras, verbatim."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    pins = project["dependencies"] + [d for extra in project.get("optional-dependencies", {}).values() for d in extra]
    lines = [
        "# generated by `python -m helpers docs` from pyproject.toml (the one list of dependencies): do not edit",
        "# Conda alternative to `make` (conda-forge, Python 3.11):",
        "#   conda env create -f environment.yml && conda activate kd-seg && pip install -e . --no-deps",
        "name: kd-seg",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={project['requires-python'].removeprefix('>=')}",
        "  - pip",
        "  - pip:",
    ]
    return "\n".join(lines + [f"      - {p}" for p in dict.fromkeys(pins)]) + "\n"


def regenerate_all(results=None, sweeps=(), teachers=(), root: Path = PROJECT_ROOT, timings=()) -> list[str]:
    """Write every generated file, and, from run files, the blocks of README.md and docs/*.md that hold their
    figures (README: timings and the table; docs/results.md: every seed; docs/demo_design.md: the teacher's
    curves; docs/calibration.md: the sweeps); returns what was written."""
    (root / "docs" / "parameters.md").write_text(parameters_page(), encoding="utf-8")
    (root / "environment.yml").write_text(environment_yaml(root / "pyproject.toml"), encoding="utf-8")
    done = ["docs/parameters.md", "environment.yml"]
    if results or sweeps or teachers:
        for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
            text = path.read_text(encoding="utf-8")
            new = regenerate(text, results, sweeps, teachers, path.name, timings)
            if new != text:
                path.write_text(new, encoding="utf-8")
                done.append(str(path.relative_to(root)))
    return done
