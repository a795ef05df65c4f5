"""The command line, `python -m helpers COMMAND`: the same functions the notebooks call.

    run       notebooks 01-06 with papermill, then the report (--with 07_your_own_method adds 07)
    train     one model (every seed's for --seed S): teacher, or a registered KD method
    compare   evaluate a run's models and write the comparison table
    sweep     calibrate a KD method's knobs on holdout
    export    a student's checkpoint as an ONNX file (checked, run once by ONNX Runtime)
    qualitative, runs, check-method, demo-data, bench, docs
A user's mistake prints one short paragraph and exits with status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from ..core.errors import UserError
from . import commands as c

METHOD_HELP = (
    "a registered KD method (baseline, response, feature, pairwise; your own with -p method_files F) or teacher"
)


def _params(sp) -> None:
    sp.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="override a parameter (repeatable), e.g. -p epochs 5; lists: -p students baseline,response",
    )


def _preset(sp, default) -> None:
    sp.add_argument(
        "--preset",
        default=default,
        help="smoke, demo, voc or a YAML file (default: " + (default or "the run's recorded settings, else demo") + ")",
    )


def _run_command(sub) -> None:
    r = sub.add_parser("run", help="execute notebooks 01-06 with papermill and build the report")
    r.add_argument("--preset", default="demo", help="smoke, demo, voc or a YAML file (default demo)")
    r.add_argument("--out", type=Path, help="run folder (default reports/<run_name>)")
    r.add_argument("--force", action="store_true", help="retrain models even when finished checkpoints exist")
    r.add_argument(
        "--with",
        dest="with_notebook",
        action="append",
        metavar="NOTEBOOK",
        help="run another notebook after 06 and put it in the report (07_your_own_method)",
    )
    _params(r)
    r.set_defaults(func=c.cmd_run)


def _train_command(sub) -> None:
    t = sub.add_parser("train", help="train a method's students, every seed side by side (as notebooks 02-04 do)")
    t.add_argument("--method", required=True, help=METHOD_HELP)
    t.add_argument(
        "--seed",
        type=int,
        help="this seed only (default: every seed of the run, `jobs` at once); the teacher is trained once",
    )
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--resume", action="store_true", help="continue an unfinished checkpoint (or reuse a finished one)")
    t.add_argument(
        "--force",
        action="store_true",
        help="delete this method's checkpoint for the seed (the teacher: "
        "the teacher trained for these settings) and train it again; the same as -p force true",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--stop-after-epoch", type=int, help=argparse.SUPPRESS)  # (tests: an interrupted run)
    _preset(t, None)
    _params(t)
    t.set_defaults(func=c.cmd_train)


def _compare_commands(sub) -> None:
    k = sub.add_parser("compare", help="evaluate the models of a run and write the comparison table")
    k.add_argument("--run-name", dest="run", help="the run (default: the current run, see README)")
    m = sub.add_parser("check-method", help="run the KD method contract (finite loss, gradients, void pixels)")
    m.add_argument("names", nargs="*", help="methods to check (default: the run's students)")
    for sp, func in ((k, c.cmd_compare), (m, c.cmd_check_method)):
        _preset(sp, None)
        _params(sp)
        sp.set_defaults(func=func)


def _sweep_command(sub) -> None:
    w = sub.add_parser("sweep", help="calibrate a KD method's knobs on holdout: a grid x seeds -> sweep.{csv,png,md}")
    w.add_argument(
        "--method", required=True, help="a registered KD method with knobs (response, feature, pairwise, yours)"
    )
    w.add_argument(
        "--grid",
        required=True,
        action="append",
        metavar="NAME=V1,V2,...",
        help="a knob and its values (repeatable: the grid is their cartesian product), e.g. alpha=0.2,0.5,1",
    )
    w.add_argument("--seeds", type=int, help="seeds per setting: seed .. seed+N-1 (default: the preset's seeds)")
    w.add_argument("--out", required=True, type=Path, help="folder for sweep.csv/.png/.md and the sweep's checkpoints")
    _preset(w, "demo")
    _params(w)
    w.set_defaults(func=c.cmd_sweep)


def _export_command(sub) -> None:
    e = sub.add_parser("export", help="write a student's checkpoint as an ONNX file (the student alone, checked)")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path, help="a student's checkpoint, checkpoints/<run>/<method>.pt")
    which.add_argument("--arch", help="instead: a random-weight student of this architecture (no weights exist)")
    e.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    e.add_argument("--image-size", type=int, help="input side traced (fixed unless --dynamic; default: latency_size)")
    e.add_argument("--dynamic", action="store_true", help="batch, height and width free in the file")
    e.add_argument(
        "--paths",
        action="store_true",
        help="also time every inference path (eager, fused, jit, onnxruntime, int8) at --image-size, with "
        "argmax agreement on real images (--data-root, --split; default the checkpoint's eval data)",
    )
    e.add_argument("--data-root", help="a VOC-layout folder for the agreement images (needed with --arch --paths)")
    e.add_argument("--split", help="split of those images (default: the checkpoint's eval_split, else val)")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for --paths (default cpu)")
    e.set_defaults(func=c.cmd_export)


def _tool_commands(sub) -> None:
    q = sub.add_parser("qualitative", help="ranked success/failure figures for one checkpoint")
    q.add_argument("--checkpoint", required=True, type=Path)
    q.add_argument("--output-dir", "--output_dir", required=True, type=Path)
    q.add_argument("--num-success", "--num_success", type=int, default=10)
    q.add_argument("--num-failure", "--num_failure", type=int, default=10)
    q.add_argument("--data-root", help="override the data_root stored in the checkpoint")
    q.add_argument("--split", help="split to rank (default: the checkpoint's eval_split)")
    q.add_argument("--device", default="auto")
    q.set_defaults(func=c.cmd_qualitative)
    r = sub.add_parser("runs", help="list every run: its settings, what is finished, where its report is")
    r.add_argument("--checkpoints-dir", default="checkpoints", help="the checkpoints folder (default checkpoints)")
    r.set_defaults(func=c.cmd_runs)
    d = sub.add_parser("demo-data", help="generate the demo set in the VOC layout")
    d.add_argument("--root", required=True, type=Path)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=64)
    d.set_defaults(func=c.cmd_demo_data)
    b = sub.add_parser("bench", help="training throughput, KD overhead and inference latency -> bench.json")
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--image-size", type=int, default=64)
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--preset", default="demo")
    b.add_argument(
        "--epoch-images",
        type=int,
        default=320,
        help="training images for the real baseline vs "
        "cached-KD epochs (0 skips them; their teacher pass is slow on a CPU with a torchvision teacher)",
    )
    b.add_argument("--out", type=Path, help="default: reports/bench.json in the project root")
    _params(b)
    b.set_defaults(func=c.cmd_bench)
    g = sub.add_parser(
        "docs", help="regenerate docs/parameters.md and environment.yml (and README/docs figures from run files)"
    )
    g.add_argument("--results", type=Path, help="a run folder (reports/demo): its timings and comparison table")
    g.add_argument("--sweep", type=Path, action="append", help="a sweep folder: its calibration table (repeatable)")
    g.add_argument("--teacher", type=Path, action="append", help="a teacher checkpoint: its holdout curve")
    g.add_argument("--timings", type=Path, action="append", help="another run folder: a row of the timings table")
    g.set_defaults(func=c.cmd_docs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_run_command, _train_command, _compare_commands, _sweep_command, _export_command, _tool_commands):
        add(sub)
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
