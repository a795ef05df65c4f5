"""The teacher: where its weights come from, frozen for distillation, and its cached logits.

Training a teacher is `training.fit(cfg, "teacher")`; `training.get_teacher` trains one when
needed. Here the teacher is only found and loaded, so evaluation can never start a training.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, voc
from .config import TEACHER_KEYS, Config, portable_value
from .paths import portable
from .data import dataset
from .errors import UserError
from .models import build_model
from .runs import NotTrained, checkpoint_path, load_model
from .transforms import pool_map


def trains_here(cfg: Config) -> bool:
    """Whether this project trains (or fine-tunes) the teacher, rather than loading given weights."""
    return cfg.teacher_weights == "scratch" or (cfg.teacher_weights == "torchvision" and cfg.teacher_epochs > 0)


def load_teacher(cfg: Config, device) -> torch.nn.Module:
    """The frozen teacher: torchvision weights, a checkpoint path, or the one trained here for these
    settings (checkpoints/teachers/<key>.pt). One trained here that is missing or unfinished raises
    `NotTrained` (train it with `training.get_teacher` or notebook 02)."""
    if cfg.teacher_weights not in ("scratch", "torchvision"):
        model, _ = load_model(cfg.teacher_weights, device)
    elif not trains_here(cfg):
        model = build_model(cfg.teacher_arch, voc.NUM_CLASSES, pretrained=True).to(device)
    else:
        path = checkpoint_path(cfg, "teacher")
        state = checkpoint.load(path) if path.is_file() else None
        if not (state and state.get("complete")):
            why = f"unfinished, epoch {state.get('epoch')} of {state.get('epochs')}" if state else "not there"
            raise NotTrained(cfg, [("teacher", None, path, why)])
        model, _ = load_model(path, device)
    return freeze(model, cfg)


def _trained_teachers(folder: Path, exclude: Path) -> list[dict]:
    """The finished teachers trained here before: {path, config, seconds, epochs, images} each."""
    found = []
    for p in sorted(folder.glob("*.pt")):
        if p == exclude:
            continue
        try:
            state = checkpoint.load(p)
        except UserError:
            continue
        if state.get("method") == "teacher" and state.get("complete"):
            h = state.get("history") or {}
            found.append({"path": p, "config": state.get("config") or {}, "seconds": sum(h.get("time_s") or []),
                          "epochs": len(h.get("time_s") or []), "images": state.get("images")})
    return found


def _differences(cfg: Config, saved: dict) -> list[str]:
    now = cfg.to_dict()
    return [f"{k} {portable_value(k, saved[k])!r} → {now[k]!r}" for k in TEACHER_KEYS
            if k in saved and portable_value(k, saved[k]) != now[k]]


def new_teacher_note(cfg: Config, images: int, state: dict | None = None) -> str:
    """What `fit` says before it trains a teacher: which file, why a new one (the settings that differ
    from the nearest teacher trained here before) and about how long, from that teacher's measured
    seconds per image and epoch (same architecture; an estimate: other settings change the speed)."""
    path = checkpoint_path(cfg, "teacher")
    what = (f"{cfg.teacher_arch}, {cfg.teacher_epochs} epoch{'s' if cfg.teacher_epochs != 1 else ''} on {images} "
            f"'{cfg.teacher_split}' images")
    if state is not None:
        return (f"teacher: continuing the unfinished {portable(path)} from epoch "
                f"{state.get('epoch')} of {cfg.teacher_epochs} ({what}).")
    others = _trained_teachers(path.parent, path)
    if others:
        near = min(others, key=lambda t: len(_differences(cfg, t["config"])))
        why = f"the settings differ from the teacher {near['path'].name} ({'; '.join(_differences(cfg, near['config']))})"
    else:
        why = "no teacher has been trained here yet"
    rates = [t["seconds"] / (t["epochs"] * t["images"]) for t in others
             if t["images"] and t["epochs"] and t["config"].get("teacher_arch") == cfg.teacher_arch]
    if rates:
        est = rates[-1] * images * cfg.teacher_epochs
        when = f"about {est / 60:.0f} min" if est >= 90 else f"about {est:.0f} s"
        estimate = f"Expect {when} ({1000 * rates[-1]:.1f} ms per image and epoch, measured on the last one)."
    else:
        estimate = "No earlier teacher of this architecture to estimate its time from."
    return (f"teacher: training a new one ({what}) → {portable(path)}: {why}. "
            f"{estimate} Trained once, it is reused by every run with these teacher settings.")


def teacher_identity(cfg: Config) -> str:
    """A name for exactly the teacher that `load_teacher(cfg)` returns, for caching its evaluation:
    the checkpoint file's content hash for a weights path, the torchvision weights' name, or the
    hash of the settings that trained it (`Config.teacher_key`)."""
    if cfg.teacher_weights not in ("scratch", "torchvision"):
        h = hashlib.sha1()
        try:
            with open(cfg.teacher_weights, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as e:
            raise UserError(f"teacher_weights='{cfg.teacher_weights}' can't be read ({e.strerror}); "
                            "give the path of a checkpoint, or 'scratch' / 'torchvision'.") from None
        return f"{cfg.teacher_arch}-file-{h.hexdigest()[:12]}"
    if not trains_here(cfg):
        from torchvision.models import get_model_weights

        enum = get_model_weights(cfg.teacher_arch).DEFAULT
        return f"{cfg.teacher_arch}-torchvision-{enum.name}"
    return cfg.teacher_key()


def freeze(teacher: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """The teacher as training uses it: no gradients, eval mode, channels_last if asked."""
    for p in teacher.parameters():
        p.requires_grad_(False)
    if cfg.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher.eval()


# --- cached teacher outputs (response KD) --------------------------------------------------------

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
            raise UserError(f"The teacher-logit cache in {self.folder} is incomplete or damaged ({e}); "
                            "delete the folder and it is rebuilt by one teacher pass.") from None
        self.row = {k: r for r, k in enumerate(ids)}
        done = self.folder / "complete.json"
        self.stride = json.loads(done.read_text()).get("stride") if done.is_file() else None
        self._data = None  # opened in each process that reads (DataLoader workers included)

    def __getitem__(self, image_id: str) -> torch.Tensor:
        if self._data is None:
            self._data = np.memmap(self.folder / "logits.f16", dtype=np.float16, mode="r")
        if image_id not in self.row:
            raise UserError(f"Image '{image_id}' is not in the teacher-logit cache {self.folder} (made for "
                            "another split?); delete the folder and it is rebuilt by one teacher pass.")
        off, c, h, w = (int(v) for v in self.index[self.row[image_id]])
        return torch.from_numpy(np.array(self._data[off: off + c * h * w]).reshape(c, h, w))

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


def teacher_cache(cfg: Config, teacher, device, progress: bool = True) -> Path:
    """One teacher pass over `train_split` (full resolution, no augmentation), storing its logits
    average-pooled by `cache_stride` in fp16 (`LogitCache`). Reused while it exists.

    The approximation: a training step samples the cached map bilinearly at the augmented crop's
    pixels (`transforms.TrainAugment`); the online teacher would instead see the augmented image.
    """
    folder = Path(cfg.checkpoints_dir) / "teachers" / f"{cfg.teacher_key()}-logits-{cfg.train_split}-s{cfg.cache_stride}"
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
                logits = teacher(x[None].to(device))                  # (1, C, H, W)
                small = pool_map(logits, stride)                       # (1, C, ceil(H/s), ceil(W/s))
                yield ds.ids[i], small[0].half().cpu().numpy()

    n = LogitCache.write(folder, maps())
    done = {"images": n, "stride": stride, "seconds": round(time.perf_counter() - t0, 4),
            "format": LogitCache.FORMAT}
    (folder / "complete.json").write_text(json.dumps(done))
    return done

