"""`python -m helpers docs`: the README's demo figures are copied from the files a run writes."""

import json

import pytest

from helpers.core.errors import UserError
from helpers.report import docs as readme


def test_a_block_is_replaced_between_its_markers_and_nothing_else():
    text = "a\n<!-- x:start -->\nold\n<!-- x:end -->\nb\n<!-- y:start -->\nkeep\n<!-- y:end -->\n"
    out = readme.replace_block(text, "x", "new 1\nnew 2")
    assert out == "a\n<!-- x:start -->\nnew 1\nnew 2\n<!-- x:end -->\nb\n<!-- y:start -->\nkeep\n<!-- y:end -->\n"
    assert readme.replace_block(out, "x", "new 1\nnew 2") == out  # regenerating changes nothing
    with pytest.raises(UserError, match="lacks the markers"):
        readme.replace_block(text, "z", "")


def test_results_and_timings_come_from_the_run_folder(tmp_path):
    rows = [
        {
            "method": m,
            "label": label,
            "miou": mean,
            "miou_std": 0.01,
            "n_seeds": 2,
            "per_seed_miou": seeds,
            "params": 106_000,
            "params_str": "106.0K",
            "latency_ms": 1.0,
            "latency_std_ms": 0.1,
            "pixel_acc": 0.9,
            "gflops": 0.05,
            "diff_vs_baseline": None
            if m == "baseline"
            else {
                "diff": mean - 0.5,
                "low": -0.1,
                "high": 0.2,
                "level": 0.95,
                "significant": False,
                "per_seed": [s - b for s, b in zip(seeds, (0.49, 0.51))],
                "n_seeds": 2,
            },
        }
        for m, label, mean, seeds in (
            ("baseline", "Without KD", 0.5, [0.49, 0.51]),
            ("response", "Response-based", 0.55, [0.53, 0.57]),
        )
    ]
    (tmp_path / "kd_comparison_results.json").write_text(json.dumps({"rows": rows, "seeds": [0, 1], "run": "r"}))
    (tmp_path / "timings.json").write_text(json.dumps({"01_data": 12.0, "02_baseline": 100.4, "total": 112.4}))
    md = readme.results_markdown(tmp_path)
    assert "| Response-based | 0.5300 | 0.5700 | 0.5500 ± 0.0100 |" in md
    assert "| Δ Response-based | +0.0400 | +0.0600 | +0.0500 |" in md
    assert "| one after another | 12 s | 100 s | **112 s (1.9 min)** |" in readme.timings_markdown(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "timings.json").write_text(json.dumps({"01_data": 11.0, "02_baseline": 60.0, "total": 71.0}))
    (other / "run_params.yaml").write_text("jobs: auto\nthreads: auto\n")
    rows = readme.timings_markdown(tmp_path, [other]).splitlines()
    assert rows[0] == "| trainings | 01_data | 02_baseline | **total** |" and len(rows) == 4
    assert rows[3] == "| jobs=auto, threads=auto | 11 s | 60 s | **71 s (1.2 min)** |"
    with pytest.raises(UserError, match="timings.json not found"):
        readme.timings_markdown(tmp_path / "nope")


def test_the_readme_is_a_front_door_and_its_table_is_the_one_in_docs():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    assert len(text.splitlines()) <= 200 and len(text.split()) <= 2500
    for section in (
        "## Two commands",
        "## What you get",
        "## The notebooks",
        "## How the code fits together",
        "## Add your own KD method",
        "## Real VOC on a GPU",
        "## When something goes wrong",
    ):
        assert section in text
    table = text.split("<!-- table:start -->\n")[1].split("\n<!-- table:end -->")[0]
    full = (root / "docs" / "results.md").read_text().split("<!-- results:start -->\n")[1]
    assert full.startswith(table), "README's table is the first table of docs/results.md (python -m helpers docs)"
    linked = {p for p in text.split("(docs/")[1:]}
    for name in (p.split(")")[0] for p in linked):
        assert (root / "docs" / name).is_file(), name


def test_regenerating_fills_every_document_that_holds_a_block(tmp_path):
    readme_text = "x\n<!-- table:start -->\nold\n<!-- table:end -->\n"
    docs_text = "y\n<!-- results:start -->\nold\n<!-- results:end -->\n"
    rows = [{"method": "baseline", "label": "Without KD (Baseline)", "miou": 0.5, "per_seed_miou": [0.5]}]
    (tmp_path / "kd_comparison_results.json").write_text(json.dumps({"rows": rows, "seeds": [0]}))
    new_readme = readme.regenerate(readme_text, results=tmp_path)
    new_docs = readme.regenerate(docs_text, results=tmp_path)
    assert "| Without KD (Baseline) | 0.5000 |" in new_readme and "old" not in new_readme
    assert new_docs.split("<!-- results:start -->\n")[1].startswith(new_readme.split("<!-- table:start -->\n")[1][:60])
