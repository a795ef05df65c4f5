"""Joint image + mask transforms (torchvision.transforms.v2 with tv_tensors.Mask).

The mask travels with the image through every geometric step, is resized with NEAREST (never
interpolated), padded with 255 (void) and never rescaled to [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .voc import IGNORE_INDEX

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, used by every model here
STD = (0.229, 0.224, 0.225)


class Joint:
    """Callable (PIL image, uint8 labels) -> (float image (3, H, W), int64 mask (H, W))."""

    def __init__(self, ops):
        self.pipeline = v2.Compose(ops + [
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None},
                       scale=True),
            v2.Normalize(MEAN, STD),
        ])

    def __call__(self, image, labels):
        img = tv_tensors.Image(v2.functional.pil_to_tensor(image)) if not torch.is_tensor(image) else tv_tensors.Image(image)
        mask = tv_tensors.Mask(torch.from_numpy(np.asarray(labels, dtype=np.uint8))[None])
        img, mask = self.pipeline(img, mask)
        return img.as_subclass(torch.Tensor), mask[0].as_subclass(torch.Tensor)


def train_transform(crop_size: int, base_size: int, scale=(0.5, 2.0), hflip: bool = True) -> Joint:
    """Random scale (shorter side in base_size*scale), random crop padded with 255, flip."""
    lo, hi = int(base_size * scale[0]), int(base_size * scale[1])
    ops = [v2.RandomResize(lo, hi + 1, antialias=True)]
    ops += [v2.RandomCrop(crop_size, pad_if_needed=True,
                          fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX})]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return Joint(ops)


def eval_transform(resize: int | None = None) -> Joint:
    """Evaluation: each image at its own full resolution (or its shorter side resized to `resize`)."""
    return Joint([v2.Resize(resize, antialias=True)] if resize else [])


def collate_pad(batch):
    """Stack samples of different sizes: images padded with 0, masks with 255 (ignored)."""
    imgs, masks = zip(*batch)
    h = max(i.shape[-2] for i in imgs)
    w = max(i.shape[-1] for i in imgs)
    out_i = imgs[0].new_zeros((len(imgs), 3, h, w))
    out_m = masks[0].new_full((len(imgs), h, w), IGNORE_INDEX)
    for k, (i, m) in enumerate(zip(imgs, masks)):
        out_i[k, :, : i.shape[-2], : i.shape[-1]] = i
        out_m[k, : m.shape[-2], : m.shape[-1]] = m
    return out_i, out_m
