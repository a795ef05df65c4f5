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


_FINISH = v2.Compose(
    [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(MEAN, STD),
    ]
)


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

    Callable (PIL image, uint8 labels[, soft, soft_stride]) -> (image, mask[, soft, geometry]).
    `soft` is a map (C, h, w) of the whole image (the cached teacher logits, `pool_map` of them):
    with `soft_stride` s, cell (i, j) is the mean of the image's pixels [s i, s i + s) x [s j, s j + s),
    so the map covers (s h) x (s w) pixels, a little more than the image where a side is not a
    multiple of s; without `soft_stride` it covers the image exactly. It is returned as it is, with
    `geometry` (4,): where the crop's pixels lie in the map's normalised coordinates. `sample_cached`
    then samples a whole batch of maps at once (bilinear, on the training device), so the
    full-resolution C-channel map is never built per image, nor copied between processes.
    """

    def __init__(self, crop_size: int, lo: int, hi: int, hflip: bool = True):
        self.crop, self.lo, self.hi, self.hflip = crop_size, lo, hi, hflip

    def __call__(self, image, labels, soft=None, soft_stride: int | None = None):
        img, mask = _tensors(image, labels)
        h, w = img.shape[-2:]
        short = int(torch.randint(self.lo, self.hi + 1, ()))
        nh, nw = (short, max(1, round(w * short / h))) if h <= w else (max(1, round(h * short / w)), short)
        img = v2.functional.resize(img, [nh, nw], antialias=True)
        mask = v2.functional.resize(mask, [nh, nw])  # a Mask: NEAREST
        c = self.crop
        ph, pw = max(c - nh, 0), max(c - nw, 0)
        if ph or pw:
            img = v2.functional.pad(img, [0, 0, pw, ph], fill=0)
            mask = v2.functional.pad(mask, [0, 0, pw, ph], fill=IGNORE_INDEX)
        top = int(torch.randint(0, nh + ph - c + 1, ()))
        left = int(torch.randint(0, nw + pw - c + 1, ()))
        img, mask = img[..., top : top + c, left : left + c], mask[..., top : top + c, left : left + c]
        flip = self.hflip and bool(torch.rand(()) < 0.5)
        if flip:
            img, mask = img.flip(-1), mask.flip(-1)
        out = _finish(img, mask)
        if soft is None:
            return out
        # crop pixel j sits at x = left + j of the resized image, i.e. at (x + 0.5) w / nw of the
        # image, normalised over the map's extent W = s * map width: 2 (x + 0.5) (w / W) / nw - 1
        # (flipped: j -> c - 1 - j); the same for rows
        kx = ky = 1.0
        if soft_stride:
            kx, ky = w / (soft_stride * soft.shape[-1]), h / (soft_stride * soft.shape[-2])
        ax, bx = 2 * kx / nw, (2 * left + 1) * kx / nw - 1
        if flip:
            ax, bx = -ax, (2 * (left + c) - 1) * kx / nw - 1
        ay, by = 2 * ky / nh, (2 * top + 1) * ky / nh - 1
        return out + (soft, torch.tensor([ax, bx, ay, by], dtype=torch.float32))


def pool_map(logits: torch.Tensor, stride: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, ceil(H/s), ceil(W/s)): the mean of each s x s cell, the last row and
    column of cells completed by repeating the image's edge. Cell centres then lie on the regular
    grid s (i + 0.5), which `TrainAugment(..., soft_stride=s)` assumes, for any image size."""
    h, w = logits.shape[-2:]
    ph, pw = -h % stride, -w % stride
    if ph or pw:
        logits = torch.nn.functional.pad(logits, (0, pw, 0, ph), mode="replicate")
    return torch.nn.functional.avg_pool2d(logits, stride)


def sample_cached(maps, geometry, size) -> torch.Tensor:
    """Cached maps (N, C, h, w) sampled (bilinear) at the pixels of each sample's crop: geometry
    (N, 4) = (ax, bx, ay, by) from `TrainAugment`, crop pixel (i, j) at normalised (ax j + bx,
    ay i + by); `size` = the crop's (H, W). Returns float32 (N, C, H, W). Coordinates beyond the
    map clamp to its border (those pixels are padding, void in the mask)."""
    n, (h, w) = maps.shape[0], size
    dev = maps.device
    gx = geometry[:, 0:1] * torch.arange(w, device=dev, dtype=torch.float32) + geometry[:, 1:2]  # (N, W)
    gy = geometry[:, 2:3] * torch.arange(h, device=dev, dtype=torch.float32) + geometry[:, 3:4]  # (N, H)
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=-1)
    return torch.nn.functional.grid_sample(
        maps.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def train_transform(crop_size: int, base_size: int, scale=(0.5, 2.0), hflip: bool = True) -> TrainAugment:
    """Random scale (shorter side in base_size*scale), random crop padded with 255, flip."""
    return TrainAugment(crop_size, int(base_size * scale[0]), int(base_size * scale[1]), hflip)


def eval_transform(resize: int | None = None) -> Joint:
    """Evaluation: each image at its own full resolution (or its shorter side resized to `resize`)."""
    return Joint([v2.Resize(resize, antialias=True)] if resize else [])


def collate_pad(batch):
    """Stack samples of different sizes: images padded with 0, masks with 255 (ignored). Samples
    with a cached map and its geometry (`TrainAugment`) give two more items: the maps, padded to
    the largest one by repeating their edge (and the geometry rescaled to the padded size)."""
    cols = list(zip(*batch))
    images, masks = (_stack_padded(items, fill) for items, fill in zip(cols[:2], (0, IGNORE_INDEX)))
    if len(cols) == 2:
        return images, masks
    maps, geometry = list(cols[2]), torch.stack(cols[3])
    hs, ws = max(m.shape[-2] for m in maps), max(m.shape[-1] for m in maps)
    for k, m in enumerate(maps):
        h, w = m.shape[-2:]
        if (h, w) != (hs, ws):  # normalised coordinate g on a map of width w -> (g + 1) w / ws - 1
            maps[k] = torch.nn.functional.pad(m.float()[None], (0, ws - w, 0, hs - h), mode="replicate")[0].to(m.dtype)
            geometry[k] = geometry[k] * torch.tensor([w / ws, w / ws, h / hs, h / hs])
            geometry[k, 1] += w / ws - 1
            geometry[k, 3] += h / hs - 1
    return images, masks, torch.stack(maps), geometry


def _stack_padded(items, fill):
    if len({x.shape for x in items}) == 1:  # one size (training crops): a plain stack
        return torch.stack(items)
    h, w = max(x.shape[-2] for x in items), max(x.shape[-1] for x in items)
    out = items[0].new_full((len(items), *items[0].shape[:-2], h, w), fill)
    for j, x in enumerate(items):
        out[j, ..., : x.shape[-2], : x.shape[-1]] = x
    return out
