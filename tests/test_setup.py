"""Set-up and repository hygiene: one dependency list, clean notebooks, docs that match the code."""
import json
import re
from pathlib import Path

import yaml

from helpers import runner
from helpers.config import Config

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
        assert "import helpers" in "".join("".join(c["source"]) for c in code)


def test_notebook_defaults_match_config_and_presets_are_valid():
    declared = runner.all_parameters()  # raises if two notebooks disagree
    defaults = Config().to_dict()
    for name, p in declared.items():
        assert name in defaults, f"notebook parameter '{name}' is not a Config field"
        assert p["default"] == defaults[name], f"default of '{name}': notebook {p['default']!r} != Config {defaults[name]!r}"
    for preset in runner.available_presets():
        runner.validate(runner.load_preset(preset), declared)
        Config.from_dict(runner.load_preset(preset))


def test_readme_parameter_table_is_current():
    text = (ROOT / "README.md").read_text()
    assert runner.readme_with_parameters(text) == text, "run `python -m helpers docs` to regenerate it"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
