"""The generated demo set, written in the exact VOC 2012 layout.

Why: VOC 2012 can't be downloaded here, and a CPU can't train VOC models in minutes. The demo keeps
VOC's file format, class list, palette and void borders, so the same loading, training and
evaluation code runs on both; only `data_root` differs.

The task. Each of the 20 object classes is one of 10 shapes drawn with one of 2 textures
(stripes or checks); the two classes that share a shape also share a hue family, so colour narrows
a pixel down to a pair of classes and only shape and texture tell the pair apart. Images hold
2-5 objects that overlap (occlusion), some of them small, on a cluttered background of gradients,
noise and class-free strokes, then pass through blur, noise and JPEG compression. Every object
boundary carries a 2-pixel void (255) band, as VOC's masks do.

Splits: `train` (the students), `holdout` (monitoring and choosing KD weights; never reported),
`val` (the reported split), and `teacher`, a larger, separate split that plays the role of the data
a real teacher saw before (COCO for torchvision's teacher).

Deterministic: every image draws from its own `numpy.random.default_rng([seed, split, index])`,
so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .voc import CLASSES, PALETTE

GENERATOR_VERSION = 1
SPLITS = {"train": 600, "holdout": 200, "val": 300, "teacher": 3000}
SHAPES = ("circle", "square", "triangle", "plus", "star", "ring", "hexagon", "bar", "ell", "crescent")
TEXTURES = ("stripes", "checks")


def class_of(shape: int, texture: int) -> int:
    """VOC class index (1..20) of a shape/texture pair; classes 2k+1 and 2k+2 share shape k."""
    return 1 + 2 * shape + texture


def _polygon(shape: str, cx, cy, r, rot):
    def ring(n, rad, phase=0.0):
        return [
            (
                cx + rad * math.cos(rot + phase + 2 * math.pi * k / n),
                cy + rad * math.sin(rot + phase + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if shape == "square":
        return ring(4, r, math.pi / 4)
    if shape == "triangle":
        return ring(3, r * 1.15)
    if shape == "hexagon":
        return ring(6, r)
    if shape == "star":
        outer, inner = ring(5, r * 1.2), ring(5, r * 0.5, math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    c, s = math.cos(rot), math.sin(rot)

    def rotated(pts):
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]

    if shape == "plus":
        a, b = r, r * 0.38
        return rotated(
            [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        )
    if shape == "bar":
        return rotated([(-r * 1.3, -r * 0.4), (r * 1.3, -r * 0.4), (r * 1.3, r * 0.4), (-r * 1.3, r * 0.4)])
    if shape == "ell":
        a, b = r, r * 0.45
        return rotated([(-a, -a), (-a + 2 * b, -a), (-a + 2 * b, a - 2 * b), (a, a - 2 * b), (a, a), (-a, a)])
    raise ValueError(shape)


def _shape_mask(shape: str, size: int, cx, cy, r, rot) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    if shape == "circle":
        d.ellipse([cx - r, cy - r * 0.85, cx + r, cy + r * 0.85], fill=1)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        d.ellipse([cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5], fill=0)
    elif shape == "crescent":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        ox, oy = cx + r * 0.55 * math.cos(rot), cy + r * 0.55 * math.sin(rot)
        d.ellipse([ox - r * 0.8, oy - r * 0.8, ox + r * 0.8, oy + r * 0.8], fill=0)
    else:
        d.polygon(_polygon(shape, cx, cy, r, rot), fill=1)
    return np.array(img, dtype=bool)


def _hsv_to_rgb(h, s, v) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]) * 255


def _texture(kind: str, size: int, rng, base: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dark = base * rng.uniform(0.35, 0.6)
    if kind == "stripes":
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(3.5, 5.0)
        phase = (xx * math.cos(ang) + yy * math.sin(ang)) / period + rng.uniform(0, 1)
        on = (phase % 1.0) < 0.5
    else:  # checks
        cell = rng.uniform(2.5, 3.5)
        ox, oy = rng.uniform(0, cell, 2)
        on = ((np.floor((xx + ox) / cell) + np.floor((yy + oy) / cell)) % 2) == 0
    return np.where(on[..., None], base, dark)


def _background(size: int, rng) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0 = _hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
    c1 = _hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
    ang = rng.uniform(0, 2 * math.pi)
    w = xx * math.cos(ang) + yy * math.sin(ang)
    w = (w - w.min()) / max(w.max() - w.min(), 1e-6)
    bg = c0 * (1 - w[..., None]) + c1 * w[..., None]
    img = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 8)):  # clutter: strokes and blobs that belong to no class
        col = tuple(int(v) for v in _hsv_to_rgb(rng.uniform(), rng.uniform(0.2, 1), rng.uniform(0.3, 1)))
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        if rng.uniform() < 0.6:
            d.line([x0, y0, x1, y1], fill=col, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(2, 5)
            d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r * rng.uniform(0.4, 1.6)], fill=col)
    return np.asarray(img, dtype=np.float32)


def _void_borders(labels: np.ndarray) -> np.ndarray:
    """Mark 255 on both sides of every boundary between two different labels (a ~2 px band)."""
    out = labels.copy()
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[1:, :] != labels[:-1, :]
    out[edge] = 255
    return out


def render_sample(rng, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 and its labels (H, W) uint8, before JPEG encoding."""
    img = _background(size, rng)
    labels = np.zeros((size, size), dtype=np.uint8)
    hue0 = rng.uniform()
    for _ in range(rng.integers(2, 6)):
        shape, texture = int(rng.integers(len(SHAPES))), int(rng.integers(len(TEXTURES)))
        r = size * (rng.uniform(0.06, 0.11) if rng.uniform() < 0.25 else rng.uniform(0.12, 0.26))
        cx, cy = rng.uniform(0.1 * size, 0.9 * size, 2)
        mask = _shape_mask(SHAPES[shape], size, cx, cy, r, rng.uniform(0, 2 * math.pi))
        if mask.sum() < 6:
            continue
        hue = (shape / len(SHAPES) + rng.normal(0, 0.025)) % 1.0  # hue family of the pair
        base = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
        tex = _texture(TEXTURES[texture], size, rng, base)
        img[mask] = tex[mask]
        labels[mask] = class_of(shape, texture)
    del hue0
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))
    noisy = np.asarray(pil, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return noisy.clip(0, 255).astype(np.uint8), _void_borders(labels)


def _palette_png(labels: np.ndarray) -> Image.Image:
    m = Image.fromarray(labels, mode="P")
    m.putpalette(PALETTE.reshape(-1).tolist())
    return m


def _split_code(split: str) -> int:
    return sorted(SPLITS).index(split) if split in SPLITS else sum(map(ord, split))


def generate(root, seed: int = 0, size: int = 64, splits: dict | None = None, progress: bool = True) -> Path:
    """Write the demo set under `root`/VOCdevkit/VOC2012 (VOC layout). Returns that folder.

    `splits` maps split name -> number of images (default SPLITS). Existing files are overwritten,
    so the same arguments always give byte-identical files.
    """
    from tqdm.auto import tqdm

    splits = dict(SPLITS if splits is None else splits)
    base = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    total = sum(splits.values())
    bar = tqdm(total=total, desc="demo data", disable=not progress, leave=False)
    for split, n in splits.items():
        ids = []
        for i in range(n):
            rng = np.random.default_rng([seed, _split_code(split), i])
            image, labels = render_sample(rng, size)
            sid = f"{split}_{i:05d}"
            Image.fromarray(image).save(base / "JPEGImages" / f"{sid}.jpg", quality=90)
            _palette_png(labels).save(base / "SegmentationClass" / f"{sid}.png", optimize=False)
            ids.append(sid)
            bar.update()
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    bar.close()
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "splits": splits,
        "classes": {
            CLASSES[class_of(s, t)]: f"{SHAPES[s]} / {TEXTURES[t]}"
            for s in range(len(SHAPES))
            for t in range(len(TEXTURES))
        },
    }
    (Path(root) / "demo.json").write_text(json.dumps(meta, indent=1))
    return base


def ensure(root, seed: int = 0, size: int = 64, splits: dict | None = None, progress: bool = True) -> Path:
    """Generate the demo set unless `root` already holds one made with the same arguments."""
    splits = dict(SPLITS if splits is None else splits)
    meta_path = Path(root) / "demo.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (meta.get("generator_version"), meta.get("seed"), meta.get("size"), meta.get("splits")) == (
            GENERATOR_VERSION,
            seed,
            size,
            splits,
        ):
            return Path(root) / "VOCdevkit" / "VOC2012"
        meta_path.unlink()  # stale: regenerate
    return generate(root, seed, size, splits, progress)


def describe(root):
    """A table (class -> shape / texture) of a generated demo set, or None for other data."""
    meta_path = Path(root) / "demo.json"
    if not meta_path.is_file():
        return None
    from IPython.display import Markdown

    meta = json.loads(meta_path.read_text())
    rows = "\n".join(f"| {c} | {d} |" for c, d in meta["classes"].items())
    return Markdown(
        f"Demo set: seed {meta['seed']}, {meta['size']}x{meta['size']} pixels, splits "
        f"{meta['splits']}.\n\n| class | shape / texture |\n|---|---|\n{rows}"
    )
