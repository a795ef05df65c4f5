"""Response-based KD: the teacher's per-pixel class probabilities as soft labels.

Hinton, G., Vinyals, O., Dean, J. "Distilling the Knowledge in a Neural Network." NIPS Deep Learning
and Representation Learning Workshop, 2015 (arXiv:1503.02531); applied per pixel, as in Liu, Y. et al.
"Structured Knowledge Distillation for Semantic Segmentation." CVPR 2019 (its pixel-wise term).

    L_kd = T^2 * (1 / |Omega|) * sum over pixels p in Omega of KL( softmax(z_t,p / T) || softmax(z_s,p / T) )

Omega: the non-void pixels (label != 255), which give neither loss nor gradient. T^2 keeps the
gradient's scale independent of T. This is the code that trains (notebook 03 shows it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.voc import IGNORE_INDEX
from .registry import Knob, register

PAPER = (
    "Hinton, G., Vinyals, O., Dean, J. Distilling the Knowledge in a Neural Network. NIPS Deep Learning Workshop, 2015"
)


def kl_per_pixel(student_logits, teacher_logits, T: float) -> torch.Tensor:
    """(N, H, W): KL(softmax(z_t / T) || softmax(z_s / T)) over the classes of every pixel."""
    log_p_s = F.log_softmax(student_logits.float() / T, dim=1)  # (N, C, H, W)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


def response_kd_loss(student_logits, teacher_logits, target, T: float = 1.0) -> torch.Tensor:
    """T^2 x the mean over non-void pixels (target != 255) of the per-pixel KL; 0 when none is valid.

    student_logits, teacher_logits: (N, C, H, W) at the target's resolution; target: (N, H, W)."""
    kl = kl_per_pixel(student_logits, teacher_logits.detach(), T)  # (N, H, W)
    valid = target != IGNORE_INDEX
    return T * T * kl[valid].sum() / valid.sum().clamp(min=1)


@register(
    "response",
    label="Response-Based",
    teacher="logits",
    weight="alpha",
    notebook="03_response_kd",
    paper=PAPER,
    knobs={
        "alpha": Knob(1.0, "03: weight α of the response-KD term", minimum=0),
        "temperature": Knob(2.0, "03: softmax temperature T of response KD", minimum=0.01),
    },
)
def response(s, t, target, cfg):
    return response_kd_loss(s.logits, t.logits, target, cfg.temperature)
