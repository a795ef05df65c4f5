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
    """Callable (PIL image, uint8 labels[, soft]) -> (float image (3, H, W), int64 mask (H, W)[, soft]).

    `soft` (optional) is a float map (C, h, w), e.g. cached teacher logits at low resolution: it is
    upsampled (bilinear) to the image's size and then goes through the same geometric ops as the
    image (padding fills 0 there; those pixels are void in the mask anyway).
    """

    def __init__(self, ops):
        self.geometric = v2.Compose(ops) if ops else None
        self.finish = v2.Compose([
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None},
                       scale=True),
            v2.Normalize(MEAN, STD),
        ])

    def __call__(self, image, labels, soft=None):
        img = tv_tensors.Image(v2.functional.pil_to_tensor(image)) if not torch.is_tensor(image) else tv_tensors.Image(image)
        mask = tv_tensors.Mask(torch.from_numpy(np.asarray(labels, dtype=np.uint8))[None])
        if soft is not None:
            soft = torch.nn.functional.interpolate(soft[None].float(), size=img.shape[-2:], mode="bilinear",
                                                   align_corners=False)[0]
            soft = tv_tensors.Image(soft)
        if self.geometric is not None:
            img, mask, soft = self.geometric(img, mask, soft)
        img, mask = self.finish(img, mask)
        out = (img.as_subclass(torch.Tensor), mask[0].as_subclass(torch.Tensor))
        return out if soft is None else out + (soft.as_subclass(torch.Tensor),)


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
    """Stack samples of different sizes: images padded with 0, masks with 255 (ignored), and the
    optional third item (soft maps) with 0."""
    cols = list(zip(*batch))
    h = max(i.shape[-2] for i in cols[0])
    w = max(i.shape[-1] for i in cols[0])
    out = []
    for k, items in enumerate(cols):
        fill = IGNORE_INDEX if k == 1 else 0
        t = items[0].new_full((len(items), *items[0].shape[:-2], h, w), fill)
        for j, x in enumerate(items):
            t[j, ..., : x.shape[-2], : x.shape[-1]] = x
        out.append(t)
    return tuple(out)
