"""Training-side measurements for the bench: step throughput per method (the KD overhead), real
epochs of the baseline against cached-logit response KD, and the time a step waits for data.

Timings of several jobs are taken interleaved round-robin in one process (`interleaved`), so a
machine's drift (other load, clocks) spreads evenly over the jobs compared.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time

import torch

from .. import kd
from ..config.knobs import Config
from ..core import runtime
from ..data import loaders as datasets
from ..data import voc
from ..scale import logit_cache
from ..training import loop, setup
from ..training.teacher import TeacherFeed


def step_kinds(cfg: Config) -> tuple[str, ...]:
    """The training steps the bench times: every method of the run's `students`, and "<method>_cached"
    for each one that reads only the teacher's logits (its maps come with the batch)."""
    kinds = []
    for name in cfg.students:
        kinds += [name] + ([f"{name}_cached"] if kd.get(name).teacher == "logits" else [])
    return tuple(kinds)


def _method(kind: str) -> str:
    return kind.removesuffix("_cached")


def trainee(kind: str, student: torch.nn.Module, teacher, cfg: Config, device: torch.device) -> loop.Trainee:
    """One step kind's student (own copy, same init), adapter, teacher feed, optimizer and scaler, set up
    as `training.fit` does (constant learning rate: the schedule's cost is the same)."""
    method = kd.get(_method(kind))
    model = copy.deepcopy(student).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    adapter = setup.initial_adapter(model, teacher, cfg.seed).to(device) if method.adapter else None
    feed = (
        None
        if method.teacher is None
        else TeacherFeed(method.name, None if kind.endswith("_cached") else teacher, device)
    )
    params = list(model.parameters()) + (list(adapter.parameters()) if adapter else [])
    optimizer = setup.make_optimizer(params, cfg, cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    return loop.Trainee(
        method.name, kind, cfg, device, model, adapter, feed, optimizer, scheduler, runtime.make_scaler(device, cfg), 1
    )


def run(trainee: loop.Trainee, batches) -> dict:
    """`training.train_one_epoch` over `batches` (any iterable of (images, masks[, cached maps, geometry]))."""
    return loop.train_one_epoch(trainee, batches, 0, progress=False)


def teacher_forward(teacher, batches, cfg: Config, device: torch.device) -> None:
    """The teacher's inference as online response KD runs it in `training.train_one_epoch` (full
    forward: logits and feature), per batch: the reference for `efficiency`. Feature KD skips the
    teacher's head (`logits=False`), so its step can cost less than this bound, and its
    efficiency can exceed 1."""
    amp_ctx, _ = runtime.autocast(device, cfg)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for images, *_ in batches:
        images = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
        with torch.inference_mode(), amp_ctx:
            teacher.forward_features(images)


# --- synthetic batches and interleaved timing -----------------------------------------------------


def synthetic_batches(
    n: int,
    batch_size: int,
    image_size: int,
    num_classes: int = voc.NUM_CLASSES,
    void_fraction: float = 0.1,
    seed: int = 0,
    pin: bool = False,
    cache_stride: int = 4,
) -> tuple[list, list]:
    """`n` batches (images (B, 3, S, S) ~ N(0, 1), masks (B, S, S) int64 with ~void_fraction 255)
    and the same batches with the two items of a cached-logits batch: fake teacher maps (B, C,
    S/cache_stride, S/cache_stride) fp16 and each crop's geometry (B, 4), here the whole image."""
    g = torch.Generator().manual_seed(seed)
    small = -(-image_size // cache_stride)
    whole = torch.tensor([2 / image_size, 1 / image_size - 1] * 2).expand(batch_size, 4).contiguous()
    plain, cached = [], []
    for _ in range(n):
        images = torch.randn(batch_size, 3, image_size, image_size, generator=g)
        masks = torch.randint(0, num_classes, (batch_size, image_size, image_size), generator=g)
        masks[torch.rand(masks.shape, generator=g) < void_fraction] = voc.IGNORE_INDEX
        maps = (2 * torch.randn(batch_size, num_classes, small, small, generator=g)).half()
        geometry = whole.clone()
        if pin:
            images, masks, maps, geometry = (t.pin_memory() for t in (images, masks, maps, geometry))
        plain.append((images, masks))
        cached.append((images, masks, maps, geometry))
    return plain, cached


def interleaved(jobs: dict, rounds: int, device: torch.device, per_call: int = 1) -> tuple[dict, dict]:
    """Time each zero-argument callable in `jobs` once per round, round-robin (order reversed every
    other round). Returns ({name: [seconds per unit, one per round]}, {name: CUDA peak MB or None})."""
    names, times = list(jobs), {k: [] for k in jobs}
    peaks = {k: None for k in jobs}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runtime.sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            jobs[name]()
            runtime.sync(device)
            times[name].append((time.perf_counter() - t0) / per_call)
            if device.type == "cuda":
                mb = torch.cuda.max_memory_allocated(device) / 2**20
                peaks[name] = max(peaks[name] or 0.0, mb)
    return times, peaks


def _stats_ms(seconds: list[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {
        "median": statistics.median(ms),
        "mean": statistics.fmean(ms),
        "std": statistics.stdev(ms) if len(ms) > 1 else 0.0,
    }


def training_throughput(
    student,
    teacher,
    cfg: Config,
    device: torch.device,
    image_size: int,
    batch_size: int,
    rounds: int = 5,
    steps: int = 3,
    warmup: int = 2,
) -> dict:
    """Step times of every kind and the teacher's inference, measured interleaved (see module doc)."""
    plain, cached = synthetic_batches(max(steps, warmup), batch_size, image_size, pin=device.type == "cuda")
    trainees = {k: trainee(k, student, teacher, cfg, device) for k in step_kinds(cfg)}

    def job(kind, n):
        data = cached[:n] if kind.endswith("_cached") else plain[:n]
        if kind == "teacher":
            return lambda: teacher_forward(teacher, data, cfg, device)
        return lambda: run(trainees[kind], data)

    kinds = (*step_kinds(cfg), "teacher")
    if warmup:
        interleaved({k: job(k, warmup) for k in kinds}, 1, device, warmup)
    times, peaks = interleaved({k: job(k, steps) for k in kinds}, rounds, device, steps)
    return {"step_ms": {k: _stats_ms(v) for k, v in times.items()}, "peaks": peaks}


# --- real epochs: baseline against response KD from cached logits ---------------------------------


def cached_epochs(
    student, teacher, cfg: Config, device: torch.device, images: int = 320, rounds: int = 3, method: str = "response"
) -> dict:
    """The cached path end to end on real data: the first `images` images of the training split,
    one teacher pass caching their logits (timed; into a temporary folder), then whole epochs over
    them (`data.loader` with cfg.batch_size and cfg.num_workers, augmentation included) of the
    baseline and of `method` (one that reads only logits) from the cache, interleaved `rounds` times;
    medians in seconds."""
    import tempfile

    train = datasets.dataset(cfg, cfg.train_split, train=True)
    plain = datasets.dataset(cfg, cfg.train_split)
    n = min(images, len(train))
    bs = min(cfg.batch_size, n)
    subset = voc.SegDataset(train.items[:n], train.transform)
    with tempfile.TemporaryDirectory(prefix="kd-bench-cache-") as tmp:
        done = logit_cache.write_logit_cache(
            voc.SegDataset(plain.items[:n], plain.transform), teacher, tmp, cfg.cache_stride, device, progress=False
        )
        cached = logit_cache.WithTeacherLogits(subset, tmp)
        kinds = ("baseline", f"{method}_cached")
        trainees = {k: trainee(k, student, None, cfg, device) for k in kinds}
        data = {kinds[0]: subset, kinds[1]: cached}
        jobs = {k: (lambda k=k: run(trainees[k], datasets.loader(data[k], cfg, True, 0, bs))) for k in trainees}
        times, _ = interleaved(jobs, rounds, device)
    epoch_s = {k: statistics.median(v) for k, v in times.items()}
    return {
        "images": n,
        "batch_size": bs,
        "rounds": rounds,
        "num_workers": cfg.num_workers,
        "cache_pass_s": done["seconds"],
        "epoch_s": epoch_s,
        "method": method,
        "ratio": epoch_s[kinds[1]] / epoch_s["baseline"],
    }


# --- data waiting ---------------------------------------------------------------------------------


def _timed(batches, marks: list):
    """Yield from `batches`, appending (t before next(), t after next() or None at the end)."""
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            marks.append((t0, None))
            return
        marks.append((t0, time.perf_counter()))
        yield b


def _epochs(ds, cfg: Config, batch_size: int):
    for epoch in itertools.count():
        yield from datasets.loader(ds, cfg, True, epoch, batch_size=batch_size)


def data_wait(student, cfg: Config, device: torch.device, batch_size: int, workers=(0, 1, 2), steps: int = 8) -> dict:
    """Per num_workers: `steps` baseline training steps on the real training split (`data.loader`,
    `training.train_one_epoch`) after one start-up step (which starts the workers and is left out;
    its wait is "first_batch_ms"), with the time spent in the loader's next() measured. Epochs
    follow each other as in training (workers restart at each epoch: persistent_workers=False)."""
    ds = datasets.dataset(cfg, cfg.train_split, train=True)
    bs = min(batch_size, len(ds))
    out = {}
    for nw in workers:
        c = cfg.replace(num_workers=int(nw))
        marks: list = []
        run(
            trainee("baseline", student, None, c, device),
            _timed(itertools.islice(_epochs(ds, c, bs), steps + 1), marks),
        )
        runtime.sync(device)
        wait = [b - a for a, b in marks[:-1]]
        step = [marks[i + 1][0] - marks[i][0] for i in range(len(marks) - 1)]
        out[f"workers={nw}"] = {
            "share": sum(wait[1:]) / sum(step[1:]),
            "wait_ms": 1e3 * statistics.fmean(wait[1:]),
            "step_ms": 1e3 * statistics.fmean(step[1:]),
            "first_batch_ms": 1e3 * wait[0],
            "steps": len(step) - 1,
            "batch_size": bs,
            "crop_size": cfg.crop_size,
            "batches_per_epoch": len(ds) // bs,
        }
    return out
