"""Calibrating a KD method's weights on holdout: `python -m helpers sweep` (one job: the grid).

Every setting of the grid's cartesian product is trained (`training.fit` on train_split) for seeds
cfg.seed .. cfg.seed+N-1 and scored on monitor_split (holdout), never on eval_split: choosing KD
weights is model selection. The baseline at the same seeds is the reference. A row per (setting,
seed) is appended to DIR/sweep.csv as it finishes, so a stopped sweep resumes where it stopped;
DIR/sweep.png and DIR/sweep.md summarise it. Each setting trains in its own run folder,
DIR/checkpoints/sweep-<method>-<knob=value-...>/, with the study's own teacher (passed as its file).
"""

from __future__ import annotations

import csv
import difflib
import itertools
import json
import re
from pathlib import Path

from .. import kd, training
from ..config.knobs import CACHE_KEYS, Config, names, portable_value, shaping_keys
from ..config.presets import parse_value
from ..core import paths, runtime
from ..core.errors import UserError
from ..data import loaders as data
from ..evaluation import protocol as evaluation
from ..models import store as runs
from .sweep_results import label, plot, read_rows, table_markdown  # noqa: F401  (sweep.table_markdown: the CLI, docs)

NEEDS = {"cache_stride": ("teacher_cache", True)}  # a knob that acts only with another's value


def knobs_of(method: str) -> tuple[str, ...]:
    """The knobs a sweep calibrates for `method`: its own (registered with it), and the logit cache's for
    a method that reads only the teacher's logits."""
    m = kd.get(method)
    return tuple(m.knobs) + (CACHE_KEYS if m.teacher == "logits" else ())


def _needs(name: str):
    """(knob, value) that `name` acts only with, or None."""
    if name in NEEDS:
        return NEEDS[name]
    owner = kd.method_knobs().get(name)
    return owner[1].needs if owner and owner[1].needs else None


def parse_grid(specs, method: str) -> dict[str, list]:
    """{knob: [values]} from "NAME=V1,V2,..." texts; names checked against Config and the method."""
    mine = knobs_of(method)
    if not mine:
        choices = [m for m in kd.registered() if knobs_of(m)]
        raise UserError(f"sweep: method '{method}' has no knobs to calibrate; choose one of {tuple(choices)}.")
    grid, known = {}, f"The knobs of {method} KD: {', '.join(mine)}."
    for spec in specs or []:
        name, sep, values = (s.strip() for s in spec.partition("="))
        if not (name and sep and values):
            raise UserError(f"--grid {spec!r}: write NAME=V1,V2,... (e.g. --grid alpha=0.2,0.5,1).")
        if name not in names():
            hint = difflib.get_close_matches(name, names(), n=1)
            raise UserError(
                f"--grid: unknown parameter '{name}'" + (f" (did you mean '{hint[0]}'?). " if hint else ". ") + known
            )
        if name not in mine:
            why = next(
                (f"it acts only in {m} KD" for m in kd.registered() if name in knobs_of(m)),
                "it would change the baseline reference or the teacher too; set it with -p",
            )
            raise UserError(f"--grid: '{name}' does not calibrate {method} KD ({why}). {known}")
        if name in grid:
            raise UserError(f"--grid: '{name}' is given twice; list all its values in one --grid.")
        grid[name] = [parse_value(v.strip()) for v in values.split(",")]
    if not grid:
        raise UserError(f"sweep: give at least one --grid NAME=V1,V2,... {known}")
    return grid


def expand(grid: dict, cfg: Config) -> list[dict]:
    """The grid's cartesian product, each value typed by Config (1 -> 1.0 for a float), without repeats."""
    out = []
    for combo in itertools.product(*grid.values()):
        c = cfg.replace(**dict(zip(grid, combo)))  # Config checks types and choices
        for knob in grid:
            other, value = _needs(knob) or (None, None)
            if other is not None and getattr(c, other) != value:
                raise UserError(f"--grid {knob}: it acts only with {other}={value!r}; add -p {other} {value}.")
        setting = {k: getattr(c, k) for k in grid}
        out += [setting] if setting not in out else []
    return out


def check_splits(cfg: Config) -> None:
    if not cfg.monitor_split or cfg.monitor_split in (cfg.eval_split, cfg.train_split):
        raise UserError(
            f"sweep: monitor_split is '{cfg.monitor_split}' (eval_split '{cfg.eval_split}', train_split "
            f"'{cfg.train_split}'): model selection never looks at the reported split, and is not "
            "made on training images. Score on a held-out split (-p monitor_split holdout on the "
            "demo; on VOC, a split file carved out of train)."
        )


def study_teacher(cfg: Config, progress: bool = True) -> str:
    """teacher_weights for every cell: the study's teacher itself (trained once, into the study's
    checkpoints_dir/teachers/, if it is not there yet), never one trained per setting."""
    if cfg.teacher_weights not in ("scratch", "torchvision") or (
        cfg.teacher_weights == "torchvision" and cfg.teacher_epochs == 0
    ):
        return cfg.teacher_weights  # a checkpoint file, or torchvision's weights as they are
    training.fit(cfg, "teacher", progress=progress)  # loads a finished one
    return str(runs.checkpoint_path(cfg, "teacher").resolve())


def cell_config(cfg: Config, method: str, setting: dict, out: Path, teacher: str) -> Config:
    slug = "-".join(re.sub(r"[^A-Za-z0-9._=]+", "-", f"{k}={v}") for k, v in setting.items())
    run = "sweep-baseline" if method == "baseline" else f"sweep-{method}-{slug}"
    return cfg.replace(**setting, run_name=run, checkpoints_dir=str(Path(out) / "checkpoints"), teacher_weights=teacher)


def _pinned(method: str) -> set[str]:
    """What every cell of a sweep shares (a resume must match it): what shapes the method's students and the
    baseline's, and the split it is scored on."""
    return {*shaping_keys(method), *shaping_keys("baseline"), "monitor_split"}


def _pin(out: Path, method: str, grid: dict, cfg: Config) -> None:
    """DIR/sweep.json pins the method, the knobs and every other setting; a resume must match them."""
    want = {
        "method": method,
        "knobs": list(grid),
        "settings": {k: v for k, v in cfg.to_dict().items() if k in _pinned(method) and k not in grid},
    }
    path = out / "sweep.json"
    have = json.loads(path.read_text()) if path.is_file() else want
    diffs = [f"{k}: {have[k]!r} there, {want[k]!r} now" for k in ("method", "knobs") if have[k] != want[k]]
    diffs += [
        f"{k}: {v!r} there, {want['settings'].get(k)!r} now"
        for k, v in have["settings"].items()
        if want["settings"].get(k) != portable_value(k, v)
    ]
    if diffs:
        raise UserError(
            f"{out} holds another sweep ({'; '.join(diffs)}); choose another --out, or go back to "
            "its settings to resume it."
        )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(want, indent=1))


def run(
    cfg: Config, method: str, grid_specs, seeds: int | None = None, out="reports/sweep", progress: bool = True
) -> Path:
    """Train and score every (setting, seed) not yet in DIR/sweep.csv; write sweep.png and sweep.md."""
    from tqdm.auto import tqdm

    out, grid, n = paths.resolve(out), parse_grid(grid_specs, method), cfg.seeds if seeds is None else seeds
    check_splits(cfg)
    settings = expand(grid, cfg)
    if n < 1:
        raise UserError(f"sweep: --seeds must be at least 1, got {n}.")
    _pin(out, method, grid, cfg)
    csv_path, columns = out / "sweep.csv", ["method", *grid, "seed", "split", "holdout_miou", "train_s"]
    key = lambda m, st, s: (m, *(str(st.get(k, "")) for k in grid), str(s))  # noqa: E731
    done = {(r["method"], *(r[k] for k in grid), r["seed"]) for r in read_rows(csv_path)}
    cells = [
        (m, st, s)
        for m, st in [("baseline", {})] + [(method, st) for st in settings]
        for s in range(cfg.seed, cfg.seed + n)
    ]
    todo = [c for c in cells if key(*c) not in done]
    teacher = study_teacher(cfg, progress) if any(m != "baseline" for m, _, _ in todo) else cfg.teacher_weights
    batch = [training.Job(cell_config(cfg, m, st, out, teacher), m, s, label(m, st)) for m, st, s in todo]
    cfg = training.side_by_side(cfg, batch, progress, total=len(cells))  # (the loop below loads what they trained)
    device = runtime.resolve_device(cfg.device)
    bar = tqdm(cells, desc=f"sweep {method}", disable=not progress)
    for m, st, s in bar:
        bar.set_postfix_str(f"{label(m, st)}, seed {s}")
        if key(m, st, s) in done:
            continue
        model, history = training.fit(cell_config(cfg, m, st, out, teacher), m, seed=s, progress=False)
        score = evaluation.evaluate(model, data.dataset(cfg, cfg.monitor_split), device)["miou"]
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, columns)
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow(
                {
                    "method": m,
                    **{k: st.get(k, "") for k in grid},
                    "seed": s,
                    "split": cfg.monitor_split,
                    "holdout_miou": f"{score:.6f}",
                    "train_s": f"{sum(history.get('time_s', [])):.2f}",
                }
            )
    plot(csv_path, out / "sweep.png")
    (out / "sweep.md").write_text(table_markdown(csv_path), encoding="utf-8")
    return out
