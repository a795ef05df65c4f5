"""PASCAL VOC 2012 (and SBD) loading: class names, palette, split lists and checked samples.

The same code reads real VOC 2012 and the generated demo set, because the demo is written in the
VOC layout. Standard splits (`train`, `val`, `trainval`) are enumerated by torchvision's own
`VOCSegmentation`; extra splits of the demo (`teacher`, `holdout`) are read from the same
`ImageSets/Segmentation/<split>.txt` files; `train_aug` adds SBD through `SBDataset`.
Every sample is checked where it is read (files present and decodable, same size, labels valid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import UserError

CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(CLASSES)  # 21
IGNORE_INDEX = 255  # "void": object borders and padding; ignored by losses and metrics
STANDARD_SPLITS = ("train", "val", "trainval")


def voc_palette() -> np.ndarray:
    """(256, 3) uint8 VOC colour map; index 255 (void) is (224, 224, 192) as in the release."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


PALETTE = voc_palette()

LAYOUT_HELP = """Expected layout (the PASCAL VOC 2012 release, unpacked as it ships):
    {root}/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    {root}/VOCdevkit/VOC2012/SegmentationClass/<id>.png      (palette PNGs, values = class ids)
    {root}/VOCdevkit/VOC2012/ImageSets/Segmentation/{{train,val}}.txt
Get it from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar
(1.9 GB) and unpack it in {root}, or set download=True (uses torchvision's downloader),
or use dataset="demo" to generate the demo set in this layout."""


def voc_dir(root) -> Path:
    return Path(root) / "VOCdevkit" / "VOC2012"


def check_voc_root(root, split: str) -> Path:
    """Raise a UserError that explains the layout when `root` is not a usable VOC tree."""
    base = voc_dir(root)
    hint = LAYOUT_HELP.format(root=root)
    if not Path(root).exists():
        raise UserError(f"data_root '{root}' does not exist.\n{hint}")
    if not base.is_dir():
        raise UserError(f"data_root '{root}' has no VOCdevkit/VOC2012 folder.\n{hint}")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        if not (base / sub).is_dir():
            raise UserError(f"VOC tree '{base}' lacks the folder '{sub}'.\n{hint}")
    split_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        found = sorted(p.stem for p in (base / "ImageSets" / "Segmentation").glob("*.txt"))
        raise UserError(f"Split file '{split_file}' is missing (splits found: {found or 'none'}).\n{hint}")
    return base


def read_split(root, split: str) -> list[tuple[str, Path, Path]]:
    """(id, image path, mask path) for each id of a split, in file order."""
    base = check_voc_root(root, split)
    if split in STANDARD_SPLITS:
        from torchvision.datasets import VOCSegmentation

        ds = VOCSegmentation(str(root), year="2012", image_set=split, download=False)
        images, masks = ds.images, ds.masks
    else:
        ids = (base / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        images = [str(base / "JPEGImages" / f"{i}.jpg") for i in ids]
        masks = [str(base / "SegmentationClass" / f"{i}.png") for i in ids]
    if not images:
        raise UserError(f"Split '{split}' in '{base}' lists no images.")
    return [(Path(im).stem, Path(im), Path(m)) for im, m in zip(images, masks)]


def download_voc(root) -> None:
    """Fetch VOC 2012 with torchvision's downloader (needs internet; 1.9 GB)."""
    from torchvision.datasets import VOCSegmentation

    VOCSegmentation(str(root), year="2012", image_set="train", download=True)


def read_train_aug(root, sbd_root) -> list[tuple[str, Path, Path]]:
    """VOC train + SBD (train and val, segmentation mode) minus every VOC val id: 10,582 images."""
    from torchvision.datasets import SBDataset

    try:
        sbd = SBDataset(str(sbd_root), image_set="train", mode="segmentation", download=False)
        sbd_val = SBDataset(str(sbd_root), image_set="val", mode="segmentation", download=False)
    except (RuntimeError, FileNotFoundError) as e:
        raise UserError(
            f"SBD not found under '{sbd_root}' ({e}). Unpack benchmark.tgz from "
            "http://home.bharathh.info/pubs/codes/SBD/download.html so that "
            f"'{sbd_root}/img', '{sbd_root}/cls' and '{sbd_root}/train.txt' exist, "
            "or use train_split='train'."
        ) from None
    voc_train = read_split(root, "train")
    val_ids = {i for i, _, _ in read_split(root, "val")}
    seen = {i for i, _, _ in voc_train}
    items = list(voc_train)
    for ds in (sbd, sbd_val):
        for im, m in zip(ds.images, ds.masks):
            sid = Path(im).stem
            if sid not in seen and sid not in val_ids:
                seen.add(sid)
                items.append((sid, Path(im), Path(m)))
    return items


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise UserError(
            f"The {what} file '{path}' is missing (its id is listed in the split file). "
            "Restore it, or remove the id from the split file."
        )
    try:
        img = Image.open(path)
        img.load()
        return img
    except Exception as e:  # PIL raises several types for corrupt or truncated files
        raise UserError(
            f"The {what} file '{path}' cannot be decoded ({type(e).__name__}: {e}). "
            "It is corrupt or truncated: replace it with a good copy."
        ) from None


def mask_to_indices(mask: Image.Image, path: Path | str = "<mask>") -> np.ndarray:
    """Class indices (H, W) uint8 from a palette/grey PNG; an RGB mask is mapped through the VOC
    palette when every colour is exactly a palette colour, else refused."""
    if mask.mode in ("P", "L"):
        return np.array(mask, dtype=np.uint8)
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.array(mask.convert("RGB"), dtype=np.int32)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        pal = PALETTE.astype(np.int32)
        lut = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(pal) if i < NUM_CLASSES or i == 255}
        uniq = np.unique(codes)
        unknown = [u for u in uniq.tolist() if u not in lut]
        if unknown:
            cols = [((u >> 16) & 255, (u >> 8) & 255, u & 255) for u in unknown[:5]]
            raise UserError(
                f"The mask '{path}' is an RGB image with colours that are not VOC palette "
                f"colours (e.g. {cols}). Save masks as palette ('P') PNGs whose pixel values "
                "are class indices 0..20 and 255."
            )
        out = np.zeros(codes.shape, dtype=np.uint8)
        for u in uniq.tolist():
            out[codes == u] = lut[u]
        return out
    if mask.mode == "I;16" or mask.mode == "I":
        return np.array(mask).astype(np.int64).clip(0, 65535).astype(np.int64)  # checked by caller
    raise UserError(f"The mask '{path}' has image mode '{mask.mode}'; expected a palette ('P') PNG.")


def check_labels(labels: np.ndarray, path) -> None:
    bad = np.setdiff1d(np.unique(labels), np.r_[np.arange(NUM_CLASSES), IGNORE_INDEX])
    if bad.size:
        raise UserError(
            f"The mask '{path}' contains labels {bad[:10].tolist()} outside 0..20 and 255. "
            "VOC masks hold class indices (see helpers.voc.CLASSES) and 255 for void."
        )


def load_sample(image_path: Path, mask_path: Path) -> tuple[Image.Image, np.ndarray]:
    """Read and check one pair: RGB PIL image and (H, W) uint8 class-index array."""
    img = _open(Path(image_path), "image").convert("RGB")
    mask_path = Path(mask_path)
    if mask_path.suffix == ".mat":  # SBD
        from scipy.io import loadmat

        labels = loadmat(mask_path)["GTcls"][0]["Segmentation"][0].astype(np.uint8)
    else:
        labels = mask_to_indices(_open(mask_path, "mask"), mask_path)
    if labels.shape != (img.height, img.width):
        raise UserError(
            f"The mask '{mask_path}' is {labels.shape[1]}x{labels.shape[0]} but its image "
            f"'{image_path}' is {img.width}x{img.height}; they must be the same size."
        )
    check_labels(labels, mask_path)
    return img, labels.astype(np.uint8)


class SegDataset:
    """A map-style dataset over (id, image, mask) items, with joint transforms.

    Returns (image tensor (3, H, W) float, mask tensor (H, W) int64) after `transform`.
    """

    def __init__(self, items, transform=None, keep_decoded: bool = False):
        self.items = list(items)
        self.transform = transform
        # keep_decoded: hold every decoded sample in memory after its first read (the demo's small
        # images: ~16 KB each); a training epoch then skips JPEG/PNG decoding. Off for VOC's large images.
        self._decoded = {} if keep_decoded else None

    @property
    def ids(self) -> list[str]:
        return [i for i, _, _ in self.items]

    def __len__(self):
        return len(self.items)

    def load(self, index: int):
        """The raw sample: (PIL RGB image, uint8 (H, W) labels). Transforms never modify them in place."""
        if self._decoded is not None and index in self._decoded:
            return self._decoded[index]
        _, im, m = self.items[index]
        sample = load_sample(im, m)
        if self._decoded is not None:
            self._decoded[index] = sample
        return sample

    def __getitem__(self, index: int):
        img, labels = self.load(index)
        if self.transform is None:
            return img, labels
        return self.transform(img, labels)


def get_dataset(
    root, split: str, transform=None, download: bool = False, sbd_root=None, keep_decoded: bool = False
) -> SegDataset:
    """One split of a VOC-layout tree (real VOC 2012 or the generated demo)."""
    if download and not voc_dir(root).is_dir():
        download_voc(root)
    if split == "train_aug":
        items = read_train_aug(root, sbd_root or Path(root) / "SBD")
    else:
        items = read_split(root, split)
    return SegDataset(items, transform, keep_decoded)


def available_splits(root) -> list[str]:
    """Split names present under ImageSets/Segmentation, standard ones first."""
    names = sorted(p.stem for p in (voc_dir(root) / "ImageSets" / "Segmentation").glob("*.txt"))
    return [s for s in STANDARD_SPLITS if s in names] + [s for s in names if s not in STANDARD_SPLITS]


def samples(ds: SegDataset, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first `n` samples of `ds` as (id, image (H, W, 3) uint8, labels (H, W)), for drawing."""
    return [(ds.ids[i], *map(np.asarray, ds.load(i))) for i in range(min(n, len(ds)))]


def split_statistics(ds: SegDataset, limit: int | None = 2000) -> dict:
    """Pixel count and image count per class, and objects (connected regions of one class) per
    image, over the first `limit` samples of `ds` (void excluded)."""
    from scipy import ndimage

    pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    images = np.zeros(NUM_CLASSES, dtype=np.int64)
    objects = []
    for i in range(min(len(ds), limit or len(ds))):
        _, labels = ds.load(i)
        counts = np.bincount(labels[labels != IGNORE_INDEX].ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        pixels += counts
        images += counts > 0
        objects.append(sum(ndimage.label(labels == c)[1] for c in np.flatnonzero(counts[1:]) + 1))
    return {"pixel_counts": pixels, "image_counts": images, "objects_per_image": np.array(objects)}
