"""The report's HTML page: JupyterLab's look without CDN scripts (formulas are MathML), code hidden behind a
"Show code" button, rendered by nbconvert from the merged notebook and checked for hollow formulas."""

from __future__ import annotations

import logging
from pathlib import Path

from .mathml import hollow_formulas
from .notebooks import HTML_IMG

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
@media print { .kd-code-toggle { display: none; } .jp-RenderedMarkdown table { font-size: 0.78em; }
  .jp-Cell, .jp-Cell-outputWrapper, .jp-OutputArea-child, .jp-OutputArea-output { break-inside: auto !important; }
  img, .kd-math, tr { break-inside: avoid; } }
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
_TEMPLATE = (
    """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{% block extra_css %}<style type="text/css">"""
    + _CSS
    + """</style>{% endblock extra_css %}
{%- block body_header -%}
<body class="jp-Notebook kd-hide-code" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<button id="kd-code-toggle" class="kd-code-toggle" type="button" aria-pressed="false">Show code</button>
<main>
{%- endblock body_header -%}
{% block footer_js %}<script>"""
    + _JS
    + """</script>{% endblock footer_js %}
"""
)


def _nbconvert_log() -> logging.Logger:
    """nbconvert's logger for us, without its warning about figures lacking alt text (every
    matplotlib output lacks it; nbconvert then adds a generic one)."""
    log = logging.getLogger("helpers.report.nbconvert")
    if not log.filters:
        log.addFilter(lambda rec: "Alternative text is missing" not in rec.getMessage())
    return log


def export_html(merged, title: str, run_dir: Path) -> str:
    """The merged notebook as one HTML page (our template); prints a line for each kind of damage
    found in it: formulas left without their MathML structure, images not inlined."""
    from nbconvert import HTMLExporter

    # Not embed_images=True: nbconvert then re-parses each inline HTML tag of a markdown cell alone
    # (IPythonRenderer.inline_html -> _html_embed_images, through BeautifulSoup), which closes every
    # opening tag at once and drops every closing one, so <math><mi>x</mi></math> came out as
    # <math></math><mi></mi>x (flat text). `notebooks.inline_local_images` has inlined the local images of
    # markdown and outputs already; nbconvert embeds cell attachments whatever the setting.
    exporter = HTMLExporter(template_name="lab", embed_images=False, raw_template=_TEMPLATE, log=_nbconvert_log())
    body, _ = exporter.from_notebook_node(merged, resources={"metadata": {"name": title, "path": str(run_dir)}})
    total, hollow = hollow_formulas(body)
    if hollow:
        print(f"report.html: {len(hollow)} of {total} formula(s) lost their MathML structure (they show as flat text)")
    leftovers = sorted({m.group(3)[:120] for m in HTML_IMG.finditer(body) if not m.group(3).startswith("data:")})
    if leftovers:
        print(f"report.html: {len(leftovers)} image(s) could not be inlined (not found?): " + ", ".join(leftovers))
    return body
