"""What a row cost to train, beside what it costs to run: wall-clock seconds per seed as measured (the sum of
its checkpoints' epoch times, on the device they ran on, plus its share of the one-time teacher pass for a
method that reads cached logits) and FLOPs per seed (`training.cost`: counted, one convention), each also as
× the baseline's. The teacher's own training, when this project trained it, is reported once, apart: in the
literature the teacher comes pretrained, and every KD row shares it."""

from __future__ import annotations

import json

from .. import kd
from ..config.knobs import Config
from ..core import checkpoint
from ..models import store, trains_here
from ..scale.logit_cache import cache_folder
from ..training import cost


def row_cost(cfg: Config, method: str, seeds) -> dict:
    """{"train_s" (mean over seeds), "train_s_per_seed", "train_device", "train_threads", "train_side_by_side"
    (of its first seed), "train_tflops" (per seed), "train_epochs"} of a student row, from its checkpoints."""
    states = [checkpoint.load(store.checkpoint_path(cfg, method, s)) for s in seeds]
    share = _cache_seconds(cfg) / max(1, _readers(cfg) * len(seeds)) if _reads_cache(cfg, method) else 0.0
    seconds = [sum(st["history"].get("time_s", [])) + share for st in states]
    return {
        "train_s": sum(seconds) / len(seconds),
        "train_s_per_seed": seconds,
        "train_device": states[0].get("device") or "not recorded",
        "train_threads": states[0].get("threads"),  # (None: a checkpoint from before they were recorded)
        "train_side_by_side": states[0].get("side_by_side", 1),
        "train_tflops": cost.seed_gflops(cfg, method) / 1e3,
        "train_epochs": cost.epochs_of(cfg, method),
    }


def with_ratios(rows: list[dict]) -> None:
    """Add "train_s_ratio" and "train_tflops_ratio" (× the baseline row's) to every row that has the costs."""
    base = next((r for r in rows if r["method"] == "baseline" and r.get("train_s")), None)
    for r in rows:
        if base is not None and r.get("train_s") is not None:
            r["train_s_ratio"] = r["train_s"] / base["train_s"]
            r["train_tflops_ratio"] = r["train_tflops"] / base["train_tflops"]


def teacher_training(cfg: Config) -> dict:
    """The teacher's own training cost when this project trained it (once, shared by every KD row)."""
    path = store.checkpoint_path(cfg, "teacher")
    if not trains_here(cfg) or not path.is_file():
        return {"trained_here": False}
    state = checkpoint.load(path)
    return {
        "trained_here": True,
        "seconds": sum(state["history"].get("time_s", [])),
        "epochs": state["epochs"],
        "device": state.get("device") or "not recorded",
        "tflops": cost.seed_gflops(cfg, "teacher") / 1e3,
    }


def _reads_cache(cfg: Config, method: str) -> bool:
    return cfg.teacher_cache and kd.get(method).teacher == "logits"


def _readers(cfg: Config) -> int:
    return sum(_reads_cache(cfg, m) for m in cfg.students)


def _cache_seconds(cfg: Config) -> float:
    done = cache_folder(cfg) / "complete.json"
    return float(json.loads(done.read_text()).get("seconds", 0.0)) if done.is_file() else 0.0
