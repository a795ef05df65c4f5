"""`python -m helpers bench`: where the time goes (training throughput, KD overhead, data waiting)
and inference latency.

`python -m helpers bench` calls `main`, which measures in ONE process and writes bench.json:

1. Training steps on synthetic batches (random images, random masks with ~10 % void, so data
   loading is excluded), each kind through `training.train_one_epoch` itself:
   - baseline:        CE only (no teacher);
   - response:        the online teacher runs on every batch (`forward_features`, as in training);
   - response_cached: the teacher's logits come with the batch, as `teachers.WithTeacherLogits`
                      provides them (fp16 maps at 1/cache_stride and each crop's geometry),
                      and are sampled at the crops in the step;
   - feature:         the online teacher's feature map (its head skipped) + the student's adapter;
   plus the teacher's full inference on the same batches (logits and feature).
   Warm-up first, then `rounds` rounds round-robin over the kinds (order reversed every other
   round), `steps` steps per kind and round; a kind's step time is the median over rounds, so a
   drift of the machine hits every kind alike. Derived:
   kd_overhead[k] = step[k] / step[baseline];
   efficiency[k]  = (step[baseline] + teacher forward per batch) / step[k] for response and
   feature: 1.0 means KD costs the student step plus one teacher forward and nothing more.
2. The share of a real training step spent waiting for data: a short baseline run over the
   preset's training split through `data.loader`, with `next()` on the loader timed inside the
   loop, for each `num_workers` setting (the first step, which starts the workers, is excluded).
3. Real epochs (`cached_epochs`): over the first `epoch_images` training images, the one-time
   teacher pass that caches their logits, then baseline and cached-response epochs through
   `data.loader` (real files, augmentation, cfg.batch_size, cfg.crop_size), interleaved; the
   ratio cached / baseline is the cost of response KD once the teacher is out of the loop.
4. Batch-1 inference latency of student and teacher at `image_size`: eager fp32 and the faster
   paths of `costs.optimize_for_inference` (fused, jit; int8 for a compact (plain conv) student
   on CPU, kept only if its agreement is at least `int8_min_agreement`), interleaved by
   `costs.latency`, with GFLOPs and achieved GFLOP/s (the fp32 model's FLOPs / latency), and
   `costs.argmax_agreement` of every faster path with eager fp32 on real validation images
   (eval_split through `data.dataset`). The paths are built by the same function as the
   comparison table's latency column (`compare.compare`), so each agreement is that of the path
   the table times with that `inference_path`. GFLOPs as `costs.FLOP_CONVENTION` states.
5. On CUDA: the peak memory of each step kind (bf16/fp16 autocast when cfg.amp, as in training).

Weights: a finished checkpoint of the preset's run (baseline student, teacher) is used when one
exists, otherwise random initialisation (enough for throughput; nothing is downloaded).
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch

from . import costs, runs, runtime, teachers, voc
from . import data as datasets
from .config import Config, from_preset
from .errors import UserError
from .models import CompactSegNet, build_model
from .throughput import STEP_KINDS, cached_epochs, data_wait, synthetic_batches, training_throughput


# --- configuration and models ---------------------------------------------------------------------

def make_config(preset: str | None = "demo", overrides: dict | None = None, device: str = "cpu") -> Config:
    """The preset's Config with `overrides` (e.g. data_root, checkpoints_dir) and `device` applied."""
    return from_preset(preset, {**(overrides or {}), "device": device})


def _load_or_build(cfg: Config, method: str, arch: str) -> tuple[torch.nn.Module, str]:
    """A finished checkpoint of `method` with this architecture if there is one, else a random init."""
    path = runs.checkpoint_path(cfg, method)
    if path.is_file():
        try:
            model, state = runs.load_model(path)
            if state.get("complete") and state.get("arch") == arch:
                return model, str(path)
        except UserError:
            pass
    torch.manual_seed(cfg.seed)
    return build_model(arch, voc.NUM_CLASSES).eval(), "random init"



# --- inference ------------------------------------------------------------------------------------

def _real_images(cfg: Config, split: str, n: int) -> list[torch.Tensor]:
    ds = datasets.dataset(cfg, split)  # eval transform: full resolution, normalised
    return [ds[i][0][None] for i in range(min(n, len(ds)))]


def inference(student, teacher, cfg: Config, device: torch.device, image_size: int, threads: int,
              rounds: int = 3, min_run_time: float = 0.2, images: int = 4, int8: bool = True,
              int8_min_agreement: float = 0.98) -> dict:
    """Batch-1 latency of every inference path, GFLOPs, GFLOP/s and argmax agreement with eager."""
    size = (1, 3, image_size, image_size)
    val = _real_images(cfg, cfg.eval_split, images)
    models, agreement, notes, flops = {}, {}, [], {}
    for role, net in (("student", student), ("teacher", teacher)):
        net = net.to(device).eval()
        flops[role] = costs.gflops(net, size)
        eager = costs.optimize_for_inference(net, "eager", size)
        models[f"{role}/eager"] = eager
        paths = ["fused", "jit"]
        if role == "student" and int8:
            if device.type != "cpu":
                notes.append("int8 skipped: CPU only")
            elif not isinstance(net, CompactSegNet):
                notes.append(f"int8 skipped: {cfg.student_arch} is not a plain conv net")
            else:
                paths.append("int8")
        for path in paths:
            calib = _real_images(cfg, cfg.train_split, 8) if path == "int8" else None
            try:
                fast = costs.optimize_for_inference(net, path, size, calibration=calib)
            except UserError as e:
                notes.append(f"{role}/{path} skipped: {e}")
                continue
            name = f"{role}/{path}"
            agreement[name] = costs.argmax_agreement(eager, fast, val)
            if path == "int8" and agreement[name] < int8_min_agreement:
                notes.append(f"{name}: agreement {agreement[name]:.4f} < {int8_min_agreement}, not timed")
                continue
            models[name] = fast
    lat = costs.latency(models, size, device=str(device), rounds=rounds, min_run_time=min_run_time,
                        threads=threads)
    latency_ms = {k: {"mean": v["mean_ms"], "std": v["std_ms"]} for k, v in lat.items()}
    per_s = {k: flops[k.split("/")[0]] / (v["mean"] / 1e3) for k, v in latency_ms.items()}
    return {"latency_ms": latency_ms, "gflops": flops, "gflop_per_s": per_s, "argmax_agreement": agreement,
            "agreement_images": len(val), "agreement_split": cfg.eval_split, "notes": notes}


# --- the whole bench ------------------------------------------------------------------------------

def main(device: str = "cpu", image_size: int = 64, batch_size: int = 16, out="reports/bench.json",
         preset: str | None = "demo", overrides: dict | None = None, *, rounds: int = 6, steps: int = 4,
         warmup: int = 2, data_steps: int = 10, workers=(0, 1, 2), epoch_images: int = 320,
         epoch_rounds: int = 3, latency_rounds: int = 3,
         latency_min_time: float = 0.2, agreement_images: int = 4, int8: bool = True,
         int8_min_agreement: float = 0.98, threads: int | None = None, verbose: bool = True) -> dict:
    """Run the bench (see the module docstring), write `out` (JSON) and print a table.

    `overrides` are Config values applied over the preset (tests pass data_root, checkpoints_dir).
    The defaults take about a minute on 2 idle cores with the demo preset at 64 x 64, batch 16;
    raise `rounds`, `steps` and `latency_min_time` for steadier numbers. Returns the written dict.
    """
    if image_size < 8 or batch_size < 1 or rounds < 1 or steps < 1 or data_steps < 1:
        raise UserError(f"bench: need image_size >= 8, batch_size >= 1, rounds >= 1, steps >= 1, "
                        f"data_steps >= 1 (got {image_size}, {batch_size}, {rounds}, {steps}, {data_steps}).")
    cfg = make_config(preset, overrides, device)
    dev = runtime.resolve_device(cfg.device)
    malloc_tuned = runtime.keep_freed_memory()
    threads = int(threads or torch.get_num_threads())
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    try:
        datasets.prepare_data(cfg, progress=verbose)
        student, student_src = _load_or_build(cfg, "baseline", cfg.student_arch)
        teacher, teacher_src = _load_or_build(cfg, "teacher", cfg.teacher_arch)
        train_teacher = teachers.freeze(copy.deepcopy(teacher).to(dev), cfg)
        _log(verbose, f"bench: {cfg.student_arch} student, {cfg.teacher_arch} teacher, {dev}, {threads} threads")

        _log(verbose, "bench: training steps (synthetic batches, interleaved) ...")
        train = training_throughput(student, train_teacher, cfg, dev, image_size, batch_size, rounds, steps, warmup)
        _log(verbose, "bench: data loading ...")
        data = data_wait(student, cfg, dev, batch_size, workers, data_steps)
        epochs = None
        if epoch_images > 0:
            _log(verbose, f"bench: real epochs, baseline and cached response KD ({epoch_images} images) ...")
            epochs = cached_epochs(student, train_teacher, cfg, dev, epoch_images, epoch_rounds)
        del train_teacher
        _log(verbose, "bench: inference paths ...")
        inf = inference(student, teacher, cfg, dev, image_size, threads, latency_rounds, latency_min_time,
                        agreement_images, int8, int8_min_agreement)
    finally:
        torch.set_num_threads(old_threads)

    step = {k: v["median"] / 1e3 for k, v in train["step_ms"].items()}  # seconds per batch
    _, amp_dtype = runtime.autocast(dev, cfg)
    result = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "image_size": image_size, "batch_size": batch_size, "threads": threads,
        "preset": preset, "torch": torch.__version__,
        "models": {"student": cfg.student_arch, "teacher": cfg.teacher_arch},
        "weights": {"student": student_src, "teacher": teacher_src},
        "train_dtype": str(amp_dtype).replace("torch.", ""),
        "freed_memory_kept": malloc_tuned,
        "rounds": rounds, "steps_per_round": steps,
        "step_ms": train["step_ms"],
        "train_images_per_s": {k: batch_size / step[k] for k in STEP_KINDS},
        "teacher_images_per_s": batch_size / step["teacher"],
        "kd_overhead": {k: step[k] / step["baseline"] for k in STEP_KINDS if k != "baseline"},
        "efficiency": {k: (step["baseline"] + step["teacher"]) / step[k] for k in ("response", "feature")},
        "data_wait_share": {k: v["share"] for k, v in data.items()},
        "data_wait": data,
        "cached_epoch": epochs,
        **{k: inf[k] for k in ("latency_ms", "gflops", "gflop_per_s", "argmax_agreement", "agreement_images",
                               "agreement_split")},
        "flop_convention": costs.FLOP_CONVENTION,
        "cuda_peak_mem_mb": ({k: v for k, v in train["peaks"].items()} if dev.type == "cuda" else None),
        "notes": inf["notes"] + _data_notes(data, data_steps),
        "seconds": time.perf_counter() - t_start,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if verbose:
        print(format_table(result))
        print(f"\nwritten to {out}")
    return result


def _data_notes(data: dict, steps: int) -> list[str]:
    per_epoch = next(iter(data.values()))["batches_per_epoch"] if data else steps + 1
    if per_epoch > steps:
        return []
    return [f"the training split holds {per_epoch} batch(es) per epoch: the data-wait steps cross "
            "epochs, and workers restart at each (persistent_workers=False), so wait shares with "
            "workers are pessimistic here"]


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(msg, flush=True)


def format_table(r: dict) -> str:
    """A plain-text summary of a bench result."""
    f = lambda x: "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"  # noqa: E731
    lines = [f"{r['models']['student']} student / {r['models']['teacher']} teacher on {r['device_name']}, "
             f"{r['threads']} threads, torch {r['torch']}, training in {r['train_dtype']}",
             f"\ntraining step, batch {r['batch_size']} x {r['image_size']}x{r['image_size']} "
             f"(synthetic, median of {r['rounds']} interleaved rounds)",
             f"{'kind':<17}{'ms/step':>10}{'±std':>8}{'img/s':>9}{'x baseline':>12}{'efficiency':>12}"
             + (f"{'peak MB':>10}" if r["cuda_peak_mem_mb"] else "")]
    for k in STEP_KINDS + ("teacher",):
        s = r["step_ms"][k]
        ips = r["teacher_images_per_s"] if k == "teacher" else r["train_images_per_s"][k]
        ovh = 1.0 if k == "baseline" else r["kd_overhead"].get(k)
        name = "teacher forward" if k == "teacher" else k
        line = (f"{name:<17}{s['median']:>10.1f}{s['std']:>8.1f}{ips:>9.0f}{f(ovh) if ovh else '-':>12}"
                f"{f(r['efficiency'].get(k)):>12}")
        if r["cuda_peak_mem_mb"]:
            line += f"{r['cuda_peak_mem_mb'][k]:>10.0f}"
        lines.append(line)
    lines.append("efficiency = (baseline step + teacher forward) / KD step (goal >= 0.9)")
    lines.append("\nwaiting for data (real training split, data.loader, baseline steps)")
    lines.append(f"{'setting':<12}{'wait share':>11}{'wait ms':>9}{'step ms':>9}{'1st batch ms':>14}")
    for k, v in r["data_wait"].items():
        lines.append(f"{k:<12}{v['share']:>11.1%}{v['wait_ms']:>9.1f}{v['step_ms']:>9.1f}{v['first_batch_ms']:>14.0f}")
    ce = r.get("cached_epoch")
    if ce:
        lines.append(f"\nreal epochs over {ce['images']} training images, batch {ce['batch_size']}, "
                     f"num_workers {ce['num_workers']} (median of {ce['rounds']} interleaved)")
        lines.append(f"teacher pass filling the logit cache: {ce['cache_pass_s']:.2f} s (once)")
        lines.append(f"baseline epoch {ce['epoch_s']['baseline']:.2f} s, cached response-KD epoch "
                     f"{ce['epoch_s']['response_cached']:.2f} s: x{ce['ratio']:.2f} (goal <= 1.2)")
    lines.append(f"\ninference, batch 1 x {r['image_size']}x{r['image_size']} "
                 f"(GFLOPs: student {r['gflops']['student']:.3g}, teacher {r['gflops']['teacher']:.3g})")
    lines.append(r.get("flop_convention", costs.FLOP_CONVENTION))
    lines.append(f"agreement: argmax vs eager fp32 on {r['agreement_images']} real {r.get('agreement_split', 'val')} "
                 "images; every path built by costs.optimize_for_inference, as the table's latency column")
    lines.append(f"{'model/path':<17}{'ms':>9}{'±std':>8}{'GFLOP/s':>10}{'agreement':>11}")
    for k, v in r["latency_ms"].items():
        agr = r["argmax_agreement"].get(k)
        lines.append(f"{k:<17}{v['mean']:>9.2f}{v['std']:>8.2f}{r['gflop_per_s'][k]:>10.1f}"
                     f"{'ref' if agr is None else f'{agr:.4f}':>11}")
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


def distributed_main(device: str = "cpu", image_size: int = 64, batch_size: int = 16, out="reports/bench_ddp.json",
                     preset: str | None = "demo", overrides: dict | None = None, *, steps: int = 6, warmup: int = 2,
                     verbose: bool = True) -> dict | None:
    """`torchrun --nproc-per-node N -m helpers bench`: data-parallel training throughput of the baseline
    student on synthetic batches. `batch_size` is the global batch (each rank trains batch_size / N
    images per step through DDP, as `training.fit` under torchrun). Rank 0 first times the same
    per-process step alone without DDP (the others wait), then all ranks time DDP steps; reported:
    per-process and total images/s, and the scaling efficiency total / (N x the lone process's
    images/s at the same per-process batch: weak scaling, 1.0 = no cost of the gradient averaging).
    Rank 0 writes `out` and prints; the others return None."""
    import torch.distributed as dist

    from . import distributed
    from .training import make_optimizer, train_one_epoch

    cfg = make_config(preset, overrides, device)
    ctx = distributed.setup(cfg.device)
    local = distributed.per_process_batch(batch_size, ctx.world_size)
    batches, _ = synthetic_batches(warmup + steps, local, image_size, seed=ctx.rank)

    def run(net, data, together: bool) -> float:
        opt = make_optimizer(net.parameters(), cfg, cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        train_one_epoch(net, None, None, data[:warmup], opt, sched, runtime.make_scaler(ctx.device, cfg),
                        "baseline", cfg, ctx.device, 0, progress=False)
        runtime.sync(ctx.device)
        if together:
            dist.barrier()
        t0 = time.perf_counter()
        train_one_epoch(net, None, None, data[warmup:], opt, sched, runtime.make_scaler(ctx.device, cfg),
                        "baseline", cfg, ctx.device, 0, progress=False)
        runtime.sync(ctx.device)
        return local * steps / (time.perf_counter() - t0)

    torch.manual_seed(cfg.seed)
    single = None
    if ctx.main:
        single = run(build_model(cfg.student_arch, voc.NUM_CLASSES).to(ctx.device), [
            (x, m) for x, m in batches], False) if ctx.active else None
    if ctx.active:
        dist.barrier()  # (the other ranks wait while rank 0 measures alone)
    torch.manual_seed(cfg.seed)
    net = distributed.wrap(build_model(cfg.student_arch, voc.NUM_CLASSES).to(ctx.device), ctx, sync_bn=cfg.sync_bn)
    mine = run(net, batches, ctx.active)
    per_process = [mine]
    if ctx.active:
        t = torch.tensor([mine], dtype=torch.float64, device=ctx.device)
        gathered = [torch.zeros_like(t) for _ in range(ctx.world_size)]
        dist.all_gather(gathered, t)
        per_process = [float(g.item()) for g in gathered]
    if not ctx.main:
        return None
    total = sum(per_process)
    result = {"device": str(ctx.device), "backend": ctx.backend, "world_size": ctx.world_size,
              "global_batch": batch_size, "per_process_batch": local, "image_size": image_size,
              "student": cfg.student_arch, "steps": steps, "threads_per_process": torch.get_num_threads(),
              "per_process_images_per_s": per_process, "total_images_per_s": total,
              "single_process_images_per_s": single,
              "scaling_efficiency": total / (ctx.world_size * single) if single else None}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if verbose:
        eff = result["scaling_efficiency"]
        print(f"data-parallel training ({ctx.world_size} processes, {ctx.backend}, {ctx.device.type}), "
              f"{cfg.student_arch}, global batch {batch_size} ({local} per process) x {image_size}x{image_size}")
        for r, v in enumerate(per_process):
            print(f"rank {r}: {v:.1f} images/s")
        print(f"total: {total:.1f} images/s; one process alone (batch {local}): "
              f"{single:.1f} images/s; scaling efficiency {eff:.2f}" if single else f"total: {total:.1f} images/s")
        print(f"written to {out}")
    return result
