"""The runner: every notebook gets the same preset, run_name and overrides; mistakes are refused
(by Config, with did-you-mean) before anything runs; a failing notebook is named with its cell and
kept; a good run writes every executed notebook, its settings and its timings."""

import json

import nbformat
import pytest
import yaml

from helpers import config
from helpers.core.errors import UserError
from helpers.report import runner

PARAMS = "preset = None  # a preset\nrun_name = None  # the run\noverrides = {}  # any knob"
WORK = (
    "import json, os\n"
    'if overrides.get("seeds") == 13:\n    raise ValueError(f"boom {run_name}")\n'
    'with open(os.environ["MARKER"], "a") as f:\n'
    '    f.write(json.dumps({"nb": NAME, "preset": preset, "run_name": run_name, "overrides": overrides}) + "\\n")'
)


def make_notebook(folder, name, params=PARAMS, work=WORK):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {name}"),
        cell,
        nbformat.v4.new_code_cell(f"NAME = {name!r}\n" + work),
    ]
    nbformat.write(nb, folder / f"{name}.ipynb")


@pytest.fixture
def nbs(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    make_notebook(folder, "first")
    make_notebook(folder, "second")
    monkeypatch.setenv("MARKER", str(tmp_path / "marker.jsonl"))
    return folder


def test_unknown_or_mistyped_knob_refused_before_anything_runs(nbs, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"Unknown parameter 'epoch' \(did you mean 'epochs'\?\)"):
        runner.run(
            "smoke", out_dir=out, overrides={"epoch": 3}, notebooks=("first", "second"), notebooks_dir=nbs, report=False
        )
    with pytest.raises(UserError, match="'epochs' must be int, got 'ten'"):
        runner.run(
            "smoke", out_dir=out, overrides={"epochs": "ten"}, notebooks=("first",), notebooks_dir=nbs, report=False
        )
    with pytest.raises(UserError, match="'feature_loss' is 'mse'; choose one of"):
        runner.run(
            "smoke",
            out_dir=out,
            overrides={"feature_loss": "mse"},
            notebooks=("first",),
            notebooks_dir=nbs,
            report=False,
        )
    with pytest.raises(UserError, match="Unknown preset 'smok' \\(did you mean 'smoke'\\?\\)"):
        runner.run("smok", out_dir=out, notebooks=("first",), notebooks_dir=nbs, report=False)
    assert not out.exists() and not (tmp_path / "marker.jsonl").exists()


def test_load_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(config.presets, "PRESETS_DIR", tmp_path)
    (tmp_path / "tiny.yaml").write_text("description: the smallest run\nepochs: 1\nlr: 1e-3\n")
    assert config.load_preset("tiny") == {"epochs": 1, "lr": 1e-3}
    assert config.load_preset(tmp_path / "tiny.yaml") == {"epochs": 1, "lr": 1e-3}
    with pytest.raises(UserError, match="did you mean 'tiny'.*Available presets: tiny"):
        config.load_preset("tinny")


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("0.5", 0.5),
        ("1e-4", 1e-4),
        ("true", True),
        ("false", False),
        ("cwd", "cwd"),
        ("null", None),
        ("", ""),
        ("[1, 2]", [1, 2]),
        ("a: b: c", "a: b: c"),
    ],
)
def test_parse_value(text, value):
    got = config.parse_value(text)
    assert got == value and type(got) is type(value)


def test_failing_notebook_is_named_kept_and_stops_the_run(nbs, tmp_path, capsys):
    out = tmp_path / "reports" / "zap"
    with pytest.raises(UserError) as e:
        runner.run(
            "smoke",
            out_dir=out,
            overrides={"seeds": 13},
            notebooks=("first", "second"),
            notebooks_dir=nbs,
            report=False,
        )
    msg = str(e.value)
    assert "Notebook first failed in cell In [" in msg and "NAME = 'first'" in msg
    assert "ValueError: boom zap" in msg and str(out / "first.ipynb") in msg
    kept = nbformat.read(out / "first.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in kept.cells for o in c.get("outputs", []))
    assert not (out / "second.ipynb").exists()
    assert "[1/2] first … failed after" in capsys.readouterr().out


def test_successful_run_gives_every_notebook_the_same_settings(nbs, tmp_path, capsys):
    out = tmp_path / "reports" / "myrun"
    runner.run(
        "smoke",
        out_dir=out,
        overrides={"epochs": 7, "lr": 2},
        notebooks=("first", "second"),
        notebooks_dir=nbs,
        report=False,
    )
    seen = [json.loads(line) for line in (tmp_path / "marker.jsonl").read_text().splitlines()]
    want = {
        "preset": "smoke",
        "run_name": "myrun",
        "overrides": {"epochs": 7, "lr": 2, "run_name": "myrun", "interactive": False, "reports_dir": str(out.parent)},
    }
    assert seen == [{"nb": "first", **want}, {"nb": "second", **want}]
    settings = yaml.safe_load((out / "run_params.yaml").read_text())  # the whole Config, as the report shows it
    assert settings["run_name"] == "myrun" and settings["epochs"] == 7 and settings["lr"] == 2.0
    assert settings["seeds"] == config.load_preset("smoke")["seeds"]
    nb2 = nbformat.read(out / "second.ipynb", as_version=4)
    assert [c for c in nb2.cells if "injected-parameters" in c.metadata.get("tags", [])]
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("Total:") and "first" in lines[-1]  # and the breakdown in timings.json
    assert set(json.loads((out / "timings.json").read_text())) == {"first", "second", "total"}
    assert [line.split(" … ")[0] for line in lines[:-1]] == ["[1/2] first", "[2/2] second"]
    assert all(" … done in " in line for line in lines[:-1])
