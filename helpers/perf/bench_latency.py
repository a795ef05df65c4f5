"""Part 4 of the bench (`bench.py`): batch-1 latency of student and teacher on every inference path, interleaved
in one process, with GFLOPs, GFLOP/s and each faster path's argmax agreement with eager fp32 on real images."""

from __future__ import annotations

import torch

from .. import perf  # (the package's names: the table's latency column calls the same ones)
from ..config.knobs import Config
from ..core.errors import UserError
from ..data import loaders as datasets
from ..models.nets import CompactSegNet


def _real_images(cfg: Config, split: str, n: int) -> list[torch.Tensor]:
    ds = datasets.dataset(cfg, split)  # eval transform: full resolution, normalised
    return [ds[i][0][None] for i in range(min(n, len(ds)))]


def inference(
    student,
    teacher,
    cfg: Config,
    device: torch.device,
    image_size: int,
    threads: int,
    rounds: int = 3,
    min_run_time: float = 0.2,
    images: int = 4,
    int8: bool = True,
    int8_min_agreement: float = 0.98,
) -> dict:
    """Batch-1 latency of every inference path, GFLOPs, GFLOP/s and argmax agreement with eager."""
    size = (1, 3, image_size, image_size)
    val = _real_images(cfg, cfg.eval_split, images)
    models, agreement, notes, flops = {}, {}, [], {}
    for role, net in (("student", student), ("teacher", teacher)):
        net = net.to(device).eval()
        flops[role] = perf.gflops(net, size)
        models[f"{role}/eager"] = eager = perf.optimize_for_inference(net, "eager", size)
        for path in _paths(role, net, cfg, device, int8, notes):
            fast = _built(cfg, net, path, size, notes, role)
            if fast is not None:
                name = f"{role}/{path}"
                agreement[name] = perf.argmax_agreement(eager, fast, val)
                if _offered(name, path, agreement[name], int8_min_agreement, notes):
                    models[name] = fast
    lat = perf.latency(models, size, device=str(device), rounds=rounds, min_run_time=min_run_time, threads=threads)
    latency_ms = {k: {"mean": v["mean_ms"], "std": v["std_ms"]} for k, v in lat.items()}
    per_s = {k: flops[k.split("/")[0]] / (v["mean"] / 1e3) for k, v in latency_ms.items()}
    return {
        "latency_ms": latency_ms,
        "gflops": flops,
        "gflop_per_s": per_s,
        "argmax_agreement": agreement,
        "agreement_images": len(val),
        "agreement_split": cfg.eval_split,
        "notes": notes,
    }


def _built(cfg: Config, net, path: str, size, notes: list, role: str):
    """One faster path of `net` (int8 calibrated on real training images), or None with a note."""
    calib = _real_images(cfg, cfg.train_split, 8) if path == "int8" else None
    try:
        return perf.optimize_for_inference(net, path, size, calibration=calib)
    except UserError as e:
        notes.append(f"{role}/{path} skipped: {e}")
        return None


def _offered(name: str, path: str, agreement: float, int8_min: float, notes: list) -> bool:
    """Whether a built path is timed (int8 below `int8_min` is not); a table path below perf.MIN_AGREEMENT is
    timed but noted as not offered for the table's column."""
    if path == "int8" and agreement < int8_min:
        notes.append(f"{name}: agreement {agreement:.4f} < {int8_min}, not timed")
        return False
    if path in perf.TABLE_PATHS and agreement < perf.MIN_AGREEMENT:
        notes.append(
            f"{name}: agreement {agreement:.4f} < {perf.MIN_AGREEMENT}: not offered as the table's latency "
            "column (05 falls back to eager)"
        )
    return True


def _paths(role: str, net, cfg: Config, device, int8: bool, notes: list) -> list[str]:
    """The faster paths to build for one model (int8: a compact student on the CPU only; why not, in notes)."""
    if role != "student" or not int8:
        return ["fused", "jit", "onnxruntime"]
    if device.type != "cpu":
        notes.append("int8 skipped: CPU only")
    elif not isinstance(net, CompactSegNet):
        notes.append(f"int8 skipped: {cfg.student_arch} is not a plain conv net")
    else:
        return ["fused", "jit", "onnxruntime", "int8"]
    return ["fused", "jit", "onnxruntime"]
