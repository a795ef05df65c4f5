"""One training loop and one `evaluate` for every method (teacher, baseline, response, feature)."""
from __future__ import annotations

import ctypes
import json
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import checkpoint, demo_data, voc
from .config import Config, portable_value
from .distill import FeatureAdapter, distill_loss
from .errors import UserError
from .metrics import confusion_matrix, summarize
from .models import build_model
from .transforms import collate_pad, eval_transform, pool_map, sample_cached, train_transform

METHODS = ("teacher", "baseline", "response", "feature")


# --- the CPU allocator -----------------------------------------------------------------------------

_FREED_MEMORY_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed tensor memory for reuse instead of returning it to the OS.

    By default glibc serves blocks above its mmap threshold (128 KiB, growing only as such blocks are
    freed) straight from the OS and gives them back on free, so each training step faults its
    tensors in again. Measured on the demo (2 cores, batch 16 at 64x64, steady state): 1,400-2,000
    page faults per step without this, 0-5 with it; an online response-KD step went from 38-39 ms
    to 34-35 ms. Raising the mmap threshold to its maximum (32 MiB) and the trim threshold to 1 GiB
    does it. Process-wide, done once; a no-op (returns False) where the C library is not glibc.
    """
    global _FREED_MEMORY_KEPT
    if _FREED_MEMORY_KEPT is None:
        _FREED_MEMORY_KEPT = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
                _FREED_MEMORY_KEPT = bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
                                          and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
            except (OSError, AttributeError):
                pass
    return _FREED_MEMORY_KEPT


# --- devices and data -----------------------------------------------------------------------------

def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda' was asked for, but PyTorch sees no CUDA GPU here "
                        f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). "
                        "Use device='cpu' or 'auto', or run on a machine with a GPU.")
    return torch.device(name)


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
    tf = (train_transform(cfg.crop_size, cfg.base_size, (cfg.scale_min, cfg.scale_max)) if train
          else eval_transform())
    return voc.get_dataset(cfg.data_root, split, tf, sbd_root=cfg.sbd_root or None,
                           keep_decoded=cfg.dataset == "demo")


def _seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def data_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data of run `seed`: batch order, augmentation draws and the
    DataLoader workers' seeds all derive from it. The same for every method of that seed (so the
    three students see identical batches), different between seeds and between epochs."""
    return (seed * 1_000_003 + epoch) % 2**63


def loader(ds, cfg: Config, train: bool, epoch: int = 0, batch_size: int | None = None,
           seed: int | None = None) -> DataLoader:
    """Batches of `ds`; for training, shuffled in the order of (`seed`, `epoch`) (`seed`: the run's
    seed, default cfg.seed), so a resumed run sees the same order and each seed its own."""
    seed = cfg.seed if seed is None else seed
    g = torch.Generator().manual_seed(data_seed(seed, epoch))  # order, and worker seeds (drawn from g)
    return DataLoader(ds, batch_size=batch_size or cfg.batch_size, shuffle=train, drop_last=train,
                      num_workers=cfg.num_workers, collate_fn=collate_pad, generator=g,
                      worker_init_fn=_seed_worker, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


def epoch_loader(ds, cfg: Config, seed: int, epoch: int) -> DataLoader:
    """The training batches of one epoch of run `seed`: order and augmentation (drawn in this
    process, or in workers seeded from the loader's generator) both follow `data_seed(seed, epoch)`."""
    _seed_all(data_seed(seed, epoch))
    return loader(ds, cfg, True, epoch, seed=seed)


# --- evaluation -----------------------------------------------------------------------------------

@torch.inference_mode()
def predict(model, images: torch.Tensor, device) -> torch.Tensor:
    """Argmax labels (N, H, W) for a normalized batch (N, 3, H, W), logits at input resolution."""
    model.eval()
    x = images.to(device)
    return model(x).argmax(1).cpu()


@torch.inference_mode()
def evaluate(model, ds, device="cpu", batch_size: int = 16, progress: bool = False, desc="eval") -> dict:
    """Single-scale, full-resolution evaluation with a dataset-level confusion matrix (255 ignored).

    Each image is run on its own canvas: only images of the same size share a batch (nothing is
    padded), so no image's prediction depends on which others are evaluated with it (a network's
    global-pooling branch would see the padding). Returns `metrics.summarize(...)` plus
    "per_image_cm" (N, C, C) int64 and "ids", in the dataset's order.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    keep_freed_memory()
    model.eval().to(device)
    cms = [None] * len(ds)
    pending: dict[tuple, list] = {}  # image size -> [(index, image, mask)] waiting for a full batch

    def run(group):
        pred = predict(model, torch.stack([x for _, x, _ in group]), device)
        for (i, _, m), p in zip(group, pred):
            cms[i] = confusion_matrix(p, m, voc.NUM_CLASSES)

    dl = DataLoader(ds, batch_size=None, shuffle=False)  # one sample at a time, in order
    for i, (image, mask) in enumerate(tqdm(dl, desc=desc, disable=not progress, leave=False)):
        group = pending.setdefault(tuple(image.shape), [])
        group.append((i, image, mask))
        if len(group) == batch_size:
            run(pending.pop(tuple(image.shape)))
    for group in pending.values():
        run(group)
    per_image = torch.stack(cms).numpy()
    out = summarize(per_image, ds.ids)
    out["per_image_cm"] = per_image
    out["ids"] = list(ds.ids)
    return out


# --- checkpoints and teachers ---------------------------------------------------------------------

def run_dir(cfg: Config) -> Path:
    return Path(cfg.checkpoints_dir) / cfg.run_name


def checkpoint_path(cfg: Config, method: str, seed: int | None = None) -> Path:
    if method == "teacher":
        return Path(cfg.checkpoints_dir) / "teachers" / f"{cfg.teacher_key()}.pt"
    seed = cfg.seed if seed is None else seed
    name = method if seed == cfg.seed else f"{method}_seed{seed}"
    return run_dir(cfg) / f"{name}.pt"


def load_model(path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """A model (eval mode) and its checkpoint dict; any failure is a UserError naming the file."""
    state = checkpoint.load(path)
    if "arch" not in state or "num_classes" not in state:
        raise UserError(f"Checkpoint '{path}' does not say which architecture it holds ('arch', 'num_classes'); "
                        "it was not written by this project's training loop.")
    model = build_model(state["arch"], state["num_classes"])
    checkpoint.load_weights(model, state, path)
    return model.to(device).eval(), state


# Which notebook trains each method (and, by `python -m helpers train --method M`, the command line).
TRAINED_BY = {"teacher": "02_baseline", "baseline": "02_baseline", "response": "03_response_kd",
              "feature": "04_feature_kd"}


class NotTrained(UserError):
    """Models an evaluation needs are missing or unfinished; `missing` lists (method, seed, path, why)
    (seed None for the teacher). The message is one paragraph naming what trains them."""

    def __init__(self, cfg: Config, missing: list):
        self.missing = list(missing)
        from .paths import portable

        def item(method, seed, path, why):
            who = "the teacher" if method == "teacher" else f"{method} seed {seed}"
            return f"{who} ({portable(path)}: {why})"

        methods = list(dict.fromkeys(m for m, *_ in self.missing))
        notebooks = list(dict.fromkeys(TRAINED_BY[m] for m in methods))
        extra_seeds = any(s not in (None, cfg.seed) for _, s, _, _ in self.missing)
        flag = " --seed S" if extra_seeds else ""
        if len(methods) == 1:
            command = f"`python -m helpers train --method {methods[0]}{flag}`" + \
                (" for each seed S listed" if extra_seeds else "")
        else:
            command = f"`python -m helpers train --method M{flag}` for M in {', '.join(methods)}" + \
                (" and each seed S listed" if extra_seeds else "")
        super().__init__(
            f"Run '{cfg.run_name}' has no finished model for {', '.join(item(*m) for m in self.missing)}. "
            "Evaluation (notebooks 05 and 06, `python -m helpers compare`) only loads models; train them "
            f"first with notebook{'s' if len(notebooks) > 1 else ''} {', '.join(notebooks)} (or {command}), "
            f"with run_name='{cfg.run_name}' and the same settings.")


def get_teacher(cfg: Config, device, progress: bool = True, train: bool = True) -> torch.nn.Module:
    """The frozen teacher: torchvision weights (optionally fine-tuned), a checkpoint path, or one we
    train from scratch. Trained/fine-tuned teachers are cached under checkpoints/teachers/<key>.pt.
    With `train=False` (evaluation) a teacher that would have to be trained raises `NotTrained`."""
    if cfg.teacher_weights not in ("scratch", "torchvision"):
        model, _ = load_model(cfg.teacher_weights, device)
    elif cfg.teacher_weights == "torchvision" and cfg.teacher_epochs == 0:
        model = build_model(cfg.teacher_arch, voc.NUM_CLASSES, pretrained=True).to(device)
    else:
        path = checkpoint_path(cfg, "teacher")
        state = checkpoint.load(path) if path.is_file() else None
        if not (state and state.get("complete")):
            if not train:
                why = "unfinished, epoch {} of {}".format(state.get("epoch"), state.get("epochs")) if state \
                    else "not there"
                raise NotTrained(cfg, [("teacher", None, path, why)])
            fit(cfg, "teacher", progress=progress)
        model, _ = load_model(path, device)
    return freeze(model, cfg)


def forget(cfg: Config, method: str, seeds=None) -> list[Path]:
    """Delete `method`'s checkpoints (and their _history.json) for `seeds` (default: every seed of the
    run, cfg.seed .. cfg.seed+cfg.seeds-1), so the next `fit` trains them again: what force=True
    does in notebooks 02-04 and `python -m helpers train --force`. For the teacher: the teacher trained
    here for these settings and its cached logits (a teacher_weights file of yours is never deleted).
    Returns the paths deleted."""
    if method not in METHODS:
        raise UserError(f"Unknown method '{method}'; choose one of {METHODS}.")
    import shutil

    if method == "teacher":
        if cfg.teacher_weights not in ("scratch", "torchvision"):
            return []
        ckpts = [checkpoint_path(cfg, "teacher")]
        caches = sorted(ckpts[0].parent.glob(f"{cfg.teacher_key()}-logits-*"))
    else:
        seeds = range(cfg.seed, cfg.seed + cfg.seeds) if seeds is None else seeds
        ckpts, caches = [checkpoint_path(cfg, method, s) for s in seeds], []
    gone = [p for c in ckpts for p in (c, c.with_name(c.stem + "_history.json")) if p.is_file()]
    for p in gone:
        p.unlink()
    for folder in caches:
        shutil.rmtree(folder, ignore_errors=True)
    return gone + caches


def teacher_identity(cfg: Config) -> str:
    """A name for exactly the teacher that `get_teacher(cfg)` returns, for caching its evaluation:
    the checkpoint file's content hash for a weights path, the torchvision weights' name, or the
    hash of the settings that trained it (`Config.teacher_key`)."""
    if cfg.teacher_weights not in ("scratch", "torchvision"):
        import hashlib

        h = hashlib.sha1()
        try:
            with open(cfg.teacher_weights, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as e:
            raise UserError(f"teacher_weights='{cfg.teacher_weights}' can't be read ({e.strerror}); "
                            "give the path of a checkpoint, or 'scratch' / 'torchvision'.") from None
        return f"{cfg.teacher_arch}-file-{h.hexdigest()[:12]}"
    if cfg.teacher_weights == "torchvision" and cfg.teacher_epochs == 0:
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


# --- training -------------------------------------------------------------------------------------

def _poly(total: int, warmup: int):
    def f(it):
        if it < warmup:
            return (it + 1) / warmup
        return max(0.0, 1 - (it - warmup) / max(1, total - warmup)) ** 0.9
    return f


def make_optimizer(params, cfg: Config, lr: float) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum 0.9 (cfg.optimizer), with cfg.weight_decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def make_scaler(device, cfg: Config) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 autocast on CUDA (bf16 needs none)."""
    use = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler(device.type, enabled=use)


def autocast(device, cfg):
    if device.type == "cuda" and cfg.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    return nullcontext(), torch.float32


def train_one_epoch(student, teacher, adapter, dl, optimizer, scheduler, scaler, method, cfg, device,
                    epoch, progress=True) -> dict:
    """One pass over `dl`; returns the mean of each loss part. Raises on a non-finite loss."""
    from tqdm.auto import tqdm

    student.train()
    if adapter is not None:
        adapter.train()
    amp_ctx, _ = autocast(device, cfg)
    sums, n = {}, 0
    bar = tqdm(dl, desc=f"{method} epoch {epoch + 1}/{cfg.epochs if method != 'teacher' else cfg.teacher_epochs}",
               disable=not progress, leave=False)
    for step, (images, masks, *cached) in enumerate(bar):
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        images = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
        masks = masks.to(device, non_blocking=True)
        teacher_out = None
        if cached:  # cached teacher logits (response KD, teacher_cache=True): sampled at each crop
            maps, geometry = (c.to(device, non_blocking=True) for c in cached)
            teacher_out = (sample_cached(maps, geometry, masks.shape[-2:]), None)
        elif teacher is not None:
            with torch.inference_mode(), amp_ctx:  # feature KD uses no teacher logits: its head is skipped
                t_logits, t_feat = teacher.forward_features(images, logits=method != "feature")
            # the hint loss saves the teacher map for backward, which an inference tensor can't be:
            # clone it outside inference mode (the logits enter response_kd_loss as a constant)
            teacher_out = (t_logits, t_feat.float().clone() if method == "feature" else None)
        with amp_ctx:
            student_out = student.forward_features(images)
            parts = distill_loss(method if method != "teacher" else "baseline", student_out, masks,
                                 teacher_out, adapter, alpha=cfg.alpha, temperature=cfg.temperature,
                                 beta=cfg.beta, feature_loss=cfg.feature_loss,
                                 cwd_temperature=cfg.cwd_temperature)
        loss = parts["loss"]
        if not torch.isfinite(loss):
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
            raise UserError(f"Training of '{method}' diverged at epoch {epoch + 1}, step {step + 1}: "
                            f"the loss is not finite ({detail}). The last good checkpoint (previous epoch) "
                            "is kept. Lower lr (or alpha/beta/temperature) and run again.")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        n += 1
        bar.set_postfix({k: f"{v.item():.3f}" for k, v in parts.items()})
    return {k: v / max(n, 1) for k, v in sums.items()}


def _seed_all(seed: int):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def fit(cfg: Config, method: str, seed: int | None = None, resume: bool = True, progress: bool = True,
        stop_after_epoch: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Train one model with `method` and save it; returns (model, history).

    - teacher: the teacher architecture on `teacher_split` (from scratch or from torchvision weights)
    - baseline / response / feature: the student on `train_split`; same init, data order,
      augmentation and schedule for all three, only the loss differs.
    Each epoch is checkpointed atomically; with `resume`, an unfinished checkpoint is continued and
    ends with the same weights as an uninterrupted run (CPU, same seed). A finished one is loaded.
    `stop_after_epoch` ends early (used by tests to simulate an interruption).
    """
    if method not in METHODS:
        raise UserError(f"Unknown method '{method}'; choose one of {METHODS}.")
    seed = cfg.seed if seed is None else seed
    device = resolve_device(cfg.device)
    keep_freed_memory()
    prepare_data(cfg, progress)
    path = checkpoint_path(cfg, method, seed)
    is_teacher = method == "teacher"
    epochs = cfg.teacher_epochs if is_teacher else cfg.epochs
    if is_teacher and epochs < 1:
        raise UserError("teacher_epochs must be at least 1 to train or fine-tune a teacher.")

    state = checkpoint.load(path) if (path.is_file() and resume) else None
    if state is not None and not is_teacher:  # (a teacher's file name already hashes its settings)
        _check_settings(cfg, method, state, path)
    if state is not None and state.get("complete"):
        model, _ = load_model(path, device)
        return model, state["history"]

    teacher = None if is_teacher or method == "baseline" else get_teacher(cfg, device, progress)
    _seed_all(seed)  # identical initial weights for every student of this seed
    if is_teacher:
        model = build_model(cfg.teacher_arch, voc.NUM_CLASSES, pretrained=cfg.teacher_weights == "torchvision")
    else:
        model = build_model(cfg.student_arch, voc.NUM_CLASSES,
                            pretrained_backbone=cfg.student_pretrained_backbone)
    model.to(device)
    adapter = None
    if method == "feature":
        torch.manual_seed(seed + 1)
        adapter = FeatureAdapter(model.feature_channels, teacher.feature_channels).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    train_ds = dataset(cfg, cfg.teacher_split if is_teacher else cfg.train_split, train=True)
    if method == "response" and cfg.teacher_cache:
        train_ds = WithTeacherLogits(train_ds, teacher_cache(cfg, teacher, device, progress))
        teacher = None  # not run during training: its logits come with the batch
    monitor_ds = dataset(cfg, cfg.monitor_split) if cfg.monitor_split else None
    steps_per_epoch = len(train_ds) // cfg.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"batch_size={cfg.batch_size} is larger than the training split "
                        f"({len(train_ds)} images); lower batch_size.")
    params = list(model.parameters()) + (list(adapter.parameters()) if adapter else [])
    optimizer = make_optimizer(params, cfg, cfg.teacher_lr if is_teacher else cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _poly(epochs * steps_per_epoch, cfg.warmup_iters))
    scaler = make_scaler(device, cfg)
    history = {"epoch": [], "loss": [], "ce": [], "lr": [], "time_s": [], "monitor_epoch": [], "monitor_miou": []}
    start = 0
    if state is not None:  # resume an unfinished run
        checkpoint.load_weights(model, state, path)
        if adapter is not None and state.get("adapter"):
            adapter.load_state_dict(state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, start = state["history"], state["epoch"]

    from tqdm.auto import tqdm

    epoch_bar = tqdm(range(start, epochs), desc=f"{method}", disable=not progress, initial=start, total=epochs)
    for epoch in epoch_bar:
        t0 = time.perf_counter()
        try:
            parts = train_one_epoch(model, teacher, adapter, epoch_loader(train_ds, cfg, seed, epoch), optimizer,
                                    scheduler, scaler, method, cfg, device, epoch, progress)
        except torch.cuda.OutOfMemoryError:
            raise UserError(f"CUDA ran out of memory training '{method}' with batch_size={cfg.batch_size} "
                            f"and crop_size={cfg.crop_size}. Use a smaller batch_size (e.g. "
                            f"{max(1, cfg.batch_size // 2)}) or crop_size; the last epoch's checkpoint is kept.") from None
        history["epoch"].append(epoch + 1)
        for k, v in parts.items():
            history.setdefault(k, []).append(v)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        history["time_s"].append(time.perf_counter() - t0)
        if monitor_ds is not None and ((epoch + 1) % cfg.monitor_every == 0 or epoch + 1 == epochs):
            m = evaluate(model, monitor_ds, device)
            history["monitor_epoch"].append(epoch + 1)
            history["monitor_miou"].append(m["miou"])
        epoch_bar.set_postfix(loss=f"{parts['loss']:.3f}",
                              monitor_miou=f"{history['monitor_miou'][-1]:.3f}" if history["monitor_miou"] else "-")
        _save(path, model, adapter, optimizer, scheduler, scaler, epoch + 1, epochs, method, seed, cfg, history)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < epochs:
            return model.eval(), history
    model.eval()
    return model, history


# The settings that shape a student's weights: a checkpoint made with other values is neither
# reused nor continued (that would silently mix two set-ups in one study).
_SHAPING = ("dataset", "demo_seed", "demo_size", "demo_scale", "train_split", "crop_size", "base_size",
            "scale_min", "scale_max", "student_arch", "student_pretrained_backbone", "epochs",
            "batch_size", "optimizer", "lr", "weight_decay", "warmup_iters")
_TEACHER_SHAPING = ("teacher_arch", "teacher_weights", "teacher_epochs", "teacher_lr", "teacher_split")
_SHAPING_BY_METHOD = {
    "baseline": (),
    "response": _TEACHER_SHAPING + ("alpha", "temperature", "teacher_cache", "cache_stride"),
    "feature": _TEACHER_SHAPING + ("beta", "feature_loss", "cwd_temperature"),
}


def _check_settings(cfg: Config, method: str, state: dict, path) -> None:
    saved, now = state.get("config", {}), cfg.to_dict()  # (paths compared in their root-relative form)
    diffs = [f"{k}: {saved[k]!r} in the checkpoint, {now[k]!r} now"
             for k in _SHAPING + _SHAPING_BY_METHOD[method] if k in saved and portable_value(k, saved[k]) != now[k]]
    if diffs:
        raise UserError(f"'{path}' was trained with other settings ({'; '.join(diffs)}); reusing or "
                        "continuing it would mix two set-ups. Choose another run_name, set force=True in the "
                        "notebook (`--force` with `python -m helpers train`) to train it again, or go back to "
                        "the checkpoint's settings.")


def _save(path, model, adapter, optimizer, scheduler, scaler, epoch, epochs, method, seed, cfg, history):
    arch = cfg.teacher_arch if method == "teacher" else cfg.student_arch
    complete = epoch >= epochs
    model_state = {k: v.contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in model_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"Training of '{method}' produced non-finite weights in epoch {epoch} ({bad[0]}, ...); "
                        "they are not saved, the previous epoch's checkpoint is kept. Lower lr and run again.")
    checkpoint.save({
        "method": method, "arch": arch, "num_classes": voc.NUM_CLASSES, "seed": seed,
        "model": model_state,
        "adapter": adapter.state_dict() if adapter is not None else None,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(), "epoch": epoch, "epochs": epochs, "complete": complete,
        "rng": checkpoint.rng_state(), "config": cfg.to_dict(), "history": history,
    }, path)
    checkpoint.write_text_atomic(path.with_name(path.stem + "_history.json"), json.dumps(history, indent=1))
