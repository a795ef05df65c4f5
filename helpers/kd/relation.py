"""Relation-based KD: pair-wise distillation, the student learns which positions the teacher finds alike.

Liu, Y., Chen, K., Liu, C., Qin, Z., Luo, Z., Wang, J. "Structured Knowledge Distillation for Semantic
Segmentation." CVPR 2019 (the pair-wise term).

Each map (student and teacher, deepest encoder feature) is max-pooled into nodes of
`pairwise_patch` x `pairwise_patch` positions on the student's grid (the paper aggregates a patch
into one node; its authors' code max-pools), every node's feature vector is L2-normalised, and

    a_ij = f_i . f_j / (|f_i| |f_j|)                    (cosine similarity of nodes i and j)
    L = (1 / (n^2)) * sum over node pairs (i, j) of (a^s_ij - a^t_ij)^2      (n nodes per image, mean over N)

The affinity matrices (n x n) do not depend on channel counts, so no adapter is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import Knob, register

PAPER = (
    "Liu, Y., Chen, K., Liu, C., Qin, Z., Luo, Z., Wang, J. Structured Knowledge Distillation for Semantic "
    "Segmentation. CVPR 2019"
)


def nodes(feature, grid: tuple[int, int]) -> torch.Tensor:
    """(N, n, C): the map (N, C, h, w) max-pooled to `grid` = (gh, gw) nodes, each L2-normalised."""
    pooled = F.adaptive_max_pool2d(feature.float(), grid)  # (N, C, gh, gw)
    return F.normalize(pooled.flatten(2), dim=1).transpose(1, 2)


def affinity(feature, grid: tuple[int, int]) -> torch.Tensor:
    """(N, n, n): the cosine similarity of every pair of nodes."""
    f = nodes(feature, grid)
    return f @ f.transpose(1, 2)


def node_grid(student_feature, patch: int) -> tuple[int, int]:
    """The node grid: the student map's size divided by the patch side, rounded up."""
    h, w = student_feature.shape[-2:]
    return math.ceil(h / patch), math.ceil(w / patch)


def pairwise_loss(student_feat, teacher_feat, patch: int = 2) -> torch.Tensor:
    """Mean over images and node pairs of the squared difference of the two affinity matrices."""
    grid = node_grid(student_feat, patch)
    return ((affinity(student_feat, grid) - affinity(teacher_feat, grid)) ** 2).mean()


@register(
    "pairwise",
    label="Relation-Based (pair-wise)",
    teacher="feature",
    weight="pairwise_weight",
    paper=PAPER,
    knobs={
        "pairwise_weight": Knob(1.0, "weight λ of the pair-wise (relation) KD term", minimum=0),
        "pairwise_patch": Knob(
            2, "pair-wise KD: side of the patch of feature positions max-pooled into one node", minimum=1
        ),
    },
)
def pairwise(s, t, target, cfg):
    return pairwise_loss(s.feature, t.feature.detach(), cfg.pairwise_patch)
