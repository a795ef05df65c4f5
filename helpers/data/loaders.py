"""The data of a study: the dataset folder (demo generated, VOC checked), datasets, loaders.

Every epoch's order and augmentation come from `data_seed(seed, epoch)`, so the three students of
one seed see identical batches and a resumed run continues the same sequence.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.runtime import seed_all
from . import demo as demo_data
from . import voc
from .transforms import collate_pad, eval_transform, train_transform

if TYPE_CHECKING:  # (data sits below config: a Config is only read here)
    from ..config.knobs import Config


def prepare_data(cfg: Config, progress: bool = True) -> Path:
    """The dataset root: generate the demo set if needed; check that a VOC tree is there."""
    if cfg.dataset == "demo":
        splits = {k: max(4, round(n * cfg.demo_scale)) for k, n in demo_data.SPLITS.items()}
        demo_data.ensure(cfg.data_root, cfg.demo_seed, cfg.demo_size, splits, progress)
    elif cfg.download:
        voc.download_voc(cfg.data_root)
    else:
        voc.check_voc_root(cfg.data_root, cfg.eval_split)
    return Path(cfg.data_root)


def dataset(cfg: Config, split: str, train: bool = False) -> voc.SegDataset:
    tf = train_transform(cfg.crop_size, cfg.base_size, (cfg.scale_min, cfg.scale_max)) if train else eval_transform()
    return voc.get_dataset(cfg.data_root, split, tf, sbd_root=cfg.sbd_root or None, keep_decoded=cfg.dataset == "demo")


def _seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def data_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data of run `seed`: batch order, augmentation draws and the
    DataLoader workers' seeds all derive from it. The same for every method of that seed (so the
    three students see identical batches), different between seeds and between epochs."""
    return (seed * 1_000_003 + epoch) % 2**63


def loader(
    ds, cfg: Config, train: bool, epoch: int = 0, batch_size: int | None = None, seed: int | None = None, sampler=None
) -> DataLoader:
    """Batches of `ds`; for training, shuffled in the order of (`seed`, `epoch`) (`seed`: the run's
    seed, default cfg.seed), so a resumed run sees the same order and each seed its own."""
    seed = cfg.seed if seed is None else seed
    g = torch.Generator().manual_seed(data_seed(seed, epoch))  # order, and worker seeds (drawn from g)
    # `sampler` (distributed.train_sampler under torchrun): this rank's share of the epoch's order
    return DataLoader(
        ds,
        batch_size=batch_size or cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train,
        num_workers=cfg.num_workers,
        collate_fn=collate_pad,
        generator=g,
        worker_init_fn=_seed_worker,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def epoch_loader(ds, cfg: Config, seed: int, epoch: int) -> DataLoader:
    """The training batches of one epoch of run `seed`: order and augmentation (drawn in this
    process, or in workers seeded from the loader's generator) both follow `data_seed(seed, epoch)`."""
    seed_all(data_seed(seed, epoch))
    return loader(ds, cfg, True, epoch, seed=seed)


def one_batch(cfg: Config, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch of `n` images (default batch_size) as a step sees it: augmented crops and
    their masks, in the order of the run's first epoch."""
    images, masks, *_ = next(iter(loader(dataset(cfg, cfg.train_split, train=True), cfg, True, batch_size=n)))
    return images, masks
