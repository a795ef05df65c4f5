"""The data layer: demo generator, VOC layout, real-file format, joint transforms, sample checks."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import training
from helpers.core.errors import UserError
from helpers.data import demo as demo_data
from helpers.data import loaders as data
from helpers.data import voc
from helpers.data.transforms import eval_transform, train_transform
from helpers.evaluation import protocol as evaluation


def _digest(root):
    h = hashlib.sha256()
    for p in sorted((root / "VOCdevkit").rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic(tmp_path):
    splits = {"train": 5, "val": 3}
    demo_data.generate(tmp_path / "a", seed=3, size=32, splits=splits, progress=False)
    demo_data.generate(tmp_path / "b", seed=3, size=32, splits=splits, progress=False)
    demo_data.generate(tmp_path / "c", seed=4, size=32, splits=splits, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_demo_is_read_by_torchvision_unchanged(demo_root):
    from torchvision.datasets import VOCSegmentation

    for split in ("train", "val"):
        ds = VOCSegmentation(str(demo_root), year="2012", image_set=split)
        img, mask = ds[0]
        assert img.mode == "RGB" and mask.mode == "P"
        labels = np.array(mask)
        assert set(np.unique(labels)) <= set(range(21)) | {255}
        assert (labels == 255).any() and (labels > 0).any() and (labels < 255).any()
        ours = voc.get_dataset(demo_root, split)
        assert ours.ids == [p.split("/")[-1][:-4] for p in ds.images]
        np.testing.assert_array_equal(ours.load(0)[1], labels)
    assert len(voc.get_dataset(demo_root, "teacher")) == 60  # the extra split is read from the same files


def test_demo_masks_use_voc_palette_and_void_borders(demo_root):
    mask = Image.open(demo_root / "VOCdevkit/VOC2012/SegmentationClass/train_00000.png")
    assert mask.mode == "P"
    pal = np.array(mask.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(pal[:21], voc.PALETTE[:21])
    labels = np.array(mask)
    for c in np.unique(labels):  # every object pixel next to another class is void
        if c in (0, 255):
            continue
        obj = labels == c
        inner = obj[1:-1, 1:-1]
        for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            nb = labels[1 + dy : labels.shape[0] - 1 + dy, 1 + dx : labels.shape[1] - 1 + dx]
            assert not (inner & (nb != c) & (nb != 255)).any()


def test_real_voc_sample_reads_class_indices(voc_sample):
    ds = voc.get_dataset(voc_sample, "train")
    assert ds.ids == ["2007_000063"]
    img, labels = ds.load(0)
    assert img.size == (500, 375) and labels.shape == (375, 500)
    assert set(np.unique(labels).tolist()) == {0, 9, 12, 255}


def test_real_voc_sample_through_eval_transform(voc_sample):
    ds = voc.get_dataset(voc_sample, "val", eval_transform())
    x, m = ds[0]
    assert x.shape == (3, 375, 500) and x.dtype == torch.float32
    assert m.shape == (375, 500) and m.dtype == torch.int64
    assert set(torch.unique(m).tolist()) == {0, 9, 12, 255}


def _striped():
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    img[:, :20] = (255, 0, 0)
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[:, :20] = 7
    labels[:, 20:22] = 255
    return Image.fromarray(img), labels


def test_flip_moves_mask_with_image():
    img, labels = _striped()
    tf = train_transform(crop_size=40, base_size=40, scale=(1.0, 1.0), hflip=True)
    seen = set()
    for s in range(12):
        torch.manual_seed(s)
        x, m = tf(img, labels)
        red = x[0] > 1.0  # normalized red channel is high where the image is red
        car = m == 7
        assert (red == car).float().mean() > 0.97  # mask and image moved together
        seen.add(bool(car[:, :5].any()))
    assert seen == {True, False}  # both flipped and unflipped crops happened


def test_random_scale_never_interpolates_labels():
    img, labels = _striped()
    tf = train_transform(crop_size=48, base_size=40, scale=(0.5, 2.0))
    for s in range(10):
        torch.manual_seed(s)
        _, m = tf(img, labels)
        assert set(torch.unique(m).tolist()) <= {0, 7, 255}
        assert m.shape == (48, 48)


def test_crop_pads_mask_with_void():
    img, labels = _striped()
    tf = train_transform(crop_size=80, base_size=40, scale=(1.0, 1.0), hflip=False)
    x, m = tf(img, labels)
    assert m.shape == (80, 80) and (m == 255).sum() >= 80 * 80 - 40 * 60


def _copy_tree(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst / "VOCdevkit" / "VOC2012"


def test_missing_root_explains_layout(tmp_path):
    with pytest.raises(UserError, match="(?s)does not exist.*VOCdevkit/VOC2012/JPEGImages"):
        voc.get_dataset(tmp_path / "nope", "train")
    with pytest.raises(UserError, match="no VOCdevkit/VOC2012"):
        voc.get_dataset(tmp_path, "train")


def test_tree_without_imagesets(demo_root, tmp_path):
    import shutil

    base = _copy_tree(demo_root, tmp_path / "d")
    shutil.rmtree(base / "ImageSets")
    with pytest.raises(UserError, match="lacks the folder 'ImageSets/Segmentation'"):
        voc.get_dataset(tmp_path / "d", "train")


def test_missing_image_is_named(demo_root, tmp_path):
    base = _copy_tree(demo_root, tmp_path / "d")
    (base / "JPEGImages" / "train_00001.jpg").unlink()
    ds = voc.get_dataset(tmp_path / "d", "train")
    with pytest.raises(UserError, match="train_00001.jpg' is missing"):
        ds.load(1)


def test_corrupt_files_are_named(demo_root, tmp_path):
    base = _copy_tree(demo_root, tmp_path / "d")
    jpg = base / "JPEGImages" / "train_00002.jpg"
    jpg.write_bytes(jpg.read_bytes()[:100])
    png = base / "SegmentationClass" / "train_00003.png"
    png.write_bytes(b"not a png at all")
    ds = voc.get_dataset(tmp_path / "d", "train")
    with pytest.raises(UserError, match="train_00002.jpg' cannot be decoded"):
        ds.load(2)
    with pytest.raises(UserError, match="train_00003.png' cannot be decoded"):
        ds.load(3)


def test_bad_label_and_size_mismatch(demo_root, tmp_path):
    base = _copy_tree(demo_root, tmp_path / "d")
    labels = np.array(Image.open(base / "SegmentationClass" / "train_00004.png"))
    labels[0, 0] = 42
    Image.fromarray(labels, mode="L").save(base / "SegmentationClass" / "train_00004.png")
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(base / "SegmentationClass" / "train_00005.png")
    ds = voc.get_dataset(tmp_path / "d", "train")
    with pytest.raises(UserError, match=r"labels \[42\] outside 0..20 and 255"):
        ds.load(4)
    with pytest.raises(UserError, match="is 12x10 but its image"):
        ds.load(5)


def test_rgb_mask_converted_through_palette_or_refused(demo_root, tmp_path):
    base = _copy_tree(demo_root, tmp_path / "d")
    png = base / "SegmentationClass" / "train_00006.png"
    labels = np.array(Image.open(png))
    Image.fromarray(voc.PALETTE[labels]).save(png)  # RGB colours, exactly the palette's
    ds = voc.get_dataset(tmp_path / "d", "train")
    np.testing.assert_array_equal(ds.load(6)[1], labels)
    rgb = voc.PALETTE[labels].copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(png)
    with pytest.raises(UserError, match="not VOC palette colours"):
        ds.load(6)


def test_split_statistics(demo_root):
    st = voc.split_statistics(voc.get_dataset(demo_root, "train"))
    assert st["pixel_counts"][0] > 0 and st["pixel_counts"][1:].sum() > 0
    assert len(st["objects_per_image"]) == 12 and st["objects_per_image"].min() >= 1


def test_one_code_path_trains_and_evaluates_on_the_real_voc_format(voc_sample, tmp_path):
    """The real VOC file (500x375) through the same training loop and full-resolution evaluation."""
    from helpers.config import Config

    cfg = Config(
        dataset="voc",
        data_root=str(voc_sample),
        min_teacher_miou=0,
        checkpoints_dir=str(tmp_path),
        run_name="v",
        teacher_split="train",
        monitor_split="val",
        epochs=1,
        teacher_epochs=1,
        batch_size=1,
        crop_size=64,
        base_size=64,
        warmup_iters=1,
        device="cpu",
    )
    model, history = training.fit(cfg, "response", progress=False)
    assert history["epoch"] == [1] and len(history["kd"]) == 1
    r = evaluation.evaluate(model, data.dataset(cfg, "val"))
    assert r["per_image_cm"].shape == (1, 21, 21)
    # every non-void pixel of the 500x375 mask is counted once (full resolution, 255 ignored)
    labels = voc.get_dataset(voc_sample, "val").load(0)[1]
    assert r["per_image_cm"].sum() == (labels != 255).sum()


def test_train_aug_is_voc_train_plus_sbd_minus_voc_val(demo_root, tmp_path):
    """train_aug = VOC train + SBD (its train and val lists) without any VOC val image or duplicate."""
    import shutil

    from scipy.io import savemat

    sbd = tmp_path / "SBD"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    base = demo_root / "VOCdevkit" / "VOC2012"
    new_ids = {"train": ["sbd_00001", "train_00000"], "val": ["val_00000", "sbd_00002"]}
    for split, ids in new_ids.items():
        (sbd / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            src = "train_00001" if i.startswith("sbd") else i
            shutil.copy(base / "JPEGImages" / f"{src}.jpg", sbd / "img" / f"{i}.jpg")
            labels = np.array(Image.open(base / "SegmentationClass" / f"{src}.png"))
            savemat(sbd / "cls" / f"{i}.mat", {"GTcls": {"Segmentation": labels}})
    ds = voc.get_dataset(demo_root, "train_aug", sbd_root=sbd)
    voc_train = voc.get_dataset(demo_root, "train").ids
    assert ds.ids == voc_train + ["sbd_00001", "sbd_00002"]  # val_00000 (VOC val) and the duplicate left out
    img, labels = ds.load(len(ds) - 1)  # an SBD .mat mask, read as class indices
    np.testing.assert_array_equal(labels, np.array(Image.open(base / "SegmentationClass" / "train_00001.png")))


def test_train_aug_without_sbd_says_how_to_get_it(demo_root, tmp_path):
    with pytest.raises(UserError, match="SBD not found .*train_split='train'"):
        voc.get_dataset(demo_root, "train_aug", sbd_root=tmp_path / "nope")


def test_collate_pads_cached_maps_of_different_sizes_without_moving_them():
    """VOC images differ in size, so do their cached maps: padded into one batch (edge repeated,
    geometry rescaled), each map must sample exactly as it does alone, borders and flips included."""
    from helpers.data.transforms import collate_pad, sample_cached

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(21, 5, 7, generator=g).half(), torch.randn(21, 8, 6, generator=g).half()
    ga = torch.tensor([0.25, -1.1, 0.22, -1.05])  # runs past the right and bottom borders
    gb = torch.tensor([-0.2, 0.95, 0.21, -1.0])  # a flipped crop
    img, mask = torch.zeros(3, 10, 10), torch.zeros(10, 10, dtype=torch.int64)
    images, masks, maps, geometry = collate_pad([(img, mask, a, ga), (img, mask, b, gb)])
    assert maps.shape == (2, 21, 8, 7) and maps.dtype == torch.float16 and images.shape == (2, 3, 10, 10)
    together = sample_cached(maps, geometry, (10, 10))
    for k, (m, geo) in enumerate(((a, ga), (b, gb))):
        alone = sample_cached(m[None], geo[None], (10, 10))[0]
        assert torch.allclose(together[k], alone, atol=1e-5), k


@pytest.mark.parametrize("size", [(201, 149), (251, 253)])
@pytest.mark.parametrize("stride", [4, 8])
def test_cached_maps_sample_where_the_online_teacher_looks_for_any_image_size(size, stride):
    """An identity 'teacher' on a ramp image of a size that is no multiple of the stride: the cached
    map (pooled by `stride`), sampled at a random scale/crop/flip, equals the online teacher's output
    on the augmented crop (the crop itself) in the interior, to within uint8 rounding. The map of
    the old pooling (ceil_mode, extent taken as the image's) drifts toward the bottom-right."""
    from helpers.data.transforms import TrainAugment, eval_transform, pool_map, sample_cached

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.stack([255 * xx / (w - 1), 255 * yy / (h - 1), np.full_like(xx, 128.0)], -1)
    image, labels = Image.fromarray(np.round(ramp).astype(np.uint8)), np.zeros((h, w), np.uint8)
    full = eval_transform()(image, labels)[0][None]  # what the teacher pass sees
    aug, level = TrainAugment(64, 90, 220), 1 / 255 / 0.229  # one uint8 step, normalised
    cached, old = pool_map(full, stride)[0], torch.nn.functional.avg_pool2d(full, stride, ceil_mode=True)[0]
    worst, worst_old = 0.0, 0.0
    for s in range(12):
        torch.manual_seed(s)
        crop, mask = aug(image, labels)  # the online teacher's output
        torch.manual_seed(s)
        _, _, soft, geo = aug(image, labels, cached, stride)
        torch.manual_seed(s)
        *_, geo_old = aug(image, labels, old)  # old: map taken to cover the image
        new = sample_cached(soft[None], geo[None], (64, 64))[0]
        was = sample_cached(old[None], geo_old[None], (64, 64))[0]
        # interior: crop pixels that lie 2 strides or more inside the image (not padding)
        ox = (geo[0] * torch.arange(64) + geo[1] + 1) / 2 * stride * soft.shape[-1] - 0.5
        oy = (geo[2] * torch.arange(64) + geo[3] + 1) / 2 * stride * soft.shape[-2] - 0.5
        inside = ((oy > 2 * stride) & (oy < h - 2 * stride))[:, None] & ((ox > 2 * stride) & (ox < w - 2 * stride))[
            None
        ]
        inside &= mask != 255
        assert inside.sum() > 200, s
        worst = max(worst, (new - crop)[:2, inside].abs().max().item() / level)
        worst_old = max(worst_old, (was - crop)[:2, inside].abs().max().item() / level)
    print(f"{size} stride {stride}: worst {worst:.2f} levels, old geometry {worst_old:.2f}")
    assert worst < 1.2  # within rounding of the uint8 image and of its resized crop
    assert worst_old > 2 * worst  # the old geometry is measurably off: the test can tell
