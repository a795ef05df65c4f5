"""Formulas become MathML at build time, so the report renders them offline and in the PDF."""

import logging
import re
from pathlib import Path

import nbformat
import pytest

from helpers.report import mathml

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KD_LOSS = r"$$\mathcal{L} = (1-\alpha)\,\mathrm{CE} + \alpha T^2 \mathrm{KL}(p_T^t \| p_T^s)$$"


def convert(text):
    fails = []
    return mathml.markdown_math_to_mathml(text, fails), fails


def test_display_and_inline_math_become_mathml():
    out, fails = convert(f"Loss {KD_LOSS} with temperature $T$.")
    assert fails == [] and "$" not in out and out.count("<math") == 2
    assert out.count('display="block"') == 1 and out.count('display="inline"') == 1
    assert out.startswith("Loss ") and out.endswith("</math>.")
    assert "\n" not in out  # one line: no blank line can end the paragraph (or list item) around it


def test_display_math_may_span_lines_and_inline_math_may_wrap_once():
    out, fails = convert("$$a +\nb$$ and $x +\ny$ but not $x +\n\ny$")
    assert fails == [] and out.count("<math") == 2 and "$x +\n\ny$" in out


@pytest.mark.parametrize(
    "text",
    [
        "costs $5 and $6 today",  # currency: the closing $ is preceded by a space
        "from $5-$10",  # the closing $ is followed by a digit
        "a $ b $ c",  # the opening $ is followed by a space
        r"a literal \$x\$ sign",  # escaped dollars
        "code `$x$` here",
        "code ``a ` $x$`` here",  # a two-backtick code span
        "```\nprint('$x$')\n$$y$$\n```",  # fenced code
        "~~~python\n$x$\n~~~",
        "```\n$x$ never closed",  # an unclosed fence runs to the end
    ],
)
def test_text_that_is_not_math_is_left_alone(text):
    out, fails = convert(text)
    assert out == text and fails == []


def test_math_around_code_is_converted_and_code_kept():
    text = "$a$ `$b$`\n```\n$c$\n```\n$d$ and $\\$5$"
    out, fails = convert(text)
    assert fails == [] and out.count("<math") == 3 and "`$b$`" in out and "\n$c$\n" in out
    assert "<mi>&#x00024;</mi><mn>5</mn>" in out  # \$ inside a formula is a dollar sign


def test_unconvertible_tex_stays_visible_in_code_is_reported_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="helpers.mathml"):
        out, fails = convert(r"bad $$x \big\| y$$, $\frac{a$ and $a^{}^$ but $b$")
    assert len(fails) == 3 and out.count("<code>") == 3 and out.count("<math") == 1
    assert r"<code>&#36;&#36;x &#92;big&#92;&#124; y&#36;&#36;</code>" in out
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3
    assert mathml.markdown_math_to_mathml(r"$\frac{a$").startswith("<code>")  # no list: no crash


def convert_cells(nb, failures=None) -> int:
    """The formulas of every markdown cell as the report converts them; returns how many became MathML."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = mathml.markdown_math_to_mathml(cell.source, failures)
    return sum(c.source.count("<math") for c in nb.cells if c.cell_type == "markdown")


def html_of(*cells):
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(c) for c in cells]
    n = convert_cells(nb)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    return n, body[body.index("<body") :]  # (the template's head configures MathJax with "$$")


def test_mathml_survives_nbconvert_markdown():
    n, body = html_of(
        f"Intro {KD_LOSS} after **bold**",
        "Inline $z_{s,p}^2 * a_1 * b_2$ and $\\text{*x* _y_}$",
        "- item $$\\frac{a_1}{b_2}$$ and\n- $|x|$ in a list\n\n> quoted $T_1$",
        "| a | b |\n|---|---|\n| $\\alpha|x|$ | 2 |",
    )
    assert n == 7 and body.count("<math") == 7 and "$" not in body
    assert "<em>" not in body and body.count("<strong>") == 1  # nothing inside the MathML re-read as markdown
    assert body.count("<li>") == 2 and "<blockquote>" in body and body.count("<td>") == 2  # structure kept
    assert re.search(r"<li>item <span class=\"kd-math\"[^>]*><math [^>]*display=\"block\"", body)


def test_mathml_markdown_escaping_is_needed():
    """Guard: without the escaping in mathml.py, latex2mathml's text would be read as markdown."""
    from latex2mathml.converter import convert as l2m
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    assert "<em>" in markdown2html_mistune(l2m(r"\text{*x*}"))
    assert "<em>" not in markdown2html_mistune(mathml.markdown_math_to_mathml(r"$\text{*x*}$"))


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")))
def test_every_formula_of_the_notebooks_converts(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    before = [c.source for c in nb.cells if c.cell_type == "markdown"]
    fails = []
    n = convert_cells(nb, fails)
    after = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert fails == [] and n == sum(s.count("<math") for s in after)
    assert n >= sum(s.count("$$") // 2 for s in before)
    left = [s for s in after if re.search(r"(?<!\\)\$(?=\S)[^$\n]*[^\s\\]\$(?!\d)", s)]  # anything left like $...$
    assert left == []
