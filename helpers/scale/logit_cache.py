"""The teacher's logits, cached: one teacher pass over the training split (no augmentation, full
resolution) stored average-pooled in fp16, so methods that read only the teacher's logits (response
KD) train without running the teacher in every step (`teacher_cache = True`).

The approximation: a training step samples the cached map bilinearly at the augmented crop's pixels
(`data.transforms.TrainAugment`); the online teacher would instead see the augmented image itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..config.knobs import Config
from ..core.errors import UserError
from ..data import voc
from ..data.loaders import dataset
from ..data.transforms import pool_map


class LogitCache:
    """Cached teacher maps on disk: every image's fp16 map (C, h, w) end to end in one raw file
    (`logits.f16`, memory-mapped when read), `index.npy` (offset, C, h, w) per image and `ids.json`.
    One file instead of one per image: reading a map is a slice, not a file open and a header parse."""

    FORMAT = 3  # 3: cells on the regular grid of `pool_map` (2 pooled with ceil_mode)

    def __init__(self, folder):
        self.folder = Path(folder)
        try:
            ids = json.loads((self.folder / "ids.json").read_text())
            self.index = np.load(self.folder / "index.npy")
        except (OSError, ValueError) as e:
            raise UserError(
                f"The teacher-logit cache in {self.folder} is incomplete or damaged ({e}); "
                "delete the folder and it is rebuilt by one teacher pass."
            ) from None
        self.row = {k: r for r, k in enumerate(ids)}
        done = self.folder / "complete.json"
        self.stride = json.loads(done.read_text()).get("stride") if done.is_file() else None
        self._data = None  # opened in each process that reads (DataLoader workers included)

    def __getitem__(self, image_id: str) -> torch.Tensor:
        if self._data is None:
            self._data = np.memmap(self.folder / "logits.f16", dtype=np.float16, mode="r")
        if image_id not in self.row:
            raise UserError(
                f"Image '{image_id}' is not in the teacher-logit cache {self.folder} (made for "
                "another split?); delete the folder and it is rebuilt by one teacher pass."
            )
        off, c, h, w = (int(v) for v in self.index[self.row[image_id]])
        return torch.from_numpy(np.array(self._data[off : off + c * h * w]).reshape(c, h, w))

    def __getstate__(self):  # a worker process opens its own map
        return {**self.__dict__, "_data": None}

    @staticmethod
    def write(folder, items) -> int:
        """Write (image id, map (C, h, w)) pairs; returns how many. Overwrites the folder's cache."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ids, index, offset = [], [], 0
        with open(folder / "logits.f16", "wb") as f:
            for image_id, m in items:
                m = np.ascontiguousarray(m, dtype=np.float16)
                f.write(m.tobytes())
                ids.append(image_id)
                index.append((offset, *m.shape))
                offset += m.size
        np.save(folder / "index.npy", np.array(index, dtype=np.int64).reshape(-1, 4))
        (folder / "ids.json").write_text(json.dumps(ids))
        return len(ids)


class WithTeacherLogits(torch.utils.data.Dataset):
    """A training split whose samples carry their cached teacher logits: (image, mask, map (C, h, w)
    fp16 as stored, crop geometry (4,)); `train_one_epoch` samples the batch's maps at the crops."""

    def __init__(self, ds: voc.SegDataset, cache: Path):
        self.ds, self.cache = ds, LogitCache(cache)
        self.stride = self.cache.stride

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img, labels = self.ds.load(i)
        return self.ds.transform(img, labels, self.cache[self.ds.ids[i]], self.stride)


def cache_folder(cfg: Config) -> Path:
    """Where the run's cached teacher logits live (shared by every run with the same teacher and split)."""
    name = f"{cfg.teacher_key()}-logits-{cfg.train_split}-s{cfg.cache_stride}"
    return Path(cfg.checkpoints_dir) / "teachers" / name


def teacher_cache(cfg: Config, teacher, device, progress: bool = True) -> Path:
    """One teacher pass over `train_split` (full resolution, no augmentation), storing its logits
    average-pooled by `cache_stride` in fp16 (`LogitCache`). Reused while it exists.

    The approximation: a training step samples the cached map bilinearly at the augmented crop's
    pixels (`transforms.TrainAugment`); the online teacher would instead see the augmented image.
    """
    folder = cache_folder(cfg)
    done = folder / "complete.json"
    if not done.is_file() or json.loads(done.read_text()).get("format") != LogitCache.FORMAT:
        write_logit_cache(dataset(cfg, cfg.train_split), teacher, folder, cfg.cache_stride, device, progress)
    return folder


def write_logit_cache(ds: voc.SegDataset, teacher, folder, stride: int, device, progress: bool = True) -> dict:
    """Run `teacher` over `ds` (eval transform) and store each image's logits, average-pooled by
    `stride`, as fp16 in a `LogitCache` in `folder`; `complete.json` (images, stride, seconds,
    format) is written last, so a cut-off pass is redone rather than used. Returns what it holds."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    (folder / "complete.json").unlink(missing_ok=True)
    t0 = time.perf_counter()

    def maps():
        with torch.inference_mode():
            for i in tqdm(range(len(ds)), desc="caching teacher logits", disable=not progress, leave=False):
                x, _ = ds[i]
                logits = teacher(x[None].to(device))  # (1, C, H, W)
                small = pool_map(logits, stride)  # (1, C, ceil(H/s), ceil(W/s))
                yield ds.ids[i], small[0].half().cpu().numpy()

    n = LogitCache.write(folder, maps())
    done = {"images": n, "stride": stride, "seconds": round(time.perf_counter() - t0, 4), "format": LogitCache.FORMAT}
    (folder / "complete.json").write_text(json.dumps(done))
    return done
