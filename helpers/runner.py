"""Run the six notebooks in order with papermill: presets, parameter validation, progress, report.

The notebooks are the single source of truth for the knobs: each has one cell tagged `parameters`
(`epochs = 60  # passes over the training split`). A preset (helpers/presets/<name>.yaml) and the
command line's `-p NAME VALUE` override them; every name and type is checked against the notebooks
BEFORE anything executes, so a typo fails in a second instead of after an hour of training.
"""
from __future__ import annotations

import ast
import difflib
import json
import re
import time
from pathlib import Path

import yaml

from . import paths
from .errors import UserError
from .paths import PROJECT_ROOT  # (the checkout; relative parameters mean paths.root())

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("01_data", "02_baseline", "03_response_kd", "04_feature_kd", "05_compare", "06_qualitative")
PRESETS_DIR = Path(__file__).parent / "presets"

_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": (list, tuple),
          "tuple": (list, tuple), "dict": dict}


class _Loader(yaml.SafeLoader):
    """yaml.safe_load, except that `1e-4` is a float (YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


# --------------------------------------------------------------------------- presets
def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name_or_path) -> dict:
    """A preset's parameters: helpers/presets/<name>.yaml, or a path to any such YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        names = available_presets()
        hint = difflib.get_close_matches(str(name_or_path), names, n=1)
        raise UserError(f"Unknown preset '{name_or_path}'"
                        + (f" (did you mean '{hint[0]}'?)" if hint else "")
                        + f". Available presets: {', '.join(names) or 'none'} (in {PRESETS_DIR}),"
                        " or give the path of a .yaml file.")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise UserError(f"Preset {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"Preset {path} must be a mapping of parameter: value, got {type(data).__name__}.")
    data.pop("description", None)
    return data


def parse_value(text: str):
    """A `-p NAME VALUE` value, read as YAML: "3" -> 3, "0.5" -> 0.5, "1e-4" -> 0.0001,
    "true" -> True, "null" -> None, "cwd" -> "cwd"; an empty or unparsable text stays a string."""
    if text.strip() == "":
        return text
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


# --------------------------------------------------------------------------- notebook parameters
def notebook_parameters(path) -> dict:
    """{name: {"default", "type", "help"}} from the notebook's cell tagged `parameters`."""
    import nbformat
    import papermill

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Notebook {path} not found.")
    nb = nbformat.read(path, as_version=4)
    if not any("parameters" in cell.metadata.get("tags", []) for cell in nb.cells):
        raise UserError(f"Notebook {path.name} has no cell tagged 'parameters'; tag the cell that holds "
                        "its knobs (View > Cell Toolbar > Tags in Jupyter).")
    out = {}
    for name, p in papermill.inspect_notebook(path).items():
        try:
            default = ast.literal_eval(p["default"])
            literal = True
        except (ValueError, SyntaxError):
            default, literal = p["default"], False    # an expression, kept as its source text
        type_name = p["inferred_type_name"]           # from an annotation (`x: int = 1`), else "None"
        if type_name == "None":
            type_name = type(default).__name__ if literal and default is not None else "any"
        out[name] = {"default": default, "type": type_name, "help": p["help"]}
    return out


def all_parameters(notebooks_dir=NOTEBOOKS_DIR, names=NOTEBOOKS) -> dict:
    """{name: {"default", "type", "help", "notebooks": [...]}} merged over the notebooks, in order.
    Two notebooks that give one name different defaults or types are a bug: ValueError."""
    merged = {}
    for nb in names:
        for name, p in notebook_parameters(Path(notebooks_dir) / f"{nb}.ipynb").items():
            if name not in merged:
                merged[name] = {**p, "notebooks": [nb]}
                continue
            seen = merged[name]
            if (seen["type"], seen["default"]) != (p["type"], p["default"]):
                raise ValueError(
                    f"Parameter '{name}' is {seen['default']!r} ({seen['type']}) in {seen['notebooks'][0]} "
                    f"but {p['default']!r} ({p['type']}) in {nb}: give it the same default everywhere.")
            seen["notebooks"].append(nb)
            seen["help"] = seen["help"] or p["help"]
    return merged


def validate(params: dict, declared: dict) -> dict:
    """Check every name and type against the notebooks' declarations; returns the params with
    ints given for floats converted. All problems are reported at once, as a UserError."""
    problems, out = [], {}
    for name, value in params.items():
        if name not in declared:
            hint = difflib.get_close_matches(name, declared, n=1)
            problems.append(f"Unknown parameter '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                            + "; no notebook declares it.")
            continue
        want, used_by = declared[name]["type"], ", ".join(declared[name]["notebooks"])
        if want == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = (want not in _TYPES or isinstance(value, _TYPES[want])) \
            and not (want in ("int", "float") and isinstance(value, bool))
        if not ok:
            problems.append(f"Parameter '{name}' must be {want}, got {value!r} ({type(value).__name__}); "
                            f"used by {used_by}.")
        out[name] = value
    if any(p.startswith("Unknown") for p in problems):
        problems.append(f"Known parameters: {', '.join(declared)}.")
    if problems:
        raise UserError("\n".join(problems))
    return out


def parameters_markdown(declared: dict) -> str:
    """The parameters as a markdown table (Name | Default | Type | Used by | Meaning) for the README."""
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    rows = ["| Name | Default | Type | Used by | Meaning |", "|---|---|---|---|---|"]
    for name, p in declared.items():
        default = f'"{p["default"]}"' if p["type"] == "str" else repr(p["default"])
        used = "all" if len(p["notebooks"]) == len(NOTEBOOKS) else ", ".join(n.split("_")[0] for n in p["notebooks"])
        rows.append(f"| `{name}` | `{cell(default)}` | {p['type']} | {used} | {cell(p['help'])} |")
    return "\n".join(rows) + "\n"


README_START, README_END = "<!-- parameters:start -->", "<!-- parameters:end -->"


def readme_with_parameters(text: str) -> str:
    """README text with the block between the parameter markers regenerated from the notebooks."""
    if README_START not in text or README_END not in text:
        raise UserError(f"README.md lacks the markers {README_START} ... {README_END}.")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{parameters_markdown(all_parameters())}{README_END}{tail}"


# --------------------------------------------------------------------------- running
def _local_kernel_manager():
    from jupyter_client.manager import KernelManager

    class LocalKernelManager(KernelManager):
        """Talks to the kernel over local sockets (ipc), not TCP: nothing listens on the network."""

        def __init__(self, **kw):
            kw.setdefault("transport", "ipc")
            super().__init__(**kw)

    return LocalKernelManager


def _failure_message(name: str, err, kept: Path) -> str:
    first_line = next((line for line in (err.source or "").splitlines() if line.strip()), "")
    return (f"Notebook {name} failed in cell In [{err.exec_count}] (cell index {err.cell_index} of the "
            f"executed notebook), which starts with: {first_line}\n"
            f"  {err.ename}: {err.evalue}\n"
            f"The partially executed notebook, with the full traceback, is kept at {kept}. "
            "Later notebooks were not run.")


def run(preset="demo", out_dir=None, overrides=None, force=False, notebooks=NOTEBOOKS,
        notebooks_dir=NOTEBOOKS_DIR, report=True, log=print) -> Path:
    """Execute the notebooks in order into out_dir (default reports/<run_name>/); returns out_dir.

    Parameters are the preset's values updated by `overrides`, checked against the notebooks
    before anything runs; each notebook receives only the names it declares. `log` is print-like
    (it is called with end="" and flush=True to finish a progress line when the notebook does).
    """
    import papermill

    params = {**(load_preset(preset) if preset else {}), **(overrides or {})}
    declared = all_parameters(notebooks_dir, notebooks)
    if out_dir is not None and "run_name" not in (overrides or {}):
        run_name = Path(out_dir).name  # --out names the run (over the preset's run_name)
    else:
        run_name = str(params.get("run_name") or Path(str(preset or "run")).stem)
    out_dir = paths.resolve(out_dir) if out_dir else paths.root() / "reports" / run_name
    if "run_name" in declared:
        params["run_name"] = run_name
    if "reports_dir" in declared:
        if out_dir.name != run_name:
            raise UserError(f"The output folder {out_dir} must be named after run_name '{run_name}' "
                            "(the notebooks write to reports_dir/run_name); change one of them.")
        params["reports_dir"] = str(out_dir.parent)
    if force and "force" in declared:
        params["force"] = True
    params = validate(params, declared)
    from .config import Config, names as config_names

    Config.from_dict({k: v for k, v in params.items() if k in config_names()})  # e.g. splits VOC lacks

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run_params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    executed, timings, t_run = [], {}, time.perf_counter()
    for i, name in enumerate(notebooks, 1):
        target = out_dir / f"{name}.ipynb"
        mine = {k: v for k, v in params.items() if name in declared[k]["notebooks"]}
        log(f"[{i}/{len(notebooks)}] {name} … ", end="", flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(Path(notebooks_dir) / f"{name}.ipynb"), str(target),
                                       parameters=mine, kernel_name="python3", cwd=str(PROJECT_ROOT),
                                       progress_bar=False, request_save_on_cell_execute=True,
                                       kernel_manager_class=_local_kernel_manager())
        except papermill.PapermillExecutionError as err:
            log(f"failed after {time.perf_counter() - start:.1f} s")
            raise UserError(_failure_message(name, err, target)) from None
        except BaseException:
            log(f"stopped after {time.perf_counter() - start:.1f} s")
            raise
        timings[name] = round(time.perf_counter() - start, 1)
        log(f"done in {timings[name]:.1f} s")
        executed.append(target)

    if report:
        from . import report as rep

        effective = {name: p["default"] for name, p in declared.items()}  # notebook defaults ...
        effective.update(params)  # ... with the preset and the command line on top
        html = rep.build_report(out_dir, executed, params=effective, env=rep.environment_info())
        log(f"Report: {html}")
        pdf = rep.export_pdf(html)
        log(f"PDF:    {pdf}" if pdf else "PDF:    not written (no Chromium found); the HTML has everything.")
        timings["report"] = round(time.perf_counter() - t_run - sum(timings.values()), 1)
    timings["total"] = round(time.perf_counter() - t_run, 1)
    (out_dir / "timings.json").write_text(json.dumps(timings, indent=1), encoding="utf-8")
    log(f"Total:  {timings['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')})")
    return out_dir
