"""The report: a run's executed notebooks merged into ONE self-contained report.html.

Every image inline as a data: URI, no script needed from the internet, code hidden behind a
"Show code" button; it opens with the comparison table and its analysis. `browser.export_pdf`
prints it with headless Chromium.
"""

from __future__ import annotations

import html
import json
import os
import platform
from datetime import datetime
from pathlib import Path

from ..core.checkpoint import write_text_atomic
from ..core.errors import UserError
from ..results.analysis import analysis_text
from ..results.files import read_table_json
from ..results.table import TABLE_STEM, table_markdown
from .notebooks import inline_local_images, prepare_notebook
from .page import export_html

DEFAULT_TITLE = "Knowledge distillation for semantic segmentation"


def title_for(params: dict | None) -> str:
    """The report's title, saying what the data is: real PASCAL VOC 2012, or the generated demo set."""
    voc = (params or {}).get("dataset") == "voc"
    return f"{DEFAULT_TITLE} ({'PASCAL VOC 2012' if voc else 'demo data in the VOC layout, not PASCAL VOC 2012'})"


def environment_info(training: str | None = None) -> dict[str, str]:
    """Versions and machine: python, torch, torchvision, device, CPU threads, platform, date; `training`: how the
    run's trainings ran (threads each, how many side by side; `scale.jobs.recorded`)."""
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
    info["cpu_threads"] = (
        f"{threads} used by torch, {os.cpu_count()} logical CPUs" if threads else f"{os.cpu_count()} logical CPUs"
    )
    info["platform"] = platform.platform()
    info["date"] = datetime.now().astimezone().isoformat(timespec="seconds")
    info["training"] = training
    keys = ("python", "torch", "torchvision", "device", "cpu_threads", "training", "platform", "date")
    return {k: info[k] for k in keys if info[k] is not None}


def _html_table(mapping: dict, key: str, value: str) -> str:
    """A two-column HTML table on one line (it sits inside <details>, where markdown is not parsed)."""

    def cell(v):
        return html.escape(json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v))

    rows = "".join(f"<tr><td><code>{cell(k)}</code></td><td>{cell(v)}</td></tr>" for k, v in mapping.items())
    return f"<table><thead><tr><th>{key}</th><th>{value}</th></tr></thead><tbody>{rows}</tbody></table>"


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _results_markdown(run_dir: Path) -> list[str]:
    """The table, the headline figure, the analysis and the progression figure (what exists)."""
    md_path, json_path = run_dir / f"{TABLE_STEM}.md", run_dir / f"{TABLE_STEM}.json"
    if not (md_path.is_file() or json_path.is_file()):
        return [
            f"## Comparison table\n\n> **No comparison table yet:** `{TABLE_STEM}.md` was not found in "
            f"`{run_dir}`. Run `05_compare.ipynb` for this run (it writes the table files), then build the "
            "report again."
        ]
    out = [
        "## Comparison table\n\n"
        + (md_path.read_text(encoding="utf-8") if md_path.is_file() else table_markdown(read_table_json(json_path)))
    ]
    if (run_dir / "headline.png").is_file():
        out.append("![mIoU of each method with its interval; the teacher as a reference line](headline.png)")
    if json_path.is_file():
        try:
            text = analysis_text(read_table_json(json_path))
        except (UserError, TypeError, ValueError, KeyError) as err:
            text = f"(analysis unavailable: {err})"
        out.append("## What the numbers say\n\n" + html.escape(text, quote=False))
    if (run_dir / "qualitative_progression.png").is_file():
        out.append(
            "## The same images across models\n\n"
            "![two successes, one failure and where KD gained or lost most](qualitative_progression.png)"
        )
    return out


def _header_markdown(
    run_dir: Path, params: dict, env: dict, title: str, names: list[str], preset: str | None = None
) -> list[str]:
    """The cells that open the report: title and run; the table, the headline figure, the analysis,
    the progression figure; the contents; the run's settings (only what differs from the preset)
    and the environment, folded away."""
    data = (
        "real PASCAL VOC 2012"
        if (params or {}).get("dataset") == "voc"
        else "the generated demo data set in the VOC layout (synthetic shapes: its numbers are not VOC numbers)"
    )
    head = f"# {title}\n\nRun **{html.escape(run_dir.name)}** on {data}, report built {env.get('date', '')}."
    contents = "## Contents\n\n" + "\n".join(f"{i}. [{html.escape(n)}](#nb-{i})" for i, n in enumerate(names, 1))
    shown, what = params, "Parameters of this run"
    if preset and params:
        from ..config.presets import from_preset

        base = from_preset(preset).to_dict()
        shown = {k: v for k, v in params.items() if base.get(k, object()) != v}
        what = (
            f"Parameters: preset {preset}, and {len(shown)} setting{'s' if len(shown) != 1 else ''} that "
            f"differ{'s' if len(shown) == 1 else ''} from it"
        )
    settings = _details(
        what,
        _html_table(shown, "parameter", "value")
        if shown
        else "<p>No parameters were recorded, or none differs from the preset.</p>",
    )
    environment = _details("Environment", _html_table(env, "item", "value"))
    return [head, *_results_markdown(run_dir), contents, settings + "\n\n" + environment]


def _papermill_params(notebooks: list) -> dict:
    params = {}
    for nb in notebooks:
        for k, v in ((nb.metadata.get("papermill") or {}).get("parameters") or {}).items():
            params.setdefault(k, v)
    return params


def _find_notebook(path, run_dir: Path) -> Path:
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (run_dir / path).exists():
        return run_dir / path
    return path


def build_report(
    run_dir,
    notebooks: list,
    out_html=None,
    params: dict | None = None,
    env: dict | None = None,
    title: str | None = None,
    preset: str | None = None,
) -> Path:
    """Merge a run's executed notebooks into ONE self-contained HTML file; returns its path.

    It opens with the title and run, the comparison table (kd_comparison_results.md in run_dir, or a note when
    absent), the headline figure, the analysis and the progression figure (when 05 and 06 wrote them), then the
    contents, then the run's parameters (default: those papermill recorded in the notebooks; with `preset`, only
    those that differ from it) and the environment (default: `environment_info()`), both folded in <details>,
    then each notebook in order. Images are inlined; code cells are hidden until "Show code" is pressed.
    """
    import nbformat

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(
            f"build_report: run folder {run_dir} does not exist; run the notebooks first "
            "(python -m helpers run --preset demo)."
        )
    paths = [_find_notebook(p, run_dir) for p in notebooks]
    loaded = [nbformat.read(p, as_version=4) if p.is_file() else None for p in paths]
    env = dict(env) if env is not None else environment_info()
    env.setdefault("date", datetime.now().astimezone().isoformat(timespec="seconds"))
    params = _papermill_params([nb for nb in loaded if nb is not None]) if params is None else params
    title = title or title_for(params)
    header = _header_markdown(run_dir, params, env, title, [p.name for p in paths], preset)
    merged = _merged(paths, loaded, [inline_local_images(text, run_dir) for text in header], title)
    out_html = Path(out_html) if out_html else run_dir / "report.html"
    out_html.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out_html, export_html(merged, title, run_dir))


def _merged(paths: list, loaded: list, header: list[str], title: str):
    """One notebook: the header cells, then each notebook under its heading (a missing one said)."""
    import nbformat

    merged = nbformat.v4.new_notebook()
    first = next((nb for nb in loaded if nb is not None), None)
    if first is not None:
        merged.metadata = {k: v for k, v in first.metadata.items() if k in ("kernelspec", "language_info")}
    merged.metadata["title"] = title
    cells, failures = [nbformat.v4.new_markdown_cell(text) for text in header], []
    for i, (path, nb) in enumerate(zip(paths, loaded), 1):
        heading = (
            f'<a id="nb-{i}"></a>\n<div class="kd-nb-heading">Notebook {i} of {len(paths)}: '
            f"<code>{html.escape(path.name)}</code></div>"
        )
        if nb is None:
            heading += (
                f"\n\n> **{html.escape(path.name)} was not found** ({html.escape(str(path))}): this notebook "
                "did not run, so its results are missing from the report."
            )
        cells.append(nbformat.v4.new_markdown_cell(heading))
        cells += prepare_notebook(nb, path.parent, i, failures) if nb is not None else []
    merged.cells = cells
    if failures:
        print(f"report.html: {len(failures)} formula(s) shown as TeX (not convertible): " + "; ".join(failures))
    return merged
