"""The cells of a run's executed notebooks, ready to merge into the report: local images inlined as data:
URIs, formulas as MathML, saved widgets (tqdm bars) replaced by their text, hidden widgets left out."""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path
from urllib.parse import unquote

from ..results.table import num
from .mathml import markdown_math_to_mathml

MD_IMG = re.compile(r'(!\[[^\]]*\]\(\s*<?)([^)\s>]+)(>?(?:\s+"[^"]*")?\s*\))')
HTML_IMG = re.compile(r'(<img\b[^>]*?\bsrc\s*=\s*)(["\'])(.*?)\2', re.IGNORECASE | re.DOTALL)


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


def inline_local_images(text: str, base_dir: Path) -> str:
    """Replace markdown ![..](file) and <img src="file"> references by data: URIs."""

    def md(m):
        uri = _data_uri(m.group(2), base_dir)
        return m.group(0) if uri is None else m.group(1) + uri + m.group(3)

    def tag(m):
        uri = _data_uri(html.unescape(m.group(3)), base_dir)
        return m.group(0) if uri is None else f"{m.group(1)}{m.group(2)}{uri}{m.group(2)}"

    return HTML_IMG.sub(tag, MD_IMG.sub(md, text))


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


def prepare_notebook(nb, base_dir: Path, index: int, failures: list) -> list:
    """The cells of one executed notebook, ready to merge: unique ids, local images inlined,
    formulas as MathML (those that fail are appended to `failures`), saved widgets (tqdm bars)
    replaced by their text so no widget JavaScript is needed, and widgets that were hidden (finished
    leave=False bars) left out."""
    import nbformat

    state = (nb.metadata.get("widgets") or {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    cells = []
    for j, cell in enumerate(nb.cells):
        cell = nbformat.from_dict(dict(cell))
        cell["id"] = f"nb{index}-cell{j}"
        if cell.cell_type == "markdown":
            cell.source = inline_local_images(markdown_math_to_mathml(cell.source, failures), base_dir)
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
                data["text/html"] = inline_local_images(src, base_dir)
        if "outputs" in cell:
            cell["outputs"] = [
                o
                for o in outputs
                if o.get("output_type") == "stream" or o.get("data") or o.get("output_type") == "error"
            ]
        cells.append(cell)
    return cells
