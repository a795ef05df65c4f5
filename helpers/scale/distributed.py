"""Data-parallel training on PyTorch's own stack: `torchrun` starts the processes and sets their
environment (RANK, WORLD_SIZE, LOCAL_RANK), `torch.distributed` connects them (NCCL on GPUs, Gloo
on the CPU), `DistributedDataParallel` averages the gradients. Without torchrun every function is
the single-process case (nothing initialised), so one training loop serves both.

`batch_size` stays the global batch: each of N processes takes `per_process_batch(batch_size, N)`
images per step, exactly its share of the single process's batch (`GlobalOrderSampler`). What still
differs from one process: BatchNorm statistics on the CPU (no SyncBatchNorm there, see `wrap`), the
augmentation draws (each process draws for its own images), and a loss averaged over a varying
number of valid pixels (DDP weighs each process's mean equally). Only the main process writes files
and prints: `if ctx.main: ...`.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import get_error_handler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from ..core.errors import UserError
from ..core.runtime import resolve_device


@dataclass(frozen=True)
class Context:
    """This process in the job: rank of world_size, GPU index on its machine (local_rank), device,
    process-group backend (None: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints and reports and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process: gradients, evaluation and decisions are shared."""
        return self.world_size > 1

    # The steps a training run takes together; in one process each is a no-op (or the value itself).
    def barrier(self) -> None:
        """Wait until every process is here."""
        if self.active:
            dist.barrier(device_ids=[self.local_rank] if self.backend == "nccl" else None)

    def broadcast(self, obj, src: int = 0):
        """`obj` as rank `src` has it (any picklable value), on every rank."""
        box = [obj]
        if self.active:
            dist.broadcast_object_list(box, src=src, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def mean(self, parts: dict) -> dict:
        """{name: float} averaged over the ranks (an epoch's loss parts): the same numbers on every rank."""
        if not self.active:
            return parts
        keys = sorted(parts)
        t = torch.tensor([float(parts[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def wrap(self, module, sync_bn: bool = True):
        """The network as training calls it: itself in one process, else DDP-wrapped (`wrap`); None stays None."""
        return None if module is None else wrap(module, self, sync_bn=sync_bn)

    def first(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the main process first (e.g. writing a cache), then on the others."""
        out = fn(*args, **kwargs) if self.main else None
        self.barrier()
        return out if self.main else fn(*args, **kwargs)


def current(device_name: str = "auto") -> Context:
    """This process's Context: the torchrun job's when a process group is up, else one process alone
    (nothing initialised). The one place that answers "which process am I"."""
    if dist.is_available() and dist.is_initialized():
        return setup(device_name)
    return Context(device=resolve_device(device_name))


def setup(device_name: str = "auto", timeout_s: float | None = None) -> Context:
    """This process's Context. Under torchrun (WORLD_SIZE > 1) the default process group is created
    once: NCCL with this process's GPU (`torch.cuda.set_device(local_rank)`) on CUDA, Gloo on the
    CPU; `timeout_s` bounds how long a collective waits for the others (PyTorch's default otherwise).
    Without torchrun: a single-process Context, nothing initialised. Calling it again is harmless."""
    local_rank, device = int(os.environ.get("LOCAL_RANK", "0")), resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"--nproc-per-node asks for more processes than the {torch.cuda.device_count()} "
                "GPU(s) this machine shows: start one process per GPU (or fewer)."
            )
        device = torch.device("cuda", local_rank)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized():
        return Context(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kwargs)
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.get_backend())


def teardown(ctx: Context) -> None:
    """Wait for every process, then close the process group (nothing to do in a single process)."""
    if dist.is_initialized():
        dist.barrier(device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None)
        dist.destroy_process_group()


def per_process_batch(global_batch: int, world_size: int) -> int:
    """Images per process and step when `world_size` processes share `global_batch` (batch_size)."""
    if global_batch % world_size == 0:
        return global_batch // world_size
    lower = global_batch - global_batch % world_size
    options = ([f"batch_size={lower}"] if lower else []) + [f"batch_size={lower + world_size}"]
    raise UserError(
        f"batch_size={global_batch} is the batch of one step over all processes and must be a "
        f"multiple of the number of processes (--nproc-per-node {world_size}): each process takes "
        f"batch_size / nproc images. Use {' or '.join(options)}, or another --nproc-per-node."
    )


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of `n` training images in `epoch` of run `seed` in one process (`data.loader`): its
    generator, seeded with `data_seed(seed, epoch)`, draws the workers' base seed (DataLoader
    iterator), then the permutation (RandomSampler). The tests check it against `data.loader`."""
    from ..data.loaders import data_seed  # (here: data imports torchvision, which the rest does not need)

    g = torch.Generator().manual_seed(data_seed(seed, epoch))
    torch.empty((), dtype=torch.int64).random_(generator=g)
    return torch.randperm(n, generator=g).tolist()


class GlobalOrderSampler(DistributedSampler):
    """DistributedSampler over the single-process order of an epoch: rank r takes positions
    r, r + N, r + 2N, ... of `epoch_order` (drop_last: the tail that does not fill every rank is
    dropped, as the single process drops its incomplete batch). With a DataLoader of
    `per_process_batch(B, N)` images per rank, rank r's batch k is `global_batch_k[r::N]`: the N
    batches of step k are exactly the single process's batch k of size B."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, epoch: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.set_epoch(epoch)

    def __iter__(self):
        order = epoch_order(len(self.dataset), self.seed, self.epoch)[: self.total_size]
        return iter(order[self.rank : self.total_size : self.num_replicas])


def train_sampler(dataset, ctx: Context, seed: int, epoch: int) -> GlobalOrderSampler | None:
    """The sampler of this rank's training images in `epoch` of run `seed` (pass it as the
    DataLoader's `sampler`, with shuffle=False and drop_last=True), or None in a single process."""
    return GlobalOrderSampler(dataset, ctx.world_size, ctx.rank, seed, epoch) if ctx.active else None


def shard(n: int, ctx: Context) -> range:
    """The images (of `n`, in dataset order) this rank evaluates: every world_size-th one from its
    rank. Each image goes to exactly one rank (no padding, no duplicates); counts differ by <= 1."""
    return range(ctx.rank, n, ctx.world_size)


def gather_per_image(values, indices, n: int, ctx: Context) -> np.ndarray:
    """The full (n, ...) int64 array, in dataset order, on every rank, from this rank's `values`
    (len(indices), ...) for `indices` (e.g. per-image confusion matrices of its `shard`). Exact:
    each row is summed with zeros from the other ranks. Raises unless the ranks' indices cover
    0..n-1 exactly once."""
    local = torch.as_tensor(values, dtype=torch.int64, device=ctx.device)
    idx = torch.as_tensor(list(indices), dtype=torch.int64, device=ctx.device)
    full = torch.zeros((n, *local.shape[1:]), dtype=torch.int64, device=ctx.device).index_add_(0, idx, local)
    count = torch.zeros(n, dtype=torch.int64, device=ctx.device).index_add_(0, idx, torch.ones_like(idx))
    if ctx.active:
        dist.all_reduce(full)
        dist.all_reduce(count)
    if not bool((count == 1).all()):
        raise ValueError(
            f"the ranks' indices cover {int((count > 0).sum())} of {n} images, "
            f"{int((count > 1).sum())} of them more than once"
        )
    return full.cpu().numpy()


class _Entry(torch.nn.Module):
    """Lets DDP's forward call any method of the network (`forward_features` included)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *args, _method: str = "forward", **kwargs):
        return getattr(self.net, _method)(*args, **kwargs)


class SegDDP(DistributedDataParallel):
    """DistributedDataParallel whose `forward_features` runs through DDP's forward too (called on
    `.module` it would skip it: the gradients would silently not be averaged). The network's data
    attributes (e.g. `feature_channels`) read through; its other methods are not offered."""

    def forward_features(self, *args, **kwargs):
        return self(*args, _method="forward_features", **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__["_modules"].get("module")
            value = getattr(inner.net, name, None) if inner is not None and not name.startswith("_") else None
            if value is None or callable(value):
                raise
            return value


def wrap(module: torch.nn.Module, ctx: Context, sync_bn: bool = True, **ddp_kwargs) -> torch.nn.Module:
    """The network as training should call it: unchanged in a single process, else `SegDDP` (on its
    GPU). With `sync_bn`, BatchNorm layers become SyncBatchNorm on CUDA, so batch statistics are
    those of the global batch. On the CPU PyTorch's SyncBatchNorm refuses to train (ValueError: it
    expects a GPU), so BatchNorm keeps per-process statistics there (with a warning)."""
    if not ctx.active:
        return module
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())
    if sync_bn and has_bn and ctx.device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    elif sync_bn and has_bn:
        warnings.warn(
            "BatchNorm statistics stay per process on the CPU (SyncBatchNorm needs CUDA): the "
            "batch statistics are those of batch_size / nproc images",
            stacklevel=2,
        )
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return SegDDP(_Entry(module.to(ctx.device)), device_ids=device_ids, **ddp_kwargs)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside `wrap`'s result (its state_dict has the usual keys), or `module` itself."""
    if isinstance(module, DistributedDataParallel):
        module = module.module
    return module.net if isinstance(module, _Entry) else module


def _exit(e: BaseException, ctx: Context, code: int) -> None:
    """Say why this rank stops (stderr, and torchrun's error file: the "Root Cause" of its summary),
    then end the process at once: no clean-up that could itself wait for the other ranks."""
    get_error_handler().record_exception(e)  # written only under torchrun (TORCHELASTIC_ERROR_FILE)
    if not isinstance(e, (UserError, SystemExit, KeyboardInterrupt)):
        traceback.print_exception(e)
    sys.stderr.write(f"rank {ctx.rank} failed: {str(e) or type(e).__name__}\n")
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)


@contextmanager
def fail_together(ctx: Context, grace_s: float = 3.0):
    """Around a rank's work: an exception on any rank ends the whole job with that rank's message,
    not the others waiting in a collective. The rank prints "rank R failed: <message>" and exits
    (2 for a UserError as the CLI, 130 on Ctrl-C, else 1); torchrun notices within 0.1 s and stops
    the other ranks (SIGTERM). Other exceptions first wait `grace_s`: the echo of another rank's
    failure (gloo: "Connection closed by peer") is then stopped by torchrun unreported. In a single
    process the exception propagates as usual."""
    if not ctx.active:
        yield
        return
    try:
        yield
    except SystemExit as e:
        if not e.code:
            raise
        _exit(e, ctx, e.code if isinstance(e.code, int) else 1)
    except KeyboardInterrupt as e:
        _exit(e, ctx, 130)
    except UserError as e:
        _exit(e, ctx, 2)
    except BaseException as e:  # noqa: BLE001 - whatever it is, the peers must not wait for ever
        time.sleep(grace_s)
        _exit(e, ctx, 1)
