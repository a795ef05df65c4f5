"""Evaluation: single scale, full resolution, one dataset-level confusion matrix, label 255 ignored;
boundary-IoU counts per image beside it (see boundary.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import voc
from .boundary import boundary_counts, boundary_miou
from .metrics import confusion_matrix, summarize
from .runtime import keep_freed_memory

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

    dl = DataLoader(ds, batch_size=None, shuffle=False)  # one sample at a time, in order
    for i, (image, mask) in enumerate(tqdm(dl, desc=desc, disable=not progress, leave=False)):
        group = pending.setdefault(tuple(image.shape), [])
        group.append((i, image, mask))
        if len(group) == batch_size:
            run(pending.pop(tuple(image.shape)))
    for group in pending.values():
        run(group)
    per_image = torch.stack(cms).numpy()
    out = _with_boundary(summarize(per_image, ds.ids), np.stack(bounds))
    out["per_image_cm"] = per_image
    out["ids"] = list(ds.ids)
    return out


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
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, per_image_cm=out["per_image_cm"], per_image_boundary=out["per_image_boundary"],
                        ids=np.array(out["ids"]))
    return out
