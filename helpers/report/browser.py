"""Headless Chromium for the report: print it to PDF, and check it the way a reader's browser sees it."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ..core.errors import UserError

PDF_NOTICE = (
    "report.pdf skipped: Chromium not found; install Debian's chromium package (apt-get install chromium) to get a PDF"
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
]


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM, else chromium / chromium-browser on PATH; or None."""
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser"]
    for name in filter(None, candidates):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run_chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile; kill its whole process group on timeout."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium")
    profile = tempfile.mkdtemp(prefix="kd-chromium-")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _stderr_tail(err: str) -> str:
    lines = [ln for ln in (err or "").splitlines() if ln.strip() and "dbus" not in ln.lower()]
    return lines[-1][:300] if lines else "no message"


def export_pdf(html_path, pdf_path=None, timeout: float = 120) -> Path | None:
    """Print report.html to PDF with headless Chromium; returns the PDF path, or None (with one
    printed line saying why) when Chromium is not installed or fails."""
    html_path = Path(html_path).resolve()
    pdf_path = Path(pdf_path) if pdf_path else html_path.with_suffix(".pdf")
    if find_chromium() is None:
        print(PDF_NOTICE)
        return None
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pdf_path.with_name(pdf_path.name + ".tmp.pdf").resolve()
    start = time.perf_counter()
    try:
        res = _run_chromium(
            [f"--print-to-pdf={tmp}", "--no-pdf-header-footer", "--virtual-time-budget=5000", html_path.as_uri()],
            timeout,
        )
    except subprocess.TimeoutExpired:
        print(f"report.pdf skipped: Chromium did not finish within {timeout:.0f} s")
        return None
    if res.returncode != 0 or not tmp.is_file() or tmp.read_bytes()[:4] != b"%PDF":
        tmp.unlink(missing_ok=True)
        print(f"report.pdf skipped: Chromium failed (exit {res.returncode}): {_stderr_tail(res.stderr)}")
        return None
    os.replace(tmp, pdf_path)
    print(f"wrote {pdf_path} ({pdf_path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return pdf_path


PRINT_WIDTH = 740  # CSS px: a Letter/A4 page less Chromium's default print margins (0.4 in each side)
_CHECK_JS = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); })
    .map(function (im) { var s = im.getAttribute('src') || ''; return s.length > 100 ? s.slice(0, 100) + '...' : s; });
  var tables = Array.prototype.slice.call(document.querySelectorAll('table'));
  var idx = tables.findIndex(function (t) { return t.textContent.indexOf('Knowledge Distillation') >= 0; });
  var input = document.querySelector('.jp-CodeCell .jp-Cell-inputWrapper');
  var width = document.documentElement.clientWidth;
  var wide = Array.prototype.slice.call(document.querySelectorAll('table, img, pre, svg, math'))
    .filter(function (e) { var r = e.getBoundingClientRect(); return r.width > 0 && r.right > width + 1; })
    .map(function (e) { return e.tagName.toLowerCase() + ' ' + Math.round(e.getBoundingClientRect().right) + 'px: ' +
                               (e.textContent || e.getAttribute('alt') || '').trim().slice(0, 60); });
  var external = performance.getEntriesByType('resource').map(function (r) { return r.name; })
    .filter(function (u) { return !/^(data|file|blob|about):/.test(u); });
  var line = parseFloat(getComputedStyle(document.body).fontSize) || 16;
  var formulas = Array.prototype.slice.call(document.querySelectorAll('math')).map(function (m) {
    var r = m.getBoundingClientRect();
    return {w: Math.round(r.width * 10) / 10, h: Math.round(r.height * 10) / 10,
            block: m.getAttribute('display') === 'block', fraction: m.querySelector('mfrac') !== null,
            text: (m.textContent || '').trim().slice(0, 40)};
  });
  var pre = document.createElement('pre'); pre.id = '__check';
  pre.textContent = JSON.stringify({table: idx >= 0, table_first: idx === 0, images: imgs.length,
    broken: broken, code_hidden: input ? getComputedStyle(input).display === 'none' : null,
    too_wide: wide, width: width, requests: external, formulas: formulas, font_px: line});
  document.body.appendChild(pre);
}, 0); });
</script>"""


def check_report_in_browser(html_path, timeout: float = 120, width: int = PRINT_WIDTH) -> dict:
    """Load a copy of the report, alone in an empty folder, in headless Chromium `width` CSS pixels
    wide (default: the printable width of a PDF page).

    Returns {"table": a table containing "Knowledge Distillation" exists, "table_first": it is the
    page's first table, "images": number of <img>, "broken": srcs of images that did not load,
    "code_hidden": the first code input is hidden (None without code cells), "too_wide": tables,
    images, pre blocks and formulas that reach past the page's width, "width", "requests": every
    resource the page fetched that is not inline (data:) or local, "formulas": the rendered box of
    every <math> element ({"w", "h" in CSS px, "block": display math, "fraction": holds an <mfrac>,
    "text"}; a formula that lost its MathML structure is an empty box: 0 high), "font_px": the body's
    font size, "seconds": wall time}.
    Relative or http(s) image sources show up as broken: the page must stand alone offline.
    """
    html_path = Path(html_path)
    if find_chromium() is None:
        raise UserError(
            "check_report_in_browser needs Chromium: install Debian's chromium package "
            "(apt-get install chromium) or set CHROMIUM to its path."
        )
    text = html_path.read_text(encoding="utf-8")
    cut = text.lower().rfind("</body>")
    text = text[:cut] + _CHECK_JS + text[cut:] if cut >= 0 else text + _CHECK_JS
    with tempfile.TemporaryDirectory(prefix="kd-check-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(text, encoding="utf-8")
        start = time.perf_counter()
        res = _run_chromium(
            [f"--window-size={width},1200", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()], timeout
        )
    m = re.search(r'<pre id="__check">(.*?)</pre>', res.stdout, re.DOTALL)
    if m is None:
        raise RuntimeError(
            f"Chromium did not report on {html_path} (exit {res.returncode}): {_stderr_tail(res.stderr)}"
        )
    summary = json.loads(html.unescape(m.group(1)))
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary
