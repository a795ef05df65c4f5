"""Command line: the same functions the notebooks call.

    python -m helpers run --preset {smoke,demo,voc} [--out DIR] [-p NAME VALUE]... [--force]
    python -m helpers train --method {teacher,baseline,response,feature} [--seed S] [--epochs N] [--batch-size B] [--resume | --force] [-p NAME VALUE]...
    python -m helpers sweep --preset P --method {response,feature} --grid NAME=V1,V2,... [--grid ...] [--seeds N] [-p NAME VALUE]... --out DIR
    python -m helpers compare [--run-name NAME] [--preset P] [-p NAME VALUE]...
    python -m helpers qualitative --checkpoint PATH --output-dir DIR [--num-success 10] [--num-failure 10]
    python -m helpers demo-data --root DIR [--seed N]
    python -m helpers bench [--device cpu|cuda] [--image-size S] [--batch-size B]
    python -m helpers docs [--results RUN_DIR] [--sweep DIR]... [--teacher CKPT]...   (regenerate README.md's tables)

A user's mistake prints one short paragraph and exits with status 2; `--debug` shows the traceback.
Parameters (-p data_root ..., checkpoints_dir, reports_dir, ...) that are relative paths mean the project
root, as in the notebooks; the options that name a file or folder (--out, --checkpoint, ...) are read
from the working directory, as usual for a command.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
import traceback
from pathlib import Path

from .errors import UserError


def _params(pairs) -> dict:
    from .config import parse_value

    return {name: parse_value(value) for name, value in (pairs or [])}


def _config(preset: str | None, pairs, run_name: str | None = None, **explicit):
    """The run's Config as a notebook would build it (see helpers/session.py): the preset, or the
    run's recorded settings when no preset is given, then -p overrides, then explicit flags."""
    from .session import resolve

    values = {**_params(pairs), **{k: v for k, v in explicit.items() if v is not None}}
    return resolve(preset, run_name, values)[0]


def cmd_run(a):
    from .runner import run

    overrides = _params(a.param)
    run(a.preset, out_dir=a.out.resolve() if a.out else None, overrides=overrides, force=a.force)


@contextmanager
def _distributed(device: str):
    """Under torchrun: the process group for the command (gloo on CPU, nccl on CUDA), a failing rank
    ending the whole job (distributed.fail_together), teardown at the end. Else one process, as before."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield None
        return
    from . import distributed

    ctx = distributed.setup(device)
    with distributed.fail_together(ctx):
        yield ctx
        distributed.teardown(ctx)


def _device_of(preset, pairs) -> str:
    """The device a command's run asks for (for the process group's backend), without resolving the run."""
    values = _params(pairs)
    if "device" in values:
        return str(values["device"])
    try:
        from .config import load_preset

        return str(load_preset(preset or "demo").get("device", "auto"))
    except Exception:  # noqa: BLE001 - the command itself reports a bad preset
        return "auto"


def cmd_train(a):
    with _distributed(_device_of(a.preset, a.param)) as ctx:
        _train(a, ctx)


def _train(a, ctx):
    from . import runs, training

    main = ctx is None or ctx.main
    cfg = _config(a.preset, a.param, epochs=a.epochs, batch_size=a.batch_size, force=True if a.force else None)
    if a.method == "teacher" and a.epochs is not None:
        cfg = cfg.replace(teacher_epochs=a.epochs, epochs=cfg.epochs)
    if cfg.force and a.resume:
        raise UserError("--resume continues a checkpoint and --force (force=True) deletes it: give one of them.")
    from .session import read_record, record

    path = runs.checkpoint_path(cfg, a.method, a.seed)
    exists = path.is_file()  # (read by every rank before rank 0 may delete it)
    if main:
        record(cfg, a.preset or (read_record(cfg.checkpoints_dir, cfg.run_name) or {}).get("preset"), "cli")
    if cfg.force:  # the same deletion as force=True in notebooks 02-04, for the seed trained here
        exists = False
        if main:
            for p in training.forget(cfg, a.method, seeds=[cfg.seed if a.seed is None else a.seed]):
                print(f"deleted {p}")
        if ctx is not None:
            import torch.distributed as dist

            dist.barrier()
    if not a.resume and exists:
        raise UserError(f"'{path}' already exists. Pass --resume to continue (or reuse) it, or --force to "
                        "delete it and train from scratch.")
    progress = not a.no_progress and os.environ.get(training.EPOCH_LINES) != "1"
    model, history = training.fit(cfg, a.method, seed=a.seed, resume=a.resume, progress=progress,
                                  stop_after_epoch=a.stop_after_epoch)
    msg = f"saved {path}"
    if history.get("monitor_miou"):
        msg += f" (monitor mIoU on {cfg.monitor_split}: {history['monitor_miou'][-1]:.4f})"
    if main:
        print(msg, flush=True)


def cmd_compare(a):
    with _distributed(_device_of(a.preset, a.param)) as ctx:
        _compare(a, ctx)


def _compare(a, ctx):
    from . import compare, runs, table

    cfg = _config(a.preset, a.param, run_name=a.run)
    results = compare.compare(cfg, progress=ctx is None or ctx.main)
    if ctx is not None and not ctx.main:
        return  # (rank 0 measures latency and writes the table files)
    print(table.table_text(results))
    print(f"written to {runs.reports_dir(cfg)}/kd_comparison_results.{{txt,md,csv,json}}")


def cmd_sweep(a):
    from . import sweep

    from .config import from_preset

    out = sweep.run(from_preset(a.preset, _params(a.param)), a.method, a.grid, seeds=a.seeds, out=a.out.resolve())
    print(sweep.table_markdown(out / "sweep.csv"), end="")
    print(f"written to {out}/sweep.{{csv,png,md}}")


def cmd_qualitative(a):
    from . import data, evaluation, qualitative, runs, runtime
    from .config import Config

    model, state = runs.load_model(a.checkpoint, runtime.resolve_device(a.device))
    cfg = Config.from_dict({k: v for k, v in state.get("config", {}).items() if k in Config.__dataclass_fields__})
    if a.data_root:
        cfg = cfg.replace(data_root=str(Path(a.data_root).resolve()))
    data.prepare_data(cfg, progress=False)
    ds = data.dataset(cfg, a.split or cfg.eval_split)
    ev = evaluation.evaluate(model, ds, runtime.resolve_device(a.device), progress=True)
    qualitative.write_cases(model, ds, ev, a.output_dir, a.num_success, a.num_failure,
                            runtime.resolve_device(a.device), name=f"{state.get('method')} ({Path(a.checkpoint).name})")
    print(f"mIoU {ev['miou']:.4f} on {len(ds)} images; figures in {a.output_dir}")


def cmd_demo_data(a):
    from . import demo_data

    base = demo_data.generate(a.root, seed=a.seed, size=a.size)
    print(f"demo set written to {base}")


def cmd_bench(a):
    from . import bench, paths

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: data-parallel training throughput
        with _distributed(a.device) as ctx:
            out = a.out.resolve() if a.out else paths.root() / "reports" / "bench_ddp.json"
            bench.distributed_main(device=a.device, image_size=a.image_size, batch_size=a.batch_size, out=out,
                                   preset=a.preset)
        return
    out = a.out.resolve() if a.out else paths.root() / "reports" / "bench.json"
    bench.main(device=a.device, image_size=a.image_size, batch_size=a.batch_size, out=out, preset=a.preset,
              epoch_images=a.epoch_images)


def cmd_docs(a):
    from . import readme
    from .config import readme_with_parameters
    from .paths import PROJECT_ROOT

    path = PROJECT_ROOT / "README.md"
    path.write_text(readme.regenerate(readme_with_parameters(path.read_text()), a.results, (), a.teacher or ()))
    if a.sweep:
        calibration = PROJECT_ROOT / "docs" / "calibration.md"
        calibration.write_text(readme.regenerate(calibration.read_text(), sweeps=a.sweep))
    done = ["the parameter table"] + (["timings", "results"] if a.results else []) + \
        (["teacher curves"] if a.teacher else []) + (["calibration (docs/calibration.md)"] if a.sweep else [])
    print(f"regenerated {', '.join(done)} in {path.parent}")


def cmd_runs(a):
    from . import session

    print(session.overview(a.checkpoints_dir))


def _runs_command(sub, params) -> None:
    r = sub.add_parser("runs", help="list every run: its settings, what is finished, where its report is")
    r.add_argument("--checkpoints-dir", default="checkpoints", help="the checkpoints folder (default checkpoints)")
    r.set_defaults(func=cmd_runs)


def _run_command(sub, params) -> None:
    r = sub.add_parser("run", help="execute notebooks 01-06 with papermill and build the report")
    r.add_argument("--preset", default="demo", help="smoke, demo, voc or a YAML file (default demo)")
    r.add_argument("--out", type=Path, help="run folder (default reports/<run_name>)")
    r.add_argument("--force", action="store_true", help="retrain models even when finished checkpoints exist")
    params(r)
    r.set_defaults(func=cmd_run)


def _train_command(sub, params) -> None:
    t = sub.add_parser("train", help="train one model (same as notebooks 02-04)")
    t.add_argument("--method", required=True, choices=["teacher", "baseline", "response", "feature"])
    t.add_argument("--seed", type=int, help="this student's seed (default: the run's seed); the teacher "
                   "stays the run's, as in a study with seeds > 1")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--resume", action="store_true", help="continue an unfinished checkpoint (or reuse a finished one)")
    t.add_argument("--force", action="store_true", help="delete this method's checkpoint for the seed (the teacher: "
                   "the teacher trained for these settings) and train it again; the same as -p force true")
    t.add_argument("--preset", help="smoke, demo, voc or a YAML file (default: the run's recorded settings, "
                   "else demo)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--stop-after-epoch", type=int, help=argparse.SUPPRESS)  # (tests: an interrupted run)
    params(t)
    t.set_defaults(func=cmd_train)


def _compare_command(sub, params) -> None:
    c = sub.add_parser("compare", help="evaluate the models of a run and write the comparison table")
    c.add_argument("--run-name", dest="run", help="the run (default: the current run, see README)")
    c.add_argument("--preset", help="preset the run used (default: the run's recorded settings, else demo)")
    params(c)
    c.set_defaults(func=cmd_compare)


def _sweep_command(sub, params) -> None:
    w = sub.add_parser("sweep", help="calibrate a KD method's knobs on holdout: a grid x seeds -> sweep.{csv,png,md}")
    w.add_argument("--method", required=True, choices=["response", "feature"])
    w.add_argument("--grid", required=True, action="append", metavar="NAME=V1,V2,...",
                   help="a knob and its values (repeatable: the grid is their cartesian product), e.g. alpha=0.2,0.5,1")
    w.add_argument("--seeds", type=int, help="seeds per setting: seed .. seed+N-1 (default: the preset's seeds)")
    w.add_argument("--preset", default="demo")
    w.add_argument("--out", required=True, type=Path, help="folder for sweep.csv/.png/.md and the sweep's checkpoints")
    params(w)
    w.set_defaults(func=cmd_sweep)


def _qualitative_command(sub, params) -> None:
    q = sub.add_parser("qualitative", help="ranked success/failure figures for one checkpoint")
    q.add_argument("--checkpoint", required=True, type=Path)
    q.add_argument("--output-dir", "--output_dir", required=True, type=Path)
    q.add_argument("--num-success", "--num_success", type=int, default=10)
    q.add_argument("--num-failure", "--num_failure", type=int, default=10)
    q.add_argument("--data-root", help="override the data_root stored in the checkpoint")
    q.add_argument("--split", help="split to rank (default: the checkpoint's eval_split)")
    q.add_argument("--device", default="auto")
    q.set_defaults(func=cmd_qualitative)


def _demo_data_command(sub, params) -> None:
    d = sub.add_parser("demo-data", help="generate the demo set in the VOC layout")
    d.add_argument("--root", required=True, type=Path)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=64)
    d.set_defaults(func=cmd_demo_data)


def _bench_command(sub, params) -> None:
    b = sub.add_parser("bench", help="training throughput, KD overhead and inference latency -> bench.json")
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--image-size", type=int, default=64)
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--preset", default="demo")
    b.add_argument("--epoch-images", type=int, default=320,
                   help="training images for the real baseline vs cached-KD epochs (0 skips them; "
                        "their teacher pass is slow on a CPU with a torchvision teacher)")
    b.add_argument("--out", type=Path, help="default: reports/bench.json in the project root")
    b.set_defaults(func=cmd_bench)


def _docs_command(sub, params) -> None:
    doc = sub.add_parser("docs", help="regenerate README.md's parameter table (and its demo figures from run files)")
    doc.add_argument("--results", type=Path, help="a run folder (reports/demo): its timings and comparison table")
    doc.add_argument("--sweep", type=Path, action="append", help="a sweep folder: its calibration table (repeatable)")
    doc.add_argument("--teacher", type=Path, action="append", help="a teacher checkpoint: its holdout curve (repeatable)")
    doc.set_defaults(func=cmd_docs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    def params(sp):
        sp.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="override a parameter (repeatable), e.g. -p epochs 5")
    for add in (_run_command, _train_command, _compare_command, _sweep_command, _qualitative_command,
                _demo_data_command, _bench_command, _docs_command, _runs_command):
        add(sub, params)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        if not args.debug:
            print("(run with --debug for the full traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished epochs are saved, run again with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
