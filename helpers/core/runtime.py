"""Where the work runs: the device, the CPU allocator, seeding, mixed precision."""

from __future__ import annotations

import ctypes
import random
import sys
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from .errors import UserError

_FREED_MEMORY_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed tensor memory for reuse instead of returning it to the OS.

    By default glibc serves blocks above its mmap threshold (128 KiB, growing only as such blocks are
    freed) straight from the OS and gives them back on free, so each training step faults its
    tensors in again (docs/performance.md has the measurement). Raising the mmap threshold to its
    maximum (32 MiB) and the trim threshold to 1 GiB keeps them. Process-wide, done once; a no-op
    (returns False) where the C library is not glibc.
    """
    global _FREED_MEMORY_KEPT
    if _FREED_MEMORY_KEPT is None:
        _FREED_MEMORY_KEPT = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
                _FREED_MEMORY_KEPT = bool(
                    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
                )
            except (OSError, AttributeError):
                pass
    return _FREED_MEMORY_KEPT


# --- devices and data -----------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "device='cuda' was asked for, but PyTorch sees no CUDA GPU here "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). "
            "Use device='cpu' or 'auto', or run on a machine with a GPU."
        )
    return torch.device(name)


@contextmanager
def threads(n: int | str | None):
    """torch's CPU threads set to `n` inside the block and restored after ('auto' or None: left as they are)."""
    before = torch.get_num_threads()
    if isinstance(n, int) and not isinstance(n, bool):
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_all(seed: int) -> None:
    """Seed torch, Python's `random` and NumPy (NumPy takes the low 32 bits)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def make_scaler(device, cfg) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 autocast on CUDA (bf16 needs none)."""
    use = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler(device.type, enabled=use)


def autocast(device, cfg):
    """(context manager, dtype): bf16 (or fp16) autocast on CUDA when cfg.amp, else fp32."""
    if device.type == "cuda" and cfg.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    return nullcontext(), torch.float32


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. Call before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
