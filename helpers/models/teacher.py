"""The teacher: where its weights come from (torchvision, a file, or trained here), frozen for distillation.

Training a teacher is `training.fit(cfg, "teacher")`; `training.get_teacher` trains one when needed.
Here the teacher is only found and loaded, so evaluation can never start a training.
"""

from __future__ import annotations

import hashlib

import torch

from ..config.knobs import Config
from ..core import checkpoint
from ..core.errors import UserError
from ..data import voc
from .nets import build_model
from .store import NotTrained, checkpoint_path, load_model


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
            raise UserError(
                f"teacher_weights='{cfg.teacher_weights}' can't be read ({e.strerror}); "
                "give the path of a checkpoint, or 'scratch' / 'torchvision'."
            ) from None
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
