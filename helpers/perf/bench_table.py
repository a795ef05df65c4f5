"""The bench's result as a plain-text table (what `python -m helpers bench` prints), one section per part."""

from __future__ import annotations

import math

from .costs import FLOP_CONVENTION


def _g(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def format_table(r: dict) -> str:
    """A plain-text summary of a bench result."""
    head = (
        f"{r['models']['student']} student / {r['models']['teacher']} teacher on {r['device_name']}, "
        f"{r['threads']} threads, torch {r['torch']}, training in {r['train_dtype']}"
    )
    sections = (_training(r), _data(r), _epochs(r), _inference(r), _evaluation(r))
    return "\n".join([head, *(line for s in sections for line in s), *(f"note: {n}" for n in r["notes"])])


def _training(r: dict) -> list[str]:
    peaks = r["cuda_peak_mem_mb"]
    lines = [
        f"\ntraining step, batch {r['batch_size']} x {r['image_size']}x{r['image_size']} (synthetic, median of "
        f"{r['rounds']} interleaved rounds)",
        f"{'kind':<17}{'ms/step':>10}{'±std':>8}{'img/s':>9}{'x baseline':>12}{'efficiency':>12}"
        + (f"{'peak MB':>10}" if peaks else ""),
    ]
    for k in (*r["step_kinds"], "teacher"):
        s = r["step_ms"][k]
        ips = r["teacher_images_per_s"] if k == "teacher" else r["train_images_per_s"][k]
        overhead = 1.0 if k == "baseline" else r["kd_overhead"].get(k)
        name = "teacher forward" if k == "teacher" else k
        lines.append(
            f"{name:<17}{s['median']:>10.1f}{s['std']:>8.1f}{ips:>9.0f}{_g(overhead):>12}"
            f"{_g(r['efficiency'].get(k)):>12}" + (f"{peaks[k]:>10.0f}" if peaks else "")
        )
    return lines + ["efficiency = (baseline step + teacher forward) / KD step (goal >= 0.9)"]


def _data(r: dict) -> list[str]:
    lines = [
        "\nwaiting for data (real training split, data.loader, baseline steps)",
        f"{'setting':<12}{'wait share':>11}{'wait ms':>9}{'step ms':>9}{'1st batch ms':>14}",
    ]
    return lines + [
        f"{k:<12}{v['share']:>11.1%}{v['wait_ms']:>9.1f}{v['step_ms']:>9.1f}{v['first_batch_ms']:>14.0f}"
        for k, v in r["data_wait"].items()
    ]


def _epochs(r: dict) -> list[str]:
    ce = r.get("cached_epoch")
    if not ce:
        return []
    return [
        f"\nreal epochs over {ce['images']} training images, batch {ce['batch_size']}, num_workers "
        f"{ce['num_workers']} (median of {ce['rounds']} interleaved)",
        f"teacher pass filling the logit cache: {ce['cache_pass_s']:.2f} s (once)",
        f"baseline epoch {ce['epoch_s']['baseline']:.2f} s, cached {ce['method']}-KD epoch "
        f"{ce['epoch_s'][ce['method'] + '_cached']:.2f} s: x{ce['ratio']:.2f} (goal <= 1.2)",
    ]


def _inference(r: dict) -> list[str]:
    lines = [
        f"\ninference, batch 1 x {r['image_size']}x{r['image_size']} (GFLOPs: student "
        f"{r['gflops']['student']:.3g}, teacher {r['gflops']['teacher']:.3g})",
        r.get("flop_convention", FLOP_CONVENTION),
        f"agreement: argmax vs eager fp32 on {r['agreement_images']} real {r.get('agreement_split', 'val')} "
        "images; every path built by perf.optimize_for_inference, as the table's latency column",
        f"{'model/path':<22}{'ms':>9}{'±std':>8}{'x eager':>9}{'GFLOP/s':>10}{'agreement':>11}",
    ]
    for k, v in r["latency_ms"].items():
        agreement = r["argmax_agreement"].get(k)
        eager = r["latency_ms"].get(k.split("/")[0] + "/eager", v)["mean"]
        lines.append(
            f"{k:<22}{v['mean']:>9.2f}{v['std']:>8.2f}{eager / v['mean']:>9.2f}{r['gflop_per_s'][k]:>10.1f}"
            f"{'ref' if agreement is None else f'{agreement:.4f}':>11}"
        )
    return lines


def _evaluation(r: dict) -> list[str]:
    ev = r.get("evaluation")
    if not ev:
        return []
    return [
        f"\nevaluation at VOC size: boundary IoU counts {ev['boundary_ms_per_image']:.1f} ms per "
        f"{ev['image_size']}x{ev['image_size']} image; seed-level interval ({ev['seeds']} seeds x "
        f"{ev['images']} images, {ev['resamples']} resamples) {ev['interval_s']:.2f} s"
    ]
