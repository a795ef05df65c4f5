"""Where a run's models and results live, loading them, and saying which are missing.

checkpoints/<run_name>/<method>.pt (seed = cfg.seed) and <method>_seed<s>.pt (other seeds);
checkpoints/teachers/<teacher_key>.pt; reports/<run_name>/ for tables, figures and notebooks.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import kd
from ..config.knobs import Config
from ..core import checkpoint
from ..core.errors import UserError
from ..core.paths import portable
from .nets import build_model


def seeds_of(cfg: Config) -> list[int]:
    """The run's seeds: seed, seed+1, ..., seed+seeds-1."""
    return [cfg.seed + i for i in range(cfg.seeds)]


def model_key(cfg: Config, method: str, seed: int) -> str:
    """ "baseline" for the first seed, "baseline_seed1" for the others (the checkpoint's stem)."""
    return method if method == "teacher" or seed == cfg.seed else f"{method}_seed{seed}"


def reports_dir(cfg: Config) -> Path:
    return Path(cfg.reports_dir) / cfg.run_name


def run_dir(cfg: Config) -> Path:
    return Path(cfg.checkpoints_dir) / cfg.run_name


def checkpoint_path(cfg: Config, method: str, seed: int | None = None) -> Path:
    if method == "teacher":
        return Path(cfg.checkpoints_dir) / "teachers" / f"{cfg.teacher_key()}.pt"
    return run_dir(cfg) / f"{model_key(cfg, method, cfg.seed if seed is None else seed)}.pt"


def load_model(path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """A model (eval mode) and its checkpoint dict; any failure is a UserError naming the file."""
    state = checkpoint.load(path)
    if "arch" not in state or "num_classes" not in state:
        raise UserError(
            f"Checkpoint '{path}' does not say which architecture it holds ('arch', 'num_classes'); "
            "it was not written by this project's training loop."
        )
    model = build_model(state["arch"], state["num_classes"])
    checkpoint.load_weights(model, state, path)
    return model.to(device).eval(), state


class NotTrained(UserError):
    """Models an evaluation needs are missing or unfinished; `missing` lists (method, seed, path, why)
    (seed None for the teacher). The message is one paragraph naming what trains them."""

    def __init__(self, cfg: Config, missing: list):
        self.missing = list(missing)

        def item(method, seed, path, why):
            who = "the teacher" if method == "teacher" else f"{method} seed {seed}"
            return f"{who} ({portable(path)}: {why})"

        methods = list(dict.fromkeys(m for m, *_ in self.missing))
        notebooks = list(dict.fromkeys(n for m in methods if (n := kd.trained_by(m))))
        extra_seeds = any(s not in (None, cfg.seed) for _, s, _, _ in self.missing)
        flag = " --seed S" if extra_seeds else ""
        if len(methods) == 1:
            command = f"`python -m helpers train --method {methods[0]}{flag}`" + (
                " for each seed S listed" if extra_seeds else ""
            )
        else:
            command = f"`python -m helpers train --method M{flag}` for M in {', '.join(methods)}" + (
                " and each seed S listed" if extra_seeds else ""
            )
        super().__init__(
            f"Run '{cfg.run_name}' has no finished model for {', '.join(item(*m) for m in self.missing)}. "
            "Evaluation (notebooks 05 and 06, `python -m helpers compare`) only loads models; train them first "
            + (
                f"with notebook{'s' if len(notebooks) > 1 else ''} {', '.join(notebooks)} (or {command})"
                if notebooks
                else f"with {command} (a batch run, `python -m helpers run`, trains them before 05)"
            )
            + f", with run_name='{cfg.run_name}' and its settings ({_settings_phrase(cfg)})."
        )


def _settings_phrase(cfg: Config) -> str:
    """The run's settings as a message names them, and how a notebook gets them."""
    from ..config import study

    current = (study.current_run(cfg.checkpoints_dir) or {}).get("run_name") == cfg.run_name
    phrase = study.describe(cfg, study.preset_of(cfg))
    if current:
        return phrase + f"; '{cfg.run_name}' is the current run, so the notebook run as it is uses them"
    return phrase + f"; set run_name='{cfg.run_name}' in the notebook's parameters cell and it reads them from the run"


def teacher_history(cfg: Config) -> dict:
    """{"teacher": its training history} when the teacher was trained here and is on disk, else {}."""
    path = checkpoint_path(cfg, "teacher")
    return {"teacher": checkpoint.load(path)["history"]} if path.is_file() else {}
