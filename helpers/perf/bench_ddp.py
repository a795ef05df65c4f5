"""`torchrun --nproc-per-node N -m helpers bench`: data-parallel training throughput of the baseline student.

`batch_size` is the global batch (each rank trains batch_size / N images per step through DDP, as
`training.fit` under torchrun). Rank 0 first times the same per-process step alone without DDP (the
others wait), then all ranks time DDP steps; reported: per-process and total images/s, and the scaling
efficiency total / (N x the lone process's images/s at the same per-process batch: weak scaling, 1.0 =
no cost of the gradient averaging). Rank 0 writes the JSON and prints; the others return None.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..core import runtime
from ..data import voc
from ..models.nets import build_model
from ..scale import distributed
from ..training import loop, setup
from .bench import make_config
from .throughput import run, synthetic_batches


def _images_per_s(net, cfg, job, batches, warmup: int, together: bool) -> float:
    """Images per second of this process over batches[warmup:] after warm-up steps (all ranks start together)."""
    optimizer = setup.make_optimizer(net.parameters(), cfg, cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    t = loop.Trainee(
        "baseline",
        "baseline",
        cfg,
        job.device,
        net,
        None,
        None,
        optimizer,
        scheduler,
        runtime.make_scaler(job.device, cfg),
        1,
    )
    run(t, batches[:warmup])
    runtime.sync(job.device)
    if together:
        job.barrier()
    t0 = time.perf_counter()
    run(t, batches[warmup:])
    runtime.sync(job.device)
    return batches[0][0].shape[0] * (len(batches) - warmup) / (time.perf_counter() - t0)


def distributed_main(
    device: str = "cpu",
    image_size: int = 64,
    batch_size: int = 16,
    out="reports/bench_ddp.json",
    preset: str | None = "demo",
    overrides: dict | None = None,
    *,
    steps: int = 6,
    warmup: int = 2,
    verbose: bool = True,
) -> dict | None:
    """Measure (see the module docstring) and, on rank 0, write `out` and return the result."""
    cfg = make_config(preset, overrides, device)
    job = distributed.setup(cfg.device)
    local = distributed.per_process_batch(batch_size, job.world_size)
    batches, _ = synthetic_batches(warmup + steps, local, image_size, seed=job.rank)
    torch.manual_seed(cfg.seed)
    alone = build_model(cfg.student_arch, voc.NUM_CLASSES).to(job.device)
    single = _images_per_s(alone, cfg, job, batches, warmup, False) if job.main and job.active else None
    job.barrier()  # (the other ranks wait while rank 0 measures alone)
    torch.manual_seed(cfg.seed)
    net = job.wrap(build_model(cfg.student_arch, voc.NUM_CLASSES).to(job.device), cfg.sync_bn)
    per_process = _gather(_images_per_s(net, cfg, job, batches, warmup, job.active), job)
    if not job.main:
        return None
    total = sum(per_process)
    result = {
        "device": str(job.device),
        "backend": job.backend,
        "world_size": job.world_size,
        "global_batch": batch_size,
        "per_process_batch": local,
        "image_size": image_size,
        "student": cfg.student_arch,
        "steps": steps,
        "threads_per_process": torch.get_num_threads(),
        "per_process_images_per_s": per_process,
        "total_images_per_s": total,
        "single_process_images_per_s": single,
        "scaling_efficiency": total / (job.world_size * single) if single else None,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if verbose:
        _print(result, cfg, out)
    return result


def _gather(mine: float, job) -> list[float]:
    """Every rank's images/s, in rank order, on every rank."""
    if not job.active:
        return [mine]
    t = torch.tensor([mine], dtype=torch.float64, device=job.device)
    gathered = [torch.zeros_like(t) for _ in range(job.world_size)]
    dist.all_gather(gathered, t)
    return [float(g.item()) for g in gathered]


def _print(r: dict, cfg, out: Path) -> None:
    print(
        f"data-parallel training ({r['world_size']} processes, {r['backend']}, {r['device']}), {cfg.student_arch}, "
        f"global batch {r['global_batch']} ({r['per_process_batch']} per process) x {r['image_size']}x{r['image_size']}"
    )
    for rank, v in enumerate(r["per_process_images_per_s"]):
        print(f"rank {rank}: {v:.1f} images/s")
    single = r["single_process_images_per_s"]
    print(
        f"total: {r['total_images_per_s']:.1f} images/s"
        + (
            f"; one process alone (batch {r['per_process_batch']}): {single:.1f} images/s; scaling efficiency "
            f"{r['scaling_efficiency']:.2f}"
            if single
            else ""
        )
    )
    print(f"written to {out}")
