"""The notebooks' LaTeX as MathML, for a report that renders its formulas offline.

JupyterLab renders `$...$` and `$$...$$` with the MathJax it bundles; an exported HTML page would
need MathJax from the internet, and a PDF printed from it shows the raw TeX. So the report converts
every formula at build time with `latex2mathml` into MathML, which browsers (and Chromium's PDF
printing) render natively: no script, no network request.

Rules: `$$...$$` is display math (it may span lines); `$...$` is inline math when the opening `$` is
not followed by a space, the closing one not preceded by a space nor followed by a digit (so "$5 and
$6" stays text), on one line; `\\$` is a dollar sign. Nothing inside inline code or fenced code
blocks is touched. A formula latex2mathml can't convert stays visible as its TeX in <code>, and is
counted in the returned failures, never an exception.
"""
from __future__ import annotations

import html
import re

_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]+`)", re.DOTALL)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
_INLINE = re.compile(r"(?<![\\$\w])\$(?=[^\s$])([^$\n]+?)(?<=[^\s\\])\$(?![\d$])")


def _convert(tex: str, display: bool, failures: list) -> str:
    from latex2mathml.converter import convert

    try:
        out = convert(tex.strip(), display="block" if display else "inline")
    except Exception as err:  # latex2mathml raises its own and plain errors for unknown TeX
        failures.append(f"{tex.strip()[:80]} ({type(err).__name__}: {err})")
        return f"<code>{html.escape(tex.strip())}</code>"
    out = out.replace("\n", "")
    if re.search(r">[^<]*\\[A-Za-z|{}]", out):  # a TeX command left as text (e.g. "\\big\\|"): not converted
        failures.append(f"{tex.strip()[:80]} (left TeX in the MathML)")
        return f"<code>{html.escape(tex.strip())}</code>"
    return f'<div class="kd-math">{out}</div>' if display else out


def _text_to_mathml(text: str, failures: list, counts: list) -> str:
    def display(m):
        counts.append(1)
        return "\n\n" + _convert(m.group(1), True, failures) + "\n\n"

    def inline(m):
        counts.append(1)
        return _convert(m.group(1), False, failures)

    return _INLINE.sub(inline, _DISPLAY.sub(display, text))


def markdown_math_to_mathml(text: str, failures: list | None = None) -> str:
    """`text` (markdown) with its `$$...$$` and `$...$` formulas as MathML (see the module docstring).
    Formulas that could not be converted are appended to `failures` when a list is given."""
    failures = [] if failures is None else failures
    parts = _CODE.split(text)  # odd items are code: left alone
    return "".join(p if i % 2 else _text_to_mathml(p, failures, []) for i, p in enumerate(parts))


def notebook_math_to_mathml(nb) -> tuple[int, list[str]]:
    """Convert the formulas of every markdown cell of an nbformat notebook in place; returns
    (formulas converted, the ones that failed)."""
    failures, counts = [], []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts = _CODE.split(cell.source)
            cell.source = "".join(p if i % 2 else _text_to_mathml(p, failures, counts)
                                  for i, p in enumerate(parts))
    return len(counts) - len(failures), failures
