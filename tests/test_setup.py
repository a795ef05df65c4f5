"""Set-up and repository hygiene: one dependency list, clean notebooks, docs that match the code."""
import json
import re
from pathlib import Path

import yaml

from helpers import config, runner, session
from helpers.config import Config, names

ROOT = Path(__file__).resolve().parent.parent


def _requirements():
    return [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")]


def test_environment_yml_installs_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip == _requirements()
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9a-z.\-+]*", r) for r in pip), "every dependency pinned"


def test_notebooks_are_clean_and_parameterised():
    for name in runner.NOTEBOOKS:
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

    for name in runner.NOTEBOOKS:
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        lines = [ln for ln in "".join(cell["source"]).splitlines() if ln.strip()]
        assert len(lines) <= 10, f"{name}: {len(lines)} lines in the parameters cell"
        declared = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
        assert list(declared)[:3] == ["preset", "run_name", "overrides"], name
        own = [k for k in declared if k not in ("preset", "run_name", "overrides")]
        assert 1 <= len(own) <= 4 and set(own) <= set(names()), f"{name}: {own}"
        assert all(declared[k]["default"] in ("None", "False") and declared[k]["help"] for k in own), name
        setup = next(c for c in nb["cells"] if c["cell_type"] == "code" and "session.start" in "".join(c["source"]))
        assert f'session.start(globals(), "{name}")' in "".join(setup["source"])
    # a knob that no parameters cell lists, as papermill injects it (a global after the parameters)
    ns = {"preset": "smoke", "run_name": "r", "overrides": {"epochs": 3}, "alpha": None, "lr": 0.5,
          "dev": object()}
    cfg = session.resolve("smoke", "r", session._knobs(ns))[0]
    assert (cfg.lr, cfg.epochs, cfg.alpha, cfg.run_name) == (0.5, 3, Config().alpha, "r")


def test_presets_hold_only_what_differs_and_are_valid():
    defaults = Config().to_dict()
    for preset in config.available_presets():
        values = config.load_preset(preset)
        assert all(values[k] != defaults[k] for k in values if k != "run_name"), preset
        Config.from_dict(values)


def test_readme_parameter_table_is_current():
    text = (ROOT / "README.md").read_text()
    assert config.readme_with_parameters(text) == text, "run `python -m helpers docs` to regenerate it"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
