"""Run the six notebooks in order with papermill, then build the report.

Every notebook gets the same three parameters: `preset`, `run_name` and `overrides` (the command
line's `-p NAME VALUE`), so all six agree on one run without reading any record. Every name, type
and value is checked by `config.Config` BEFORE anything executes, so a typo fails in a second
instead of after an hour of training.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from ..config.presets import from_preset
from ..core import paths
from ..core.errors import UserError
from ..core.paths import PROJECT_ROOT  # (the checkout; relative parameters mean paths.root())

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("01_data", "02_baseline", "03_response_kd", "04_feature_kd", "05_compare", "06_qualitative")
TRAINING = ("02_baseline", "03_response_kd", "04_feature_kd")  # after them, the run's other students are trained
OWN_METHOD = "07_your_own_method"  # run after 06 with `--with 07_your_own_method`


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
    return (
        f"Notebook {name} failed in cell In [{err.exec_count}] (cell index {err.cell_index} of the "
        f"executed notebook), which starts with: {first_line}\n"
        f"  {err.ename}: {err.evalue}\n"
        f"The partially executed notebook, with the error in that cell, is kept at {kept}. "
        "Later notebooks were not run."
    )


def _settings(preset, out_dir, overrides, force):
    """(Config, the notebooks' parameters, the run folder): checked before anything runs."""
    overrides = dict(overrides or {})
    if out_dir is not None and "run_name" not in overrides:
        overrides["run_name"] = Path(out_dir).name  # --out names the run (over the preset's run_name)
    if force:
        overrides["force"] = True
    overrides.setdefault("interactive", False)  # no widget browser in a batch run (the figures stay)
    cfg = from_preset(preset, overrides)  # every name, type and value checked before anything runs
    out_dir = paths.resolve(out_dir) if out_dir else Path(cfg.reports_dir) / cfg.run_name
    if out_dir != Path(cfg.reports_dir) / cfg.run_name:
        if "reports_dir" in overrides or out_dir.name != cfg.run_name:
            raise UserError(
                f"The output folder {out_dir} must be reports_dir/run_name "
                f"({Path(cfg.reports_dir) / cfg.run_name}); change one of them."
            )
        overrides["reports_dir"] = str(out_dir.parent)
        cfg = cfg.replace(reports_dir=str(out_dir.parent))
    return cfg, {"preset": preset, "run_name": cfg.run_name, "overrides": overrides}, out_dir


@contextmanager
def _kernel_env():
    """The notebooks' kernels get the environment without MPLBACKEND (a test session or a shell may set Agg),
    so matplotlib picks Jupyter's inline backend and every figure is saved in the executed notebook."""
    backend = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend


def _execute(name: str, source: Path, target: Path, params: dict, log) -> float:
    """Execute one notebook into `target`; returns its seconds. A failure is a UserError naming the cell."""
    import papermill

    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=params,
            kernel_name="python3",
            cwd=str(PROJECT_ROOT),
            progress_bar=False,
            request_save_on_cell_execute=True,
            kernel_manager_class=_local_kernel_manager(),
        )
    except papermill.PapermillExecutionError as err:
        log(f"failed after {time.perf_counter() - start:.1f} s")
        raise UserError(_failure_message(name, err, target)) from None
    except BaseException:
        log(f"stopped after {time.perf_counter() - start:.1f} s")
        raise
    return round(time.perf_counter() - start, 1)


def run(
    preset="demo",
    out_dir=None,
    overrides=None,
    force=False,
    notebooks=NOTEBOOKS,
    notebooks_dir=NOTEBOOKS_DIR,
    report=True,
    log=print,
    extra_notebooks=(),
) -> Path:
    """Execute the notebooks in order into out_dir (default reports/<run_name>/); returns out_dir.

    Parameters are the preset's values updated by `overrides`, checked by `Config` before anything runs;
    each notebook receives `preset`, `run_name` and `overrides`. Methods of `students` that no notebook
    trains (a method of your own, pairwise) are trained after the training notebooks, before 05, so 05, 06
    and the report include them. `extra_notebooks` (07_your_own_method) run after the others and join the
    report. `log` is print-like (called with end="" and flush=True to finish a progress line).
    """
    cfg, params, out_dir = _settings(preset, out_dir, overrides, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run_params.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    order = [*notebooks, *extra_notebooks]
    executed, timings, t_run = [], {}, time.perf_counter()
    for i, name in enumerate(order, 1):
        log(f"[{i}/{len(order)}] {name} … ", end="", flush=True)
        executed.append(out_dir / f"{name}.ipynb")
        with _kernel_env():
            timings[name] = _execute(name, Path(notebooks_dir) / f"{name}.ipynb", executed[-1], params, log)
        log(f"done in {timings[name]:.1f} s")
        if name in TRAINING and not set(TRAINING) & set(order[i:]):  # the last training notebook of the run
            timings.update(train_other_students(cfg, order, log))
    if report:
        timings["report"] = _report(cfg, out_dir, executed, preset, log, t_run, timings)
    timings["total"] = round(time.perf_counter() - t_run, 1)
    (out_dir / "timings.json").write_text(json.dumps(timings, indent=1), encoding="utf-8")
    log(f"Total:  {timings['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')})")
    return out_dir


def train_other_students(cfg, notebooks, log) -> dict:
    """Train, every seed, the run's students that no training notebook in `notebooks` trains (pair-wise, a
    method of your own); {"train <method>": seconds}."""
    from .. import kd, training

    out = {}
    for method in cfg.students:
        if kd.trained_by(method) in set(TRAINING) & set(notebooks):
            continue
        log(f"      {method} ({kd.label(method)}): every seed, before 05 … ", flush=True)
        start = time.perf_counter()
        with _epoch_lines():  # one line per epoch in the log, no progress bars
            training.fit_seeds(cfg, method, progress=False)
        out[f"train {method}"] = round(time.perf_counter() - start, 1)
        log(f"      {method} done in {out[f'train {method}']:.1f} s")
    return out


@contextmanager
def _epoch_lines():
    from ..scale.torchrun import EPOCH_LINES

    before = os.environ.get(EPOCH_LINES)
    os.environ[EPOCH_LINES] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(EPOCH_LINES)
        else:
            os.environ[EPOCH_LINES] = before


def _report(cfg, out_dir: Path, executed: list, preset, log, t_run: float, timings: dict) -> float:
    from ..scale.jobs import recorded
    from . import browser, build

    env = build.environment_info(training=recorded(cfg))
    html = build.build_report(out_dir, executed, params=cfg.to_dict(), env=env, preset=preset)
    pdf = browser.export_pdf(html)
    log(
        f"Report: {html}\nPDF:    " + (str(pdf) if pdf else "not written (no Chromium found); the HTML has everything.")
    )
    return round(time.perf_counter() - t_run - sum(timings.values()), 1)
