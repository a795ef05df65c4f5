"""helpers/distributed.py with real `torchrun` jobs (2 CPU processes, Gloo) against the same work
done in one process here: evaluation shards gathered exactly, DDP's averaged gradients, the
per-process BatchNorm of a CPU run, the training order, a failing rank ending the job."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers.core.errors import UserError
from helpers.scale import distributed as D

ROOT = Path(__file__).resolve().parent.parent
N_EVAL = 7  # odd: the two shards differ in size
N_TRAIN, SEED, GLOBAL_BATCH = 23, 5, 4  # 23 images: the last, incomplete global batch is dropped
STEPS, LR, TOL = 3, 0.1, 1e-6  # SGD steps (momentum 0.9) of 8 images; max |weight difference|


# --- shared by the torchrun job (which imports this module) and the single-process references ---


def per_image_values(i: int) -> np.ndarray:
    """Image i's "confusion matrix": large int64 counts, so a float round trip would show."""
    return np.random.default_rng(i).integers(0, 2**40, size=(21, 21), dtype=np.int64)


class Net(nn.Module):
    """A small segmentation net (conv [+ BatchNorm] + ReLU + 1x1 conv), with `forward_features`
    like the project's models."""

    def __init__(self, bn: bool):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if bn else nn.Identity(), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)
        self.feature_channels = 8

    def forward_features(self, x):
        f = self.body(x)
        return self.head(f), f

    def forward(self, x):
        return self.forward_features(x)[0]


def global_batch(step: int):
    """Step `step`'s 8 images (3x8x8) and masks (4 classes, every pixel valid)."""
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8, 8, 8), generator=g)


def loss(model, x, y):
    """The loss of images x with masks y, through `forward_features` as the training loop calls it."""
    return nn.functional.cross_entropy(model.forward_features(x)[0], y)


def whole(model, x, y):
    return [loss(model, x, y)]


def train(model, losses=whole):
    """STEPS SGD steps of `model`; `losses(model, x, y)` -> the losses of a step's global batch
    whose mean is minimised (default: the whole batch's)."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    for step in range(STEPS):
        parts = losses(model, *global_batch(step))
        opt.zero_grad()
        (sum(parts) / len(parts)).backward()
        opt.step()
    return model


class Indexed(torch.utils.data.Dataset):
    """Image i is a 1x1x1 tensor holding i: a batch says which images it holds."""

    def __len__(self):
        return N_TRAIN

    def __getitem__(self, i):
        return torch.full((1, 1, 1), float(i)), torch.zeros(1, 1, dtype=torch.long)


def batches(dl) -> list[list[int]]:
    return [b[0].flatten().long().tolist() for b in dl]


# --- the torchrun job ---

JOB = """
import sys, warnings
import numpy as np, torch
sys.path[:0] = [{root!r}, {tests!r}]
import test_distributed as T
from helpers.scale import distributed as D

ctx = D.setup("cpu")
out = {{"ctx": ctx, "again": D.setup("cpu")}}
idx = D.shard(T.N_EVAL, ctx)
mine = np.stack([T.per_image_values(i) for i in idx])
out["shard"], out["gathered"] = list(idx), D.gather_per_image(mine, idx, T.N_EVAL, ctx)

share = lambda m, x, y: [T.loss(m, x[ctx.rank::2], y[ctx.rank::2])]  # this rank's 4 of the 8 images
out["plain"] = D.unwrap(T.train(D.wrap(T.Net(bn=False), ctx), share)).state_dict()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    bn_net = D.wrap(T.Net(bn=True), ctx)
out["bn_warning"] = [str(w.message) for w in caught]
out["channels"] = bn_net.feature_channels  # (the network's attributes read through DDP)
out["bn"] = D.unwrap(T.train(bn_net, share)).state_dict()
sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm2d(3))
try:
    sync(torch.randn(2, 3, 4, 4))
    out["syncbn_cpu"] = "trains"
except ValueError as e:
    out["syncbn_cpu"] = str(e)

bypass = D.wrap(T.Net(bn=False), ctx)  # forward_features called on the inner network, not on DDP
T.train(D.unwrap(bypass), share)
out["bypass"] = D.unwrap(bypass).state_dict()

ds, b = T.Indexed(), D.per_process_batch(T.GLOBAL_BATCH, ctx.world_size)
out["batches"] = {{epoch: T.batches(torch.utils.data.DataLoader(
    ds, batch_size=b, sampler=D.train_sampler(ds, ctx, T.SEED, epoch), drop_last=True)) for epoch in (0, 1)}}
out["broadcast"] = ctx.broadcast({{"rank": ctx.rank}})
torch.save(out, f"out_{{ctx.rank}}.pt")
D.teardown(ctx)
"""

FAILING = """
import sys, time
sys.path.insert(0, {root!r})
import torch.distributed as dist
from helpers.scale import distributed as D
from helpers.core.errors import UserError

ctx = D.setup("cpu")
with D.fail_together(ctx):
    if ctx.rank == 1:
        time.sleep(0.5)
        raise {error}("rank one cannot read image 17")
    if {in_collective}:
        dist.barrier()  # rank 0 waits for rank 1, which never comes
    else:
        time.sleep(120)  # busy elsewhere: only torchrun can stop it
D.teardown(ctx)
"""


def torchrun(tmp_path: Path, source: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess, float]:
    """Run `source` as a script under torchrun (2 processes, CPU) in tmp_path; (result, seconds)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", str(script)]
    t0 = time.monotonic()
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - t0


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The outputs of both ranks of one 2-process job (rank -> dict)."""
    tmp = tmp_path_factory.mktemp("ddp")
    result, _ = torchrun(tmp, JOB.format(root=str(ROOT), tests=str(Path(__file__).parent)))
    assert result.returncode == 0, result.stderr[-3000:]
    return {r: torch.load(tmp / f"out_{r}.pt", weights_only=False) for r in (0, 1)}


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


# 1. evaluation: shards and the exact gather


def test_shards_gather_to_the_full_array_on_every_rank(job):
    full = np.stack([per_image_values(i) for i in range(N_EVAL)])
    assert job[0]["shard"] == [0, 2, 4, 6] and job[1]["shard"] == [1, 3, 5]  # no padding, no duplicate
    for r in (0, 1):
        assert job[r]["gathered"].dtype == np.int64 and np.array_equal(job[r]["gathered"], full)
    assert job[0]["ctx"] == job[0]["again"] and job[1]["ctx"].rank == 1  # setup twice: the same
    assert (job[0]["ctx"].backend, job[1]["ctx"].world_size, job[1]["ctx"].main) == ("gloo", 2, False)
    assert job[1]["broadcast"] == {"rank": 0}


def test_gather_refuses_indices_that_miss_or_repeat_images():
    ctx = D.Context()
    assert np.array_equal(
        D.gather_per_image(np.arange(6).reshape(3, 2), D.shard(3, ctx), 3, ctx), np.arange(6).reshape(3, 2)
    )
    with pytest.raises(ValueError, match="cover 2 of 3 images, 1 of them more than once"):
        D.gather_per_image(np.zeros((3, 2)), [0, 1, 1], 3, ctx)


# 2. training: 2 processes x 4 images == 1 process x 8 images


def test_ddp_steps_equal_one_process_on_the_whole_batch(job):
    one = train(Net(bn=False)).state_dict()
    assert max_diff(job[0]["plain"], one) < TOL and max_diff(job[1]["plain"], one) < TOL
    assert max_diff(job[0]["plain"], Net(bn=False).state_dict()) > 1e-2  # (the steps did move the weights)
    # forward_features on the inner network skips DDP: each process follows its own half
    assert max_diff(job[0]["bypass"], one) > 1e-4


def test_cpu_batchnorm_is_per_process(job):
    """No SyncBatchNorm on the CPU: each process normalises its 4 images with their own statistics
    (a "ghost batch" of 4), unlike one process on 8. What holds exactly: the DDP run equals one
    process averaging the losses of the two halves, each through BatchNorm on its own; the running
    statistics are rank 0's (DDP broadcasts rank 0's buffers before every forward)."""
    assert "SyncBatchNorm needs CUDA" in job[0]["bn_warning"][0] and job[0]["channels"] == 8
    assert "expected input tensor to be on GPU" in job[0]["syncbn_cpu"]
    one = train(Net(bn=True)).state_dict()
    assert max_diff(job[0]["bn"], one) > 1e-3

    def halves(model, x, y):  # each half through BatchNorm on its own; rank 0's half updates the stats
        spare = {k: v.clone() for k, v in model.named_buffers()}  # half 1 updates copies, as on rank 1
        second = nn.functional.cross_entropy(torch.func.functional_call(model, spare, (x[1::2],)), y[1::2])
        return [loss(model, x[0::2], y[0::2]), second]

    ghost = train(Net(bn=True), halves).state_dict()
    assert max_diff(job[0]["bn"], ghost) < TOL
    weights = [k for k, _ in Net(bn=True).named_parameters()]  # rank 1's running statistics are its own:
    assert max_diff({k: job[1]["bn"][k] for k in weights}, ghost) < TOL
    assert max_diff({k: job[1]["bn"][k] for k in ("body.1.running_mean",)}, ghost) > 1e-3
    for name in ("running_mean", "running_var"):
        assert torch.allclose(job[0]["bn"][f"body.1.{name}"], ghost[f"body.1.{name}"], atol=TOL)


# 3. the training order


def test_rank_batches_are_the_single_process_batches(job):
    from helpers.config import Config
    from helpers.data.loaders import loader

    ds, cfg = Indexed(), Config(batch_size=GLOBAL_BATCH, num_workers=0)
    for epoch in (0, 1):
        single = batches(loader(ds, cfg, True, epoch, seed=SEED))
        assert len(single) == N_TRAIN // GLOBAL_BATCH == len(job[0]["batches"][epoch]) == len(job[1]["batches"][epoch])
        for k, whole in enumerate(single):
            assert job[0]["batches"][epoch][k] == whole[0::2] and job[1]["batches"][epoch][k] == whole[1::2]
    assert job[0]["batches"][0] != job[0]["batches"][1]  # (set_epoch: another order each epoch)


def test_epoch_order_is_the_loaders_order():
    from helpers.config import Config
    from helpers.data.loaders import loader

    cfg = Config(batch_size=1, num_workers=0)
    for seed, epoch in ((0, 0), (3, 7)):
        assert sum(batches(loader(Indexed(), cfg, True, epoch, seed=seed)), []) == D.epoch_order(N_TRAIN, seed, epoch)


# 4. a failing rank ends the job


@pytest.mark.parametrize(
    "error, in_collective",
    [("UserError", True), ("RuntimeError", False)],
    ids=["user-error-peer-in-collective", "bug-peer-computing"],
)
def test_a_failing_rank_ends_the_job_with_its_message(tmp_path, error, in_collective):
    result, seconds = torchrun(tmp_path, FAILING.format(root=str(ROOT), error=error, in_collective=in_collective))
    assert result.returncode != 0
    assert seconds < 30, f"{seconds:.1f} s"
    assert "rank 1 failed: rank one cannot read image 17" in result.stderr
    assert "rank 0 failed" not in result.stderr  # rank 0 was stopped, not failing on its own
    assert "rank one cannot read image 17" in result.stderr.split("Root Cause")[-1]  # torchrun's summary


# 5. the batch size, and the single-process case


def test_per_process_batch_refuses_an_uneven_split():
    assert D.per_process_batch(8, 2) == 4 and D.per_process_batch(8, 1) == 8
    with pytest.raises(UserError, match=r"batch_size=10 .*--nproc-per-node 4.*batch_size=8 or batch_size=12"):
        D.per_process_batch(10, 4)


def test_without_torchrun_everything_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = D.setup("cpu")
    assert ctx == D.Context() and ctx.main and not ctx.active and not torch.distributed.is_initialized()
    net = Net(bn=True)
    assert D.wrap(net, ctx) is net and D.unwrap(net) is net
    assert D.train_sampler(Indexed(), ctx, SEED, 0) is None and D.shard(5, ctx) == range(5)
    assert ctx.broadcast([1]) == [1]
    with pytest.raises(UserError), D.fail_together(ctx):
        raise UserError("propagates")
    D.teardown(ctx)
