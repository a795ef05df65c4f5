"""How a notebook (or a command) finds the settings of its run, so a study is set up once.

A run records its settings in checkpoints/<run_name>/settings.json when a notebook (01-04) or
`python -m helpers train` works on it, and checkpoints/current_run.json names the run worked on
last. A notebook's `parameters` cell holds `preset`, `run_name`, `overrides` and the few knobs it
teaches; `start(globals(), "03_response_kd")` turns them into one `Config`:

1. the run: `run_name`, else overrides["run_name"], else (no preset given) the current run, else
   the preset's run_name;
2. the base: the run's recorded settings when no preset is given and the run has a record, else
   the preset (default: demo);
3. on top: `overrides`, then this notebook's knobs that are not None (papermill's `-p NAME VALUE`
   lands here too, for any knob).
`force` and `interactive` are never recorded: they act only where they are set. The runner (`python -m
helpers run`) gives every notebook the preset, run_name and overrides explicitly, so a batch run never
depends on a record.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from ..core import paths
from ..core.errors import UserError
from .knobs import Config, names, portable_value
from .presets import DEFAULT_PRESET, load_preset

RECORD, CURRENT = "settings.json", "current_run.json"
LOCAL = ("force", "interactive")  # act only where they are set: never recorded
WRITERS = ("01_data", "02_baseline", "03_response_kd", "04_feature_kd", "cli")  # they record the run


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def current_run(checkpoints_dir) -> dict | None:
    """{"run_name", "by", "time"} of the run worked on last under `checkpoints_dir`, or None."""
    return _read(paths.resolve(checkpoints_dir) / CURRENT)


def read_record(checkpoints_dir, run_name: str) -> dict | None:
    """{"preset", "by", "time", "settings"} recorded for `run_name`, or None."""
    return _read(paths.resolve(checkpoints_dir) / run_name / RECORD)


def record(cfg: Config, preset: str | None, by: str) -> str | None:
    """Write the run's settings and make it the current run; returns the run that was current before
    when that was another one (None otherwise)."""
    from ..core.checkpoint import write_text_atomic

    before = (current_run(cfg.checkpoints_dir) or {}).get("run_name")
    settings = {k: v for k, v in cfg.to_dict().items() if k not in LOCAL}
    stamp = {"by": by, "time": datetime.now().astimezone().isoformat(timespec="seconds")}
    folder = Path(cfg.checkpoints_dir)
    old = read_record(cfg.checkpoints_dir, cfg.run_name) or {}
    resolved = {k: old[k] for k in old if k not in ("preset", "by", "time", "settings")}  # (`note`s stay)
    write_text_atomic(
        folder / cfg.run_name / RECORD,
        json.dumps({"preset": preset, **stamp, "settings": settings, **resolved}, indent=1),
    )
    write_text_atomic(folder / CURRENT, json.dumps({"run_name": cfg.run_name, **stamp}, indent=1))
    return before if before not in (None, cfg.run_name) else None


def note(cfg: Config, key: str, value) -> None:
    """Add `key: value` (a dict: merged into the one there) to the run's recorded settings: what a knob
    resolved to on this machine (e.g. the threads each training had, which float results depend on); nothing
    for a run without a record."""
    from ..core.checkpoint import write_text_atomic

    rec = read_record(cfg.checkpoints_dir, cfg.run_name)
    if isinstance(value, dict) and isinstance((rec or {}).get(key), dict):
        value = {**rec[key], **value}  # (one entry per method, say)
    if rec is not None and rec.get(key) != value:
        rec[key] = value
        write_text_atomic(paths.resolve(cfg.checkpoints_dir) / cfg.run_name / RECORD, json.dumps(rec, indent=1))


def differences(cfg: Config, preset: str | None) -> dict:
    """{knob: value} where the run's settings differ from its preset's (run_name and local knobs left
    out; paths in their root-relative form); {} for a preset that no longer loads."""
    try:
        base = Config.from_dict({**load_preset(preset or DEFAULT_PRESET), "run_name": cfg.run_name}).to_dict()
    except UserError:
        return {}
    now = cfg.to_dict()
    return {k: now[k] for k in now if k not in LOCAL + ("run_name",) and portable_value(k, base.get(k)) != now[k]}


def describe(cfg: Config, preset: str | None) -> str:
    """ "preset demo + epochs=2, seeds=1": a run's settings in one phrase, as messages name them."""
    diff = differences(cfg, preset)
    return f"preset {preset or DEFAULT_PRESET}" + (
        " + " + ", ".join(f"{k}={v!r}" for k, v in diff.items()) if diff else " as it is"
    )


def preset_of(cfg: Config, preset: str | None = None) -> str:
    """The preset a run was set up from: the one given, else its record's, else the default."""
    return preset or (read_record(cfg.checkpoints_dir, cfg.run_name) or {}).get("preset") or DEFAULT_PRESET


def resolve(preset: str | None, run_name: str | None, explicit: dict) -> tuple[Config, str]:
    """(Config, where its settings came from) by the rules in this module's docstring."""
    base = load_preset(preset or DEFAULT_PRESET)
    folder = explicit.get("checkpoints_dir", base.get("checkpoints_dir", Config.checkpoints_dir))
    run_name = run_name or explicit.get("run_name")
    source = f"preset {preset}" if preset else None
    if run_name is None and preset is None and (cur := current_run(folder)):
        run_name = cur["run_name"]
    run_name = run_name or base.get("run_name", Config.run_name)
    rec = read_record(folder, run_name) if preset is None else None
    if rec:
        base, source = (
            dict(rec["settings"]),
            f"the run's record (last written by {rec['by']}, {rec['time'][:16].replace('T', ' ')})",
        )
    source = source or f"preset {DEFAULT_PRESET} (a new run)"
    values = {**base, **explicit, "run_name": run_name}
    return from_settings(values, keep=explicit), source


def from_settings(values: dict, keep=()) -> Config:
    """A Config from recorded settings: their method files imported first, then knobs that this version no
    longer has dropped (a record of an older version), except those in `keep` (which are checked)."""
    from .. import kd

    kd.load_files(values.get("method_files") or [])
    known = set(names())
    return Config.from_dict({k: v for k, v in values.items() if k in known or k in keep})


def _knobs(ns: dict) -> dict:
    """The knobs a notebook sets: `overrides`, then any knob-named global that is not None."""
    overrides = ns.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise UserError(f"overrides must be a dict of knob: value, e.g. {{'epochs': 10}}; got {overrides!r}.")
    own = {k: ns[k] for k in names() if k != "run_name" and isinstance(ns.get(k), (str, int, float, bool, list))}
    return {**overrides, **own}


def start(ns: dict, notebook: str) -> Config:
    """The Config of a notebook run (see the module docstring); prints which run and from where."""
    preset, run_name = ns.get("preset"), ns.get("run_name")
    explicit = _knobs(ns)
    followed = (
        current_run(explicit.get("checkpoints_dir", Config.checkpoints_dir))
        if not (preset or run_name or explicit.get("run_name"))
        else None
    )
    cfg, source = resolve(preset, run_name, explicit)
    changed = {
        k: v
        for k, v in explicit.items()
        if k not in ("run_name", "interactive", "force") or (k == "force" and v is True)
    }
    base = preset_of(cfg, preset)
    was = record(cfg, base, notebook) if notebook in WRITERS else None
    extra = ", ".join(f"{k}={portable_value(k, getattr(cfg, k))!r}" for k in names() if k in changed)
    diff = differences(cfg, base)
    against = (
        ""
        if source.startswith("preset")
        # (on a preset, "+ ..." is already what differs)
        else (
            f" · differs from preset {base}: " + ", ".join(f"{k}={v!r}" for k, v in diff.items())
            if diff
            else f" · the same as preset {base}"
        )
    )
    print(
        f"run '{cfg.run_name}' · settings: {source}"
        + (f" + {extra}" if extra else "")
        + against
        + f" · data {data_phrase(cfg)}"
    )
    if was:
        print(
            f"current run: '{cfg.run_name}' (was '{was}'; notebooks left at their defaults now follow "
            f"'{cfg.run_name}'; run_name='{was}' goes back)"
        )
    elif followed and followed.get("run_name") == cfg.run_name:
        print(
            f"(following the current run '{cfg.run_name}', set by {followed.get('by')} at "
            f"{str(followed.get('time', ''))[:16].replace('T', ' ')}; `python -m helpers runs` lists every run)"
        )
    return cfg


def data_phrase(cfg: Config) -> str:
    """ "demo data in the VOC layout (data/demo)" or "PASCAL VOC 2012 (data/voc)"."""
    what = "PASCAL VOC 2012" if cfg.dataset == "voc" else "demo data in the VOC layout"
    return f"{what} ({portable_value('data_root', cfg.data_root)})"
