"""Every seed of a method, as notebooks 02-04 train them: in this process, or, with nproc > 1, as one
torchrun job per seed; finished seeds are reused and said so in one line."""

from __future__ import annotations

from ..config.knobs import Config, portable_value
from ..core import checkpoint
from ..core.paths import portable
from ..core.progress import span
from ..models import checkpoint_path, seeds_of
from ..scale import distributed
from ..scale.torchrun import fit_torchrun
from .loop import fit
from .state import forget, read


def fit_seeds(cfg: Config, method: str, progress: bool = True) -> tuple[dict, dict]:
    """Train (or load) `method` for every seed of the run, as notebooks 02-04 do; with cfg.force the
    run's checkpoints of `method` are deleted first. Returns ({seed: model}, {name: history}) with the
    baseline's first-seed curve added for KD methods (a missing baseline is said, not hidden)."""
    if cfg.force:
        for p in forget(cfg, method):
            print(f"force=True: deleted {portable_value('checkpoints_dir', str(p))}")
    students, curves = {}, {}
    _say_reused(cfg, method)
    for s in seeds_of(cfg):
        if cfg.nproc > 1 and not distributed.current(cfg.device).active:  # a notebook: one torchrun job per seed
            students[s], curves[f"{method} (seed {s})"] = fit_torchrun(cfg, method, s)
        else:
            students[s], curves[f"{method} (seed {s})"] = fit(cfg, method, seed=s, progress=progress)
    if method not in ("baseline", "teacher"):
        path = checkpoint_path(cfg, "baseline")
        if path.is_file():
            curves[f"baseline (seed {cfg.seed})"] = checkpoint.load(path)["history"]
        else:
            print(f"No baseline for run '{cfg.run_name}' yet: run 02_baseline to compare against it.")
    return students, curves


def _say_reused(cfg: Config, method: str) -> None:
    """One line for the seeds whose finished checkpoint `fit` will load instead of training."""
    done = [s for s in seeds_of(cfg) if (st := read(checkpoint_path(cfg, method, s))) and st.get("complete")]
    if done:
        where = portable(checkpoint_path(cfg, method, done[0]).parent)
        print(
            f"{method} seed{'s' if len(done) > 1 else ''} {span(done)}: finished, reused ({where}); "
            "force=True retrains",
            flush=True,
        )
