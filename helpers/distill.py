"""Knowledge-distillation losses: response-based (soft pixel labels), FitNets hint, CWD.

Normalisation of every loss is stated, because published KD code differs here by factors of H*W:
- `response_kd_loss`: T^2 x mean over valid pixels (target != 255) of KL over classes.
- `hint_loss`: mean squared error over all elements (N*C*H*W) of the teacher's feature map.
- `cwd_loss`: T^2 x mean over (N, C) of KL over spatial positions (per-channel distributions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .voc import IGNORE_INDEX


def _scaled_float(x, T: float) -> torch.Tensor:
    """x / T as a new contiguous float32 tensor, in one pass whatever x's layout and dtype."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    return torch.div(x, T, out=out) if T != 1 else out.copy_(x)


class _SoftTargetKL(torch.autograd.Function):
    """sum over valid pixels of KL(softmax(t/T) || softmax(s/T)), times T^2 / n_valid, with its
    gradient written out: d loss / d s = T * valid * (softmax(s/T) - softmax(t/T)) / n_valid.

    Same value and gradient as composing log_softmax, exp, mul and sum under autograd, but it keeps
    one tensor for backward (that gradient) instead of four, and skips autograd's extra passes over
    (N, C, H, W). It works with the classes as the last dimension: for the channels_last logits the
    networks produce that is a view (no copy), and the gradient goes back in the logits' own layout,
    in which the final upsampling's backward is fast (measured on the demo, 2 cores: ~1 ms of a
    35 ms online step against working in NCHW).
    """

    @staticmethod
    def forward(ctx, s, t, valid, T):
        log_p_s = F.log_softmax(_scaled_float(s.movedim(1, -1), T), dim=-1)   # (N, H, W, C)
        log_p_t = F.log_softmax(_scaled_float(t.movedim(1, -1), T), dim=-1)
        v = valid.unsqueeze(-1)                                    # (N, H, W, 1), 1 = valid pixel
        n = valid.sum().clamp(min=1)
        w = log_p_t.exp().mul_(v)                                  # p_t, 0 on void pixels
        kl = torch.dot(w.reshape(-1), log_p_t.sub_(log_p_s).reshape(-1))   # sum of p_t (log p_t - log p_s)
        ctx.save_for_backward(log_p_s.exp_().mul_(v).sub_(w).mul_(T / n))  # T (p_s - p_t) valid / n
        ctx.dtype = s.dtype                                        # bf16/fp16 under autocast
        return kl * (T * T) / n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return (grad * grad_out).movedim(-1, 1).to(ctx.dtype), None, None, None


def response_kd_loss(student_logits, teacher_logits, target, temperature: float = 1.0,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """T^2 * mean over pixels with target != ignore_index of KL(softmax(t/T) || softmax(s/T)).

    student_logits, teacher_logits: (N, C, H, W) at the target's resolution; target: (N, H, W).
    Void pixels contribute neither loss nor gradient; no gradient reaches the teacher's logits.
    Returns 0 when no pixel is valid.
    """
    valid = (target != ignore_index).float()
    return _SoftTargetKL.apply(student_logits, teacher_logits.detach(), valid, float(temperature))


class FeatureAdapter(nn.Module):
    """1x1 conv + BN taking the student's feature to the teacher's channel count. Trained with the
    student and dropped afterwards, so the deployed student's parameter count is unchanged."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
                                  nn.BatchNorm2d(teacher_channels))

    def forward(self, f):
        return self.proj(f)


def _match_size(student_feat, teacher_feat):
    if student_feat.shape[-2:] != teacher_feat.shape[-2:]:
        student_feat = F.interpolate(student_feat, size=teacher_feat.shape[-2:], mode="bilinear",
                                     align_corners=False)
    return student_feat


def hint_loss(adapted_student_feat, teacher_feat) -> torch.Tensor:
    """FitNets hint: MSE (mean over N*C*H*W) between the adapted student feature, resized to the
    teacher's spatial size, and the teacher feature. Shapes (N, Ct, hs, ws) and (N, Ct, ht, wt)."""
    s = _match_size(adapted_student_feat.float(), teacher_feat)
    return F.mse_loss(s, teacher_feat.float())


def cwd_loss(adapted_student_feat, teacher_feat, temperature: float = 4.0) -> torch.Tensor:
    """Channel-wise distillation (Shu et al., 2021): each channel becomes a distribution over
    spatial positions (softmax of map/T); loss = T^2 * mean over (N, C) of KL(teacher || student)."""
    s = _match_size(adapted_student_feat.float(), teacher_feat)
    n, c = teacher_feat.shape[:2]
    T = float(temperature)
    log_s = F.log_softmax(s.reshape(n, c, -1) / T, dim=2)
    log_t = F.log_softmax(teacher_feat.float().reshape(n, c, -1) / T, dim=2)
    return (log_t.exp() * (log_t - log_s)).sum(dim=2).mean() * (T * T)


def distill_loss(method: str, student_out, target, teacher_out=None, adapter=None, *, alpha=0.5,
                 temperature=4.0, beta=1.0, feature_loss="hint", cwd_temperature=4.0) -> dict:
    """Loss parts for one batch: {"loss": total, "ce": ..., and "kd" or "feat"}.

    student_out / teacher_out: (logits (N, C, H, W) at target resolution, feature map).
    - baseline: CE(ignore 255)
    - response: CE + alpha * response_kd_loss(T)
    - feature:  CE + beta * hint_loss (or cwd_loss when feature_loss == "cwd")
    """
    logits, feat = student_out
    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
    parts = {"ce": ce}
    if method == "response":
        parts["kd"] = response_kd_loss(logits, teacher_out[0], target, temperature)
        parts["loss"] = ce + alpha * parts["kd"]
    elif method == "feature":
        f = adapter(feat)
        parts["feat"] = (cwd_loss(f, teacher_out[1], cwd_temperature) if feature_loss == "cwd"
                         else hint_loss(f, teacher_out[1]))
        parts["loss"] = ce + beta * parts["feat"]
    else:
        parts["loss"] = ce
    return parts
