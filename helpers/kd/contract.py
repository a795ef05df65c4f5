"""The contract every KD method must meet, checked on a random batch with two tiny networks:

1. its loss is finite;
2. no gradient reaches the teacher (its outputs come through `objective.teacher_outputs`, as in training);
3. a gradient reaches the student (and the adapter, for methods that use it);
4. where the method reads the target, void pixels (label 255) send no gradient to the student's logits.

`check(name, cfg)` runs them; tests run it on every registered method, notebook 07 on a student's own.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from ..core.errors import UserError
from ..data.voc import IGNORE_INDEX, NUM_CLASSES
from . import registry
from .feature import FeatureAdapter
from .objective import objective, teacher_outputs, views


class TinyNet(nn.Module):
    """A stand-in segmentation net with the project's interface: forward_features(x) -> (logits at the
    input's resolution, feature at stride `stride` with `channels` channels)."""

    def __init__(self, channels: int, stride: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.feature_channels = channels
        self.encoder = nn.Sequential(nn.Conv2d(3, channels, 3, stride, 1), nn.BatchNorm2d(channels), nn.ReLU())
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward_features(self, x, logits: bool = True):
        f = self.encoder(x)
        if not logits:
            return None, f
        return nn.functional.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear"), f


def defaults() -> SimpleNamespace:
    """Every registered method's knobs at their defaults (a cfg for a check outside a study)."""
    return SimpleNamespace(**{k: knob.default for k, (_, knob) in registry.method_knobs().items()})


def check(name: str, cfg=None, seed: int = 0) -> list[tuple[str, bool, str]]:
    """[(check, passed, detail)] for method `name` (see the module docstring); cfg: its knobs."""
    m, cfg = registry.get(name), cfg if cfg is not None else defaults()
    torch.manual_seed(seed)
    student, teacher = TinyNet(8, 4), TinyNet(16, 2)
    adapter = FeatureAdapter(8, 16) if m.adapter else None
    images = torch.randn(2, 3, 16, 16)
    target = torch.randint(0, NUM_CLASSES, (2, 16, 16))
    target[0, :, :8] = IGNORE_INDEX  # half an image of void
    parts = objective(
        name, student.forward_features(images), target, teacher_outputs(teacher, images, name), adapter, cfg
    )
    term = parts["loss"] - parts["ce"]
    out = [("finite loss", bool(torch.isfinite(parts["loss"])), f"loss {parts['loss'].item():.4g}")]
    if m.loss is None:
        return out + [("no KD term", True, "cross-entropy only")]
    term.backward()
    trainees = list(student.parameters()) + (list(adapter.parameters()) if adapter else [])
    reached = [p for p in trainees if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    out.append(("no gradient reaches the teacher", all(p.grad is None for p in teacher.parameters()), ""))
    out.append(
        (
            "a gradient reaches the student",
            bool(reached) and all(torch.isfinite(p.grad).all() for p in reached),
            f"{len(reached)} of {len(trainees)} parameter tensors",
        )
    )
    return out + [_void_check(name, m, student, teacher, adapter, images, target, cfg)]


def _void_check(name, m, student, teacher, adapter, images, target, cfg) -> tuple[str, bool, str]:
    """Gradient of the KD term w.r.t. the student's logits on void pixels, where the term reads the target."""
    with torch.no_grad():
        logits, feature = student.forward_features(images)
    logits.requires_grad_(True)
    t_out = teacher_outputs(teacher, images, name)
    term = _term(m, (logits, feature), target, t_out, adapter, cfg)
    with torch.no_grad():  # the same batch with every pixel void: a term that does not change ignores the target
        reads = not torch.allclose(
            term, _term(m, (logits, feature), torch.full_like(target, IGNORE_INDEX), t_out, adapter, cfg)
        )
    if not reads:
        return "void pixels send no gradient", True, "the term does not read the target"
    (grad,) = torch.autograd.grad(term, logits, allow_unused=True)
    leak = 0.0 if grad is None else float(grad.abs().sum(1)[target == IGNORE_INDEX].max())
    return "void pixels send no gradient", leak == 0.0, f"largest gradient on a void pixel {leak:.3g}"


def _term(m, student_out, target, teacher_out, adapter, cfg) -> torch.Tensor:
    parts = m.loss(*views(student_out, teacher_out, adapter if m.adapter else None), target, cfg)
    return sum(parts.values()) if isinstance(parts, dict) else parts


def check_method(name: str, cfg=None) -> str:
    """`check`, as a paragraph: a UserError naming every failed check, else one line per check."""
    results = check(name, cfg)
    failed = [f"{what} ({detail})" if detail else what for what, ok, detail in results if not ok]
    if failed:
        raise UserError(
            f"The KD method '{name}' ({registry.get(name).source}) breaks the contract: "
            + "; ".join(failed)
            + ". See README: 'Add your own KD method'."
        )
    return "\n".join(f"✓ {what}" + (f" ({detail})" if detail else "") for what, _, detail in results)
