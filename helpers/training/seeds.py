"""Every seed of a method, as notebooks 02-04 train them: side by side as a batch of jobs (`jobs`, `threads`;
scale/jobs.py), in this process, or, with nproc > 1, as one torchrun job per seed; finished seeds are reused
and said so in one line."""

from __future__ import annotations

from ..config.knobs import Config, portable_value
from ..config.study import note
from ..core import checkpoint
from ..core.paths import portable
from ..core.progress import span
from ..models import checkpoint_path, seeds_of
from ..scale import distributed, jobs
from ..scale.torchrun import fit_torchrun
from .loop import fit
from .state import forget, read
from .teacher import prepare_shared


def fit_seeds(cfg: Config, method: str, progress: bool = True) -> tuple[dict, dict]:
    """Train (or load) `method` for every seed of the run, as notebooks 02-04 do; with cfg.force the
    run's checkpoints of `method` are deleted first. Returns ({seed: model}, {name: history}) with the
    baseline's first-seed curve added for KD methods (a missing baseline is said, not hidden)."""
    if cfg.force:
        for p in forget(cfg, method):
            print(f"force=True: deleted {portable_value('checkpoints_dir', str(p))}")
    students, curves = {}, {}
    waiting = _say_reused(cfg, method)
    torchrun = cfg.nproc > 1 and not distributed.current(cfg.device).active  # a notebook: torchrun per seed
    if waiting and not torchrun and not distributed.current(cfg.device).active:
        cfg = side_by_side(cfg, [jobs.Job(cfg, method, s) for s in waiting], progress, total=len(seeds_of(cfg)))
    for s in seeds_of(cfg):
        if torchrun:
            students[s], curves[f"{method} (seed {s})"] = fit_torchrun(cfg, method, s)
        else:  # (loads what the batch trained; trains in this process what is left)
            students[s], curves[f"{method} (seed {s})"] = fit(cfg, method, seed=s, progress=progress)
    if method not in ("baseline", "teacher"):
        path = checkpoint_path(cfg, "baseline")
        if path.is_file():
            curves[f"baseline (seed {cfg.seed})"] = checkpoint.load(path)["history"]
        else:
            print(f"No baseline for run '{cfg.run_name}' yet: run 02_baseline to compare against it.")
    return students, curves


def side_by_side(cfg: Config, batch: list, progress: bool = True, total: int | None = None) -> Config:
    """Train the jobs of `batch` (what is left of `total` trainings) as `jobs.plan` says: several at once (what
    they share made first, here), or, when one runs at a time, nothing here (the caller trains them in this
    process). Returns `cfg` with the plan's threads, so what the caller trains itself has the same thread count
    as the jobs."""
    how = jobs.plan(cfg, len(batch), total)
    for method in dict.fromkeys(j.method for j in batch):  # (the run's settings.json: how its seeds trained here)
        note(cfg, "trainings", {method: {"side_by_side": how.jobs, "threads_each": how.threads, "cores": jobs.cores()}})
    if how.jobs > 1:
        for job in {(j.method, repr(j.cfg)): j for j in batch}.values():  # (a sweep's cells: each setting once)
            prepare_shared(job.cfg, job.method, progress)
        names = ", ".join(dict.fromkeys(j.method for j in batch))
        print(
            f"{names}: {len(batch)} trainings, {how.describe()} (jobs={cfg.jobs!r}, threads={cfg.threads!r}); "
            "a line per epoch of each once its process has started",
            flush=True,
        )
        for job in batch:  # (what a resumed batch continues)
            state = read(checkpoint_path(job.cfg, job.method, job.seed))
            if state and not state.get("complete"):
                print(f"{job.title}: continues after epoch {state['epoch']}", flush=True)
        jobs.run(batch, how)
    return cfg.replace(threads=how.threads)


def _say_reused(cfg: Config, method: str) -> list[int]:
    """One line for the seeds whose finished checkpoint `fit` will load instead of training; returns the others."""
    done = [s for s in seeds_of(cfg) if (st := read(checkpoint_path(cfg, method, s))) and st.get("complete")]
    if done:
        where = portable(checkpoint_path(cfg, method, done[0]).parent)
        print(
            f"{method} seed{'s' if len(done) > 1 else ''} {span(done)}: finished, reused ({where}); "
            "force=True retrains",
            flush=True,
        )
    return [s for s in seeds_of(cfg) if s not in done]
