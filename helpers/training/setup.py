"""What a training run starts from: the initial network (the same weights for every method of a seed),
the feature adapter, the teacher's feed, the optimizer with its schedule, and each epoch's batches."""

from __future__ import annotations

import torch

from .. import kd
from ..config.knobs import Config
from ..core import checkpoint
from ..core.errors import UserError
from ..core.runtime import make_scaler, resolve_device, seed_all
from ..data import voc
from ..data.loaders import data_seed, dataset, epoch_loader, loader
from ..kd.feature import FeatureAdapter
from ..models import build_model, store
from ..scale import distributed
from . import cost
from . import teacher as teachers


def device(cfg: Config) -> torch.device:
    """The device this run trains and evaluates on (cfg.device; "auto": CUDA when there is a GPU)."""
    return resolve_device(cfg.device)


def initial_model(cfg: Config, method: str = "baseline", seed: int | None = None) -> torch.nn.Module:
    """The network `fit` starts from: for a student, the same weights for every method of one seed."""
    seed_all(cfg.seed if seed is None else seed)  # identical initial weights for every student of this seed
    if method == "teacher":
        return build_model(cfg.teacher_arch, voc.NUM_CLASSES, pretrained=cfg.teacher_weights == "torchvision")
    return build_model(cfg.student_arch, voc.NUM_CLASSES, pretrained_backbone=cfg.student_pretrained_backbone)


def initial_adapter(student, teacher, seed: int) -> FeatureAdapter:
    """The feature adapter as `fit` creates it (student channels -> teacher channels)."""
    torch.manual_seed(seed + 1)
    return FeatureAdapter(student.feature_channels, teacher.feature_channels)


def trained_adapter(cfg: Config, method: str, student, teacher, seed: int | None = None) -> FeatureAdapter:
    """The adapter saved with a finished student of `method` (eval mode)."""
    state = checkpoint.load(store.checkpoint_path(cfg, method, seed))
    adapter = FeatureAdapter(student.feature_channels, teacher.feature_channels)
    adapter.load_state_dict(state["adapter"])
    return adapter.eval()


def make_optimizer(params, cfg: Config, lr: float) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum 0.9 (cfg.optimizer), with cfg.weight_decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def poly_schedule(total: int, warmup: int):
    """The learning-rate factor of step `it`: linear warm-up, then poly decay with power 0.9."""

    def f(it):
        if it < warmup:
            return (it + 1) / warmup
        return max(0.0, 1 - (it - warmup) / max(1, total - warmup)) ** 0.9

    return f


def optimization(cfg: Config, name: str, params: list, n_images: int, epochs: int, device):
    """(optimizer, poly scheduler with warm-up, gradient scaler) for `epochs` over `n_images`."""
    steps_per_epoch = n_images // cfg.batch_size
    if steps_per_epoch < 1:
        raise UserError(
            f"batch_size={cfg.batch_size} is larger than the training split ({n_images} images); lower batch_size."
        )
    optimizer = make_optimizer(params, cfg, cfg.teacher_lr if name == "teacher" else cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(epochs * steps_per_epoch, cfg.warmup_iters))
    return optimizer, scheduler, make_scaler(device, cfg)


def trainee(cfg: Config, name: str, seed: int, job: distributed.Context, progress: bool, saved: dict | None = None):
    """(Trainee, training set) for the teacher or a student of method `name`: every student of one seed
    starts from the same weights; a method that reads cached logits gets them with its batches. `saved`: the
    unfinished checkpoint it continues, if any."""
    from .loop import Trainee

    is_teacher = name == "teacher"
    if is_teacher and cfg.teacher_epochs < 1:
        raise UserError("teacher_epochs must be at least 1 to train or fine-tune a teacher.")
    method = kd.get("baseline" if is_teacher else name)
    frozen = teachers.get_teacher(cfg, job.device, progress, say=False) if method.teacher else None
    model = initial_model(cfg, name, seed).to(job.device)
    adapter = initial_adapter(model, frozen, seed).to(job.device) if method.adapter else None
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_ds = dataset(cfg, cfg.teacher_split if is_teacher else cfg.train_split, train=True)
    train_ds, feed = teachers.feed(cfg, name, frozen, train_ds, job, progress)
    if is_teacher and job.main:
        print(teachers.new_teacher_note(cfg, len(train_ds), saved), flush=True)
    epochs = cost.epochs_of(cfg, name)
    params = list(model.parameters()) + (list(adapter.parameters()) if adapter is not None else [])
    opt, sched, scaler = optimization(cfg, name, params, len(train_ds), epochs, job.device)
    title = "teacher" if is_teacher else f"{name} seed {seed}"
    return Trainee(name, title, cfg, job.device, model, adapter, feed, opt, sched, scaler, epochs), train_ds


def epoch_batches(train_ds, cfg: Config, seed: int, epoch: int, job: distributed.Context):
    """The training batches of one epoch: in one process `data.epoch_loader`; under torchrun this rank's
    slice of every global batch, its augmentation drawn from the epoch's seed + its rank."""
    if not job.active:
        return epoch_loader(train_ds, cfg, seed, epoch)
    seed_all(data_seed(seed, epoch) + job.rank)
    return loader(
        train_ds,
        cfg,
        True,
        epoch,
        batch_size=distributed.per_process_batch(cfg.batch_size, job.world_size),
        seed=seed,
        sampler=distributed.train_sampler(train_ds, job, seed, epoch),
    )
