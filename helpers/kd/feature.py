"""Feature-based KD: the student's deepest encoder feature, through a trained adapter, matches the
teacher's.

- Hint (FitNets): Romero, A., Ballas, N., Kahou, S. E., Chassang, A., Gatta, C., Bengio, Y.
  "FitNets: Hints for Thin Deep Nets." ICLR 2015.
      L = (1 / NCHW) * || resize(A(F_s)) - F_t ||^2        (mean over every element of the teacher's map)
- CWD: Shu, C., Liu, Y., Gao, J., Yan, Z., Shen, C. "Channel-wise Knowledge Distillation for Dense
  Prediction." ICCV 2021. Each channel becomes a distribution over positions, softmax(F_c / T);
      L = T^2 * mean over (N, C) of KL( teacher_c || student_c )

A (`FeatureAdapter`, 1x1 conv + BN) takes the student's channels to the teacher's; it is trained with
the student and dropped afterwards, so the deployed student has the baseline's parameter count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Knob, register

PAPER = (
    "Romero, A. et al. FitNets: Hints for Thin Deep Nets. ICLR 2015; Shu, C. et al. Channel-wise Knowledge "
    "Distillation for Dense Prediction. ICCV 2021"
)


class FeatureAdapter(nn.Module):
    """1x1 conv + BN taking the student's feature to the teacher's channel count."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False), nn.BatchNorm2d(teacher_channels)
        )

    def forward(self, f):
        return self.proj(f)


def match_size(student_feat, teacher_feat) -> torch.Tensor:
    """The student's map resized (bilinear) to the teacher map's spatial size, when they differ."""
    if student_feat.shape[-2:] != teacher_feat.shape[-2:]:
        student_feat = F.interpolate(student_feat, size=teacher_feat.shape[-2:], mode="bilinear", align_corners=False)
    return student_feat


def hint_loss(adapted_student_feat, teacher_feat) -> torch.Tensor:
    """Mean squared error over N*C*H*W between the adapted student map (N, Ct, hs, ws), resized to the
    teacher's size, and the teacher map (N, Ct, ht, wt)."""
    s = match_size(adapted_student_feat.float(), teacher_feat)
    return ((s - teacher_feat.float()) ** 2).mean()


def cwd_loss(adapted_student_feat, teacher_feat, T: float = 4.0) -> torch.Tensor:
    """T^2 x the mean over (N, C) of KL(teacher || student) between each channel's spatial softmax(map / T)."""
    s = match_size(adapted_student_feat.float(), teacher_feat)
    n, c = teacher_feat.shape[:2]
    log_s = F.log_softmax(s.reshape(n, c, -1) / T, dim=2)  # (N, C, positions)
    log_t = F.log_softmax(teacher_feat.float().reshape(n, c, -1) / T, dim=2)
    return T * T * (log_t.exp() * (log_t - log_s)).sum(dim=2).mean()


@register(
    "feature",
    label="Feature-Based",
    teacher="feature",
    adapter=True,
    weight="beta",
    notebook="04_feature_kd",
    paper=PAPER,
    knobs={
        "beta": Knob(1.0, "04: weight β of the feature-KD term", minimum=0),
        "feature_loss": Knob(
            "hint", "04: 'hint' (FitNets MSE) or 'cwd' (channel-wise distillation)", choices=("hint", "cwd")
        ),
        "cwd_temperature": Knob(4.0, "04: temperature of CWD", minimum=0.01, needs=("feature_loss", "cwd")),
    },
)
def feature(s, t, target, cfg):
    if cfg.feature_loss == "cwd":
        return cwd_loss(s.adapted, t.feature, cfg.cwd_temperature)
    return hint_loss(s.adapted, t.feature)
