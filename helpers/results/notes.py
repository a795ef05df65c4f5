"""What is written under the comparison table: whether it is partial, what the seeds and the intervals cover,
how latency and FLOPs were measured, the protocol and the run (each a sentence, from the results)."""

from __future__ import annotations

from ..core.progress import span
from .rows import ci_level, diff_seeds, num, row_label, student_rows


def ci_heading(results: dict) -> str:
    k, level = diff_seeds(results), ci_level(results)
    if k >= 2:
        return (
            f"Δ mIoU vs baseline (mean over {k} seeds of the paired per-seed differences), seed-level "
            f"{level} CI (covers training noise and the choice of val images):"
        )
    return f"Δ mIoU vs baseline, paired bootstrap {level} CI over validation images:"


def _ci_note(results: dict) -> str | None:
    """What the Δ interval covers: seed-level with several seeds, the val images only with one."""
    k = diff_seeds(results)
    if k >= 2:
        return (
            f"Δ CI: seed-level, a t-interval (t, {k - 1} df) around the mean of the {k} per-seed paired "
            f"differences, variance = between-seed variance / {k} + val-image bootstrap variance: it "
            f"covers training noise (seed to seed) and the choice of val images."
        )
    if k == 1:
        return (
            "Δ CI: paired percentile bootstrap over val images. One seed: the interval covers the "
            "choice of val images, not training noise; use seeds ≥ 3."
        )
    return None


def partial_note(results: dict) -> str:
    """ "Partial table: ... not finished yet: Feature-Based (seeds 0–2, not there; notebook 04_feature_kd ...)"."""
    items = [
        f"{m['label']} ({'seeds ' + span(m['seeds']) + ', ' if m['seeds'] else ''}{m['why']}; "
        + (
            f"notebook {m['notebook']} trains it)"
            if m.get("notebook")
            else f"`python -m helpers train --method {m['method']}` trains it)"
        )
        for m in results.get("missing") or []
    ]
    return (
        (
            "Partial table: it compares what is finished; not finished yet: "
            + "; ".join(items)
            + ". Run those notebooks, then this one again, for the full table."
        )
        if items
        else ""
    )


def notes(results: dict) -> list[str]:
    """The conditions under the table: partial or not, seeds, latency conditions, protocol, run."""
    lines = [partial_note(results)] if results.get("partial") else []
    seeds = sorted({int(r.get("n_seeds") or 1) for r in student_rows(results)})
    if seeds and max(seeds) > 1:
        lines.append(
            f"mIoU: mean ± std over {'/'.join(map(str, seeds))} seeds (training runs); Δ mIoU: mean "
            f"over seeds of the paired per-seed differences (the difference of the mIoU column)."
        )
    if _ci_note(results):
        lines.append(_ci_note(results))
    lines += _latency_notes(results.get("latency") or {})
    noisy = [
        row_label(r)
        for r in results["rows"]
        if num(r.get("latency_std_ms")) is not None
        and num(r.get("latency_ms"))
        and r["latency_std_ms"] > 0.5 * r["latency_ms"]
    ]
    if noisy:
        lines.append(
            f"Latency was noisy (std above half the mean for {', '.join(noisy)}): the machine was busy "
            "while it was measured; run 05 again on an idle machine before reading the speed column."
        )
    if any(num(r.get("gflops")) is not None for r in results["rows"]):
        lines.append(
            "GFLOPs: per forward pass at the latency input size; 10^9 floating-point operations, a "
            "multiply-add counted as 2 (torch.utils.flop_counter)."
        )
    if results.get("protocol"):
        lines.append(f"Protocol: {results['protocol']}.".replace("..", "."))
    if results.get("run"):
        lines.append(f"Run: {results['run']}.")
    return lines


def _latency_notes(lat: dict) -> list[str]:
    """The latency conditions: device, threads, dtype, input, path (and its agreement or fallback), which
    measurement is shown."""
    if not lat:
        return []
    lines = []
    size = lat.get("input_size")
    size = "x".join(map(str, size)) if isinstance(size, (list, tuple)) else size
    lines.append(
        f"Latency: mean ± std in ms per forward pass; device {lat.get('device', '?')}, "
        f"{lat.get('threads', '?')} threads, {lat.get('dtype', '?')}, input {size}, "
        f"path: {lat.get('path', '?')}"
        + (
            f" (argmax agreement with eager fp32: {lat['path_agreement']:.4f})."
            if num(lat.get("path_agreement")) is not None and not lat.get("path_note")
            else "."
        )
    )
    if lat.get("path_note"):
        lines.append(f"Latency path: {lat['path_note']}.")
    if len(lat.get("measurements") or []) > 1:
        lines.append(
            f"Latency shown: the quietest of {len(lat['measurements'])} measurements of these models "
            f"({str(lat.get('shown'))[:16].replace('T', ' ')}); all are in the JSON file."
        )
    return lines
