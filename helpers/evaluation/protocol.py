"""Evaluation: single scale, full resolution, one dataset-level confusion matrix, label 255 ignored;
boundary-IoU counts per image beside it (see boundary.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..core.runtime import keep_freed_memory
from ..data import voc
from ..scale import distributed
from .boundary import boundary_counts, boundary_miou
from .metrics import confusion_matrix, summarize


@torch.inference_mode()
def predict(model, images: torch.Tensor, device) -> torch.Tensor:
    """Argmax labels (N, H, W) for a normalized batch (N, 3, H, W), logits at input resolution."""
    model.eval()
    x = images.to(device)
    return model(x).argmax(1).cpu()


@torch.inference_mode()
def evaluate(model, ds, device="cpu", batch_size: int = 16, progress: bool = False, desc="eval") -> dict:
    """Single-scale, full-resolution evaluation with a dataset-level confusion matrix (255 ignored).

    Each image is run on its own canvas: only images of the same size share a batch (nothing is
    padded), so no image's prediction depends on which others are evaluated with it (a network's
    global-pooling branch would see the padding). Returns `metrics.summarize(...)` plus
    "per_image_cm" (N, C, C) int64 and "ids", in the dataset's order.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    keep_freed_memory()
    model.eval().to(device)
    cms, bounds = [None] * len(ds), [None] * len(ds)
    pending: dict[tuple, list] = {}  # image size -> [(index, image, mask)] waiting for a full batch

    def run(group):
        pred = predict(model, torch.stack([x for _, x, _ in group]), device)
        for (i, _, m), p in zip(group, pred):
            cms[i] = confusion_matrix(p, m, voc.NUM_CLASSES)
            bounds[i] = boundary_counts(p, m, voc.NUM_CLASSES)

    # under torchrun each rank evaluates its shard (every world_size-th image, no padding) and the
    # per-image counts are gathered exactly: the same arrays as one process's, on every rank
    ctx = _context(device)
    mine = list(distributed.shard(len(ds), ctx))
    dl = DataLoader(Subset(ds, mine) if ctx.active else ds, batch_size=None, shuffle=False)  # one at a time, in order
    for j, (image, mask) in enumerate(tqdm(dl, desc=desc, disable=not progress or not ctx.main, leave=False)):
        i = mine[j]
        group = pending.setdefault(tuple(image.shape), [])
        group.append((i, image, mask))
        if len(group) == batch_size:
            run(pending.pop(tuple(image.shape)))
    for group in pending.values():
        run(group)
    if ctx.active:
        c = voc.NUM_CLASSES
        local_cm = torch.stack([cms[i] for i in mine]) if mine else torch.zeros((0, c, c), dtype=torch.int64)
        local_b = np.stack([np.asarray(bounds[i]) for i in mine]) if mine else np.zeros((0, c, 2), np.int64)
        per_image = distributed.gather_per_image(local_cm, mine, len(ds), ctx)
        per_boundary = distributed.gather_per_image(local_b, mine, len(ds), ctx)
    else:
        per_image, per_boundary = torch.stack(cms).numpy(), np.stack(bounds)
    out = _with_boundary(summarize(per_image, ds.ids), per_boundary)
    out["per_image_cm"] = per_image
    out["ids"] = list(ds.ids)
    return out


def _context(device) -> distributed.Context:
    """The torchrun job's Context (evaluation sharded over its ranks), else one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return distributed.setup(device.type)
    return distributed.Context()


def _with_boundary(out: dict, per_image_boundary: np.ndarray) -> dict:
    out["per_image_boundary"] = per_image_boundary
    out["boundary_miou"] = boundary_miou(per_image_boundary.sum(0))
    return out


def evaluate_cached(model, ds, cache: Path, source: Path | None, device, progress=True, desc="eval") -> dict:
    """`evaluate`, cached in `cache` (.npz) while it is newer than the `source` checkpoint."""
    if cache.is_file() and (source is None or cache.stat().st_mtime >= source.stat().st_mtime):
        z = np.load(cache, allow_pickle=False)
        if list(z["ids"]) == ds.ids and "per_image_boundary" in z.files:
            out = _with_boundary(summarize(z["per_image_cm"], ds.ids), z["per_image_boundary"])
            out["per_image_cm"] = z["per_image_cm"]
            return out
    out = evaluate(model, ds, device, progress=progress, desc=desc)
    if not _context(torch.device(device)).main:
        return out  # (under torchrun rank 0 writes the cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        cache, per_image_cm=out["per_image_cm"], per_image_boundary=out["per_image_boundary"], ids=np.array(out["ids"])
    )
    return out
