"""The notebooks' LaTeX as MathML, for a report that renders its formulas offline.

JupyterLab renders `$...$` and `$$...$$` with the MathJax it bundles; an exported HTML page would
need MathJax from the internet, and a PDF printed from it shows the raw TeX. So the report converts
every formula at build time with `latex2mathml` into MathML, which browsers (and Chromium's PDF
printing) render natively: no script, no network request.

Rules (pandoc's): `$$...$$` is display math (it may span lines); `$...$` is inline math when the
opening `$` is not followed by a space and the closing one is not preceded by a space nor followed by
a digit (so "$5 and $6" stays text); it may wrap onto the next line but not cross a blank line.
`\\$` is a dollar sign, also inside a formula. Nothing in inline code (any number of backticks) or
in fenced code blocks (``` or ~~~) is touched.

The MathML must come through nbconvert's markdown renderer (mistune 3 + nbconvert's math plugin)
unchanged: it is emitted on one line, inline (no blank lines, so it stays inside its paragraph,
list item, block quote or table cell), and every character of its text that markdown or the math
plugin would read (`_ * \\ $ | ~ [ ] ! backtick`) is written as a numeric character reference.
Display math is `<math display="block">` in `<span class="kd-math" style="display:block">` (the
report styles .kd-math: horizontal scroll for wide formulas). A formula that latex2mathml can't
convert (an error, a TeX command it left as text, unbalanced braces) is shown as its original TeX
in <code>, logged as a warning and appended to `failures`; it never raises.

nbconvert's `HTMLExporter(embed_images=True)` must not be used on the result: it re-serialises each
inline HTML tag on its own, which empties every <math> element (report.py explains).
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

# Fenced code (to its closing fence, or the end of the text) and inline code spans: left alone.
_FENCE = re.compile(
    r"^[ \t>]*(?P<f>(?P<c>[`~])(?P=c){2,})[^\n`]*(?:\n.*?)??(?:\n[ \t>]*(?P=f)(?P=c)*[ \t]*(?=\n|\Z)|\Z)", re.M | re.S
)
_SPAN = re.compile(r"(?<!`)(?P<b>`+)(?!`).+?(?<!`)(?P=b)(?!`)", re.S)
_MATH = re.compile(
    r"""
    \\\$                                                  # an escaped dollar: text
  | \$\$(?P<display>(?:\\.|[^$\\])+?)\$\$                 # display math, may span lines
  | \$(?=[^\s$])(?P<inline>(?:\\.|[^$\\\n]|\n(?![ \t]*\n))+?)(?<=[^\s])\$(?!\d)   # inline math
""",
    re.S | re.X,
)
# Characters markdown (mistune + plugins) or nbconvert's math plugin would interpret in text.
_SPECIAL = re.compile(r"[_*\\$|~\[\]!`<>&\n]")


def _entities(text: str) -> str:
    """Plain text -> HTML text with every markdown-significant character as &#N; (one line)."""
    return _SPECIAL.sub(lambda m: " " if m.group() == "\n" else f"&#{ord(m.group())};", text)


def _escape_mathml(mathml: str) -> str:
    """The text nodes of latex2mathml's output made inert for markdown (tags and attributes kept)."""
    return re.sub(
        r">([^<]+)<",
        lambda m: ">" + re.sub(r"[_*\\$|~\[\]!`\n]", lambda c: f"&#{ord(c.group())};", m.group(1)) + "<",
        mathml.replace("\n", ""),
    )


def _balanced(tex: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\.", "", tex):
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False
    return depth == 0


def _convert(tex: str, display: bool, failures: list) -> str | None:
    from latex2mathml.converter import convert

    tex = tex.strip()
    try:
        why = None if _balanced(tex) else "unbalanced braces"
        out = convert(tex, display="block" if display else "inline") if why is None else ""
        if why is None and re.search(r">[^<]*\\[A-Za-z|{}]", out):  # a TeX command left as text
            why = "TeX left in the MathML"
    except Exception as err:  # latex2mathml raises its own and plain errors for unknown TeX
        why = f"{type(err).__name__}: {err}"
    if why is not None:
        failures.append(f"{tex[:80]} ({why})")
        log.warning("formula shown as TeX (not convertible to MathML): %s (%s)", tex[:80], why)
        return None
    out = _escape_mathml(out)
    return f'<span class="kd-math" style="display:block">{out}</span>' if display else out


def _math_to_mathml(text: str, failures: list) -> str:
    def sub(m: re.Match) -> str:
        tex = m.group("display") if m.group("display") is not None else m.group("inline")
        if tex is None:  # \$
            return m.group()
        out = _convert(tex, m.group("display") is not None, failures)
        if out is None:
            return f"<code>{_entities(m.group())}</code>"
        return out

    return _MATH.sub(sub, text)


def _outside_code(text: str, fn) -> str:
    """fn applied to the parts of `text` that are neither fenced code nor inline code."""
    out, pos = [], 0
    for fence in _FENCE.finditer(text):
        out += [_outside_spans(text[pos : fence.start()], fn), fence.group()]
        pos = fence.end()
    return "".join(out + [_outside_spans(text[pos:], fn)])


def _outside_spans(text: str, fn) -> str:
    out, pos = [], 0
    for span in _SPAN.finditer(text):
        out += [fn(text[pos : span.start()]), span.group()]
        pos = span.end()
    return "".join(out + [fn(text[pos:])])


def markdown_math_to_mathml(text: str, failures: list | None = None) -> str:
    """`text` (markdown) with its `$$...$$` and `$...$` formulas as MathML (see the module docstring).
    Formulas that could not be converted stay as TeX in <code>, are logged and, when a list is given,
    appended to `failures` ("tex (reason)")."""
    failures = [] if failures is None else failures
    return _outside_code(text, lambda part: _math_to_mathml(part, failures))


# A token element (identifier, operator, number, text) with text in it: what a formula's structure is made of.
_TOKEN = re.compile(r"<m(?:i|o|n|text)\b[^>]*>\s*[^<\s]", re.IGNORECASE)
_MATH_ELEMENT = re.compile(r"<math\b[^>]*>(.*?)</math>", re.IGNORECASE | re.DOTALL)


def hollow_formulas(html_text: str) -> tuple[int, list[str]]:
    """(number of <math> elements, the start of each one that holds no token element with text): a
    formula that lost its structure, e.g. re-serialised tag by tag into `<math></math><mi></mi>x`, which
    a browser shows as flat text after an empty formula."""
    bodies = _MATH_ELEMENT.findall(html_text)
    return len(bodies), [b[:80] for b in bodies if not _TOKEN.search(b)]
