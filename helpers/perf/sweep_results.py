"""A sweep's results: sweep.csv read back, the table (sweep.md: every setting's holdout mIoU, mean ± std over
seeds, its gain over the baseline paired by seed, the best setting) and the figure (sweep.png)."""

from __future__ import annotations

import csv
import itertools
import re
import statistics
from pathlib import Path

from scipy import stats

from ..core.errors import UserError


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
    knobs = list(rows[0])[1 : list(rows[0]).index("seed")]
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
    lines += [
        f"| {f'**{name(v)}**' if v == best else name(v)} | {pm(*_stats(d))} | {per(d)} | {gain(d)} |"
        for v, d in kd.items()
    ]
    if best is not None:
        lines.append(
            f"\nBest setting (highest mean {split} mIoU): **{name(best)}**, {_stats(kd[best])[0]:.4f}, "
            f"gain {gain(kd[best])} vs the baseline. Scored on `{split}`; the reported split was not used."
        )
    if len(kd) == 2:
        lines.append("\n" + paired_sentence(knobs, split, *kd.items()))
    return "\n".join(lines) + "\n"


def paired_sentence(knobs, split: str, a: tuple, b: tuple, level: float = 0.95) -> str:
    """Two settings, paired by seed (same init, same batches): the mean difference of their holdout mIoU with
    a t-interval over the seeds' differences (between-seed noise only: the holdout images are fixed)."""
    (va, da), (vb, db) = a, b
    seeds = sorted(set(da) & set(db))
    diffs = [da[s] - db[s] for s in seeds]
    name = lambda values: ", ".join(f"{k}={v}" for k, v in zip(knobs, values))  # noqa: E731
    if len(diffs) < 2:
        return f"{name(va)} minus {name(vb)}: {len(diffs)} paired seed(s), too few for an interval."
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf((1 + level) / 2, len(diffs) - 1) * sd / len(diffs) ** 0.5
    said = "distinguishable from 0" if abs(mean) > half else "not distinguishable from 0 (within seed noise)"
    return (
        f"{name(va)} minus {name(vb)}, paired by seed over {len(diffs)} seeds: {mean:+.4f} {split} mIoU "
        f"({100 * level:g}% t-interval {mean - half:+.4f} to {mean + half:+.4f}), {said}; per seed: "
        + ", ".join(f"{s}: {d:+.4f}" for s, d in zip(seeds, diffs))
        + "."
    )


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
        ax.plot(
            [x[i] for i in order],
            [_stats(list(kd.values())[i])[0] for i in order],
            "o-",
            color="tab:blue",
            label="KD: mean (dots: seeds)",
        )
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
            ax.text(
                j,
                i,
                f"{m:.3f}" + (f"\n± {s:.3f}" if s is not None else ""),
                ha="center",
                va="center",
                color="k" if im.norm(m) > 0.6 else "w",
                fontsize=9,
            )
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=knobs[1], ylabel=knobs[0])
    fig.colorbar(im, ax=ax)
