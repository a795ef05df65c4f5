"""Batch-1 latency of several models measured in one process, interleaved round-robin after warm-up, so
clock or thermal drift hits every model alike (`torch.utils.benchmark`)."""

from __future__ import annotations

import copy
import timeit

import torch
from torch import nn

from ..core.errors import UserError
from ..core.runtime import sync
from .costs import DEFAULT_INPUT


def _device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device={str(device)!r} was asked for, but PyTorch sees no CUDA GPU "
            f"(torch.cuda.is_available() is False). Use device='cpu', or run on a "
            f"machine with an NVIDIA GPU and a CUDA build of PyTorch."
        )
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device={str(device)!r} is not supported here; use 'cpu' or 'cuda'.")
    return dev


def _ready(model: nn.Module, dev: torch.device, dtype: torch.dtype) -> nn.Module:
    """The model on `dev` in `dtype`: itself when already there, else a moved copy (never mutated)."""
    if isinstance(model, torch.jit.ScriptModule):
        return model  # frozen / traced: used as built (build it on the device you measure)
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == dev and (not t.is_floating_point() or t.dtype == dtype) for t in tensors):
        return model
    return copy.deepcopy(model).to(dev, dtype)


def _benchmark_timers():
    """torch.utils.benchmark's Timer and its synchronising clock. Importing them imports
    torch.utils.cpp_extension, which on a machine with a CUDA toolkit but no GPU logs "No CUDA runtime
    is found, using CUDA_HOME=...": a note for compiling C++ extensions (which this project never
    does) that a student reads as a failure. That one logger is quiet for the import, nothing else."""
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
        from torch.utils.benchmark.utils.timer import timer
    finally:
        log.setLevel(level)
    return Timer, timer


def latency(
    models: dict[str, nn.Module],
    input_size=DEFAULT_INPUT,
    device="cpu",
    warmup: int = 3,
    rounds: int = 5,
    min_run_time: float = 0.2,
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, dict]:
    """Batch-1 forward latency of each model ({name: module}), measured interleaved in this one process.

    Every model gets the same random input of `input_size`. After `warmup` untimed calls each, `rounds`
    rounds go round-robin over the models (the order reversed every other round), each a
    torch.utils.benchmark `blocked_autorange` of at least `min_run_time` s; all in eval and inference mode
    with `threads` CPU threads (default: torch's); on CUDA the timer synchronises the GPU. Defaults: 4 small
    models take 5-10 s on 2 idle cores. Returns {name: {"mean_ms", "std_ms" (over rounds), "runs", "device",
    "threads", "dtype", "input_size"}}; models are not modified (another device or dtype: a copy is timed).
    """
    dev = _device(device)
    if not models or rounds < 1 or min_run_time <= 0 or warmup < 0:
        raise UserError(
            f"latency: need models, rounds >= 1, min_run_time > 0, warmup >= 0 (got {len(models)} "
            f"models, {rounds}, {min_run_time}, {warmup})."
        )
    threads = int(threads or torch.get_num_threads())
    x = torch.randn(tuple(input_size), generator=torch.Generator().manual_seed(seed)).to(dev, dtype)
    ready = {name: _ready(m, dev, dtype) for name, m in models.items()}
    # (a frozen TorchScript module has no .training)
    modes = {name: m.training for name, m in ready.items() if not isinstance(m, torch.jit.ScriptModule)}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            per_round, runs = _rounds(ready, x, dev, threads, warmup, rounds, min_run_time)
    finally:
        torch.set_num_threads(old_threads)
        for name, mode in modes.items():
            ready[name].train(mode)
    where = {"device": str(dev), "threads": threads, "dtype": str(dtype).replace("torch.", "")}
    return {
        name: {**_ms(times), "runs": runs[name], **where, "input_size": list(input_size)}
        for name, times in per_round.items()
    }


def _ms(seconds: list) -> dict:
    """{"mean_ms", "std_ms"} over rounds of the per-call seconds."""
    t = torch.tensor(seconds, dtype=torch.float64) * 1e3
    return {"mean_ms": float(t.mean()), "std_ms": float(t.std()) if len(t) > 1 else 0.0}


def _rounds(ready: dict, x, dev, threads: int, warmup: int, rounds: int, min_run_time: float):
    """({name: seconds per call, one per round}, {name: timed calls}): warm-up, then round-robin rounds
    (the order reversed every other round), each a `blocked_autorange` of at least `min_run_time`."""
    Timer, synced_timer = _benchmark_timers()
    clock = timeit.default_timer if dev.type == "cpu" else synced_timer
    timers, runs = {}, {}
    for name, m in ready.items():
        if not isinstance(m, torch.jit.ScriptModule):
            m.eval()
        for _ in range(warmup):
            m(x)
        sync(dev)
        timers[name] = Timer("m(x)", globals={"m": m, "x": x}, num_threads=threads, timer=clock)
        runs[name] = 0
    per_round, names = {name: [] for name in ready}, list(ready)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            meas = timers[name].blocked_autorange(min_run_time=min_run_time)
            per_round[name].append(meas.mean)  # seconds per call in this round
            runs[name] += meas.number_per_run * len(meas.raw_times)
    return per_round, runs
