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
import statistics
from pathlib import Path

from . import data, evaluation, paths, runs, runtime, training
from .config import Config, names, parse_value, portable_value
from .errors import UserError

KNOBS = {"response": ("alpha", "temperature", "teacher_cache", "cache_stride"),
         "feature": ("beta", "feature_loss", "cwd_temperature")}
NEEDS = {"cache_stride": ("teacher_cache", True), "cwd_temperature": ("feature_loss", "cwd")}
_FREE = {"run_name", "checkpoints_dir", "reports_dir", "device", "num_workers", "seeds", "force", "download",
         "bootstrap_resamples", "latency_size", "latency_min_time", "inference_path", "num_show", "num_success",
         "num_failure", "interactive", "eval_split"}  # change no trained weight: a resume may differ in these


def parse_grid(specs, method: str) -> dict[str, list]:
    """{knob: [values]} from "NAME=V1,V2,..." texts; names checked against Config and the method."""
    if method not in KNOBS:
        raise UserError(f"sweep: method '{method}' has no knobs to calibrate; choose one of {tuple(KNOBS)}.")
    grid, known = {}, f"The knobs of {method} KD: {', '.join(KNOBS[method])}."
    for spec in specs or []:
        name, sep, values = (s.strip() for s in spec.partition("="))
        if not (name and sep and values):
            raise UserError(f"--grid {spec!r}: write NAME=V1,V2,... (e.g. --grid alpha=0.2,0.5,1).")
        if name not in names():
            hint = difflib.get_close_matches(name, names(), n=1)
            raise UserError(f"--grid: unknown parameter '{name}'"
                            + (f" (did you mean '{hint[0]}'?). " if hint else ". ") + known)
        if name not in KNOBS[method]:
            why = next((f"it acts only in {m} KD" for m, k in KNOBS.items() if name in k),
                       "it would change the baseline reference or the teacher too; set it with -p")
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
        for knob, (other, value) in NEEDS.items():
            if knob in grid and getattr(c, other) != value:
                raise UserError(f"--grid {knob}: it acts only with {other}={value!r}; add -p {other} {value}.")
        setting = {k: getattr(c, k) for k in grid}
        out += [setting] if setting not in out else []
    return out


def check_splits(cfg: Config) -> None:
    if not cfg.monitor_split or cfg.monitor_split in (cfg.eval_split, cfg.train_split):
        raise UserError(f"sweep: monitor_split is '{cfg.monitor_split}' (eval_split '{cfg.eval_split}', train_split "
                        f"'{cfg.train_split}'): model selection never looks at the reported split, and is not "
                        "made on training images. Score on a held-out split (-p monitor_split holdout on the "
                        "demo; on VOC, a split file carved out of train).")


def study_teacher(cfg: Config, progress: bool = True) -> str:
    """teacher_weights for every cell: the study's teacher itself (trained once, into the study's
    checkpoints_dir/teachers/, if it is not there yet), never one trained per setting."""
    if cfg.teacher_weights not in ("scratch", "torchvision") or (
            cfg.teacher_weights == "torchvision" and cfg.teacher_epochs == 0):
        return cfg.teacher_weights  # a checkpoint file, or torchvision's weights as they are
    training.fit(cfg, "teacher", progress=progress)  # loads a finished one
    return str(runs.checkpoint_path(cfg, "teacher").resolve())


def cell_config(cfg: Config, method: str, setting: dict, out: Path, teacher: str) -> Config:
    slug = "-".join(re.sub(r"[^A-Za-z0-9._=]+", "-", f"{k}={v}") for k, v in setting.items())
    run = "sweep-baseline" if method == "baseline" else f"sweep-{method}-{slug}"
    return cfg.replace(**setting, run_name=run, checkpoints_dir=str(Path(out) / "checkpoints"), teacher_weights=teacher)


def _pin(out: Path, method: str, grid: dict, cfg: Config) -> None:
    """DIR/sweep.json pins the method, the knobs and every other setting; a resume must match them."""
    want = {"method": method, "knobs": list(grid),
            "settings": {k: v for k, v in cfg.to_dict().items() if k not in _FREE and k not in grid}}
    path = out / "sweep.json"
    have = json.loads(path.read_text()) if path.is_file() else want
    diffs = [f"{k}: {have[k]!r} there, {want[k]!r} now" for k in ("method", "knobs") if have[k] != want[k]]
    diffs += [f"{k}: {v!r} there, {want['settings'].get(k)!r} now" for k, v in have["settings"].items()
              if want["settings"].get(k) != portable_value(k, v)]
    if diffs:
        raise UserError(f"{out} holds another sweep ({'; '.join(diffs)}); choose another --out, or go back to "
                        "its settings to resume it.")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(want, indent=1))


def run(cfg: Config, method: str, grid_specs, seeds: int | None = None, out="reports/sweep",
        progress: bool = True) -> Path:
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
    cells = [(m, st, s) for m, st in [("baseline", {})] + [(method, st) for st in settings]
             for s in range(cfg.seed, cfg.seed + n)]
    todo = [c for c in cells if key(*c) not in done]
    teacher = study_teacher(cfg, progress) if any(m != "baseline" for m, _, _ in todo) else cfg.teacher_weights
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
            writer.writerow({"method": m, **{k: st.get(k, "") for k in grid}, "seed": s, "split": cfg.monitor_split,
                             "holdout_miou": f"{score:.6f}", "train_s": f"{sum(history.get('time_s', [])):.2f}"})
    plot(csv_path, out / "sweep.png")
    (out / "sweep.md").write_text(table_markdown(csv_path), encoding="utf-8")
    return out


# --- the results ----------------------------------------------------------------------------------

def read_rows(csv_path) -> list[dict]:
    if not Path(csv_path).is_file():
        return []
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def label(method: str, setting: dict) -> str:
    return "baseline (no KD)" if method == "baseline" else ", ".join(f"{k}={v}" for k, v in setting.items())


def summary(csv_path) -> tuple[list, str, dict, dict]:
    """(knobs, split, baseline {seed: mIoU}, {setting values: {seed: mIoU}} in the CSV's order)."""
    rows = read_rows(csv_path)
    if not rows:
        raise UserError(f"{csv_path} holds no finished cell yet.")
    knobs = list(rows[0])[1:list(rows[0]).index("seed")]
    base, kd = {}, {}
    for r in rows:
        target = base if r["method"] == "baseline" else kd.setdefault(tuple(r[k] for k in knobs), {})
        target[int(r["seed"])] = float(r["holdout_miou"])
    return knobs, rows[0]["split"], base, kd


def _stats(by_seed: dict) -> tuple[float, float | None]:
    v = list(by_seed.values())
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)


def _gain(by_seed: dict, base: dict) -> float | None:
    common = [s for s in by_seed if s in base]  # paired by seed: same init and data order
    return statistics.fmean(by_seed[s] - base[s] for s in common) if common else None


def table_markdown(csv_path) -> str:
    """Markdown: setting | mean ± std | per seed | gain vs baseline (paired by seed), then the best setting."""
    knobs, split, base, kd = summary(csv_path)
    pm = lambda m, s: f"{m:.4f}" + (f" ± {s:.4f}" if s is not None else "")  # noqa: E731
    per = lambda d: ", ".join(f"{s}: {v:.4f}" for s, v in sorted(d.items()))  # noqa: E731
    name = lambda values: ", ".join(f"{k}={v}" for k, v in zip(knobs, values))  # noqa: E731
    gain = lambda d: "—" if _gain(d, base) is None else f"{_gain(d, base):+.4f}"  # noqa: E731
    best = max(kd, key=lambda v: _stats(kd[v])[0]) if kd else None
    lines = [f"| setting | {split} mIoU (mean ± std) | per seed | gain vs baseline |", "|---|---:|---|---:|"]
    lines += [f"| baseline (no KD) | {pm(*_stats(base))} | {per(base)} | — |"] if base else []
    lines += [f"| {f'**{name(v)}**' if v == best else name(v)} | {pm(*_stats(d))} | {per(d)} | {gain(d)} |"
              for v, d in kd.items()]
    if best is not None:
        lines.append(f"\nBest setting (highest mean {split} mIoU): **{name(best)}**, {_stats(kd[best])[0]:.4f}, "
                     f"gain {gain(kd[best])} vs the baseline. Scored on `{split}`; the reported split was not used.")
    return "\n".join(lines) + "\n"


def plot(csv_path, png_path) -> Path:
    """One knob (or 3+): mIoU per setting, each seed a dot, the mean a line, the baseline a dashed line
    over its min-max band; two knobs: a heatmap of the mean, annotated with mean ± std."""
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, whatever the session's backend

    knobs, split, base, kd = summary(csv_path)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if len(knobs) == 2:
        _heatmap(fig, ax, knobs, kd)
        ax.set_title(f"{split} mIoU, mean ± std over seeds" + (f" (baseline {_stats(base)[0]:.3f})" if base else ""))
    else:
        text = [", ".join(v) for v in kd]
        x = [float(t) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", t) else None for t in text]
        x = x if len(knobs) == 1 and None not in x else list(range(len(text)))
        order = sorted(range(len(x)), key=x.__getitem__)
        for xi, d in zip(x, kd.values()):
            ax.scatter([xi] * len(d), list(d.values()), color="tab:blue", alpha=0.5, s=18)
        ax.plot([x[i] for i in order], [_stats(list(kd.values())[i])[0] for i in order], "o-", color="tab:blue",
                label="KD: mean (dots: seeds)")
        ax.set_xticks(x, text, rotation=20 if len(knobs) > 1 else 0)
        ax.set(xlabel=", ".join(knobs), ylabel=f"{split} mIoU")
        if base:
            ax.axhline(_stats(base)[0], color="gray", ls="--", label="baseline (no KD): mean, min-max")
            ax.axhspan(min(base.values()), max(base.values()), color="gray", alpha=0.15)
        ax.legend()
    fig.savefig(png_path, dpi=120)
    return Path(png_path)


def _heatmap(fig, ax, knobs, kd) -> None:
    rows, cols = (list(dict.fromkeys(v[i] for v in kd)) for i in (0, 1))
    grid = [[_stats(kd[(r, c)])[0] if (r, c) in kd else float("nan") for c in cols] for r in rows]
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for (i, r), (j, c) in itertools.product(enumerate(rows), enumerate(cols)):
        if (r, c) in kd:
            m, s = _stats(kd[(r, c)])
            ax.text(j, i, f"{m:.3f}" + (f"\n± {s:.3f}" if s is not None else ""), ha="center", va="center",
                    color="k" if im.norm(m) > 0.6 else "w", fontsize=9)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=knobs[1], ylabel=knobs[0])
    fig.colorbar(im, ax=ax)
