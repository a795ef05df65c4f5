"""What each command does: the same functions the notebooks call (the parser is in cli/__init__.py).

Parameters given as `-p NAME VALUE` that are relative paths mean the project root, as in the notebooks;
the options that name a file or folder (--out, --checkpoint, ...) are read from the working directory.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import UserError


def params(pairs) -> dict:
    """{name: value} from `-p NAME VALUE` pairs, each value read as YAML."""
    from ..config.presets import parse_value

    return {name: parse_value(value) for name, value in (pairs or [])}


def run_config(preset: str | None, pairs, run_name: str | None = None, **explicit):
    """The run's Config as a notebook would build it (config/study.py): the preset, or the run's recorded
    settings when no preset is given, then -p overrides, then explicit flags."""
    from ..config.study import resolve

    values = {**params(pairs), **{k: v for k, v in explicit.items() if v is not None}}
    return resolve(preset, run_name, values)[0]


@contextmanager
def distributed_job(device: str):
    """Under torchrun: the process group for the command (gloo on CPU, nccl on CUDA), a failing rank ending
    the whole job (scale.distributed.fail_together), teardown at the end. Else one process, as before."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield None
        return
    from ..scale import distributed

    job = distributed.setup(device)
    with distributed.fail_together(job):
        yield job
        distributed.teardown(job)


def device_of(preset, pairs) -> str:
    """The device a command's run asks for (for the process group's backend), without resolving the run."""
    values = params(pairs)
    if "device" in values:
        return str(values["device"])
    try:
        from ..config.presets import load_preset

        return str(load_preset(preset or "demo").get("device", "auto"))
    except Exception:  # noqa: BLE001 - the command itself reports a bad preset
        return "auto"


def cmd_run(a):
    from ..report.runner import run

    run(
        a.preset,
        out_dir=a.out.resolve() if a.out else None,
        overrides=params(a.param),
        force=a.force,
        extra_notebooks=a.with_notebook or (),
    )


def cmd_train(a):
    with distributed_job(device_of(a.preset, a.param)) as job:
        _train(a, job)


def _train(a, job):
    from .. import kd, training
    from ..config.study import read_record, record
    from ..models import checkpoint_path
    from ..scale.jobs import SIDE_BY_SIDE
    from ..scale.torchrun import CHILD, EPOCH_LINES

    main = job is None or job.main
    cfg = run_config(a.preset, a.param, epochs=a.epochs, batch_size=a.batch_size, force=True if a.force else None)
    if a.method != "teacher":
        kd.get(a.method)  # (after the run's method files are imported: a did-you-mean for a typo)
    elif a.epochs is not None:
        cfg = cfg.replace(teacher_epochs=a.epochs, epochs=cfg.epochs)
    if cfg.force and a.resume:
        raise UserError("--resume continues a checkpoint and --force (force=True) deletes it: give one of them.")
    seeds = _seeds(cfg, a)
    if main and os.environ.get(CHILD) != "1":  # (a job of a batch leaves the run's record to its parent)
        record(cfg, a.preset or (read_record(cfg.checkpoints_dir, cfg.run_name) or {}).get("preset"), "cli")
    _forget_or_refuse(cfg, a, seeds, job)
    progress = not a.no_progress and os.environ.get(EPOCH_LINES) != "1"
    if len(seeds) > 1 and job is None:  # every seed: side by side as `jobs` says, the rest here
        waiting = [s for s in seeds if not (training.read(checkpoint_path(cfg, a.method, s)) or {}).get("complete")]
        cfg = training.side_by_side(cfg, [training.Job(cfg, a.method, s) for s in waiting], progress, len(seeds))
    for seed in seeds:
        _, history = training.fit(
            cfg,
            a.method,
            seed=seed,
            resume=a.resume or len(seeds) > 1,
            progress=progress,
            stop_after_epoch=a.stop_after_epoch,
        )
        if main and SIDE_BY_SIDE not in os.environ:  # (a job of a batch: its parent says it)
            monitor = history.get("monitor_miou")
            print(
                f"saved {checkpoint_path(cfg, a.method, seed)}"
                + (f" (monitor mIoU on {cfg.monitor_split}: {monitor[-1]:.4f})" if monitor else ""),
                flush=True,
            )


def _seeds(cfg, a) -> list:
    """--seed S alone; without it every seed of the run, as notebooks 02-04 do (the teacher: one)."""
    from ..models import seeds_of

    if a.seed is not None:
        return [a.seed]
    return [cfg.seed] if a.method == "teacher" else seeds_of(cfg)


def _forget_or_refuse(cfg, a, seeds: list, job) -> None:
    """--force: delete the checkpoints of the seeds trained here (as force=True in notebooks 02-04); without
    --resume, refuse to overwrite one that exists."""
    from .. import training
    from ..models import checkpoint_path

    exists = [p for s in seeds if (p := checkpoint_path(cfg, a.method, s)).is_file()]  # (all ranks, before deleting)
    if cfg.force:
        if job is None or job.main:
            for p in training.forget(cfg, a.method, seeds=seeds):
                print(f"deleted {p}")
        if job is not None:
            job.barrier()
        return
    if not a.resume and exists:
        one = len(exists) == 1
        which = f"'{exists[0]}' already exists" if one else f"{len(exists)} checkpoints exist ('{exists[0]}', ...)"
        raise UserError(
            f"{which}. Pass --resume to continue (or reuse) {'it' if one else 'them'}, or --force to "
            "delete and train from scratch."
        )


def cmd_compare(a):
    from ..models import reports_dir
    from ..results import compare, table

    with distributed_job(device_of(a.preset, a.param)) as job:
        cfg = run_config(a.preset, a.param, run_name=a.run)
        results = compare.compare(cfg, progress=job is None or job.main)
        if job is None or job.main:  # (rank 0 measures latency and writes the table files)
            print(table.table_text(results))
            print(f"written to {reports_dir(cfg)}/kd_comparison_results.{{txt,md,csv,json}}")


def cmd_sweep(a):
    from ..config.presets import from_preset
    from ..perf import sweep

    out = sweep.run(from_preset(a.preset, params(a.param)), a.method, a.grid, seeds=a.seeds, out=a.out.resolve())
    print(sweep.table_markdown(out / "sweep.csv"), end="")
    print(f"written to {out}/sweep.{{csv,png,md}}")


def cmd_qualitative(a):
    from ..config.study import from_settings
    from ..core import runtime
    from ..data import loaders as data
    from ..evaluation import evaluate
    from ..models import load_model
    from ..results import qualitative

    device = runtime.resolve_device(a.device)
    model, state = load_model(a.checkpoint, device)
    cfg = from_settings(state.get("config", {}))
    if a.data_root:
        cfg = cfg.replace(data_root=str(Path(a.data_root).resolve()))
    data.prepare_data(cfg, progress=False)
    ds = data.dataset(cfg, a.split or cfg.eval_split)
    ev = evaluate(model, ds, device, progress=True)
    qualitative.write_cases(
        model,
        ds,
        ev,
        a.output_dir,
        a.num_success,
        a.num_failure,
        device,
        name=f"{state.get('method')} ({Path(a.checkpoint).name})",
    )
    print(f"mIoU {ev['miou']:.4f} on {len(ds)} images; figures in {a.output_dir}")


def cmd_export(a):
    from ..perf import export

    if a.checkpoint:
        info = export.export_checkpoint(a.checkpoint, a.out, a.image_size, a.dynamic)
    else:
        info = export.write(_random_student(a.arch), a.out, a.image_size or 512, a.dynamic, {"arch": a.arch})
        info["method"] = "random-weight"
    shape = "dynamic batch, height, width" if info["dynamic"] else f"1x3x{info['image_size']}x{info['image_size']}"
    print(
        f"wrote {info['out']} ({info['bytes'] / 1e6:.2f} MB; {info['method']} student, {info['arch']}; "
        f"input 'image' {shape}, output 'logits'; opset {info['opset']}); onnx.checker: passed\n"
        f"ONNX Runtime vs PyTorch on a random input: max |Δ logits| {info['max_abs_diff']:.1e}, argmax agreement "
        f"{info['argmax_agreement']:.4f}\nthe input it expects (also in the file's metadata): RGB in [0, 1], "
        "normalised with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)",
        flush=True,
    )
    if a.paths:
        _time_paths(a, info)


def _random_student(arch: str):
    import torch

    from ..data.voc import NUM_CLASSES
    from ..models.nets import build_model

    torch.manual_seed(0)
    return build_model(arch, NUM_CLASSES).eval()


def _time_paths(a, info: dict) -> None:
    """The deployment table of the exported student: every path timed at its image size, agreement on real
    images at full resolution (the checkpoint's eval split, or a VOC-layout --data-root)."""
    from ..config.study import from_settings
    from ..data import loaders as data
    from ..data import voc
    from ..data.transforms import eval_transform
    from ..models import load_model
    from ..perf import deploy

    if a.checkpoint:
        model, state = load_model(a.checkpoint)
        cfg = from_settings(state.get("config", {}))
    elif not a.data_root:
        raise UserError("export --arch ... --paths needs --data-root: a VOC-layout folder with the agreement images.")
    else:
        model, cfg = _random_student(a.arch), None
    split = a.split or (cfg.eval_split if cfg else "val")
    ds = voc.get_dataset(Path(a.data_root), split, eval_transform()) if a.data_root else data.dataset(cfg, split)
    images = [ds[i][0][None] for i in range(min(deploy.AGREEMENT_IMAGES, len(ds)))]
    d = deploy.measure_paths(model, images, info["image_size"], a.device, onnx_file=info["out"] * info["dynamic"])
    if not info["dynamic"]:
        d["notes"].append("onnxruntime: timed as an export with dynamic axes, the agreement images being full size")
    d.update(method=info["method"], checkpoint=str(a.checkpoint or f"{a.arch} (random weights)"), onnx=info["out"])
    print(deploy.deployment_markdown({**d, "split": split}))


def cmd_demo_data(a):
    from ..data import demo

    print(f"demo set written to {demo.generate(a.root, seed=a.seed, size=a.size)}")


def cmd_bench(a):
    from ..core import paths

    common = dict(
        device=a.device, image_size=a.image_size, batch_size=a.batch_size, preset=a.preset, overrides=params(a.param)
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: data-parallel training throughput
        from ..perf.bench_ddp import distributed_main

        with distributed_job(a.device):
            distributed_main(out=a.out.resolve() if a.out else paths.root() / "reports" / "bench_ddp.json", **common)
        return
    from ..perf import bench

    out = a.out.resolve() if a.out else paths.root() / "reports" / "bench.json"
    bench.main(out=out, epoch_images=a.epoch_images, **common)


def cmd_docs(a):
    from ..report import docs

    done = docs.regenerate_all(a.results, a.sweep or (), a.teacher or (), timings=a.timings or ())
    print(f"regenerated: {', '.join(done)}")


def cmd_runs(a):
    from ..results.listing import overview

    print(overview(a.checkpoints_dir))


def cmd_check_method(a):
    from .. import kd

    cfg = run_config(a.preset or "demo", a.param)
    for name in a.names or [m for m in cfg.students if m != "baseline"]:
        print(f"{name}:\n{kd.check_method(name, cfg)}")
