"""Set-up and repository hygiene: one dependency list, clean notebooks, generated docs that are current."""

import ast
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import config
from helpers.config import Config, names
from helpers.config import study as session
from helpers.report import docs, runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = (*runner.NOTEBOOKS, runner.OWN_METHOD)
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "yaml": "PyYAML", "IPython": "ipykernel", "jupyter_client": "ipykernel"}


def test_dependencies_are_declared_once_pinned_and_complete():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = project["dependencies"]
    pins = runtime + [d for extra in project["optional-dependencies"].values() for d in extra]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9a-z.\-+]*", r) for r in pins), "every dependency pinned"
    declared = {r.split("==")[0].lower() for r in runtime}
    imported = set()
    for path in (ROOT / "helpers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "helpers"}
    missing = {m for m in third_party if DISTRIBUTIONS.get(m, m).lower() not in declared}
    assert not missing, f"imported by helpers/ but not in pyproject.toml's dependencies: {missing}"
    assert not {"pytest", "jupyterlab", "ruff"} & declared, "test and notebook tools belong in the extras"


def test_generated_files_are_current():
    """environment.yml and docs/parameters.md are written by `python -m helpers docs`, never by hand."""
    assert (ROOT / "environment.yml").read_text() == docs.environment_yaml(), "run `python -m helpers docs`"
    assert (ROOT / "docs" / "parameters.md").read_text() == docs.parameters_page(), "run `python -m helpers docs`"


def test_notebooks_are_clean_and_parameterised():
    for name in NOTEBOOKS:
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in code), f"{name} has outputs"
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
        assert nb["cells"][0]["cell_type"] == "markdown", f"{name} starts with an explanation"
        assert "from helpers import" in "".join("".join(c["source"]) for c in code)


def test_parameters_cells_are_short_and_any_knob_is_injectable():
    """Each parameters cell: preset, run_name, overrides and a few of the notebook's own knobs (None: the
    run's value), about ten lines; papermill documents them, and `-p NAME VALUE` works for any knob."""
    import papermill

    for name in NOTEBOOKS:
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        lines = [ln for ln in "".join(cell["source"]).splitlines() if ln.strip()]
        assert len(lines) <= 10, f"{name}: {len(lines)} lines in the parameters cell"
        declared = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
        assert list(declared)[:3] == ["preset", "run_name", "overrides"], name
        own = [k for k in declared if k not in ("preset", "run_name", "overrides")]
        assert 1 <= len(own) <= 4 and set(own) <= set(names()), f"{name}: {own}"
        assert all(declared[k]["default"] in ("None", "False") and declared[k]["help"] for k in own), name
        setup = next(c for c in nb["cells"] if c["cell_type"] == "code" and "study.start" in "".join(c["source"]))
        assert f'study.start(globals(), "{name}")' in "".join(setup["source"])
    # a knob that no parameters cell lists, as papermill injects it (a global after the parameters)
    ns = {"preset": "smoke", "run_name": "r", "overrides": {"epochs": 3}, "alpha": None, "lr": 0.5, "dev": object()}
    cfg = session.resolve("smoke", "r", session._knobs(ns))[0]
    assert (cfg.lr, cfg.epochs, cfg.alpha, cfg.run_name) == (0.5, 3, Config().alpha, "r")


def test_presets_hold_only_what_differs_and_are_valid():
    defaults = Config().to_dict()
    for preset in config.available_presets():
        values = config.load_preset(preset)
        assert all(values[k] != defaults[k] for k in values if k != "run_name"), preset
        Config.from_dict(values)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _git(repo, *args):
    import subprocess

    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _as_jupyterlab_saves_it(nb: dict) -> dict:
    """`nb` after running it in JupyterLab and saving: outputs, counts, timings, the kernel's language info."""
    nb = json.loads(json.dumps(nb))
    for i, c in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        c["execution_count"] = i + 1
        c["outputs"] = [
            {"name": "stdout", "output_type": "stream", "text": ["run 'demo'\n"]},
            {
                "data": {"image/png": "iVBORw0KGgo=", "text/plain": ["<Figure>"]},
                "metadata": {},
                "output_type": "display_data",
            },
        ]
        c["metadata"]["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    nb["metadata"]["language_info"] = {
        "codemirror_mode": {"name": "ipython", "version": 3},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
        "version": "3.11.9",
    }
    from ipykernel.kernelspec import get_kernel_dict

    nb["metadata"]["kernelspec"] = {
        "display_name": get_kernel_dict()["display_name"],
        "language": "python",
        "name": "python3",
    }  # the pinned ipykernel's name for its kernel
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_saving_a_notebook_with_outputs_leaves_git_clean(tmp_path):
    """make setup's git filter (nbstripout, named by .gitattributes), set up in a scratch repository the
    way setup does it: a notebook saved with outputs shows no diff, and `git add` stores it without them,
    so nothing is staged. (`git status` lists the saved file until that `git add`: git takes a changed
    file size for a change without running the filter.)"""
    import shutil
    import subprocess

    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("needs git and make")
    repo, name = tmp_path / "repo", "notebooks/02_baseline.ipynb"
    (repo / "notebooks").mkdir(parents=True)
    for f in (".gitattributes", name):
        shutil.copy(ROOT / f, repo / f)
    _git(repo, "init", "-q")
    for _ in range(2):  # idempotent: the second run changes nothing
        subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "git-filter"], cwd=repo, check=True)
    assert (repo / ".gitattributes").read_text() == (ROOT / ".gitattributes").read_text()
    assert "--keep-id" in _git(repo, "config", "filter.nbstripout.clean")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "clean notebook")
    committed = (ROOT / name).read_text()
    assert _git(repo, "show", f"HEAD:{name}") == committed  # a clean notebook passes unchanged
    saved = _as_jupyterlab_saves_it(json.loads(committed))
    (repo / name).write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n")
    assert "image/png" in (repo / name).read_text()
    assert _git(repo, "diff") == ""  # the filtered file: no change
    _git(repo, "add", "-A")
    assert _git(repo, "status", "--porcelain") == ""  # nothing to commit
    assert _git(repo, "show", f":{name}") == committed  # stored without outputs, ids kept
