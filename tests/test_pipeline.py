"""End to end: the smoke preset through the runner (01 -> 06), the files it promises, reuse, failures."""

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.report import browser
from helpers.results import analysis, table

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def cli(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


# A KD method from outside the repository, as a course student writes it (README: "Add your own KD method").
MY_KD = """
from helpers.methods import register

@register("logit_l1", label="Logit L1", teacher="logits", knobs={"eta": 1.0})
def logit_l1(s, t, target, cfg):
    valid = (target != 255).unsqueeze(1)
    return cfg.eta * ((s.logits - t.logits).abs() * valid).sum() / valid.sum().clamp(min=1)
"""
STUDENTS = ["baseline", "response", "feature", "pairwise", "logit_l1"]
LABELS = {
    "baseline": "Without KD (Baseline)",
    "response": "Response-Based",
    "feature": "Feature-Based",
    "pairwise": "Relation-Based (pair-wise)",
    "logit_l1": "Logit L1",
    "teacher": "Teacher (reference)",
}
NOTEBOOKS = [
    "01_data",
    "02_baseline",
    "03_response_kd",
    "04_feature_kd",
    "05_compare",
    "06_qualitative",
    "07_your_own_method",
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke preset with the guide's three methods, the built-in relation method and a method file from
    outside the repository (five rows), notebook 07 added to the report."""
    base = tmp_path_factory.mktemp("smoke")
    (base / "my_kd.py").write_text(MY_KD)
    args = [
        "run",
        "--preset",
        "smoke",
        "--out",
        str(base / "reports" / "smoke"),
        "--with",
        "07_your_own_method",
        "-p",
        "checkpoints_dir",
        str(base / "ckpt"),
        "-p",
        "data_root",
        str(base / "data"),
        "-p",
        "method_files",
        str(base / "my_kd.py"),
        "-p",
        "students",
        ",".join(STUDENTS),
    ]
    t0 = time.perf_counter()
    first = cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    return {
        "base": base,
        "out": base / "reports" / "smoke",
        "args": args,
        "first": first,
        "first_s": time.perf_counter() - t0,
    }


def test_progress_line_per_notebook(smoke):
    for i, name in enumerate(NOTEBOOKS, 1):
        assert re.search(rf"\[{i}/7\] {name} .*done in [0-9.]+ s", smoke["first"].stdout), smoke["first"].stdout
    for method in ("pairwise", "logit_l1"):  # no notebook trains them for every seed: the runner, before 05
        assert re.search(
            rf"{method} \(.*\): every seed, before 05 .*\n{method} seed 0 epoch 1/1 loss=", smoke["first"].stdout
        ), smoke["first"].stdout


def test_table_files_agree(smoke):
    out = smoke["out"]
    data = json.loads((out / "kd_comparison_results.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert list(rows) == [*STUDENTS, "teacher"]
    txt = (out / "kd_comparison_results.txt").read_text()
    assert "Knowledge Distillation" in txt and "Inference Speed (ms)" in txt
    for m in STUDENTS:
        line = next(ln for ln in txt.splitlines() if ln.startswith(LABELS[m]))
        assert f"{rows[m]['miou']:.4f}" in line and rows[m]["params_str"] in line
    assert len({rows[m]["params"] for m in STUDENTS}) == 1
    with open(out / "kd_comparison_results.csv") as f:
        for r in csv.DictReader(f):
            assert abs(float(r["miou"]) - rows[r["method"]]["miou"]) < 1e-9
    md = (out / "kd_comparison_results.md").read_text()
    assert "| Knowledge Distillation |" in md
    for m in STUDENTS[1:]:  # every KD row: Δ with its interval, boundary IoU and its Δ, latency
        d, b = rows[m]["diff_vs_baseline"], rows[m]["boundary_diff_vs_baseline"]
        assert d["low"] <= d["diff"] <= d["high"] and b["low"] <= b["diff"] <= b["high"]
        assert rows[m]["latency_ms"] > 0 and rows[m]["iou_per_class"]
        assert f"{LABELS[m]} vs Without KD" in analysis.analysis_text(data)
    assert set(table.class_deltas(data)) == {LABELS[m] for m in STUDENTS[1:]}


def test_05_ships_the_best_student_as_onnx(smoke):
    """Notebook 05's last table: the best student exported and timed on every path, as the executed notebook
    shows it (its markdown output), the file beside the table."""
    data = json.loads((smoke["out"] / "kd_comparison_results.json").read_text())
    best = max((r for r in data["rows"] if r["method"] != "teacher"), key=lambda r: r["miou"])["method"]
    onnx_file = smoke["out"] / "deploy" / f"{best}.onnx"
    assert onnx_file.stat().st_size > 10_000
    nb = json.loads((smoke["out"] / "05_compare.ipynb").read_text())
    shown = "".join(
        "".join(o.get("data", {}).get("text/markdown", "")) for c in nb["cells"] for o in c.get("outputs", [])
    )
    assert f"**Shipping the student** ({best}" in shown
    for path in ("eager", "fused", "jit", "onnxruntime"):
        assert re.search(
            rf"\| {path} \| [\d.n/a]+ \| [\d.]+ ± [\d.]+ \| [\d.]+ \| [\d.]+ \| (yes|no \(< 0\.999\)) \|", shown
        ), path


def test_qualitative_folders(smoke):
    for method in [*STUDENTS, "teacher"]:
        d = smoke["out"] / f"qualitative_results_{method}"
        ok = sorted((d / "successful_cases").glob("*.png"))
        bad = sorted((d / "failure_cases").glob("*.png"))
        assert len(ok) == 2 and len(bad) == 2  # num_success / num_failure of the smoke preset
        pat = r"(success|failure)_rank(\d+)_sample(val_\d{5})_iou(\d\.\d{4})\.png"
        s = [re.fullmatch(pat, p.name) for p in ok]
        f = [re.fullmatch(pat, p.name) for p in bad]
        assert all(s) and all(f)
        s_scores = [float(m.group(4)) for m in sorted(s, key=lambda m: int(m.group(2)))]
        f_scores = [float(m.group(4)) for m in sorted(f, key=lambda m: int(m.group(2)))]
        assert s_scores == sorted(s_scores, reverse=True) and f_scores == sorted(f_scores)
        assert (d / "iou_distribution.png").stat().st_size > 1000
        text = (d / "evaluation_metrics.txt").read_text()
        assert "mIoU" in text and "Per-class IoU" in text and s[0].group(3) in text
    assert (smoke["out"] / "qualitative_progression.png").is_file()


def test_report_html_in_browser(smoke):
    html = smoke["out"] / "report.html"
    assert html.is_file() and "Knowledge Distillation" in html.read_text()
    if browser.find_chromium() is None:
        pytest.skip("Chromium not installed (.ci/install-browser.sh installs it)")
    from helpers.report.mathml import hollow_formulas

    total, hollow = hollow_formulas(html.read_text())
    assert total >= 20 and hollow == [], (total, hollow)  # every formula of the six notebooks keeps its MathML
    res = browser.check_report_in_browser(html)
    assert res["table"] and res["images"] > 5 and not res["broken"], res
    assert len(res["formulas"]) == total and all(f["w"] > 3 and f["h"] > 5 for f in res["formulas"]), res["formulas"]
    stacked = [f for f in res["formulas"] if f["block"] and f["fraction"]]
    assert stacked and all(f["h"] > 1.5 * res["font_px"] for f in stacked), stacked  # fractions are set, not flat
    assert res["requests"] == [] and res["too_wide"] == [], res  # offline, and nothing past the page's width
    page = html.read_text()
    order = [
        page.find(s)
        for s in (
            'id="Comparison-table"',
            'alt="mIoU of each method',
            'id="What-the-numbers-say"',
            'id="The-same-images-across-models"',
            'id="Contents"',
            "<details><summary>Parameters",
            "<details><summary>Environment",
            'id="nb-1"',
        )
    ]
    assert -1 not in order and order == sorted(order), order  # the report opens like a results section


def test_report_pdf_page_by_page(smoke, tmp_path):
    """Each page of report.pdf as an image (pdftoppm): none is empty; the text has no raw TeX."""
    import shutil

    import numpy as np
    from PIL import Image

    pdf = smoke["out"] / "report.pdf"
    if browser.find_chromium() is None or shutil.which("pdftoppm") is None:
        pytest.skip("Chromium or poppler-utils not installed (.ci/install-browser.sh installs them)")
    subprocess.run(["pdftoppm", "-r", "30", "-gray", "-png", str(pdf), str(tmp_path / "p")], check=True)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) >= 6
    ink = [float((np.asarray(Image.open(p)) < 230).mean()) for p in pages]
    assert min(ink) > 0.005, [p.name for p, i in zip(pages, ink) if i <= 0.005]  # no empty page
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Comparison table" in text and "What the numbers say" in text and "Boundary IoU" in text
    assert "$$" not in text and "\\mathcal" not in text and "\\frac" not in text  # formulas rendered


def test_a_method_file_is_in_the_report_and_works_in_every_command(smoke, tmp_path):
    """The method of a file outside the repository, with no other edit: in the report and 07's outputs, and
    `train`, `sweep`, `compare`, `check-method` and the bench take it like a built-in method."""
    page = (smoke["out"] / "report.html").read_text()
    assert page.count("Logit L1") >= 4 and "Relation-Based (pair-wise)" in page  # table, Δ, boundary, analysis
    assert "07_your_own_method" in page and "Logit MSE" in page and "breaks the contract" not in page
    common = [
        "-p",
        "checkpoints_dir",
        str(smoke["base"] / "ckpt"),
        "-p",
        "data_root",
        str(smoke["base"] / "data"),
        "-p",
        "method_files",
        str(smoke["base"] / "my_kd.py"),
    ]
    trained = cli(
        "train", "--preset", "smoke", "--method", "logit_l1", "-p", "run_name", "cmds", "-p", "eta", "2", *common
    )
    assert trained.returncode == 0 and "saved" in trained.stdout, trained.stderr
    typo = cli("train", "--preset", "smoke", "--method", "logit_l2", *common)
    assert typo.returncode == 2 and "did you mean 'logit_l1'" in typo.stderr
    checked = cli("check-method", "logit_l1", "--preset", "smoke", *common)
    assert checked.returncode == 0 and "✓ void pixels send no gradient" in checked.stdout, checked.stderr
    swept = cli(
        "sweep",
        "--preset",
        "smoke",
        "--method",
        "logit_l1",
        "--grid",
        "eta=0.5,2",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "sweep"),
        *common,
    )
    assert swept.returncode == 0, swept.stderr
    assert "eta=0.5" in swept.stdout and "eta=2" in swept.stdout and "baseline (no KD)" in swept.stdout
    from helpers.perf import bench

    overrides = {
        "checkpoints_dir": str(smoke["base"] / "ckpt"),
        "data_root": str(smoke["base"] / "data"),
        "method_files": [str(smoke["base"] / "my_kd.py")],
        "students": ["baseline", "pairwise", "logit_l1"],
    }
    r = bench.main(
        preset="smoke",
        overrides=overrides,
        image_size=32,
        batch_size=4,
        out=tmp_path / "bench.json",
        rounds=1,
        steps=1,
        warmup=1,
        data_steps=1,
        workers=(0,),
        epoch_images=0,
        latency_rounds=1,
        latency_min_time=0.01,
        agreement_images=1,
        int8=False,
        verbose=False,
    )
    assert r["step_kinds"] == ["baseline", "pairwise", "logit_l1", "logit_l1_cached"]
    assert set(r["efficiency"]) == {"pairwise", "logit_l1"}


def test_second_run_reuses_checkpoints(smoke):
    ckpts = sorted((smoke["base"] / "ckpt").rglob("*.pt"))
    ckpts = [p for p in ckpts if p.parent.name in ("smoke", "teachers")]
    assert len(ckpts) == 1 + len(STUDENTS) + 1  # the teacher, one seed of every student, 07's logit_mse
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    from helpers.report import runner  # the training notebooks again, in this process (05/06 only load)

    overrides = {"checkpoints_dir": str(smoke["base"] / "ckpt"), "data_root": str(smoke["base"] / "data")}
    runner.run(
        "smoke",
        out_dir=smoke["base"] / "again" / "smoke",
        overrides=overrides,
        notebooks=("02_baseline", "03_response_kd", "04_feature_kd"),
        report=False,
        log=lambda *a, **k: None,
    )
    assert {p: p.stat().st_mtime_ns for p in ckpts} == before


def test_bad_parameter_is_refused_before_anything_runs(tmp_path, capsys):
    from helpers.cli import main

    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "r" / "x"), "-p", "epoch", "3"]) == 2
    err = capsys.readouterr().err
    assert "Unknown parameter 'epoch'" in err and "did you mean 'epochs'" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "r" / "x"), "-p", "epochs", "three"]) == 2
    assert "epochs" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_failing_notebook_is_named(tmp_path):
    out = tmp_path / "reports" / "broken"
    res = cli(
        "run",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "-p",
        "dataset",
        "voc",
        "-p",
        "teacher_split",
        "train",
        "-p",
        "monitor_split",
        "val",  # (the demo's splits are refused)
        "-p",
        "data_root",
        str(tmp_path / "no-voc-here"),
        "-p",
        "checkpoints_dir",
        str(tmp_path / "c"),
    )
    assert res.returncode == 2
    assert "Notebook 01_data failed in cell" in res.stderr and "does not exist" in res.stderr
    assert (out / "01_data.ipynb").is_file() and not (out / "02_baseline.ipynb").exists()


def test_executed_notebooks_print_no_warnings(smoke):
    """Nothing on stderr that a student would read as a failure (progress bars are widgets in a kernel)."""
    import nbformat

    for path in sorted(smoke["out"].glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        noise = [
            o.get("text", "")[:200]
            for c in nb.cells
            for o in c.get("outputs", [])
            if o.get("output_type") == "stream"
            and o.get("name") == "stderr"
            and ("warn" in o.get("text", "").lower() or "error" in o.get("text", "").lower())
        ]
        assert noise == [], (path.name, noise)


def test_a_rerun_of_05_keeps_the_report_and_its_files_in_step(smoke, tmp_path):
    """05 run again by hand (as in JupyterLab): same models, so the same accuracy to the digit; the
    latency the files show is the quietest measurement, and when it is no longer the report's the
    notebook says so. Then a partial comparison never replaces the complete table."""
    import papermill

    from helpers.results import files, table

    out = smoke["out"]
    before = files.read_table_json(out)
    params = {
        "preset": "smoke",
        "run_name": "smoke",
        "overrides": {
            "checkpoints_dir": str(smoke["base"] / "ckpt"),
            "data_root": str(smoke["base"] / "data"),
            "reports_dir": str(out.parent),
            "method_files": [str(smoke["base"] / "my_kd.py")],
            "students": STUDENTS,
        },
    }
    nb = papermill.execute_notebook(
        str(ROOT / "notebooks" / "05_compare.ipynb"),
        str(tmp_path / "05.ipynb"),
        parameters=params,
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    after = files.read_table_json(out)
    accuracy = [[r[k] for k in ("method", "per_seed_miou", "miou_ci", "boundary_iou")] for r in before["rows"]]
    assert [[r[k] for k in ("method", "per_seed_miou", "miou_ci", "boundary_iou")] for r in after["rows"]] == accuracy
    history = after["latency"]["measurements"]
    assert len(history) == 2 and after["latency"]["shown"] == min(history, key=lambda m: m["noise"])["time"]
    shown = next(m for m in history if m["time"] == after["latency"]["shown"])
    assert [r["latency_ms"] for r in after["rows"]] == [shown["rows"][r["method"]][0] for r in after["rows"]]
    report_kept = shown["time"] == before["latency"]["time"]
    assert ("shows the earlier table" in printed) == (not report_kept), printed
    if report_kept:  # the report's table is still the files' table
        assert table.table_markdown(after).split("\n\n")[0] == table.table_markdown(before).split("\n\n")[0]
    partial = dict(
        after,
        partial=True,
        missing=[
            {
                "method": "feature",
                "label": "Feature-Based",
                "seeds": [0],
                "why": "not there",
                "notebook": "04_feature_kd",
            }
        ],
    )
    assert files.write_results(partial, out).startswith("not written")
    fewer = dict(after, rows=[r for r in after["rows"] if r["method"] != "logit_l1"])  # a run of fewer students
    assert "one of fewer methods" in files.write_results(fewer, out)
    assert files.read_table_json(out) == after
