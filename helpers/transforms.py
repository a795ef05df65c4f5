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


def _tensors(image, labels):
    img = v2.functional.pil_to_tensor(image) if not torch.is_tensor(image) else image
    mask = torch.from_numpy(np.asarray(labels, dtype=np.uint8))[None]
    return tv_tensors.Image(img), tv_tensors.Mask(mask)


_FINISH = v2.Compose([
    v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
    v2.Normalize(MEAN, STD),
])


def _finish(img, mask):
    img, mask = _FINISH(tv_tensors.Image(img), tv_tensors.Mask(mask))  # (slicing unwraps tv_tensors)
    return img.as_subclass(torch.Tensor), mask[0].as_subclass(torch.Tensor)


class Joint:
    """Callable (PIL image, uint8 labels) -> (float image (3, H, W), int64 mask (H, W)) applying
    torchvision v2 `ops` to both (a Mask is resized with NEAREST), then ToDtype + Normalize."""

    def __init__(self, ops):
        self.geometric = v2.Compose(ops) if ops else None

    def __call__(self, image, labels):
        img, mask = _tensors(image, labels)
        if self.geometric is not None:
            img, mask = self.geometric(img, mask)
        return _finish(img, mask)


class TrainAugment:
    """Training augmentation, as in torchvision's segmentation reference recipe: random scale (the
    shorter side drawn uniformly from [lo, hi]), pad to the crop size at the bottom/right (image 0,
    mask 255), random crop, random horizontal flip. The image is resized with antialiasing, the
    mask with NEAREST (labels are never interpolated).

    Callable (PIL image, uint8 labels[, soft]) -> (image, mask[, soft]). `soft` is a float map
    (C, h, w) over the whole image at any resolution (the cached teacher logits, 1/cache_stride of
    the image): it is sampled once, bilinearly, at the crop's own pixel positions
    (`grid_sample`), which is the same geometry as the image's resize + crop + flip without ever
    building the full-resolution C-channel map.
    """

    def __init__(self, crop_size: int, lo: int, hi: int, hflip: bool = True):
        self.crop, self.lo, self.hi, self.hflip = crop_size, lo, hi, hflip

    def __call__(self, image, labels, soft=None):
        img, mask = _tensors(image, labels)
        h, w = img.shape[-2:]
        short = int(torch.randint(self.lo, self.hi + 1, ()))
        nh, nw = (short, max(1, round(w * short / h))) if h <= w else (max(1, round(h * short / w)), short)
        img = v2.functional.resize(img, [nh, nw], antialias=True)
        mask = v2.functional.resize(mask, [nh, nw])                 # a Mask: NEAREST
        c = self.crop
        ph, pw = max(c - nh, 0), max(c - nw, 0)
        if ph or pw:
            img = v2.functional.pad(img, [0, 0, pw, ph], fill=0)
            mask = v2.functional.pad(mask, [0, 0, pw, ph], fill=IGNORE_INDEX)
        top = int(torch.randint(0, nh + ph - c + 1, ()))
        left = int(torch.randint(0, nw + pw - c + 1, ()))
        img, mask = img[..., top:top + c, left:left + c], mask[..., top:top + c, left:left + c]
        flip = self.hflip and bool(torch.rand(()) < 0.5)
        if flip:
            img, mask = img.flip(-1), mask.flip(-1)
        out = _finish(img, mask)
        if soft is None:
            return out
        return out + (_sample_crop(soft, (nh, nw), top, left, c, flip),)


def _sample_crop(soft, resized, top, left, crop, flip):
    """`soft` (C, h, w) covering the whole image, sampled at the pixels of the crop [top, left,
    crop x crop] of the image resized to `resized` (optionally flipped). A pixel centre x of the
    resized image sits at normalised coordinate 2 (x + 0.5) / width - 1 whatever the map's own
    resolution; crop pixels in the padding clamp to the border (they are void in the mask)."""
    nh, nw = resized
    ys = (torch.arange(crop, dtype=torch.float32) + top + 0.5) * (2 / nh) - 1
    xs = (torch.arange(crop, dtype=torch.float32) + left + 0.5) * (2 / nw) - 1
    if flip:
        xs = xs.flip(0)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)   # (crop, crop, 2) as (x, y)
    return torch.nn.functional.grid_sample(soft[None].float(), grid[None], mode="bilinear",
                                           padding_mode="border", align_corners=False)[0]


def train_transform(crop_size: int, base_size: int, scale=(0.5, 2.0), hflip: bool = True) -> TrainAugment:
    """Random scale (shorter side in base_size*scale), random crop padded with 255, flip."""
    return TrainAugment(crop_size, int(base_size * scale[0]), int(base_size * scale[1]), hflip)


def eval_transform(resize: int | None = None) -> Joint:
    """Evaluation: each image at its own full resolution (or its shorter side resized to `resize`)."""
    return Joint([v2.Resize(resize, antialias=True)] if resize else [])


def collate_pad(batch):
    """Stack samples of different sizes: images padded with 0, masks with 255 (ignored), and the
    optional third item (soft maps) with 0."""
    cols = list(zip(*batch))
    if len({x.shape for x in cols[0]}) == 1:  # one size (training crops): a plain stack
        return tuple(torch.stack(items) for items in cols)
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
