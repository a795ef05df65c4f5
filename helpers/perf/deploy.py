"""Shipping the student (notebook 05): the best student exported as an ONNX file into the report folder, and
every inference path of it side by side: its size on disk, batch-1 latency (one process, interleaved, as the
table's column), speed-up over eager and argmax agreement with eager fp32 on real eval images."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..config.knobs import Config
from ..core import runtime
from ..core.errors import UserError
from ..core.paths import portable
from ..data import loaders as data
from ..models import store
from ..models.nets import CompactSegNet
from .export import OrtModel, export_checkpoint, to_onnx
from .inference import MIN_AGREEMENT, TABLE_PATHS, argmax_agreement, optimize_for_inference
from .timing import latency

AGREEMENT_IMAGES = 4


def _disk_bytes(module) -> int | None:
    """Bytes of a PyTorch path's weights saved (state_dict); None for the jit path: a module through
    torch.jit.optimize_for_inference saves, but does not load back ("required keyword attribute 'value'"),
    so it is not a file one ships."""
    if isinstance(module, torch.jit.ScriptModule):
        return None
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return len(buffer.getvalue())


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 1e6


def best_student(results: dict) -> str:
    """The student method with the highest mean mIoU in a comparison table's results."""
    students = [r for r in results["rows"] if r["method"] != "teacher" and r.get("miou") is not None]
    return max(students, key=lambda r: r["miou"])["method"]


def deployment(cfg: Config, method: str, out_dir=None, min_run_time: float | None = None) -> dict:
    """Export `method`'s first-seed student to `out_dir`/<method>.onnx (default reports/<run>/deploy) and
    measure every path of it on the run's device at `latency_size` (see the module docstring)."""
    ckpt = store.checkpoint_path(cfg, method)
    out = Path(out_dir or store.reports_dir(cfg) / "deploy") / f"{method}.onnx"
    export_checkpoint(ckpt, out, cfg.latency_size, dynamic=True)
    model, _ = store.load_model(ckpt)
    ds = data.dataset(cfg, cfg.eval_split)
    measured = measure_paths(
        model,
        [ds[i][0][None] for i in range(min(AGREEMENT_IMAGES, len(ds)))],
        cfg.latency_size,
        str(runtime.resolve_device(cfg.device)),
        min_run_time or cfg.latency_min_time,
        onnx_file=out,
        calibration=lambda: [data.dataset(cfg, cfg.train_split)[i][0][None] for i in range(8)],
    )
    return {**measured, "method": method, "checkpoint": portable(ckpt), "onnx": portable(out), "split": cfg.eval_split}


def measure_paths(
    model, images: list, image_size: int, device="cpu", min_run_time=0.5, onnx_file=None, calibration=None
) -> dict:
    """Every inference path of `model` at batch 1 x `image_size`^2 on `device`: size on disk, latency (one
    process, interleaved), × eager and argmax agreement with eager on `images` (real ones, full resolution).

    onnx_file: an export with dynamic axes to time as "onnxruntime" (default: exported here, in memory);
    calibration: a callable giving int8's calibration batches (int8 is tried for a compact student on CPU)."""
    size = (1, 3, image_size, image_size)
    model = model.to(device).eval()
    paths = {p: optimize_for_inference(model, p, size) for p in TABLE_PATHS if p != "onnxruntime"}
    notes = []
    onnx = Path(onnx_file).read_bytes() if onnx_file else to_onnx(model, image_size, dynamic=True).SerializeToString()
    paths["onnxruntime"] = OrtModel(onnx)
    if torch.device(device).type != "cpu":
        try:
            paths["onnxruntime"].session(torch.device(device))
        except UserError as e:
            notes.append(f"onnxruntime not timed: {e}")
            del paths["onnxruntime"]
    if isinstance(model, CompactSegNet) and torch.device(device).type == "cpu":
        paths["int8"] = optimize_for_inference(model, "int8", size, calibration=calibration() if calibration else None)
    lat = latency(paths, size, device=device, min_run_time=min_run_time)
    eager = paths["eager"]
    rows = []
    for name, module in paths.items():
        agreement = 1.0 if name == "eager" else argmax_agreement(eager, module, images)
        disk = len(onnx) if name == "onnxruntime" else _disk_bytes(module)
        rows.append(
            {
                "path": name,
                "disk_mb": _mb(disk),
                "latency_ms": lat[name]["mean_ms"],
                "latency_std_ms": lat[name]["std_ms"],
                "speedup": lat["eager"]["mean_ms"] / lat[name]["mean_ms"],
                "agreement": agreement,
                "offered": name in TABLE_PATHS and agreement >= MIN_AGREEMENT,
            }
        )
    where = {"device": device, "threads": lat["eager"]["threads"], "input_size": list(size)}
    return {"rows": rows, **where, "images": len(images), "notes": notes}


def deployment_markdown(d: dict) -> str:
    """The small table of `deployment`, with what its columns mean."""
    lines = [
        "| Path | Size on disk (MB) | Latency (ms) | × eager | Agreement with eager | Table column? |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in d["rows"]:
        offered = "yes" if r["offered"] else ("no (< 0.999)" if r["path"] != "int8" else "no (int8: not a table path)")
        disk = "n/a" if r["disk_mb"] is None else f"{r['disk_mb']:.2f}"
        lines.append(
            f"| {r['path']} | {disk} | {r['latency_ms']:.2f} ± {r['latency_std_ms']:.2f} | "
            f"{r['speedup']:.2f} | {r['agreement']:.4f} | {offered} |"
        )
    size = "x".join(map(str, d["input_size"]))
    return (
        f"**Shipping the student** ({d['method']}, `{Path(d['checkpoint']).name}`), exported to "
        f"`{d['onnx']}`:\n\n" + "\n".join(lines) + f"\n\nBatch 1, input {size}, {d['device']}, {d['threads']} "
        "threads, all paths timed interleaved in one process (mean ± std over rounds). Size on disk: the "
        "weights alone (eager, fused, int8), the .onnx file (onnxruntime); jit: n/a, since a module through "
        "torch.jit.optimize_for_inference does not load back from a file (TorchScript is deprecated upstream). "
        f"Agreement: share of pixels whose argmax equals eager fp32's on {d['images']} {d['split']} "
        f"image{'s' * (d['images'] != 1)} (full resolution); a "
        f"path needs {MIN_AGREEMENT} to serve as the table's latency column (`inference_path`)."
        + "".join(f" {n}." for n in d.get("notes", []))
    )
