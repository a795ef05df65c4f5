"""Every knob of a study, with its default (the demo), meaning, allowed values and minimum: the fields of
`Knobs`, grouped as the docs list them. `Config` (knobs.py) adds the registered KD methods' own knobs and
the checks; docs/parameters.md is generated from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial


def knob(default, help: str, choices: tuple = (), minimum=None, group: str = ""):
    """A Config field with its meaning (and allowed values / minimum) as metadata."""
    meta = {"help": help, "choices": choices, "min": minimum, "group": group}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


run, data, models, training, distillation, evaluation = (
    partial(knob, group=g) for g in ("run", "data", "models", "training", "distillation", "evaluation")
)


@dataclass
class Knobs:
    # run
    run_name: str = run("demo", "folder name under checkpoints/ and reports/")
    checkpoints_dir: str = run("checkpoints", "where models are saved")
    reports_dir: str = run("reports", "where executed notebooks, tables and figures go")
    device: str = run("auto", "'auto' (cuda if available), 'cpu' or 'cuda'", ("auto", "cpu", "cuda"))
    seed: int = run(0, "seed of the first run; the others are seed+1, seed+2, ...")
    seeds: int = run(3, "students trained per method (table: mean ± std, seed-level interval)", minimum=1)
    force: bool = run(False, "02-04: retrain this notebook's models even when finished checkpoints exist")
    nproc: int = run(1, "processes (GPUs) to train with; > 1: notebooks and the runner launch torchrun", minimum=1)
    sync_bn: bool = run(True, "with nproc > 1 on CUDA: SyncBatchNorm (BN statistics over the global batch)")
    jobs: int | str = run(
        "auto",
        "02-04, train, sweep: trainings run side by side, each its own process; 'auto': on the CPU all of a "
        "batch (a method's seeds, a sweep's cells) at once, up to 2 per core; on CUDA one per visible GPU; "
        "1: one after another in this process",
        minimum=1,
    )
    threads: int | str = run(
        "auto",
        "CPU threads of each training: 'auto' = cores / jobs (at least 1), or a number; the thread count "
        "changes float results (recorded with every checkpoint), what runs beside a training does not",
        minimum=1,
    )
    # data
    dataset: str = data("demo", "'demo' (generated, VOC layout) or 'voc' (real VOC 2012)", ("demo", "voc"))
    data_root: str = data("data/demo", "folder that holds VOCdevkit/VOC2012")
    download: bool = data(False, "voc only: fetch VOC 2012 with torchvision's downloader")
    sbd_root: str = data("", "voc only: SBD folder, needed for train_split='train_aug'")
    demo_seed: int = data(0, "demo only: generator seed (same seed, same bytes)")
    demo_size: int = data(64, "demo only: image side in pixels", minimum=16)
    demo_scale: float = data(1.0, "demo only: fraction of the default split sizes")
    train_split: str = data("train", "the students' training split ('train', or 'train_aug' on VOC)")
    teacher_split: str = data("teacher", "split the demo teacher (or a VOC fine-tune) trains on")
    monitor_split: str = data("holdout", "split evaluated during training for the curves (never selects a model)")
    eval_split: str = data("val", "the split the table reports on")
    crop_size: int = data(48, "training crop in pixels (padded with 255 where the image is smaller)", minimum=1)
    base_size: int = data(64, "shorter side before random scaling", minimum=1)
    scale_min: float = data(0.75, "smallest random scale for training")
    scale_max: float = data(1.25, "largest random scale for training")
    num_workers: int = data(0, "DataLoader worker processes (0: load in the main process)", minimum=0)
    # models
    student_arch: str = models("compact_s", "student network (helpers.models.MODEL_NAMES)")
    student_pretrained_backbone: bool = models(False, "ImageNet backbone weights for torchvision students")
    teacher_arch: str = models("compact_l", "teacher network (helpers.models.MODEL_NAMES)")
    teacher_weights: str = models("scratch", "'scratch', 'torchvision' or the path of a checkpoint")
    teacher_epochs: int = models(
        10, "epochs to train (scratch) or fine-tune (torchvision; 0 = none) the teacher", minimum=0
    )
    teacher_lr: float = models(0.004, "learning rate of the teacher's training")
    # training (the same for all three students)
    epochs: int = training(30, "passes over train_split", minimum=1)
    batch_size: int = training(16, "images per training step", minimum=1)
    optimizer: str = training("adamw", "'adamw' or 'sgd' (momentum 0.9)", ("adamw", "sgd"))
    lr: float = training(0.01, "peak learning rate (poly decay, power 0.9, after warm-up)")
    weight_decay: float = training(1e-4, "weight decay of the optimizer")
    warmup_iters: int = training(50, "linear warm-up steps", minimum=0)
    amp: bool = training(True, "mixed precision on CUDA (bf16, or fp16 with a scaler)")
    channels_last: bool = training(True, "channels-last memory format for convolutions")
    monitor_every: int = training(5, "evaluate monitor_split every N epochs (and after the last)", minimum=1)
    # distillation (each method's own knobs are registered with it: helpers/kd)
    students: list = distillation(
        ["baseline", "response", "feature"],
        "the methods this run trains and compares: registered names, baseline first (e.g. "
        "baseline,response,feature,pairwise)",
    )
    method_files: list = distillation(
        [], "your own KD methods: .py files that @register them (README: 'Add your own KD method')"
    )
    teacher_cache: bool = distillation(
        True,
        "methods that read only the teacher's logits (response) take them from a cache filled by one teacher "
        "pass; False: the teacher runs in every step",
    )
    cache_stride: int = distillation(4, "the cached logits are average-pooled by this factor", minimum=1)
    min_teacher_miou: float = distillation(
        0.1,
        "pre-flight check before any distillation: the teacher's mIoU on 16 monitor_split images must reach this "
        "and beat predicting background everywhere (0: no check)",
        minimum=0,
    )
    # evaluation and report
    bootstrap_resamples: int = evaluation(2000, "05: bootstrap resamples of the val images", minimum=1)
    latency_size: int = evaluation(64, "05: square input side for the latency column (VOC: 512)", minimum=1)
    latency_min_time: float = evaluation(0.5, "05: seconds of timed runs per model and round (x 5 rounds)")
    inference_path: str = evaluation(
        "eager",
        "05: the latency column's path: 'eager' (fp32), 'fused', 'jit' or 'onnxruntime' (used when its argmax "
        "agreement with eager on val images is >= 0.999, else eager, said under the table)",
        ("eager", "fused", "jit", "onnxruntime"),
    )
    num_show: int = evaluation(8, "01: how many samples to draw", minimum=0)
    num_success: int = evaluation(10, "06: best validation images drawn per model", minimum=0)
    num_failure: int = evaluation(10, "06: worst validation images drawn per model", minimum=0)
    interactive: bool = evaluation(True, "06: show the ipywidgets browser (presets turn it off)")


# Everything that determines the teacher trained here (its checkpoint's name hashes these; data_root too for VOC).
TEACHER_KEYS = (
    "dataset",
    "demo_seed",
    "demo_size",
    "demo_scale",
    "teacher_arch",
    "teacher_weights",
    "teacher_epochs",
    "teacher_lr",
    "teacher_split",
    "crop_size",
    "base_size",
    "scale_min",
    "scale_max",
    "batch_size",
    "optimizer",
    "weight_decay",
    "warmup_iters",
    "seed",
)
# Everything that shapes a student's weights whatever its method.
STUDENT_KEYS = (
    "dataset",
    "demo_seed",
    "demo_size",
    "demo_scale",
    "train_split",
    "crop_size",
    "base_size",
    "scale_min",
    "scale_max",
    "student_arch",
    "student_pretrained_backbone",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "warmup_iters",
)
CACHE_KEYS = ("teacher_cache", "cache_stride")
