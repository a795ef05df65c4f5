"""The report a reader gets: table files that agree, honest analysis text, one self-contained HTML.

The Chromium tests load the page in a real browser (skipped, with the reason, when Debian's
chromium package is not installed: `.ci/install-browser.sh` installs it).
"""

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from helpers.report import browser
from helpers.report import build as report
from helpers.results import analysis, files, table

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["background", "aeroplane", "bicycle"]
needs_chromium = pytest.mark.skipif(
    browser.find_chromium() is None, reason="Chromium not installed (apt-get install chromium)"
)


def _ci(diff, low, high):
    return {
        "diff": diff,
        "low": low,
        "high": high,
        "significant": low > 0 or high < 0,
        "n_resamples": 1000,
        "level": 0.95,
    }


def _row(method, label, miou, latency, diff=None, params=2_523_456, n_seeds=1, std=None):
    return {
        "method": method,
        "label": label,
        "miou": miou,
        "miou_std": std,
        "n_seeds": n_seeds,
        "pixel_acc": miou + 0.3,
        "iou_per_class": {"background": 0.9, "aeroplane": miou, "bicycle": float("nan")},
        "params": params,
        "params_str": f"{params / 1e6:.2f}M",
        "gflops": 0.5512,
        "latency_ms": latency,
        "latency_std_ms": 1.2,
        "arch": "lraspp_mobilenet_v3_small",
        "diff_vs_baseline": diff,
    }


def make_results(response_ci=(0.0178, -0.0050, 0.0401), feature_ci=(0.0300, 0.0100, 0.0500), n_seeds=1):
    std = 0.004 if n_seeds > 1 else None
    return {
        "rows": [  # teacher first on purpose: the files put it last
            _row("teacher", "Teacher (reference)", 0.7034, 80.12, params=42_004_074),
            _row("baseline", "Without KD (Baseline)", 0.5834, 15.23, n_seeds=n_seeds, std=std),
            _row(
                "response",
                "Response-Based",
                0.5834 + response_ci[0],
                15.45,
                _ci(*response_ci),
                n_seeds=n_seeds,
                std=std,
            ),
            _row("feature", "Feature-Based", 0.5834 + feature_ci[0], 15.38, _ci(*feature_ci), n_seeds=n_seeds, std=std),
        ],
        "latency": {
            "device": "cpu",
            "threads": 2,
            "dtype": "float32",
            "input_size": [1, 3, 64, 64],
            "path": "eager fp32",
        },
        "protocol": "single-scale, full resolution, dataset-level confusion matrix, label 255 ignored; split: val",
        "run": "unit",
    }


ORDER = ["baseline", "response", "feature", "teacher"]
TXT_LABELS = {
    "baseline": "Without KD (Baseline)",
    "response": "Response-Based",
    "feature": "Feature-Based",
    "teacher": "Teacher (reference)",
}


def _txt_rows(text):
    """{method: [mIoU, params_str, latency mean]} parsed from the .txt table."""
    out = {}
    for method, label in TXT_LABELS.items():
        m = re.search(rf"^{re.escape(label)}\s+([\d.]+)\s+(\S+)\s+([\d.]+) ± [\d.]+$", text, re.M)
        assert m, f"no row for {label} in\n{text}"
        out[method] = [float(m.group(1)), m.group(2), float(m.group(3))]
    return out


def test_table_files_agree(tmp_path):
    res = make_results()
    paths = files.write_table_files(res, tmp_path)
    assert {p.name for p in paths.values()} == {f"kd_comparison_results.{e}" for e in ("txt", "md", "csv", "json")}
    txt = _txt_rows(paths["txt"].read_text(encoding="utf-8"))
    md_lines = [ln for ln in paths["md"].read_text(encoding="utf-8").splitlines() if ln.startswith("| ")]
    md = {ln.split(" | ")[0][2:]: [c.strip() for c in ln.strip("| ").split(" | ")] for ln in md_lines[1:]}
    with open(paths["csv"], newline="", encoding="utf-8") as f:
        csv_rows = {r["method"]: r for r in csv.DictReader(f)}
    js = json.loads(
        paths["json"].read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"{c} written into the JSON")
    )
    assert js == files.read_table_json(tmp_path)
    js_rows = {r["method"]: r for r in js["rows"]}
    assert list(csv_rows) == ORDER
    for method in ORDER:
        want = next(r for r in res["rows"] if r["method"] == method)
        md_row = md[TXT_LABELS[method]]
        assert (
            txt[method][0]
            == float(md_row[1])
            == round(float(csv_rows[method]["miou"]), 4)
            == round(js_rows[method]["miou"], 4)
            == round(want["miou"], 4)
        )
        assert txt[method][1] == md_row[2] == csv_rows[method]["params_str"] == want["params_str"]
        assert (
            txt[method][2]
            == float(md_row[3].split(" ± ")[0])
            == float(csv_rows[method]["latency_ms"])
            == js_rows[method]["latency_ms"]
            == want["latency_ms"]
        )
        assert float(md_row[4]) == round(float(csv_rows[method]["pixel_acc"]), 4)
        assert int(csv_rows[method]["params"]) == js_rows[method]["params"] == want["params"]
        assert js_rows[method]["iou_per_class"]["bicycle"] is None  # NaN -> null
        assert csv_rows[method]["iou_bicycle"] == ""
        assert float(csv_rows[method]["iou_aeroplane"]) == want["miou"]
    d = res["rows"][2]["diff_vs_baseline"]
    assert float(csv_rows["response"]["diff_low"]) == d["low"]
    assert "+0.0178 [-0.0050, +0.0401], not distinguishable from 0" in md["Response-Based"][6]
    assert "+0.0300 [+0.0100, +0.0500], distinguishable from 0" in md["Feature-Based"][6]


def test_txt_follows_the_guide_layout(tmp_path):
    text = files.write_table_files(make_results(), tmp_path)["txt"].read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[:5] == [
        "=" * 80,
        "COMPARISON TABLE",
        "=" * 80,
        "",
        "Knowledge Distillation              mIoU         # Parameters       Inference Speed (ms)",
    ]
    assert lines[5] == "-" * 90
    assert lines[6] == "Without KD (Baseline)               0.5834       2.52M              15.23 ± 1.2"
    assert lines[7].startswith("Response-Based ") and lines[8].startswith("Feature-Based ")
    assert lines[9] == "-" * 90 and lines[10].startswith("Teacher (reference) ")
    ci = {ln.split()[0]: ln for ln in lines if ln.startswith("  ")}
    assert "[-0.0050, +0.0401]" in ci["Response-Based"] and "not distinguishable" in ci["Response-Based"]
    assert "not" not in ci["Feature-Based"] and "distinguishable" in ci["Feature-Based"]
    latency = next(ln for ln in lines if ln.startswith("Latency:"))
    for part in ("cpu", "2 threads", "float32", "1x3x64x64", "eager fp32"):
        assert part in latency
    assert any(ln.startswith("Protocol: single-scale") and "255 ignored" in ln for ln in lines)


def test_several_seeds_show_mean_and_std(tmp_path):
    text = files.write_table_files(make_results(n_seeds=3), tmp_path)["txt"].read_text(encoding="utf-8")
    assert "Without KD (Baseline)               0.5834 ± 0.0040" in text
    assert "over 3 seeds" in text


def test_analysis_says_plainly_when_kd_did_not_help():
    res = make_results(response_ci=(0.0100, -0.0050, 0.0250), feature_ci=(-0.0020, -0.0200, 0.0160))
    text = analysis.analysis_text(res)
    assert text.count("not distinguishable from zero") == 2
    assert "did not help" in text
    assert "improv" not in text.lower() and "better" not in text.lower()
    assert "not established" in text  # the best mean is a KD method, but only by noise


def test_analysis_numbers_come_from_the_results():
    text = analysis.analysis_text(make_results())
    assert "Highest student mIoU: Feature-Based (0.6134)" in text
    assert "+0.0300 mIoU (95% CI +0.0100 to +0.0500)" in text
    # gap teacher - baseline = 0.12; feature recovers 0.03 / 0.12 = 25 %, response 0.0178 / 0.12
    assert "Feature-Based 25%" in text and "Response-Based 15%" in text
    assert "same number of parameters (2.52M)" in text
    assert "within measurement noise" in text  # 0.22 ms vs a combined std of 1.7 ms
    slow = make_results()
    slow["rows"][3]["latency_ms"] = 25.0
    assert "slower" in analysis.analysis_text(slow)


PNG_FILE_COLOR = (200, 30, 30)
# The fixture's formulas (4 in all, with `$\mathrm{CE}$`): 02's loss as display math, 05's IoU in a
# list item, and T^2 in a table cell.
BASELINE_CE = (
    r"\mathcal{L}_{\text{baseline}} = \mathrm{CE}(z_s, y) = -\frac{1}{|\Omega|}\sum_{p\in\Omega}"
    r"\log \operatorname{softmax}(z_s)_{p, y_p}"
)
IOU = r"\mathrm{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c}"
N_FORMULAS = 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with table files, a figure file and two small executed-looking notebooks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    run = tmp_path_factory.mktemp("run") / "demo"
    (run / "figs").mkdir(parents=True)
    files.write_table_files(make_results(), run)
    Image.new("RGB", (24, 16), PNG_FILE_COLOR).save(run / "figs" / "sample.png")
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1, 2], [1, 0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode("ascii")

    nb1 = nbformat.v4.new_notebook()
    nb1.metadata["papermill"] = {"parameters": {"epochs": 2, "preset": "tiny"}}
    nb1.cells = [
        nbformat.v4.new_markdown_cell(
            "# Data\n\nA sample: ![sample](figs/sample.png)\n\n"
            f"- per class: ${IOU}$\n\n| symbol | meaning |\n|---|---|\n"
            "| $T^2$ | gradient scale |\n\nInline HTML stays: H<sub>2</sub>O."
        ),
        nbformat.v4.new_code_cell(
            "secret_code_marker = plot()",
            execution_count=1,
            outputs=[
                nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
            ],
        ),
    ]
    nb2 = nbformat.v4.new_notebook()
    nb2.metadata["papermill"] = {"parameters": {"epochs": 2, "lr": 0.01}}
    nb2.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "version_major": 2,
            "version_minor": 0,
            "state": {
                "box": {
                    "model_name": "HBoxModel",
                    "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]},
                },
                "l": {"model_name": "HTMLModel", "state": {"value": "train: 100%"}},
                "p": {"model_name": "FloatProgressModel", "state": {"value": 4, "max": 4}},
                "r": {"model_name": "HTMLModel", "state": {"value": " 4/4 [00:01&lt;00:00]"}},
                # a tqdm bar with leave=False: hidden in JupyterLab when done, its last refresh at 84%
                "gone": {
                    "model_name": "HBoxModel",
                    "state": {"children": ["IPY_MODEL_gl"], "layout": "IPY_MODEL_gone_layout"},
                },
                "gl": {"model_name": "HTMLModel", "state": {"value": "eval stale: 84%"}},
                "gone_layout": {"model_name": "LayoutModel", "state": {"visibility": "hidden"}},
            },
        }
    }
    nb2.cells = [
        nbformat.v4.new_markdown_cell(f"# Baseline\n\nThe loss is $\\mathrm{{CE}}$:\n\n$${BASELINE_CE}$$"),
        nbformat.v4.new_code_cell(
            "train()",
            execution_count=1,
            outputs=[
                nbformat.v4.new_output("stream", name="stdout", text="epoch 1 loss 0.93\n"),
                nbformat.v4.new_output(
                    "display_data",
                    data={
                        "text/plain": "HBox(children=(...))",
                        "application/vnd.jupyter.widget-view+json": {
                            "model_id": "box",
                            "version_major": 2,
                            "version_minor": 0,
                        },
                    },
                ),
                nbformat.v4.new_output(
                    "display_data",
                    data={
                        "text/plain": "HBox(children=(...))",
                        "application/vnd.jupyter.widget-view+json": {
                            "model_id": "gone",
                            "version_major": 2,
                            "version_minor": 0,
                        },
                    },
                ),
            ],
        ),
    ]
    nbformat.write(nb1, run / "01_data.ipynb")
    nbformat.write(nb2, run / "02_baseline.ipynb")
    return run


@pytest.fixture(scope="module")
def report_html(run_dir):
    return report.build_report(
        run_dir,
        [run_dir / "01_data.ipynb", run_dir / "02_baseline.ipynb"],
        env={"python": "3.11.9", "torch": "2.x", "date": "2030-01-01"},
    )


def test_report_is_one_self_contained_page(report_html, run_dir):
    assert report_html == run_dir / "report.html"
    page = report_html.read_text(encoding="utf-8")
    table, nb1, nb2 = (page.find(s) for s in ("Knowledge Distillation", "Notebook 1 of 2", "Notebook 2 of 2"))
    assert 0 < table < page.find("<table") + 500 and table < nb1 < nb2, "table first, notebooks in order"
    assert page.find("Parameters of this run") < nb1 and page.find("Environment") < nb1
    assert "<code>lr</code>" in page and "2030-01-01" in page  # papermill parameters, given env
    assert "not distinguishable from zero" in page  # the analysis text
    srcs = re.findall(r"<img\b[^>]*?\bsrc=[\"']([^\"']*)", page)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs), [s[:60] for s in srcs]
    assert not re.search(r"<(script|link|img)\b[^>]*\b(src|href)=[\"']?(https?:)?//", page), (
        "no resource from the network"
    )
    assert "train: 100% |████████████████████| 4/4 [00:01&lt;00:00]" in page  # widget -> text
    assert "application/vnd.jupyter.widget" not in page
    assert "eval stale" not in page and "HBox(children" not in page  # a hidden bar stays hidden
    assert re.search(r'<body class="[^"]*\bkd-hide-code\b', page), "code hidden by default"
    assert ">Show code</button>" in page
    assert "body.kd-hide-code .jp-CodeCell .jp-Cell-inputWrapper { display: none" in page
    assert "secret_code_marker" in page  # hidden, not removed


def test_report_without_table_says_so(tmp_path):
    out = report.build_report(tmp_path, [tmp_path / "01_data.ipynb"], params={"epochs": 1}, env={"python": "3"})
    page = out.read_text(encoding="utf-8")
    assert "No comparison table yet" in page and "01_data.ipynb was not found" in page


@needs_chromium
def test_report_renders_in_chromium(report_html):
    check = browser.check_report_in_browser(report_html)
    assert check["table"] and check["table_first"], check
    assert check["images"] == 2 and check["broken"] == [], check
    assert check["code_hidden"] is True, check


def test_final_page_keeps_every_formula_structured(report_html):
    """The page a reader opens, not the converter's output: each <math> element still holds its
    token elements (nbconvert's embed_images=True re-serialised them into flat text once)."""
    from helpers.report.mathml import hollow_formulas

    page = report_html.read_text(encoding="utf-8")
    total, hollow = hollow_formulas(page)
    assert total == N_FORMULAS and hollow == [], (total, hollow)
    assert "<mfrac>" in page and "<msub>" in page and "&#8721;" in page or "∑" in page  # fraction, index, sum
    assert "H<sub>2</sub>O" in page  # other inline HTML of a markdown cell survives too
    assert re.search(r"<td[^>]*><math\b", page), "the formula in a table cell stays in its cell"


def test_hollow_formulas_are_found():
    from helpers.report.mathml import hollow_formulas

    flat = '<math display="block"></math><mrow></mrow><mi></mi>x'  # what the broken export produced
    assert hollow_formulas(flat) == (1, [""])
    assert hollow_formulas("<math><mrow><mi>x</mi></mrow></math>") == (1, [])


@needs_chromium
def test_formulas_have_real_size_in_chromium(report_html):
    check = browser.check_report_in_browser(report_html)
    formulas = check["formulas"]
    assert len(formulas) == N_FORMULAS, formulas
    assert all(f["w"] > 5 and f["h"] > 5 for f in formulas), formulas
    stacked = [f for f in formulas if f["fraction"]]
    assert len(stacked) == 2 and all(f["h"] > 1.5 * check["font_px"] for f in stacked), (check["font_px"], stacked)


@needs_chromium
def test_browser_check_sees_flat_formulas(tmp_path):
    page = tmp_path / "flat.html"
    page.write_text(
        '<html><body><p><math display="block"></math><mrow></mrow><mi></mi>x = 1</p>'
        "<p><math><mfrac><mi>a</mi><mi>b</mi></mfrac></math></p></body></html>"
    )
    flat, fraction = browser.check_report_in_browser(page)["formulas"]
    assert flat["h"] == 0 and fraction["w"] > 0 and fraction["h"] > 0, (flat, fraction)


@needs_chromium
def test_browser_check_sees_broken_images(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><table><tr><td>Other</td></tr></table>"
        '<img src="figs/missing.png"><img src="data:image/png;base64,AAAA"></body></html>'
    )
    check = browser.check_report_in_browser(page)
    assert check["table"] is False and check["images"] == 2
    assert check["broken"][0] == "figs/missing.png" and len(check["broken"]) == 2


@needs_chromium
def test_export_pdf(report_html, tmp_path):
    pdf = browser.export_pdf(report_html, tmp_path / "report.pdf")
    assert pdf == tmp_path / "report.pdf" and pdf.read_bytes()[:5] == b"%PDF-"
    assert pdf.stat().st_size > 10_000
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils not installed (.ci/install-browser.sh installs it)")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    import unicodedata

    # the formulas' symbols in the order the page sets them (a fraction's numerator sits on the line above
    # the rest, its denominator and a sum's limits on the line below); math italic letters as plain ones
    words = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))
    assert re.search(r"IoUc=.*TPc.*\+.*FPc.*\+.*FNc", words), words[-600:]
    assert "Lbaseline=CE(zs,y)=−1∑logsoftmax(zs)p,y" in words, words[-600:]
    assert re.search(r"\|Ω\|.*p∈Ω", words), words[-600:]  # the fraction's denominator, the sum's limits
    assert "\\frac" not in text and "$$" not in text


def test_export_pdf_without_chromium(report_html, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMIUM", raising=False)
    assert browser.export_pdf(report_html, tmp_path / "report.pdf") is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [browser.PDF_NOTICE] and "apt-get install chromium" in lines[0]
    assert not (tmp_path / "report.pdf").exists()


def test_install_script_never_fails_ci(tmp_path):
    script = ROOT / ".ci" / "install-browser.sh"
    sh = shutil.which("sh")
    assert subprocess.run([sh, "-n", str(script)]).returncode == 0
    # no chromium and no apt-get on PATH: a notice, exit status 0
    res = subprocess.run([sh, str(script)], env={"PATH": str(tmp_path)}, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "notice" in res.stdout.lower(), res


def test_noisy_latency_is_said_under_the_table():
    quiet = make_results()
    assert "Latency was noisy" not in table.table_markdown(quiet)
    noisy = make_results()
    noisy["rows"][0]["latency_ms"], noisy["rows"][0]["latency_std_ms"] = 75.0, 152.6
    note = next(line for line in table.table_text(noisy).splitlines() if line.startswith("Latency was noisy"))
    assert noisy["rows"][0]["label"] in note or "Without KD" in note
