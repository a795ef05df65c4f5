"""The runner: parameters come from the notebooks, mistakes are refused before anything runs, a
failing notebook is named with its cell and kept, and a good run writes every executed notebook."""
import json
import nbformat
import pytest
import yaml

from helpers import runner
from helpers.errors import UserError

PARAMS = 'a = 1  # an int\nb = 0.5  # a float\nname = "x"  # a str\nflag = False  # a bool\n' \
         'fail = False  # raise in the next cell\nmarker = ""  # file to write, if any'
WORK = ('if fail:\n    raise ValueError(f"boom {name}")\n'
        'if marker:\n    open(marker, "w").write(f"{a} {b} {name} {flag}")')


def make_notebook(folder, name, params=PARAMS, work=WORK):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), cell, nbformat.v4.new_code_cell(work)]
    nbformat.write(nb, folder / f"{name}.ipynb")


@pytest.fixture
def nbs(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    make_notebook(folder, "first")
    make_notebook(folder, "second", params='a = 1  # an int\nc = "y"  # only here\n'
                  'run_name = "demo"  # run folder\nreports_dir = "reports"  # parent of run folders\n'
                  'marker = ""  # file to write',
                  work='open(marker + ".2", "w").write(f"{a} {c} {run_name} {reports_dir}")')
    return folder


def test_notebook_parameters_reads_defaults_types_and_help(nbs):
    p = runner.notebook_parameters(nbs / "first.ipynb")
    assert p["a"] == {"default": 1, "type": "int", "help": "an int"}
    assert p["b"]["default"] == 0.5 and p["b"]["type"] == "float"
    assert p["name"]["default"] == "x" and p["name"]["type"] == "str"
    assert p["flag"]["default"] is False and p["flag"]["type"] == "bool"


def test_all_parameters_merges_and_refuses_disagreeing_notebooks(nbs):
    declared = runner.all_parameters(nbs, ("first", "second"))
    assert declared["a"]["notebooks"] == ["first", "second"]
    assert declared["c"]["notebooks"] == ["second"]
    table = runner.parameters_markdown(declared)
    assert "| `a` | `1` | int | first, second | an int |" in table
    make_notebook(nbs, "third", params="a = 2  # an int")
    with pytest.raises(ValueError, match="'a'.*first.*third"):
        runner.all_parameters(nbs, ("first", "third"))


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = 1")]
    nbformat.write(nb, tmp_path / "plain.ipynb")
    with pytest.raises(UserError, match="no cell tagged 'parameters'"):
        runner.notebook_parameters(tmp_path / "plain.ipynb")


@pytest.mark.parametrize("text, value", [("3", 3), ("0.5", 0.5), ("1e-4", 1e-4), ("true", True),
                                         ("false", False), ("cwd", "cwd"), ("null", None), ("", ""),
                                         ("[1, 2]", [1, 2]), ("a: b: c", "a: b: c")])
def test_parse_value(text, value):
    got = runner.parse_value(text)
    assert got == value and type(got) is type(value)


def test_validate_types(nbs):
    declared = runner.all_parameters(nbs, ("first", "second"))
    out = runner.validate({"b": 2, "a": 3, "flag": True}, declared)
    assert out == {"b": 2.0, "a": 3, "flag": True} and type(out["b"]) is float
    with pytest.raises(UserError) as e:
        runner.validate({"a": "ten"}, declared)
    assert all(s in str(e.value) for s in ("'a'", "int", "'ten'", "first, second"))
    with pytest.raises(UserError, match="'a' must be int"):
        runner.validate({"a": True}, declared)   # a bool is not an int
    with pytest.raises(UserError, match="'b' must be float"):
        runner.validate({"b": "0.5"}, declared)


def test_unknown_parameter_refused_before_anything_runs(nbs, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"Unknown parameter 'nam' \(did you mean 'name'\?\)"):
        runner.run(None, out_dir=out, overrides={"nam": "z"}, notebooks=("first", "second"),
                   notebooks_dir=nbs, report=False)
    with pytest.raises(UserError, match="'a' must be int"):
        runner.run(None, out_dir=out, overrides={"a": "ten"}, notebooks=("first", "second"),
                   notebooks_dir=nbs, report=False)
    assert not out.exists()


def test_load_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "PRESETS_DIR", tmp_path)
    (tmp_path / "tiny.yaml").write_text("description: the smallest run\nepochs: 1\nlr: 1e-3\n")
    assert runner.load_preset("tiny") == {"epochs": 1, "lr": 1e-3}
    assert runner.load_preset(tmp_path / "tiny.yaml") == {"epochs": 1, "lr": 1e-3}
    with pytest.raises(UserError, match="did you mean 'tiny'.*Available presets: tiny"):
        runner.load_preset("tinny")


def test_failing_notebook_is_named_kept_and_stops_the_run(nbs, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(UserError) as e:
        runner.run(None, out_dir=out, overrides={"fail": True, "name": "zap"},
                   notebooks=("first", "second"), notebooks_dir=nbs, report=False)
    msg = str(e.value)
    assert "Notebook first failed in cell In [" in msg and "if fail:" in msg
    assert "ValueError: boom zap" in msg and str(out / "first.ipynb") in msg
    kept = nbformat.read(out / "first.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in kept.cells for o in c.get("outputs", []))
    assert not (out / "second.ipynb").exists()
    assert "[1/2] first … failed after" in capsys.readouterr().out


def test_successful_run_writes_executed_notebooks_with_their_parameters(nbs, tmp_path, capsys):
    out = tmp_path / "reports" / "myrun"
    m1 = tmp_path / "m1.txt"
    runner.run(None, out_dir=out, overrides={"a": 7, "b": 2, "c": "zz", "marker": str(m1)},
               notebooks=("first", "second"), notebooks_dir=nbs, report=False)
    assert m1.read_text() == "7 2.0 x False"      # the int given for float b arrived as 2.0
    assert yaml.safe_load((out / "run_params.yaml").read_text())["run_name"] == "myrun"
    # second declares run_name and reports_dir: they point at out_dir; it gets only its own names
    nb2 = nbformat.read(out / "second.ipynb", as_version=4)
    injected = [c for c in nb2.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert nb2.metadata.papermill.parameters == {"a": 7, "c": "zz", "marker": str(m1), "run_name": "myrun",
                                                 "reports_dir": str(out.parent)}
    assert "c = \"zz\"" in injected[0].source and "b = " not in injected[0].source
    assert (tmp_path / "m1.txt.2").read_text() == f"7 zz myrun {out.parent}"
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("Total:") and "first" in lines[-1]  # and the breakdown in timings.json
    assert set(json.loads((out / "timings.json").read_text())) == {"first", "second", "total"}
    lines = lines[:-1]
    assert [line.split(" … ")[0] for line in lines] == ["[1/2] first", "[2/2] second"]
    assert all(" … done in " in line for line in lines)
