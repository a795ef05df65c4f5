"""Formulas become MathML at build time, so the report renders them offline and in the PDF."""
from pathlib import Path

import nbformat
import pytest

from helpers import mathml

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_display_and_inline_math_become_mathml_and_code_is_left_alone():
    text = ("Loss $$\\mathcal{L} = \\alpha\\, T^2$$ with $T$ and `$x$` in code,\n"
            "```\nprint('$5 and $6')\n```\ncosts $5 and $6, a literal \\$ sign.")
    fails = []
    out = mathml.markdown_math_to_mathml(text, fails)
    assert out.count("<math") == 2 and 'display="block"' in out and fails == []
    assert "`$x$`" in out and "print('$5 and $6')" in out and "costs $5 and $6" in out and "\\$ sign" in out


def test_unconvertible_tex_stays_visible_and_is_reported():
    fails = []
    out = mathml.markdown_math_to_mathml("bad $$x \\big\\| y$$ here", fails)
    assert "<code>x \\big\\| y</code>" in out and len(fails) == 1


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")))
def test_every_formula_of_the_notebooks_converts(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    n, fails = mathml.notebook_math_to_mathml(nb)
    assert fails == []
    left = [c.source for c in nb.cells if c.cell_type == "markdown" and "$$" in c.source]
    assert left == []


def test_mathml_survives_nbconvert_markdown():
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Inline $z_{s,p}^2$ and\n\n$$\\frac{a_1}{b_2} * c$$\n\ndone")]
    mathml.notebook_math_to_mathml(nb)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    main = body[body.index("<main"):]  # (the template's head configures MathJax with "$$": not content)
    assert main.count("<math") == 2 and "$$" not in main and "<em>" not in main
