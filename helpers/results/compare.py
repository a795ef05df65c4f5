"""The comparison: evaluate every model on the reported split, measure it, and fill the table.

Protocol (fixed): single scale, each image at full resolution, one dataset-level confusion matrix
per model, label 255 ignored, on `eval_split` (val). The models compared are the final-epoch
checkpoints; nothing here chooses among checkpoints, so val never takes part in model selection.
"""

from __future__ import annotations

from datetime import datetime

from .. import kd, perf
from ..config.knobs import Config
from ..core import checkpoint, runtime
from ..data import loaders as data
from ..evaluation import fidelity
from ..evaluation.protocol import evaluate_cached
from ..models import store as runs
from ..models import teacher as teachers
from ..models.store import reports_dir, seeds_of
from ..scale import distributed
from ..training import cost
from . import accuracy, claims, costs, notes
from .files import write_results

AGREEMENT_IMAGES = 4  # eval images on which a faster inference path must agree with eager


def _find_models(cfg: Config, device):
    """({key: model}, {key: checkpoint path}, missing [(method, seed, path, why)]) of the run's finished
    models; a method counts only with every seed finished (its other seeds are not loaded)."""
    models, missing, paths = {}, [], {}
    try:
        models["teacher"] = teachers.load_teacher(cfg, device)
    except runs.NotTrained as e:
        missing += e.missing
    for method in cfg.students:
        found, lacking = {}, []
        for s in seeds_of(cfg):
            key, path = runs.model_key(cfg, method, s), runs.checkpoint_path(cfg, method, s)
            state = checkpoint.load(path) if path.is_file() else None
            if state is None or not state.get("complete"):
                why = f"unfinished, epoch {state.get('epoch')} of {state.get('epochs')}" if state else "not there"
                lacking.append((method, s, path, why))
            else:
                found[key] = path
        missing += lacking
        if not lacking:
            paths.update(found)
            models.update({k: runs.load_model(p, device)[0] for k, p in found.items()})
    return models, paths, missing


def load_all(cfg: Config, progress=True):
    """({key: model}, {key: eval result}, the eval split) for the teacher and every student/seed.

    Keys: "teacher", each method of cfg.students (its first seed), and "<method>_seed<s>" for other seeds.
    Only loads: a missing or unfinished model (teacher included) is never trained here, it raises
    `runs.NotTrained`, one message listing all of them, before anything is evaluated.
    """
    return load_finished(cfg, progress, partial=False)[:3]


def load_finished(cfg: Config, progress=True, partial: bool = True):
    """`load_all` for what is finished: the methods whose every seed is finished are evaluated and the
    others returned as a fourth item, missing [(method, seed, path, why)]; NotTrained only when no
    student method is finished (or, with partial=False, when anything is missing)."""
    device = runtime.resolve_device(cfg.device)
    models, paths, missing = _find_models(cfg, device)
    if missing and not (partial and paths):
        raise runs.NotTrained(cfg, missing)
    distributed.current(cfg.device).first(data.prepare_data, cfg, progress)
    ds = data.dataset(cfg, cfg.eval_split)
    evals = {}
    if "teacher" in models:
        src = runs.checkpoint_path(cfg, "teacher")  # (a file only for teachers trained here)
        cache = reports_dir(cfg) / "eval" / f"teacher-{teachers.teacher_identity(cfg)}.npz"
        evals["teacher"] = evaluate_cached(
            models["teacher"], ds, cache, src if src.is_file() else None, device, progress, "eval teacher"
        )
    for key, path in paths.items():
        evals[key] = evaluate_cached(
            models[key], ds, reports_dir(cfg) / "eval" / f"{key}.npz", path, device, progress, f"eval {key}"
        )
    return models, evals, ds, missing


def compare(cfg: Config, progress=True, write=True, partial=True) -> dict:
    """Evaluate, measure and write the table files; returns the results dict (see files.write_table_files).

    With `partial` (notebook 05, `compare`), what is finished is compared: results["missing"] names the
    rest and the notebooks that train them, and the table says it is partial. Writing keeps the files in
    step with the report (`files.write_results`): a partial table never replaces a complete one, and a
    noisier latency never replaces a quieter one of the same models."""
    models, evals, ds, missing = load_finished(cfg, progress, partial)
    if not distributed.current(cfg.device).main:
        return {}  # under torchrun: the other ranks took part in the sharded evaluation only
    seeds, size = seeds_of(cfg), (1, 3, cfg.latency_size, cfg.latency_size)
    present = [m for m in [*cfg.students, "teacher"] if m in evals]
    lat, path = _latency(cfg, models, present, size, ds)
    agreement = _agreement(cfg, models, present, ds, progress)
    rows = [_row(cfg, method, models, evals, agreement, seeds, lat, size) for method in present]
    costs.with_ratios(rows)
    interval = next((r["diff_vs_baseline"]["method"] for r in rows if r["diff_vs_baseline"]), "none (no KD row)")
    any_lat = next(iter(lat.values()))
    results = {
        "run": cfg.run_name,
        "rows": rows,
        "latency": {
            **{k: any_lat[k] for k in ("device", "threads", "dtype", "input_size")},
            **path,
            "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        },
        "protocol": (
            f"single-scale, full resolution, dataset-level confusion matrix, label 255 ignored; boundary IoU: "
            f"bands of 2% of the image diagonal (Cheng et al., 2021); split: {cfg.eval_split} ({len(ds)} "
            f"images); final-epoch checkpoints; Δ mIoU CI: {interval}, {cfg.bootstrap_resamples} paired "
            "bootstrap resamples of images"
        ),
        "dataset": cfg.dataset,
        "seeds": seeds,
        "students": list(cfg.students),
        "partial": bool(missing),
        "missing": _missing(missing),
        "teacher_training": costs.teacher_training(cfg),
        "matched": _matched(cfg),
    }
    results["claims"] = claims.claims(results)
    if missing:
        print(notes.partial_note(results), flush=True)
    results["files"] = write_results(results, reports_dir(cfg)) if write else "not written (write=False)"
    return results


def _latency(cfg: Config, models: dict, present: list, size, ds) -> tuple[dict, dict]:
    """Batch-1 latency of the deployed networks (no KD adapter) on `cfg.inference_path`, measured interleaved
    in this process, and {"path", "path_agreement"?, "path_note"?}: a path other than eager is used only if
    every model's argmax agrees with eager's on at least perf.MIN_AGREEMENT of the pixels of the first
    eval images; otherwise the column falls back to eager and the note says why."""
    path, info = cfg.inference_path, {"path": cfg.inference_path}
    deployed = {k: perf.optimize_for_inference(models[k], path, size) for k in present}
    if path != "eager":
        images = [ds[i][0][None] for i in range(min(AGREEMENT_IMAGES, len(ds)))]
        worst = min(perf.argmax_agreement(models[k], deployed[k], images) for k in present)
        info["path_agreement"] = worst
        if worst < perf.MIN_AGREEMENT:
            deployed = {k: perf.optimize_for_inference(models[k], "eager", size) for k in present}
            info["path"] = "eager"
            info["path_note"] = (
                f"inference_path {path!r} agreed with eager fp32 on only {worst:.4f} of the pixels of "
                f"{len(images)} {cfg.eval_split} images (needs {perf.MIN_AGREEMENT}), so eager was timed"
            )
    device = runtime.resolve_device(cfg.device)
    return perf.latency(deployed, size, device=str(device), min_run_time=cfg.latency_min_time), info


def _agreement(cfg: Config, models: dict, present: list, ds, progress: bool) -> dict:
    """{eval key: per-image [agreeing, non-void] pixel counts} of every student seed against the teacher."""
    if "teacher" not in models:
        return {}
    keys = {
        runs.model_key(cfg, m, s): runs.checkpoint_path(cfg, m, s)
        for m in present
        if m != "teacher"
        for s in seeds_of(cfg)
    }
    students = {k: models[k] for k in keys if k in models}
    return fidelity.cached_agreement(
        students,
        models["teacher"],
        ds,
        runtime.resolve_device(cfg.device),
        reports_dir(cfg) / "eval",
        keys,
        teachers.teacher_identity(cfg),
        progress,
    )


def _matched(cfg: Config) -> dict:
    """Whether the run has the compute-matched baseline, and how it is matched (or how to add it)."""
    if accuracy.MATCHED in cfg.students:
        return {"in_run": True, "epochs": cost.matched_epochs(cfg), "by": "FLOPs"}
    return {"in_run": False, "override": f"-p students {','.join([*cfg.students, accuracy.MATCHED])}"}


def _row(cfg: Config, method: str, models: dict, evals: dict, agreement: dict, seeds, lat: dict, size) -> dict:
    row = {
        "method": method,
        "label": kd.label(method),
        "arch": cfg.teacher_arch if method == "teacher" else cfg.student_arch,
        **accuracy.row_accuracy(cfg, evals, agreement, method, seeds),
        "params": perf.count_parameters(models[method]),
        "gflops": perf.gflops(models[method], size),
        "latency_ms": lat[method]["mean_ms"],
        "latency_std_ms": lat[method]["std_ms"],
    }
    if method != "teacher" and all(runs.checkpoint_path(cfg, method, s).is_file() for s in seeds):
        row.update(costs.row_cost(cfg, method, seeds))
    row["params_str"] = perf.format_params(row["params"])
    return row


def _missing(missing: list) -> list[dict]:
    """The methods left out of a partial table, with their seeds, why, and what trains them."""
    out = {}
    for method, seed, _, why in missing:
        item = out.setdefault(
            method,
            {"method": method, "label": kd.label(method), "notebook": kd.trained_by(method), "seeds": [], "why": why},
        )
        if seed is not None:
            item["seeds"].append(seed)
    return list(out.values())
