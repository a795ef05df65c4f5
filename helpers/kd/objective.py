"""The training objective of every method: cross-entropy on the labels plus the method's KD term.

    loss = CE(z_s, y) + w * term(s, t, y, cfg)      (w: the method's `weight` knob, else 1)

CE is the mean over non-void pixels (label 255 ignored). `objective` returns every part, so the
training history, the notebooks and the bench log the same numbers: {"loss", "ce", and "kd" (a term
given as one tensor) or the term's own named parts}.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..data.voc import IGNORE_INDEX
from . import registry


def views(student_out, teacher_out, adapter=None) -> tuple[SimpleNamespace, SimpleNamespace]:
    """(s, t) as a method's loss term sees them, from (logits, feature) pairs and the feature adapter.

    student_out: (logits (N, C, H, W) at label resolution, feature (N, Cs, h, w)); teacher_out: the
    same for the teacher (either item may be None when the method does not need it), or None."""
    s = SimpleNamespace(logits=student_out[0], feature=student_out[1])
    if adapter is not None:
        s.adapted = adapter(student_out[1])  # (N, Ct, h, w): the teacher's channel count
    t = SimpleNamespace()
    if teacher_out is not None:
        t.logits, t.feature = teacher_out
    return s, t


def teacher_outputs(teacher, images, method: str):
    """What `method` reads from the teacher for a batch: (logits or None, feature or None), computed
    without gradients (the teacher is frozen; no_grad rather than inference_mode, so a loss may keep the
    teacher's tensors for its backward pass); None for a method that needs no teacher. A teacher that
    only has to give its feature skips its head."""
    m = registry.get(method)
    if m.teacher is None or teacher is None:
        return None
    with torch.no_grad():
        logits, feature = teacher.forward_features(images, logits=m.needs_logits)
    return (logits if m.needs_logits else None, feature if m.needs_feature else None)


def objective(method: str, student_out, target, teacher_out=None, adapter=None, cfg=None) -> dict:
    """{"loss": CE + w x term, "ce": CE, and the term's parts} for one batch of `method`.

    target: (N, H, W) class ids, 255 = void. `adapter` is used only by methods registered with
    adapter=True. `cfg` supplies the knobs (any object with them as attributes)."""
    m = registry.get(method)
    ce = F.cross_entropy(student_out[0].float(), target, ignore_index=IGNORE_INDEX)
    if m.loss is None:  # the baseline
        return {"loss": ce, "ce": ce}
    term = m.loss(*views(student_out, teacher_out, adapter if m.adapter else None), target, cfg)
    parts = term if isinstance(term, dict) else {"kd": term}
    parts = {k: v if torch.is_tensor(v) else torch.as_tensor(v, device=ce.device) for k, v in parts.items()}
    weight = getattr(cfg, m.weight) if m.weight else 1.0
    return {"loss": ce + weight * sum(parts.values()), "ce": ce, **parts}
