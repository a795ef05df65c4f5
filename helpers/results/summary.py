"""What notebooks 02-04 print after training: each seed's val mIoU beside the baseline of the same seed, from
the evaluation cache notebook 05 reuses (a quick look; the verdict is notebook 05's interval)."""

from __future__ import annotations

import torch

from .. import kd
from ..config.knobs import Config
from ..data import loaders as data
from ..evaluation.protocol import evaluate_cached
from ..models import store as runs
from ..models import teacher as teachers
from ..models.store import reports_dir


def seed_summary(cfg: Config, method: str, students: dict, device, val=None, teacher=None) -> str:
    """Val mIoU of `students` ({seed: model}, one method) beside the baseline of the same seed, as text.

    What notebooks 02-04 print after training; a missing baseline is said, not hidden. The verdict
    on each difference is notebook 05's (its interval: seed-level with several seeds, image-level with one),
    not this quick look's.
    """
    val = val if val is not None else data.dataset(cfg, cfg.eval_split)
    lines = [
        f"{cfg.eval_split} mIoU ({len(val)} images), final-epoch models of run '{cfg.run_name}':",
        f"{'seed':<6}{kd.label(method):>24}" + (f"{kd.label('baseline'):>24}{'Δ':>10}" if method != "baseline" else ""),
    ]
    if teacher is not None:
        lines.insert(0, f"teacher mIoU {_evaluate(cfg, 'teacher', teacher, val, device)['miou']:.4f}")
    missing = []
    for s, model in students.items():
        m = _evaluate(cfg, runs.model_key(cfg, method, s), model, val, device)["miou"]
        row = f"{s:<6}{m:>24.4f}"
        if method != "baseline":
            path = runs.checkpoint_path(cfg, "baseline", s)
            if path.is_file():
                b = _evaluate(cfg, runs.model_key(cfg, "baseline", s), None, val, device)["miou"]
                row += f"{b:>24.4f}{m - b:>+10.4f}"
            else:
                missing.append(s)
        lines.append(row)
    if missing:
        lines.append(
            f"No baseline for seed(s) {', '.join(map(str, missing))} of run '{cfg.run_name}' yet: run "
            "notebook 02_baseline (or `python -m helpers train --method baseline --seed S`) to compare."
        )
    if method != "baseline":
        scope = (
            "seed-level interval"
            if cfg.seeds > 1
            else "image-level interval (paired bootstrap over val images; one seed cannot show training noise)"
        )
        lines.append(f"Whether a difference is more than noise is decided in notebook 05, by its {scope}.")
    return "\n".join(lines)


def _evaluate(cfg: Config, key: str, model, ds, device) -> dict:
    """One model's evaluation on `ds` with a progress bar, cached as notebook 05 caches it (so 05 does not
    evaluate it again); `model` None: loaded from its checkpoint when the cache can't answer."""
    if key == "teacher":
        src = runs.checkpoint_path(cfg, "teacher")
        cache = reports_dir(cfg) / "eval" / f"teacher-{teachers.teacher_identity(cfg)}.npz"
        src = src if src.is_file() else None
    else:
        src = runs.run_dir(cfg) / f"{key}.pt"
        cache = reports_dir(cfg) / "eval" / f"{key}.npz"
    if model is None:
        model = _Lazy(src, device)
    return evaluate_cached(model, ds, cache, src, device, True, f"eval {key}")


class _Lazy(torch.nn.Module):
    """A checkpoint's model, loaded on its first call (the evaluation cache usually makes that unneeded)."""

    def __init__(self, path, device):
        super().__init__()
        self.path, self.device, self.model = path, device, None

    def forward(self, x):
        if self.model is None:
            self.model = runs.load_model(self.path, self.device)[0]
        return self.model(x)
