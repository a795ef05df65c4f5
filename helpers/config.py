"""Every knob of a study, with its default (the demo) and meaning.

Notebooks list the knobs they use in their `parameters` cell (same names, same defaults) and
collect them with `Config.from_vars(globals())`; presets (helpers/presets/*.yaml) override them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields

from .errors import UserError


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
        return dataclasses.asdict(self)

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)

    def teacher_key(self) -> str:
        """Hash of everything that determines the teacher, so a finished one is reused."""
        keys = ["dataset", "demo_seed", "demo_size", "demo_scale", "teacher_arch", "teacher_weights",
                "teacher_epochs", "teacher_lr", "teacher_split", "crop_size", "base_size", "scale_min",
                "scale_max", "batch_size", "optimizer", "weight_decay", "warmup_iters", "seed"]
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        if self.dataset == "voc":
            blob += str(self.data_root)
        return f"{self.teacher_arch}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def names() -> list[str]:
    return [f.name for f in fields(Config)]
