"""Shared fixtures. Everything runs on the CPU with tiny data, so `make test` stays a few minutes."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent.parent
VOC_SAMPLE = ROOT.parent / "shared" / "fixtures" / "voc2012_sample"
TINY_SCALE = 0.02  # demo_scale giving the splits below (see data.prepare_data)
TINY_SPLITS = {"train": 12, "holdout": 4, "val": 6, "teacher": 60}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A tiny demo set in the VOC layout (generated once per test session)."""
    from helpers.data import demo as demo_data

    root = tmp_path_factory.mktemp("demo")
    demo_data.generate(root, seed=0, size=32, splits=TINY_SPLITS, progress=False)
    return root


@pytest.fixture
def voc_sample():
    if not (VOC_SAMPLE / "VOCdevkit").is_dir():
        pytest.skip(f"real VOC sample not found at {VOC_SAMPLE} (it lives in the workplace's shared/ folder)")
    return VOC_SAMPLE


def tiny_config(folder, demo_root, **changes):
    """A Config for seconds-long training on the tiny demo set, its files under `folder`; `changes` on top
    (module-scoped fixtures build theirs with it)."""
    from helpers.config import Config

    base = dict(
        run_name="t",
        min_teacher_miou=0,  # (a teacher of one tiny epoch: no pre-flight check)
        checkpoints_dir=str(folder / "ckpt"),
        reports_dir=str(folder / "reports"),
        data_root=str(demo_root),
        demo_size=32,
        demo_scale=TINY_SCALE,
        crop_size=32,
        base_size=32,
        epochs=2,
        teacher_epochs=1,
        batch_size=4,
        warmup_iters=1,
        monitor_every=1,
        device="cpu",
        seeds=1,
        teacher_cache=False,
        bootstrap_resamples=100,
        latency_size=32,
        latency_min_time=0.01,
    )
    return Config(**{**base, **changes})


@pytest.fixture
def tiny_cfg(demo_root, tmp_path):
    """A Config for seconds-long training on the tiny demo set."""
    return tiny_config(tmp_path, demo_root)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets and tensors: one thread is faster on a busy 2-core machine and reproducible."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def count_epochs(monkeypatch) -> list:
    """Record the (0-based) epochs that training.fit actually trains from now on (read by parameter
    name from the call, whatever its positional layout)."""
    import inspect

    from helpers import training

    trained, real = [], training.train_one_epoch
    signature = inspect.signature(real)

    def counted(*a, **k):
        trained.append(signature.bind(*a, **k).arguments["epoch"])
        return real(*a, **k)

    monkeypatch.setattr(training.loop, "train_one_epoch", counted)
    return trained
