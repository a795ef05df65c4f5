"""The report: a run's executed notebooks merged into ONE self-contained report.html.

Every image inline as a data: URI, no script needed from the internet, code hidden behind a
"Show code" button; it opens with the comparison table and its analysis. `browser.export_pdf`
prints it with headless Chromium.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import mimetypes
import os
import platform
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from .analysis import analysis_text
from .checkpoint import write_text_atomic
from .errors import UserError
from .mathml import hollow_formulas, markdown_math_to_mathml
from .table import TABLE_STEM, num, read_table_json, table_markdown

DEFAULT_TITLE = "Knowledge distillation for semantic segmentation"


def title_for(params: dict | None) -> str:
    """The report's title, saying what the data is: real PASCAL VOC 2012, or the generated demo set."""
    voc = (params or {}).get("dataset") == "voc"
    return f"{DEFAULT_TITLE} ({'PASCAL VOC 2012' if voc else 'demo data in the VOC layout, not PASCAL VOC 2012'})"

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
    if "Progress" in str(model.get("model_name", "")) and num(s.get("value")) is not None:
        lo, hi = num(s.get("min")) or 0.0, num(s.get("max")) or 1.0
        frac = min(max((s["value"] - lo) / (hi - lo), 0.0), 1.0) if hi > lo else 0.0
        return "|" + "█" * round(20 * frac) + " " * (20 - round(20 * frac)) + "|"
    return _strip_tags(s.get("value", "")) if isinstance(s.get("value"), str) else ""


def _widget_hidden(state: dict, model_id: str) -> bool:
    """A widget JupyterLab no longer shows: a tqdm bar with leave=False is hidden when it closes
    (its saved text is then a stale refresh, e.g. 84%)."""
    layout = str((state.get(model_id) or {}).get("state", {}).get("layout", "")).replace("IPY_MODEL_", "")
    look = (state.get(layout) or {}).get("state", {})
    return look.get("visibility") == "hidden" or look.get("display") == "none"


def _prepare_notebook(nb, base_dir: Path, index: int, failures: list) -> list:
    """The cells of one executed notebook, ready to merge: unique ids, local images inlined,
    formulas as MathML (those that fail are appended to `failures`), saved widgets (tqdm bars)
    replaced by their text so no widget JavaScript is needed, and widgets that were hidden (finished
    leave=False bars) left out."""
    import nbformat
    state = (nb.metadata.get("widgets") or {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    cells = []
    for j, cell in enumerate(nb.cells):
        cell = nbformat.from_dict(dict(cell))
        cell["id"] = f"nb{index}-cell{j}"
        if cell.cell_type == "markdown":
            cell.source = _inline_local_images(markdown_math_to_mathml(cell.source, failures), base_dir)
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
        return [f"## Comparison table\n\n> **No comparison table yet:** `{TABLE_STEM}.md` was not found in "
                f"`{run_dir}`. Run `05_compare.ipynb` for this run (it writes the table files), then build the "
                "report again."]
    out = ["## Comparison table\n\n" + (md_path.read_text(encoding="utf-8") if md_path.is_file()
                                         else table_markdown(read_table_json(json_path)))]
    if (run_dir / "headline.png").is_file():
        out.append("![mIoU of each method with its interval; the teacher as a reference line](headline.png)")
    if json_path.is_file():
        try:
            text = analysis_text(read_table_json(json_path))
        except (UserError, TypeError, ValueError, KeyError) as err:
            text = f"(analysis unavailable: {err})"
        out.append("## What the numbers say\n\n" + html.escape(text, quote=False))
    if (run_dir / "qualitative_progression.png").is_file():
        out.append("## The same images across models\n\n"
                   "![two successes, one failure and where KD gained or lost most](qualitative_progression.png)")
    return out


def _header_markdown(run_dir: Path, params: dict, env: dict, title: str, names: list[str],
                     preset: str | None = None) -> list[str]:
    """The cells that open the report: title and run; the table, the headline figure, the analysis,
    the progression figure; the contents; the run's settings (only what differs from the preset)
    and the environment, folded away."""
    data = ("real PASCAL VOC 2012" if (params or {}).get("dataset") == "voc" else
            "the generated demo data set in the VOC layout (synthetic shapes: its numbers are not VOC numbers)")
    head = f"# {title}\n\nRun **{html.escape(run_dir.name)}** on {data}, report built {env.get('date', '')}."
    contents = "## Contents\n\n" + "\n".join(f"{i}. [{html.escape(n)}](#nb-{i})" for i, n in enumerate(names, 1))
    shown, what = params, "Parameters of this run"
    if preset and params:
        from .config import from_preset

        base = from_preset(preset).to_dict()
        shown = {k: v for k, v in params.items() if base.get(k, object()) != v}
        what = f"Parameters: preset {preset}, and {len(shown)} setting{'s' if len(shown) != 1 else ''} that " \
               f"differ{'s' if len(shown) == 1 else ''} from it"
    settings = _details(what, _html_table(shown, "parameter", "value") if shown else
                        "<p>No parameters were recorded, or none differs from the preset.</p>")
    environment = _details("Environment", _html_table(env, "item", "value"))
    return [head, *_results_markdown(run_dir), contents, settings + "\n\n" + environment]


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
.kd-math { overflow-x: auto; margin: 0.6em 0; }
math { font-size: 1.1em; }
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
# Our template: JupyterLab's look, without the CDN scripts (require.js, widget manager, MathJax: the
# formulas are MathML, see mathml.py), with the code hidden by default and a button to show it.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
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


def _export_html(merged, title: str, run_dir: Path) -> str:
    """The merged notebook as one HTML page (our template); prints a line for each kind of damage
    found in it: formulas left without their MathML structure, images not inlined."""
    from nbconvert import HTMLExporter

    # Not embed_images=True: nbconvert then re-parses each inline HTML tag of a markdown cell alone
    # (IPythonRenderer.inline_html -> _html_embed_images, through BeautifulSoup), which closes every
    # opening tag at once and drops every closing one, so <math><mi>x</mi></math> came out as
    # <math></math><mi></mi>x (flat text). `_inline_local_images` has inlined the local images of
    # markdown and outputs already; nbconvert embeds cell attachments whatever the setting.
    exporter = HTMLExporter(template_name="lab", embed_images=False, raw_template=_TEMPLATE,
                            log=_nbconvert_log())
    body, _ = exporter.from_notebook_node(
        merged, resources={"metadata": {"name": title, "path": str(run_dir)}})
    total, hollow = hollow_formulas(body)
    if hollow:
        print(f"report.html: {len(hollow)} of {total} formula(s) lost their MathML structure (they show as flat text)")
    leftovers = sorted({m.group(3)[:120] for m in _HTML_IMG.finditer(body)
                        if not m.group(3).startswith("data:")})
    if leftovers:
        print(f"report.html: {len(leftovers)} image(s) could not be inlined (not found?): "
              + ", ".join(leftovers))
    return body


def build_report(run_dir, notebooks: list, out_html=None, params: dict | None = None,
                 env: dict | None = None, title: str | None = None, preset: str | None = None) -> Path:
    """Merge a run's executed notebooks into ONE self-contained HTML file; returns its path.

    It opens with the title and run, the comparison table (kd_comparison_results.md in run_dir, or
    a note when absent), the headline figure, the analysis and the progression figure (when 05 and
    06 wrote them), then the contents, then the run's parameters (default: those papermill recorded
    in the notebooks; with `preset`, only those that differ from it) and the environment (default:
    `environment_info()`), both folded in <details>, then each notebook in order.
    Images are inlined as data: URIs; code cells are hidden until "Show code" is pressed.
    """
    import nbformat

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
    title = title or title_for(params)

    merged = nbformat.v4.new_notebook()
    first = next((nb for nb in loaded if nb is not None), None)
    if first is not None:
        merged.metadata = {k: v for k, v in first.metadata.items() if k in ("kernelspec", "language_info")}
    merged.metadata["title"] = title
    failures: list[str] = []
    cells = [nbformat.v4.new_markdown_cell(_inline_local_images(text, run_dir))
             for text in _header_markdown(run_dir, params, env, title, [p.name for p in paths], preset)]
    for i, (path, nb) in enumerate(zip(paths, loaded), 1):
        heading = (f'<a id="nb-{i}"></a>\n<div class="kd-nb-heading">Notebook {i} of {len(paths)}: '
                   f'<code>{html.escape(path.name)}</code></div>')
        if nb is None:
            heading += f"\n\n> **{html.escape(path.name)} was not found** ({html.escape(str(path))}): " \
                       "this notebook did not run, so its results are missing from the report."
        cells.append(nbformat.v4.new_markdown_cell(heading))
        if nb is not None:
            cells += _prepare_notebook(nb, path.parent, i, failures)
    merged.cells = cells
    if failures:
        print(f"report.html: {len(failures)} formula(s) shown as TeX (not convertible): " + "; ".join(failures))

    body = _export_html(merged, title, run_dir)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out_html, body)

