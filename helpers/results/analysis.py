"""The analysis under the table: a few sentences generated from the numbers, nothing pre-written."""

from __future__ import annotations

import math

from .rows import (
    by_method,
    ci_level,
    diff_seeds,
    fmt,
    fmt_params,
    fmt_per_seed,
    num,
    row_label,
    significant,
    student_rows,
)


# --------------------------------------------------------------------------- analysis text
def _diff_sentence(row: dict, base: dict, level: str) -> str:
    name, d = row.get("label") or row_label(row), row.get("diff_vs_baseline")
    if not d or num(d.get("diff")) is None:
        raw = (
            num(row.get("miou")) - num(base.get("miou"))
            if num(row.get("miou")) is not None and num(base.get("miou")) is not None
            else None
        )
        return (
            f"{name}: no per-image confidence interval is available, so the raw difference of "
            f"{fmt(raw, '+.4f')} mIoU cannot be told apart from noise."
        )
    ci = f"{d['diff']:+.4f} mIoU ({level} CI {fmt(d.get('low'), '+.4f')} to {fmt(d.get('high'), '+.4f')})"
    if len(d.get("per_seed") or []) > 1:
        ci += f"; per seed: {fmt_per_seed(d['per_seed'])}"
    if not significant(d):
        seeds = [v for v in d.get("per_seed") or [] if num(v) is not None]
        same_sign = len(seeds) > 1 and (all(v > 0 for v in seeds) or all(v < 0 for v in seeds))
        return (
            f"{name} vs Without KD: {ci}; the interval includes 0, so the difference is not "
            f"distinguishable from zero: on this evidence {name} KD did not help measurably"
            + (
                f" (every seed moved the same way, but {len(seeds)} seeds leave the interval wide; more "
                f"seeds would narrow it)."
                if same_sign
                else ", the difference is within the noise."
            )
        )
    if d["diff"] > 0:
        return (
            f"{name} vs Without KD: {ci}; the interval excludes 0, so this gain is "
            f"distinguishable from zero on this split."
        )
    return (
        f"{name} vs Without KD: {ci}; the interval excludes 0: {name} KD made the student "
        f"worse, distinguishably from zero."
    )


def _seed_sentence(students: list[dict]) -> str | None:
    """Seed-to-seed spread, and what the Δ intervals cover (training noise, or the val images only)."""
    k, scope = diff_seeds({"rows": students}), None
    if k >= 2:
        scope = (
            f"The intervals are seed-level: they cover training noise (the spread of the {k} seeds' paired "
            f"differences) as well as the choice of val images."
        )
    elif k == 1:
        scope = "One seed: the interval covers the choice of val images, not training noise; use seeds ≥ 3."
    multi = [r for r in students if (r.get("n_seeds") or 1) > 1 and num(r.get("miou_std")) is not None]
    if not multi:
        return scope
    std = max(r["miou_std"] for r in multi)
    text = (
        f"Across {max(r['n_seeds'] for r in multi)} seeds the mIoU varies by up to ±{std:.4f} "
        f"(std); differences of that size come from the seed alone."
    )
    return f"{text} {scope}" if scope else text


def _gap_sentence(students: list[dict], base: dict, teacher: dict) -> str | None:
    t, b = num(teacher.get("miou")), num(base.get("miou"))
    if t is None or b is None:
        return None
    gap = t - b
    if gap <= 0:
        return (
            f"The teacher ({t:.4f}) is weaker than the baseline student it should teach ({b:.4f}): there is "
            f"no teacher–student gap to close, and KD can pass on only what the teacher knows, so a KD result "
            f"here says little about KD. A stronger teacher (more teacher_epochs, or pretrained weights) comes "
            f"first."
        )
    parts, below = [], False
    for r in students:
        if r["method"] == "baseline" or num(r.get("miou")) is None:
            continue
        frac = (r["miou"] - b) / gap
        below = below or frac < 0
        parts.append(f"{r.get('label') or row_label(r)} {100 * frac:.0f}%")
    if not parts:
        return None
    return (
        f"Teacher–student gap: the teacher reaches {t:.4f}, {gap:.4f} above the baseline; "
        f"fraction of that gap recovered: {', '.join(parts)}" + (" (negative: below the baseline)." if below else ".")
    )


def _params_sentence(students: list[dict], teacher: dict | None) -> str | None:
    params = {r.get("params") for r in students if r.get("params") is not None}
    if not params:
        return None
    if len(params) == 1:
        text = (
            f"All students have the same number of parameters ({fmt_params(students[0])}): "
            f"distillation changes training only, not the deployed model."
        )
    else:
        text = (
            "The students differ in size: "
            + ", ".join(f"{r.get('label') or row_label(r)} {fmt_params(r)}" for r in students)
            + "."
        )
    if teacher and num(teacher.get("params")) and num(students[0].get("params")):
        text += (
            f" The teacher has {fmt_params(teacher)} "
            f"({teacher['params'] / students[0]['params']:.1f}× the baseline student)."
        )
    return text


def _latency_sentence(students: list[dict], base: dict) -> str | None:
    b, bs = num(base.get("latency_ms")), num(base.get("latency_std_ms")) or 0.0
    if b is None:
        return None
    parts = []
    for r in students:
        lat, s = num(r.get("latency_ms")), num(r.get("latency_std_ms")) or 0.0
        if r["method"] == "baseline" or lat is None:
            continue
        diff, spread = lat - b, math.hypot(bs, s)
        name = r.get("label") or row_label(r)
        if spread > 0 and abs(diff) <= 2 * spread:
            parts.append(
                f"{name} {diff:+.2f} ms ({abs(diff) / spread:.1f}× the combined std of "
                f"{spread:.2f} ms: within measurement noise)"
            )
        else:
            ratio = f"{abs(diff) / spread:.1f}× the combined std" if spread > 0 else "no std measured"
            parts.append(f"{name} {diff:+.2f} ms ({'slower' if diff > 0 else 'faster'}; {ratio})")
    if not parts:
        return None
    return f"Latency vs Without KD ({b:.2f} ms): " + "; ".join(parts) + "."


def _boundary_sentence(students: list[dict], base: dict) -> str | None:
    """Whether KD changed the outlines (boundary IoU), each Δ with its interval's verdict."""
    kd = [r for r in students if r is not base and (r.get("boundary_diff_vs_baseline") or {}).get("diff") is not None]
    if num(base.get("boundary_iou")) is None or not kd:
        return None
    parts = []
    for r in kd:
        d = r["boundary_diff_vs_baseline"]
        verdict = "distinguishable from zero" if significant(d) else "not distinguishable from zero"
        parts.append(
            f"{r.get('label') or row_label(r)} {d['diff']:+.4f} ({fmt(d.get('low'), '+.4f')} to "
            f"{fmt(d.get('high'), '+.4f')}, {verdict})"
        )
    return (
        f"Boundary IoU (the pixels near each outline) is {base['boundary_iou']:.4f} without KD; the change with "
        f"KD: {'; '.join(parts)}."
    )


def analysis_text(results: dict) -> str:
    """A few sentences computed from the numbers, in paragraphs (blank-line separated, markdown):
    best method and each difference with its CI and whether it is distinguishable from zero; the
    seeds; the teacher-student gap recovered, parameters and latency."""
    students = student_rows(results)
    base, teacher = by_method(results, "baseline"), by_method(results, "teacher")
    if not [r for r in students if num(r.get("miou")) is not None]:
        return "No student has an mIoU yet: nothing to analyse."
    verdicts = _verdicts(students, base, teacher, ci_level(results))
    boundary = _boundary_sentence(students, base) if base else None
    seeds = _seed_sentence(students)
    costs = (
        _gap_sentence(students, base, teacher) if base and teacher else None,
        _params_sentence(students, teacher),
        _latency_sentence(students, base) if base else None,
    )
    worth = _worth_sentences(results, students, base) if base else []
    paragraphs = (verdicts + ([boundary] if boundary else []), worth, [seeds] if seeds else [], [c for c in costs if c])
    return "\n\n".join(" ".join(p) for p in paragraphs if p)


def _verdicts(students: list[dict], base: dict | None, teacher: dict | None, level: str) -> list[str]:
    """The best student, each KD row against the baseline, and, when no KD row helped, the summary."""
    best = max((r for r in students if num(r.get("miou")) is not None), key=lambda r: r["miou"])
    name = best.get("label") or row_label(best)
    kd_rows = [r for r in students if r is not base]
    out = [f"Highest student mIoU: {name} ({best['miou']:.4f})."]
    if base is not None and best is not base:
        d = best.get("diff_vs_baseline")
        if not (d and significant(d) and d.get("diff", 0) > 0):
            out[0] = (
                f"{name} has the highest mean student mIoU ({best['miou']:.4f} vs {base['miou']:.4f} without "
                "KD), but its lead over the baseline is not established: see the interval below."
            )
    elif base is not None and kd_rows:
        out[0] += " No KD method is above the baseline."
    if base is None or not kd_rows:
        return out + (
            [] if kd_rows else ["No KD method is finished yet: there is nothing to compare with the baseline."]
        )
    out += [_diff_sentence(r, base, level) for r in kd_rows]
    if not any(significant(r.get("diff_vs_baseline") or {}) and r["diff_vs_baseline"]["diff"] > 0 for r in kd_rows):
        weak = (
            num((teacher or {}).get("miou")) is not None
            and num(base.get("miou")) is not None
            and (teacher["miou"] <= base["miou"])
        )
        out.append(
            "In short: in this run KD did not help measurably"
            + (f", with a teacher ({teacher['miou']:.4f}) weaker than the student it teaches." if weak else ".")
        )
    return out


def _worth_sentences(results: dict, students: list[dict], base: dict) -> list[str]:
    """Is KD worth it: its training cost against the baseline's, whether it beat a baseline trained with the
    same compute, and whether the students learned the teacher (fidelity)."""
    out, kd_rows = [], [r for r in students if r is not base and r["method"] != "baseline_matched"]
    priced = [r for r in kd_rows if num(r.get("train_tflops_ratio")) is not None]
    if priced:
        out.append(
            "Same inference cost, more training: per seed, "
            + "; ".join(
                f"{row_label(r)} took {r['train_tflops_ratio']:.2f}× the baseline's training FLOPs "
                f"({r['train_s_ratio']:.2f}× its measured time)"
                for r in priced
            )
            + "."
        )
    matched = by_method(results, "baseline_matched")
    compared = [r for r in kd_rows if (r.get("diff_vs_matched") or {}).get("diff") is not None]
    if matched and compared:
        out.append(
            f"Against the baseline trained as long ({(results.get('matched') or {}).get('epochs', '?')} epochs, "
            "matched by FLOPs to the costliest KD row): "
            + "; ".join(
                f"{row_label(r)} {r['diff_vs_matched']['diff']:+.4f} mIoU ({fmt(r['diff_vs_matched']['low'], '+.4f')} "
                f"to {fmt(r['diff_vs_matched']['high'], '+.4f')}): " + _beat(r["diff_vs_matched"])
                for r in compared
            )
            + "."
        )
    elif kd_rows:
        out.append(
            "Whether a baseline given the same training compute would catch up is not measured in this run "
            "(add baseline_matched to students)."
        )
    agree = [
        f"{row_label(r)} {r['agreement']:.4f} ({r['agreement_diff_vs_baseline']['diff']:+.4f}, "
        + ("distinguishable" if significant(r["agreement_diff_vs_baseline"]) else "not distinguishable")
        + ")"
        for r in students
        if r is not base and num(r.get("agreement")) is not None and r.get("agreement_diff_vs_baseline")
    ]
    if agree and num(base.get("agreement")) is not None:  # (no KD row finished: nothing to compare)
        out.append(
            "Agreement with the teacher (share of pixels where the student's argmax is the teacher's): "
            f"{base['agreement']:.4f} without KD; " + "; ".join(agree) + "."
        )
    return out


def _beat(d: dict) -> str:
    if not significant(d):
        return "not distinguishable from the longer-trained baseline"
    return "KD beat it, distinguishably" if d["diff"] > 0 else "the longer-trained baseline was better, distinguishably"
