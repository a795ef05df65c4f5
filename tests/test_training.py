"""The training engine on the tiny demo set: it learns, a resumed run ends with the same weights as
an uninterrupted one, the three students differ only in their loss, checkpoints are plain data,
finished models are reused and the teacher is never touched."""

import json

import numpy as np
import pytest
import torch
from conftest import count_epochs

from helpers import training
from helpers.config import Config
from helpers.core.errors import UserError
from helpers.data import loaders as data
from helpers.evaluation import protocol as evaluation
from helpers.models import build_model
from helpers.models import store as runs
from helpers.models import teacher as teachers
from helpers.scale import logit_cache

pytestmark = pytest.mark.slow
STUDENTS = ("baseline", "response", "feature")
KD_PART = {"baseline": None, "response": "kd", "feature": "kd"}


def assert_same_state(a: dict, b: dict, what="state"):
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def test_a_student_overfits_a_handful_of_training_images(tiny_cfg):
    cfg = tiny_cfg.replace(epochs=80, lr=0.02, batch_size=2, scale_min=1.0, scale_max=1.0, monitor_split="")
    train_eval = data.dataset(cfg, cfg.train_split)  # the 12 training images, eval transform
    torch.manual_seed(0)
    untrained = evaluation.evaluate(build_model(cfg.student_arch), train_eval)["miou"]
    model, history = training.fit(cfg, "baseline", progress=False)
    trained = evaluation.evaluate(model, train_eval)["miou"]
    assert untrained < 0.1
    assert trained > 0.5, f"train-split mIoU {trained:.3f} after 80 epochs"  # 0.73 when written
    assert history["loss"][-1] < 0.3 * history["loss"][0]
    assert history["monitor_miou"] == [] and history["monitor_epoch"] == []  # monitor_split="" = none


@pytest.mark.parametrize(
    "method, cached", [(m, False) for m in STUDENTS] + [("response", True)], ids=list(STUDENTS) + ["response-cached"]
)
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_cfg, method, cached, monkeypatch):
    cfg = tiny_cfg.replace(epochs=3, teacher_cache=cached)
    full, _ = training.fit(cfg.replace(run_name="full"), method, progress=False)

    cut = cfg.replace(run_name="cut")
    training.fit(cut, method, progress=False, stop_after_epoch=1)
    state = torch.load(runs.checkpoint_path(cut, method), weights_only=True)
    assert state["epoch"] == 1 and not state["complete"]
    torch.manual_seed(12345)  # whatever the process did meanwhile must not matter
    trained = count_epochs(monkeypatch)
    resumed, history = training.fit(cut, method, progress=False)
    assert trained == [1, 2]  # continued, not started again

    assert_same_state(full.state_dict(), resumed.state_dict(), method)
    a = torch.load(runs.checkpoint_path(cfg.replace(run_name="full"), method), weights_only=True)
    b = torch.load(runs.checkpoint_path(cut, method), weights_only=True)
    assert b["complete"] and b["epoch"] == 3
    if method == "feature":
        assert_same_state(a["adapter"], b["adapter"], "adapter")
    for k in ("loss", "ce", "lr", "monitor_miou"):
        assert a["history"][k] == b["history"][k], k
    assert history["epoch"] == [1, 2, 3]


def test_the_three_students_start_alike_and_see_the_same_batches(tiny_cfg, monkeypatch):
    cfg = tiny_cfg.replace(epochs=1)
    inits, batches = {}, {}
    real_build, real_loss = training.setup.build_model, training.loop.objective
    current = []

    def build(name, *a, **k):
        m = real_build(name, *a, **k)
        if name == cfg.student_arch:
            inits.setdefault(current[-1], {k: v.clone() for k, v in m.state_dict().items()})
        return m

    def loss(method, student_out, target, *a, **k):
        batches.setdefault(current[-1], []).append(target.clone())
        return real_loss(method, student_out, target, *a, **k)

    training.get_teacher(cfg, torch.device("cpu"), progress=False)  # trained (and cached) before recording
    monkeypatch.setattr(training.setup, "build_model", build)
    monkeypatch.setattr(training.loop, "objective", loss)
    for method in STUDENTS + ("seed1",):
        current.append(method)
        if method == "seed1":
            training.fit(cfg, "baseline", seed=1, progress=False)
        else:
            training.fit(cfg, method, progress=False)

    for method in ("response", "feature"):
        assert_same_state(inits["baseline"], inits[method], f"initial weights of {method}")
        assert len(batches[method]) == len(batches["baseline"]) == 3
        for x, y in zip(batches["baseline"], batches[method]):
            assert torch.equal(x, y)  # same order, same augmentation
    # and it is the seed that fixes them: another seed starts elsewhere
    assert not torch.equal(inits["baseline"]["classifier.weight"], inits["seed1"]["classifier.weight"])


@pytest.mark.parametrize("method", ["response", "feature"])
def test_a_checkpoint_is_plain_data_with_config_and_history(tiny_cfg, method):
    training.fit(tiny_cfg, method, progress=False)
    path = runs.checkpoint_path(tiny_cfg, method)
    assert path.parent.name == tiny_cfg.run_name and path.name == f"{method}.pt"
    state = torch.load(path, weights_only=True)  # raises if anything but plain data is inside

    for key in ("model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "history"):
        assert key in state, key
    assert state["epoch"] == tiny_cfg.epochs and state["complete"] and state["method"] == method
    assert state["arch"] == tiny_cfg.student_arch and state["num_classes"] == 21
    assert set(state["model"]) == set(build_model(tiny_cfg.student_arch).state_dict())
    assert state["optimizer"]["state"] and state["optimizer"]["param_groups"]
    assert state["scheduler"]["last_epoch"] == tiny_cfg.epochs * (12 // tiny_cfg.batch_size)
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    assert Config.from_dict(state["config"]) == tiny_cfg

    h = state["history"]
    part = KD_PART[method]
    for key in ("loss", "ce", part, "lr", "time_s"):
        assert len(h[key]) == tiny_cfg.epochs, key
    alpha_or_beta = tiny_cfg.alpha if method == "response" else tiny_cfg.beta
    for loss, ce, kd in zip(h["loss"], h["ce"], h[part]):
        assert loss == pytest.approx(ce + alpha_or_beta * kd, rel=1e-5)
    assert h["monitor_epoch"] == [1, 2] and all(0 <= m <= 1 for m in h["monitor_miou"])
    beside = json.loads(path.with_name(f"{method}_history.json").read_text())
    assert beside == h


def test_a_finished_checkpoint_is_reused_not_retrained(tiny_cfg, monkeypatch):
    model, history = training.fit(tiny_cfg, "baseline", progress=False)
    path = runs.checkpoint_path(tiny_cfg, "baseline")
    stamp = path.stat().st_mtime_ns

    def no_training(*a, **k):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(training.loop, "train_one_epoch", no_training)
    again, history2 = training.fit(tiny_cfg, "baseline", progress=False)
    assert path.stat().st_mtime_ns == stamp
    assert history2 == history
    assert_same_state(model.state_dict(), again.state_dict())
    assert not again.training


@pytest.mark.parametrize("method", ["response", "feature"])
def test_the_teacher_is_frozen(tiny_cfg, monkeypatch, method):
    teacher_file = runs.checkpoint_path(tiny_cfg, "teacher")
    handed = []
    real = training.get_teacher

    def get_teacher(*a, **k):
        t = real(*a, **k)
        handed.append((t, {k: v.clone() for k, v in t.state_dict().items()}, teacher_file.read_bytes()))
        return t

    monkeypatch.setattr(training.teacher, "get_teacher", get_teacher)
    training.fit(tiny_cfg, method, progress=False)

    ((teacher, before, file_bytes),) = handed
    assert teacher_file.parent.name == "teachers" and teacher_file.read_bytes() == file_bytes
    saved = torch.load(teacher_file, weights_only=True)
    assert saved["complete"] and saved["arch"] == tiny_cfg.teacher_arch
    assert saved["epoch"] == tiny_cfg.teacher_epochs
    assert_same_state(saved["model"], before, "teacher as loaded")
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert_same_state(before, teacher.state_dict(), "teacher after distillation")  # BN statistics too


def test_a_checkpoint_trained_with_other_settings_is_not_silently_reused(tiny_cfg, monkeypatch):
    training.fit(tiny_cfg, "baseline", progress=False)
    path = runs.checkpoint_path(tiny_cfg, "baseline")
    stamp = path.stat().st_mtime_ns
    for change in (dict(lr=0.1), dict(epochs=3), dict(crop_size=24)):
        with pytest.raises(UserError, match="was trained with other settings") as e:
            training.fit(tiny_cfg.replace(**change), "baseline", progress=False)
        (key,) = change
        assert f"{key}: {getattr(tiny_cfg, key)!r} in the checkpoint, {change[key]!r} now" in str(e.value)
        assert str(path) in str(e.value) and "run_name" in str(e.value)
    assert path.stat().st_mtime_ns == stamp
    # settings that don't shape a baseline's weights (KD weights, evaluation, device) are fine
    monkeypatch.setattr(training.loop, "train_one_epoch", lambda *a, **k: pytest.fail("retrained"))
    training.fit(tiny_cfg.replace(alpha=0.9, bootstrap_resamples=7, monitor_every=2), "baseline", progress=False)
    # and an unfinished run can't be continued with another learning rate either
    cut = tiny_cfg.replace(run_name="cut")
    monkeypatch.undo()
    training.fit(cut, "response", progress=False, stop_after_epoch=1)
    with pytest.raises(UserError, match=f"temperature: {cut.temperature!r} in the checkpoint, 3.0 now"):
        training.fit(cut.replace(temperature=3.0), "response", progress=False)


def test_cached_teacher_logits_follow_the_augmentation(tiny_cfg):
    """Response KD from cached logits: one teacher pass, then the cached map is scaled, cropped and
    flipped with the image, so its argmax still lines up with the (augmented) ground truth."""
    cfg = tiny_cfg.replace(teacher_cache=True, teacher_epochs=3, scale_min=0.5, scale_max=1.5)
    teacher = training.get_teacher(cfg, torch.device("cpu"), progress=False)
    folder = logit_cache.teacher_cache(cfg, teacher, torch.device("cpu"), progress=False)
    assert json.loads((folder / "complete.json").read_text())["images"] == 12
    plain = data.dataset(cfg, cfg.train_split)
    x, _ = plain[0]
    with torch.inference_mode():
        online = teacher(x[None])[0].argmax(0)
    cache = logit_cache.LogitCache(folder)
    stored = cache[plain.ids[0]].float()
    assert stored.shape[-2:] == (8, 8) and stored.dtype == torch.float32  # 32 / cache_stride 4
    up = torch.nn.functional.interpolate(stored[None], size=x.shape[-2:], mode="bilinear")[0].argmax(0)
    assert (up == online).float().mean() > 0.6  # pooled then upsampled: close to the online teacher
    assert len(cache.row) == 12 and cache.index[:, 1:].tolist() == [[21, 8, 8]] * 12
    assert json.loads((folder / "complete.json").read_text())["format"] == logit_cache.LogitCache.FORMAT


@pytest.mark.parametrize("stride", [1, 4])
def test_cached_maps_are_augmented_with_the_image(demo_root, tmp_path, stride):
    """A 'cache' holding each mask as one-hot maps (at full resolution, or average-pooled by 4 as the
    teacher cache is) must come out of the random scale, crop and flip still lined up with the
    augmented mask (a flip or crop applied to one and not the other fails)."""
    from helpers.data.transforms import sample_cached, train_transform
    from helpers.data.voc import get_dataset

    tf = train_transform(crop_size=28, base_size=32, scale=(0.6, 1.6))
    ds = get_dataset(demo_root, "train", tf)

    def maps():
        for i in range(len(ds)):
            labels = ds.load(i)[1]
            onehot = torch.zeros((21, *labels.shape))
            for c in range(21):
                onehot[c][torch.from_numpy(labels == c)] = 1
            yield ds.ids[i], torch.nn.functional.avg_pool2d(onehot[None], stride, ceil_mode=True)[0].numpy()

    logit_cache.LogitCache.write(tmp_path, maps())
    cached = logit_cache.WithTeacherLogits(ds, tmp_path)
    right, wrong = [], []
    for s in range(8):
        torch.manual_seed(s)
        img, mask, small, geometry = cached[s % len(ds)]
        soft = sample_cached(small[None], geometry[None], mask.shape)[0]
        torch.manual_seed(s)
        img2, mask2 = ds[s % len(ds)]
        assert torch.equal(img, img2) and torch.equal(mask, mask2)  # the cache changes no random draw
        valid = (mask != 255) & (soft.sum(0) > 0.99)
        right.append((soft.argmax(0)[valid] == mask[valid]).float().mean().item())
        assert right[-1] > 0.95  # pixels whose map cell holds no void: the same class
        wrong.append((soft.flip(-1).argmax(0)[valid] == mask[valid]).float().mean().item())
    assert sum(wrong) / 8 < sum(right) / 8 - 0.05  # a map flipped once too often does not line up


def test_logit_cache_reads_back_what_it_wrote_and_names_a_damaged_one(tmp_path):
    import pickle

    import numpy as np

    g = np.random.default_rng(0)
    maps = {"a": g.standard_normal((21, 3, 5)), "b": g.standard_normal((21, 4, 2))}  # VOC: sizes differ
    assert logit_cache.LogitCache.write(tmp_path, maps.items()) == 2
    cache = logit_cache.LogitCache(tmp_path)
    for k, m in maps.items():
        assert torch.equal(cache[k], torch.from_numpy(m.astype(np.float16)))
    copy = pickle.loads(pickle.dumps(cache))  # as a DataLoader worker gets it: opens its own map
    assert copy._data is None and torch.equal(copy["b"], cache["b"])
    with pytest.raises(UserError, match="'c' is not in the teacher-logit cache"):
        cache["c"]
    (tmp_path / "index.npy").write_bytes(b"not an array")
    with pytest.raises(UserError, match="delete the folder"):
        logit_cache.LogitCache(tmp_path)


def test_a_cache_in_the_old_one_file_per_image_format_is_rebuilt(tiny_cfg):
    cfg = tiny_cfg.replace(teacher_cache=True)
    torch.manual_seed(0)
    teacher = teachers.freeze(build_model(cfg.teacher_arch), cfg)
    folder = logit_cache.teacher_cache(cfg, teacher, torch.device("cpu"), progress=False)
    (folder / "logits.f16").unlink()
    (folder / "complete.json").write_text(json.dumps({"images": 12, "stride": 4}))  # format 1
    assert logit_cache.teacher_cache(cfg, teacher, torch.device("cpu"), progress=False) == folder
    assert (folder / "logits.f16").is_file() and len(logit_cache.LogitCache(folder).row) == 12


# --- seeds, batching and the teacher's identity (numbers a reader can trust) -------------------


class _Indexed(torch.utils.data.Dataset):
    """Samples that name themselves: image and mask hold the sample's index."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.full((1, 1, 1), float(i)), torch.full((1, 1), i)


def _epoch(ds, cfg, seed, epoch=0):
    return [b for b in data.epoch_loader(ds, cfg, seed, epoch)]


@pytest.mark.parametrize("workers", [0, 2])
def test_seeds_differ_in_batch_order_and_in_augmentation(tiny_cfg, workers):
    cfg = tiny_cfg.replace(num_workers=workers, batch_size=12)
    order = {s: [b[1].flatten().tolist() for b in _epoch(_Indexed(), cfg, s)] for s in (0, 1)}
    assert order[0] != order[1]  # seed 1 sees another order
    assert order[0] == [b[1].flatten().tolist() for b in _epoch(_Indexed(), cfg, 0)]  # reproducible
    data.prepare_data(cfg, progress=False)
    ds = data.dataset(cfg, cfg.train_split, train=True)

    def drawn(seed):  # each augmented sample, independent of the order: sorted pixel sums
        ((images, _),) = _epoch(ds, cfg, seed)
        return sorted(round(v, 3) for v in images.sum((1, 2, 3)).tolist())

    a = drawn(0)
    assert a == drawn(0)  # the same seed: the same draws
    assert a != drawn(1)  # another seed: other scales, crops and flips
    assert a != sorted(round(v, 3) for v in _epoch(ds, cfg, 0, epoch=1)[0][0].sum((1, 2, 3)).tolist())


def test_the_three_methods_of_one_seed_train_on_identical_batches(tiny_cfg, monkeypatch):
    import hashlib

    seen, current = {}, ["teacher"]
    real = training.loop.objective

    def recording(method, student_out, masks, *a, **k):
        seen.setdefault(current[0], []).append(hashlib.sha1(masks.cpu().numpy().tobytes()).hexdigest())
        return real(method, student_out, masks, *a, **k)

    monkeypatch.setattr(training.loop, "objective", recording)
    cfg = tiny_cfg.replace(seed=3, scale_min=0.5, scale_max=1.5)
    training.get_teacher(cfg, torch.device("cpu"), progress=False)
    for method in ("baseline", "response", "feature"):
        current[0] = method
        training.fit(cfg, method, progress=False)
    current[0] = "cached"
    training.fit(cfg.replace(run_name="c", teacher_cache=True), "response", progress=False)
    assert len(seen["baseline"]) == 2 * (12 // 4)
    assert seen["baseline"] == seen["response"] == seen["feature"] == seen["cached"]
    current[0] = "other seed"
    training.fit(cfg, "baseline", seed=4, progress=False)
    assert seen["other seed"] != seen["baseline"]


class _MixedSizes(torch.utils.data.Dataset):
    sizes = [(40, 56), (56, 40), (40, 56), (48, 48), (40, 56), (56, 40), (48, 48), (40, 56), (33, 47)]

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.items = [
            (torch.randn(3, h, w, generator=g) + 0.5, torch.randint(0, 21, (h, w), generator=g)) for h, w in self.sizes
        ]
        self.ids = [f"im{i}" for i in range(len(self.items))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _GlobalContext(torch.nn.Module):
    """Per-pixel logits plus a global-average-pooled context branch, as ASPP and LR-ASPP have."""

    def __init__(self):
        super().__init__()
        self.local, self.context = torch.nn.Conv2d(3, 21, 3, padding=1), torch.nn.Conv2d(3, 21, 1)

    def forward(self, x):
        return self.local(x) + self.context(x.mean((2, 3), keepdim=True))


def test_evaluation_does_not_depend_on_which_images_share_a_batch():
    """A global-pooling branch sees zero padding (what batching mixed sizes used to do) and changes
    its predictions; evaluation groups only equal sizes, and equals batch-1 evaluation exactly."""
    from helpers.data.transforms import collate_pad

    torch.manual_seed(0)
    model, ds = _GlobalContext().eval(), _MixedSizes()
    one = evaluation.evaluate(model, ds, batch_size=1)
    assert (one["per_image_cm"].sum((0, 1)) > 0).sum() > 10  # varied predictions
    for bs in (2, 4, 16):
        batched = evaluation.evaluate(model, ds, batch_size=bs)
        assert np.array_equal(batched["per_image_cm"], one["per_image_cm"]), bs
        assert batched["ids"] == ds.ids
    images, _ = collate_pad([ds[i] for i in range(len(ds))])  # the old way: one padded canvas
    padded = evaluation.predict(model, images, "cpu")[1, :56, :40]
    assert (padded != evaluation.predict(model, ds[1][0][None], "cpu")[0]).float().mean() > 0.05


def test_the_teachers_evaluation_cache_is_keyed_by_the_teacher_itself(tiny_cfg, tmp_path):
    from helpers.core import checkpoint

    path = tmp_path / "t.pt"
    state = {"method": "teacher", "arch": "compact_s", "num_classes": 21}
    torch.manual_seed(0)
    checkpoint.save({**state, "model": build_model("compact_s").state_dict()}, path)
    cfg = tiny_cfg.replace(teacher_weights=str(path), teacher_arch="compact_s")
    first = teachers.teacher_identity(cfg)
    assert first == teachers.teacher_identity(cfg)
    checkpoint.save({**state, "model": build_model("compact_s").state_dict()}, path)  # other weights
    assert teachers.teacher_identity(cfg) != first
    tv = tiny_cfg.replace(teacher_arch="deeplabv3_resnet101", teacher_weights="torchvision", teacher_epochs=0)
    assert teachers.teacher_identity(tv) == "deeplabv3_resnet101-torchvision-COCO_WITH_VOC_LABELS_V1"
    assert teachers.teacher_identity(tiny_cfg) == tiny_cfg.teacher_key()
    with pytest.raises(UserError, match="can't be read"):
        teachers.teacher_identity(cfg.replace(teacher_weights=str(tmp_path / "missing.pt")))
