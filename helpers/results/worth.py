"""Is KD worth it? The table under the comparison table: each student's training cost per seed (measured time
and counted FLOPs, × the baseline's) beside its inference cost, its agreement with the teacher (fidelity) and,
when the run has it, its Δ against the compute-matched baseline; then what those columns mean, the teacher's
own training, how many seeds each claim needs and, with several KD rows, Holm-adjusted verdicts."""

from __future__ import annotations

from .rows import fmt, fmt_ci, num, ordered_rows, row_label, verdict


def _cost(value, ratio) -> str:
    if num(value) is None:
        return "n/a"
    return f"{value:.3g}" + (f" (×{ratio:.2f})" if num(ratio) is not None else "")


def _delta(d: dict | None) -> str:
    return "—" if not d or num(d.get("diff")) is None else f"{fmt_ci(d)}, {verdict(d)}"


def _agreement(r: dict) -> str:
    return fmt(r.get("agreement")) + (
        f" ± {fmt(r['agreement_std'])}" if num(r.get("agreement_std")) is not None else ""
    )


def worth_rows(results: dict) -> list[list[str]]:
    """[header, *rows] of the cost and fidelity table (students only; the teacher's training is a note)."""
    matched = any(r.get("diff_vs_matched") for r in results["rows"])
    head = [
        "Knowledge Distillation",
        "Inference (ms)",
        "Training time / seed (s)",
        "Training TFLOPs / seed",
        "Agreement with teacher",
        "Δ agreement vs baseline [CI]",
    ] + ["Δ mIoU vs compute-matched [CI]"] * matched
    rows = [head]
    for r in ordered_rows(results):
        if r["method"] != "teacher":
            cells = [
                row_label(r),
                fmt(r.get("latency_ms"), ".2f"),
                _cost(r.get("train_s"), r.get("train_s_ratio")),
                _cost(r.get("train_tflops"), r.get("train_tflops_ratio")),
                _agreement(r),
                _delta(r.get("agreement_diff_vs_baseline")),
            ]
            rows.append(cells + [_delta(r.get("diff_vs_matched"))] * matched)
    return rows


def _has_costs(results: dict) -> bool:
    return any(num(r.get("train_s")) is not None or num(r.get("agreement")) is not None for r in results["rows"])


def worth_markdown(results: dict) -> str:
    if not _has_costs(results):
        return ""
    rows = worth_rows(results)
    align = "|---|" + "---:|" * 4 + "---|" * (len(rows[0]) - 5)
    table = ["| " + " | ".join(rows[0]) + " |", align] + ["| " + " | ".join(c) + " |" for c in rows[1:]]
    head = "\n\n**Is it worth it?** Training cost beside inference cost, and fidelity to the teacher:\n\n"
    return head + "\n".join(table) + "\n\n" + "\n\n".join(worth_notes(results))


def worth_text(results: dict) -> list[str]:
    if not _has_costs(results):
        return []
    rows = worth_rows(results)
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(len(rows[0]))]
    table = ["".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return ["", "IS IT WORTH IT? (training cost per seed, fidelity to the teacher)", *table, "", *worth_notes(results)]


def worth_notes(results: dict) -> list[str]:
    """What the columns mean, the teacher's training, the compute-matched baseline, seeds needed, Holm."""
    devices = sorted({r.get("train_device") for r in results["rows"] if r.get("train_device")})
    rows = [r for r in results["rows"] if r.get("train_threads")]
    ways = sorted({(r["train_threads"], r.get("train_side_by_side", 1)) for r in rows})
    how = "; ".join(f"{t} thread{'s' if t != 1 else ''} each, {j} side by side" for t, j in ways)
    shared = " (seconds on a shared machine: compare rows trained the same way)" if any(j > 1 for _, j in ways) else ""
    lines = [
        f"Training cost per seed: measured wall-clock seconds of its epochs on {', '.join(devices) or '?'}"
        + (f", {how}{shared}" if how else "")
        + "; a method reading cached logits adds its share of the one-time teacher pass. TFLOPs are counted by "
        "torch.utils.flop_counter (a multiply-add counted as 2): the student's forward and backward at the "
        "training crop × images × epochs, plus the teacher's forwards it needed (every step when online; a share "
        "of the one cached pass otherwise). × is against the baseline; inference cost is the same for every "
        "student (one architecture)."
    ]
    t = results.get("teacher_training") or {}
    if t.get("trained_here"):
        lines.append(
            f"The teacher was trained here once, shared by every KD row: {t['seconds']:.0f} s on "
            f"{t['device']}, {t['tflops']:.3g} TFLOPs ({t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}); in the "
            "literature the teacher comes pretrained, so this cost is reported apart."
        )
    lines.append(
        "Agreement with the teacher: the share of non-void val pixels where the student's argmax equals "
        "the teacher's (Stanton et al., NeurIPS 2021: fidelity and accuracy can part ways), mean ± std over "
        "seeds; its Δ has the same paired seed-level interval as mIoU."
    )
    return lines + [_matched_note(results)] + _claims_notes(results)


def _matched_note(results: dict) -> str:
    m = results.get("matched") or {}
    if m.get("in_run"):
        return (
            f"Compute-matched baseline: the baseline trained for {m['epochs']} epochs (same schedule shape) so "
            f"that its training {m['by']} per seed match the costliest KD row's; matched by FLOPs because they "
            "are exact and the same on every machine, while measured time depends on the machine's load."
        )
    return (
        "Compute-matched baseline: not in this run, so the table cannot say whether a baseline given the same "
        f"training compute would catch up; add it with `{m.get('override', '-p students ...,baseline_matched')}`."
    )


def _claims_notes(results: dict) -> list[str]:
    c = results.get("claims") or {}
    if not c.get("rows"):
        return []
    level, small = f"{100 * c['level']:g}%", c["smaller"]

    def need(n):
        return f"{n} seeds" if n else "more than any number of seeds on this val set (its image noise alone)"

    def label(method):
        return row_label(next(r for r in results["rows"] if r["method"] == method))

    parts = [
        f"{label(m)}: one seed cannot estimate the seed-to-seed spread (use seeds >= 3)"
        if (v.get("seeds") or 1) < 2
        else f"{label(m)}: its Δ {v['delta']:+.4f} needs {need(v['needed_observed'])}, a Δ of {small:+.2f} "
        f"needs {need(v['needed_smaller'])}"
        for m, v in c["rows"].items()
    ]
    out = [
        f"Seeds a claim needs (a paired t-test at {level}, {100 * c['power']:.0f}% power, between-seed and "
        f"val-image variance as measured here; assumptions in notebook 05): " + "; ".join(parts) + "."
    ]
    if c.get("holm"):
        verdicts = [
            f"{label(m)} p = {h['p']:.3f}, adjusted {h['p_adjusted']:.3f}, "
            + ("distinguishable" if h["distinguishable"] else "not distinguishable")
            for m, h in c["holm"].items()
        ]
        out.append(
            f"Holm-adjusted verdicts ({len(c['holm'])} KD rows against one baseline, family-wise {level}): "
            + "; ".join(verdicts)
            + "."
        )
    return out
