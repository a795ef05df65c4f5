"""Every knob of a study, with its default (the demo) and meaning.

Notebooks list the knobs they use in their `parameters` cell (same names, same defaults) and
collect them with `Config.from_vars(globals())`; presets (helpers/presets/*.yaml) override them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields

from . import paths
from .errors import UserError

# Knobs that name a file or folder: a relative value means the project root (`paths.root()`), never
# the working directory (JupyterLab runs notebooks in notebooks/). Held absolute in a Config,
# stored root-relative by `to_dict()`. Values that are not paths ("" or "scratch") stay as they are.
PATH_KNOBS = ("checkpoints_dir", "reports_dir", "data_root", "sbd_root", "teacher_weights")
_NOT_A_PATH = {"sbd_root": ("",), "teacher_weights": ("scratch", "torchvision")}
# dataset="voc": the split each split knob falls back to in the advice when VOC lacks its value
_VOC_SPLIT_ADVICE = {"train_split": "train", "teacher_split": "train", "monitor_split": "val", "eval_split": "val"}


def portable_value(name: str, value):
    """A knob's value as stored and compared: path knobs root-relative where possible (see paths)."""
    if name in PATH_KNOBS and isinstance(value, str) and value not in _NOT_A_PATH.get(name, ("",)):
        return paths.portable(value)
    return value


@dataclass
class Config:
    # run
    run_name: str = "demo"                # folder name under checkpoints/ and reports/
    checkpoints_dir: str = "checkpoints"  # where models are saved (relative to the project root)
    reports_dir: str = "reports"          # where executed notebooks, tables and figures go
    device: str = "auto"                  # "auto" (cuda if available), "cpu" or "cuda"
    seed: int = 0                         # seed of the first run; seeds= runs seed, seed+1, ...
    seeds: int = 3                        # students trained per method (table: mean ± std, seed-level CI)
    # data
    dataset: str = "demo"                 # "demo" (generated, VOC layout) or "voc" (real VOC 2012)
    data_root: str = "data/demo"          # folder that holds VOCdevkit/VOC2012
    download: bool = False                # voc only: fetch VOC 2012 with torchvision's downloader
    sbd_root: str = ""                    # voc only: SBD folder for train_split="train_aug"
    demo_seed: int = 0                    # demo only: generator seed (same seed, same bytes)
    demo_size: int = 64                   # demo only: image side in pixels
    demo_scale: float = 1.0               # demo only: fraction of the default split sizes
    train_split: str = "train"            # students' training split ("train" or voc "train_aug")
    teacher_split: str = "teacher"        # split the demo teacher (or a VOC fine-tune) trains on
    monitor_split: str = "holdout"        # split evaluated each epoch for the curves (never selects)
    eval_split: str = "val"               # the split the table reports on
    crop_size: int = 48                   # training crop (pixels); padded with 255 where needed
    base_size: int = 64                   # shorter side before random scaling
    scale_min: float = 0.75               # random scale range for training
    scale_max: float = 1.25
    num_workers: int = 0                  # DataLoader workers (0: load in the main process)
    # models
    student_arch: str = "compact_s"       # see helpers.models.MODEL_NAMES
    student_pretrained_backbone: bool = False  # ImageNet backbone weights for torchvision students
    teacher_arch: str = "compact_l"
    teacher_weights: str = "scratch"      # "scratch", "torchvision" or a checkpoint path
    teacher_epochs: int = 10              # epochs to train (scratch) or fine-tune (torchvision; 0 = none)
    teacher_lr: float = 0.004             # learning rate for the teacher's training
    # training (the same for all three students)
    epochs: int = 30                      # passes over train_split
    batch_size: int = 16
    optimizer: str = "adamw"              # "adamw" or "sgd" (momentum 0.9)
    lr: float = 0.01                      # peak learning rate (poly decay, power 0.9, after warm-up)
    weight_decay: float = 1e-4
    warmup_iters: int = 50                # linear warm-up steps
    amp: bool = True                      # mixed precision on CUDA (bf16, or fp16 with a scaler)
    channels_last: bool = True            # memory format for convolutions
    monitor_every: int = 5                # evaluate monitor_split every N epochs (and the last)
    # distillation
    alpha: float = 1.0                    # weight of the response-KD term
    temperature: float = 2.0              # softmax temperature T of response KD
    teacher_cache: bool = True            # response KD from cached teacher logits (one teacher pass); False: online
    cache_stride: int = 4                 # the cached logits are average-pooled by this factor
    beta: float = 1.0                     # weight of the feature-KD term
    feature_loss: str = "hint"            # "hint" (FitNets MSE) or "cwd" (channel-wise distillation)
    cwd_temperature: float = 4.0          # temperature of CWD
    force: bool = False                   # retrain models even when finished checkpoints exist
    # evaluation and report
    bootstrap_resamples: int = 2000       # paired-bootstrap resamples of the val images
    latency_size: int = 64                # square input side for the latency column (VOC: 512)
    latency_min_time: float = 0.5         # seconds of timed runs per model and round (x 5 rounds)
    inference_path: str = "eager"         # the latency column's path: "eager" (fp32), "fused" or "jit"
    num_show: int = 8                     # 01_data: how many samples to draw
    num_success: int = 10                 # 06: best validation images drawn per model
    num_failure: int = 10                 # 06: worst validation images drawn per model
    interactive: bool = True              # 06: show the ipywidgets browser (presets turn it off)

    CHOICES = {"dataset": ("demo", "voc"), "optimizer": ("adamw", "sgd"), "feature_loss": ("hint", "cwd"),
               "device": ("auto", "cpu", "cuda"),
               "inference_path": ("eager", "fused", "jit")}

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            want = {"str": str, "int": int, "float": float, "bool": bool}[f.type]
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                setattr(self, f.name, float(v))
            elif not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise UserError(f"Parameter '{f.name}' must be {f.type}, got {v!r} ({type(v).__name__}).")
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"Parameter '{name}' is {getattr(self, name)!r}; choose one of {allowed}.")
        for name in ("epochs", "batch_size", "seeds", "crop_size", "monitor_every"):
            if getattr(self, name) < 1:
                raise UserError(f"Parameter '{name}' must be at least 1, got {getattr(self, name)}.")
        for name in PATH_KNOBS:  # relative paths mean the project root, whatever the working directory
            v = getattr(self, name)
            if v not in _NOT_A_PATH.get(name, ("",)):
                setattr(self, name, str(paths.resolve(v)))
        self._check_voc_splits()

    def _check_voc_splits(self):
        """dataset="voc": refuse split names VOC lacks (the demo's teacher/holdout) before anything runs.
        A split list of your own in a real VOC tree (data_root/VOCdevkit/VOC2012/ImageSets/Segmentation/
        <name>.txt, in a folder that is not a generated demo set) counts as a split."""
        if self.dataset != "voc":
            return
        from pathlib import Path

        from . import demo_data, voc

        known = (*voc.STANDARD_SPLITS, "train_aug")
        folder = voc.voc_dir(self.data_root) / "ImageSets" / "Segmentation"
        own_lists = not (Path(self.data_root) / "demo.json").is_file()
        bad = [(knob, getattr(self, knob), advice) for knob, advice in _VOC_SPLIT_ADVICE.items()
               if getattr(self, knob) and getattr(self, knob) not in known
               and not (own_lists and (folder / f"{getattr(self, knob)}.txt").is_file())]
        if bad:
            one = len(bad) == 1
            demo = all(split in demo_data.SPLITS for _, split, _ in bad)
            if demo:
                what = ("a split" if one else "splits") + " of the generated demo set"
            else:
                what = "not a VOC 2012 split" if one else "not VOC 2012 splits"
            raise UserError(
                f"With dataset='voc', {' and '.join(f'{k}={v!r}' for k, v, _ in bad)} {'is' if one else 'are'} "
                f"{what}; VOC 2012 has {', '.join(voc.STANDARD_SPLITS)} (and train_aug with SBD): set "
                f"{', '.join(f'{k}={a!r}' for k, _, a in bad)}. (A split list of your own is used when it exists "
                f"as {folder}/<name>.txt in a real VOC tree.)")

    @classmethod
    def from_vars(cls, namespace: dict) -> "Config":
        """Collect the known knobs from a notebook's globals (the parameters cell)."""
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"Unknown parameter(s): {', '.join(unknown)}. Known: {', '.join(names())}.")
        return cls(**d)

    def to_dict(self) -> dict:
        """The knobs as plain values; path knobs root-relative where they lie under the root."""
        return {k: portable_value(k, v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)

    def teacher_key(self) -> str:
        """Hash of everything that determines the teacher, so a finished one is reused."""
        keys = ["dataset", "demo_seed", "demo_size", "demo_scale", "teacher_arch", "teacher_weights",
                "teacher_epochs", "teacher_lr", "teacher_split", "crop_size", "base_size", "scale_min",
                "scale_max", "batch_size", "optimizer", "weight_decay", "warmup_iters", "seed"]
        d = self.to_dict()  # (paths in their root-relative form: the key doesn't depend on the checkout)
        blob = json.dumps({k: d[k] for k in keys}, sort_keys=True)
        if self.dataset == "voc":
            blob += d["data_root"]
        return f"{self.teacher_arch}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def names() -> list[str]:
    return [f.name for f in fields(Config)]
