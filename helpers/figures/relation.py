"""Relation-based KD made visible (notebook 07): which positions a network finds alike. For one node (a
patch of the feature map), its row of the pair-wise affinity matrix (`kd.relation.affinity`, the code that
trains) drawn over the node grid, for the teacher and the student before and after training."""

from __future__ import annotations

import numpy as np
import torch

from ..kd.relation import affinity, node_grid
from .teaching import as_cpu, frozen
from .viz import MASK_KW, colorize, denormalize, image_axis, new_figure


def affinity_row(model, image, node: tuple[int, int], grid: tuple[int, int], device="cpu") -> np.ndarray:
    """(gh, gw): the cosine similarity of node `node` (row, column on the grid) to every node, for one image."""
    with frozen(model):
        feature = model.forward_features(as_cpu(image)[None].to(device), logits=False)[1]
    a = affinity(feature, grid)[0]  # (n, n)
    return a[node[0] * grid[1] + node[1]].reshape(grid).cpu().numpy()


def object_node(gt, grid: tuple[int, int]) -> tuple[int, int]:
    """The node at the centre of mass of the largest foreground class in `gt` (the image's centre if none)."""
    labels = np.asarray(as_cpu(gt)).astype(int)
    fg = [(int((labels == c).sum()), c) for c in np.unique(labels) if c not in (0, 255)]
    if not fg:
        return grid[0] // 2, grid[1] // 2
    ys, xs = np.nonzero(labels == max(fg)[1])
    h, w = labels.shape
    return min(int(ys.mean() * grid[0] / h), grid[0] - 1), min(int(xs.mean() * grid[1] / w), grid[1] - 1)


def affinity_figure(image, gt, rows: dict, node: tuple[int, int], grid: tuple[int, int]):
    """image (the node outlined) | ground truth | one panel per entry of `rows` ({title: affinity_row}),
    all on one colour scale (up to 1; from 0 when no similarity is negative)."""
    from matplotlib.patches import Rectangle

    fig = new_figure((3.0 * (2 + len(rows)) + 1, 3.6))
    axes = fig.subplots(1, 2 + len(rows))
    h, w = np.asarray(as_cpu(gt)).shape
    cell = (h / grid[0], w / grid[1])
    for ax, picture, title in (
        (axes[0], denormalize(image), "image (node outlined)"),
        (axes[1], colorize(gt), "ground truth"),
    ):
        ax.imshow(picture, **MASK_KW)
        ax.add_patch(
            Rectangle(
                (node[1] * cell[1] - 0.5, node[0] * cell[0] - 0.5),
                cell[1],
                cell[0],
                fill=False,
                edgecolor="red",
                linewidth=2,
            )
        )
        image_axis(ax, title)
    low = min(0.0, *(float(np.min(r)) for r in rows.values()))  # (features after a ReLU: similarities >= 0)
    for ax, (title, row) in zip(axes[2:], rows.items()):
        im = ax.imshow(row, vmin=low, vmax=1, cmap="RdBu_r" if low < 0 else "magma", **MASK_KW)
        ax.add_patch(Rectangle((node[1] - 0.5, node[0] - 0.5), 1, 1, fill=False, edgecolor="k", linewidth=1.5))
        image_axis(ax, title)
    fig.colorbar(im, ax=axes[2:].tolist(), shrink=0.8, label="cosine similarity to the outlined node")
    fig.suptitle(
        "Pair-wise (relation) KD: how alike each position is to one node, as a network's feature sees "
        "it.\nLook at: the teacher's map follows the object; training pulls the student's map toward it.",
        fontsize=10,
    )
    return fig


def grid_for(model, image, patch: int, device="cpu") -> tuple[int, int]:
    """The node grid pair-wise KD uses for this image with `model` as the student."""
    with frozen(model), torch.no_grad():
        feature = model.forward_features(as_cpu(image)[None].to(device), logits=False)[1]
    return node_grid(feature, patch)
