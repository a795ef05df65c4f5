"""Every knob of a study in one place: default (the demo), type, meaning, allowed values, presets,
validation, and how a notebook or a command turns preset + overrides into one `Config`.

- `Config` holds the knobs; each field's metadata says what it means (the README's parameter table
  is generated from it by `parameters_markdown`).
- Presets (helpers/presets/<name>.yaml) hold only what differs from these defaults; `load_preset`
  is the one place that reads them.
- `Config.from_dict` checks every name (did-you-mean), type and allowed value before anything runs.
- `for_notebook(globals())` is what a notebook's setup cell calls: see its docstring for how a
  run's settings are found (preset, the run's recorded settings, overrides, this notebook's knobs).
Relative paths mean the project root whatever the working directory (see `paths`).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from . import paths
from .errors import UserError

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "demo"
# Knobs that name a file or folder: a relative value means the project root (`paths.root()`), never
# the working directory (JupyterLab runs notebooks in notebooks/). Held absolute in a Config,
# stored root-relative by `to_dict()`. Values that are not paths ("" or "scratch") stay as they are.
PATH_KNOBS = ("checkpoints_dir", "reports_dir", "data_root", "sbd_root", "teacher_weights")
_NOT_A_PATH = {"sbd_root": ("",), "teacher_weights": ("scratch", "torchvision")}
# dataset="voc": the split each split knob should name when VOC lacks its value
_VOC_SPLIT_ADVICE = {"train_split": "train", "teacher_split": "train", "monitor_split": "val", "eval_split": "val"}


def knob(default, help: str, choices: tuple = (), minimum=None, group: str = ""):
    """A Config field with its meaning (and allowed values / minimum) as metadata."""
    return field(default=default, metadata={"help": help, "choices": choices, "min": minimum, "group": group})


@dataclass
class Config:
    # run
    run_name: str = knob("demo", "folder name under checkpoints/ and reports/", group="run")
    checkpoints_dir: str = knob("checkpoints", "where models are saved", group="run")
    reports_dir: str = knob("reports", "where executed notebooks, tables and figures go", group="run")
    device: str = knob("auto", "'auto' (cuda if available), 'cpu' or 'cuda'", ("auto", "cpu", "cuda"), group="run")
    seed: int = knob(0, "seed of the first run; the others are seed+1, seed+2, ...", group="run")
    seeds: int = knob(3, "students trained per method (table: mean ± std, seed-level interval)", minimum=1,
                      group="run")
    force: bool = knob(False, "02-04: retrain this notebook's models even when finished checkpoints exist",
                       group="run")
    nproc: int = knob(1, "processes (GPUs) to train with; > 1: notebooks and the runner launch torchrun", minimum=1,
                      group="run")
    sync_bn: bool = knob(True, "with nproc > 1 on CUDA: SyncBatchNorm (BN statistics over the global batch)",
                         group="run")
    # data
    dataset: str = knob("demo", "'demo' (generated, VOC layout) or 'voc' (real VOC 2012)", ("demo", "voc"),
                        group="data")
    data_root: str = knob("data/demo", "folder that holds VOCdevkit/VOC2012", group="data")
    download: bool = knob(False, "voc only: fetch VOC 2012 with torchvision's downloader", group="data")
    sbd_root: str = knob("", "voc only: SBD folder, needed for train_split='train_aug'", group="data")
    demo_seed: int = knob(0, "demo only: generator seed (same seed, same bytes)", group="data")
    demo_size: int = knob(64, "demo only: image side in pixels", minimum=16, group="data")
    demo_scale: float = knob(1.0, "demo only: fraction of the default split sizes", group="data")
    train_split: str = knob("train", "the students' training split ('train', or 'train_aug' on VOC)", group="data")
    teacher_split: str = knob("teacher", "split the demo teacher (or a VOC fine-tune) trains on", group="data")
    monitor_split: str = knob("holdout", "split evaluated during training for the curves (never selects a model)",
                              group="data")
    eval_split: str = knob("val", "the split the table reports on", group="data")
    crop_size: int = knob(48, "training crop in pixels (padded with 255 where the image is smaller)", minimum=1,
                          group="data")
    base_size: int = knob(64, "shorter side before random scaling", minimum=1, group="data")
    scale_min: float = knob(0.75, "smallest random scale for training", group="data")
    scale_max: float = knob(1.25, "largest random scale for training", group="data")
    num_workers: int = knob(0, "DataLoader worker processes (0: load in the main process)", minimum=0, group="data")
    # models
    student_arch: str = knob("compact_s", "student network (helpers.models.MODEL_NAMES)", group="models")
    student_pretrained_backbone: bool = knob(False, "ImageNet backbone weights for torchvision students",
                                             group="models")
    teacher_arch: str = knob("compact_l", "teacher network (helpers.models.MODEL_NAMES)", group="models")
    teacher_weights: str = knob("scratch", "'scratch', 'torchvision' or the path of a checkpoint", group="models")
    teacher_epochs: int = knob(10, "epochs to train (scratch) or fine-tune (torchvision; 0 = none) the teacher",
                               minimum=0, group="models")
    teacher_lr: float = knob(0.004, "learning rate of the teacher's training", group="models")
    # training (the same for all three students)
    epochs: int = knob(30, "passes over train_split", minimum=1, group="training")
    batch_size: int = knob(16, "images per training step", minimum=1, group="training")
    optimizer: str = knob("adamw", "'adamw' or 'sgd' (momentum 0.9)", ("adamw", "sgd"), group="training")
    lr: float = knob(0.01, "peak learning rate (poly decay, power 0.9, after warm-up)", group="training")
    weight_decay: float = knob(1e-4, "weight decay of the optimizer", group="training")
    warmup_iters: int = knob(50, "linear warm-up steps", minimum=0, group="training")
    amp: bool = knob(True, "mixed precision on CUDA (bf16, or fp16 with a scaler)", group="training")
    channels_last: bool = knob(True, "channels-last memory format for convolutions", group="training")
    monitor_every: int = knob(5, "evaluate monitor_split every N epochs (and after the last)", minimum=1,
                              group="training")
    # distillation
    alpha: float = knob(1.0, "03: weight α of the response-KD term", group="distillation")
    temperature: float = knob(2.0, "03: softmax temperature T of response KD", group="distillation")
    teacher_cache: bool = knob(True, "03: response KD from cached teacher logits (one teacher pass); False: online",
                               group="distillation")
    cache_stride: int = knob(4, "03: the cached logits are average-pooled by this factor", minimum=1,
                             group="distillation")
    beta: float = knob(1.0, "04: weight β of the feature-KD term", group="distillation")
    feature_loss: str = knob("hint", "04: 'hint' (FitNets MSE) or 'cwd' (channel-wise distillation)",
                             ("hint", "cwd"), group="distillation")
    cwd_temperature: float = knob(4.0, "04: temperature of CWD", group="distillation")
    # evaluation and report
    bootstrap_resamples: int = knob(2000, "05: bootstrap resamples of the val images", minimum=1, group="evaluation")
    latency_size: int = knob(64, "05: square input side for the latency column (VOC: 512)", minimum=1,
                             group="evaluation")
    latency_min_time: float = knob(0.5, "05: seconds of timed runs per model and round (x 5 rounds)",
                                   group="evaluation")
    inference_path: str = knob("eager", "05: the latency column's path: 'eager' (fp32), 'fused' or 'jit'",
                               ("eager", "fused", "jit"), group="evaluation")
    num_show: int = knob(8, "01: how many samples to draw", minimum=0, group="evaluation")
    num_success: int = knob(10, "06: best validation images drawn per model", minimum=0, group="evaluation")
    num_failure: int = knob(10, "06: worst validation images drawn per model", minimum=0, group="evaluation")
    interactive: bool = knob(True, "06: show the ipywidgets browser (presets turn it off)", group="evaluation")

    def __post_init__(self):
        problems = [p for f in fields(self) if (p := _check_field(self, f))]
        if problems:
            raise UserError("\n".join(problems))
        for name in PATH_KNOBS:  # relative paths mean the project root, whatever the working directory
            v = getattr(self, name)
            if v not in _NOT_A_PATH.get(name, ("",)):
                setattr(self, name, str(paths.resolve(v)))
        self._check_voc_splits()

    def _check_voc_splits(self):
        """dataset="voc": refuse split names VOC lacks (the demo's teacher/holdout) before anything runs.
        A split list of your own in a real VOC tree (data_root/VOCdevkit/VOC2012/ImageSets/Segmentation/
        <name>.txt, in a folder that is not a generated demo set) counts as a split."""
        if self.dataset != "voc":
            return
        from . import demo_data, voc

        folder = voc.voc_dir(self.data_root) / "ImageSets" / "Segmentation"
        own_lists = not (Path(self.data_root) / "demo.json").is_file()
        bad = [(k, getattr(self, k), advice) for k, advice in _VOC_SPLIT_ADVICE.items()
               if getattr(self, k) and getattr(self, k) not in (*voc.STANDARD_SPLITS, "train_aug")
               and not (own_lists and (folder / f"{getattr(self, k)}.txt").is_file())]
        if not bad:
            return
        one = len(bad) == 1
        if all(split in demo_data.SPLITS for _, split, _ in bad):
            what = ("a split" if one else "splits") + " of the generated demo set"
        else:
            what = "not a VOC 2012 split" if one else "not VOC 2012 splits"
        raise UserError(
            f"With dataset='voc', {' and '.join(f'{k}={v!r}' for k, v, _ in bad)} {'is' if one else 'are'} "
            f"{what}; VOC 2012 has {', '.join(voc.STANDARD_SPLITS)} (and train_aug with SBD): set "
            f"{', '.join(f'{k}={a!r}' for k, _, a in bad)}. (A split list of your own is used when it exists "
            f"as {folder}/<name>.txt in a real VOC tree.)")

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A Config from {knob: value}; unknown names are refused with a did-you-mean, all at once."""
        unknown = sorted(set(d) - set(names()))
        if unknown:
            raise UserError("\n".join(_unknown(n) for n in unknown) + f"\nKnown parameters: {', '.join(names())}.")
        return cls(**d)

    def to_dict(self) -> dict:
        """The knobs as plain values; path knobs root-relative where they lie under the root."""
        return {k: portable_value(k, v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)

    def teacher_key(self) -> str:
        """Hash of everything that determines the teacher, so a finished one is reused."""
        d = self.to_dict()  # (paths in their root-relative form: the key doesn't depend on the checkout)
        blob = json.dumps({k: d[k] for k in TEACHER_KEYS}, sort_keys=True)
        if self.dataset == "voc":
            blob += d["data_root"]
        return f"{self.teacher_arch}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


# Everything that determines the teacher trained here (its checkpoint's name hashes these; data_root too for VOC).
TEACHER_KEYS = ("dataset", "demo_seed", "demo_size", "demo_scale", "teacher_arch", "teacher_weights",
                "teacher_epochs", "teacher_lr", "teacher_split", "crop_size", "base_size", "scale_min",
                "scale_max", "batch_size", "optimizer", "weight_decay", "warmup_iters", "seed")


def _check_field(cfg: Config, f) -> str | None:
    """The problem with one field's value (type, allowed values, minimum), or None; ints become floats."""
    v, meta = getattr(cfg, f.name), f.metadata
    want = {"str": str, "int": int, "float": float, "bool": bool}[f.type]
    if want is float and isinstance(v, int) and not isinstance(v, bool):
        setattr(cfg, f.name, v := float(v))
    elif not isinstance(v, want) or (want is int and isinstance(v, bool)):
        return f"Parameter '{f.name}' must be {f.type}, got {v!r} ({type(v).__name__})."
    if meta["choices"] and v not in meta["choices"]:
        return f"Parameter '{f.name}' is {v!r}; choose one of {meta['choices']}."
    if meta["min"] is not None and v < meta["min"]:
        return f"Parameter '{f.name}' must be at least {meta['min']}, got {v}."
    return None


def _unknown(name: str) -> str:
    hint = difflib.get_close_matches(name, names(), n=1)
    return f"Unknown parameter '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "") + "."


def names() -> list[str]:
    return [f.name for f in fields(Config)]


def portable_value(name: str, value):
    """A knob's value as stored and compared: path knobs root-relative where possible (see paths)."""
    if name in PATH_KNOBS and isinstance(value, str) and value not in _NOT_A_PATH.get(name, ("",)):
        return paths.portable(value)
    return value


# --------------------------------------------------------------------------- presets and values
class _Loader(yaml.SafeLoader):
    """yaml.safe_load, except that `1e-4` is a float (YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name_or_path) -> dict:
    """A preset's knobs (only those that differ from the defaults): helpers/presets/<name>.yaml, or the
    path of any such YAML file. Its `description` is dropped; names are checked by `Config.from_dict`."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    elif not path.is_absolute() and not path.is_file():
        path = paths.resolve(path)
    if not path.is_file():
        hint = difflib.get_close_matches(str(name_or_path), available_presets(), n=1)
        raise UserError(f"Unknown preset '{name_or_path}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                        + f". Available presets: {', '.join(available_presets()) or 'none'} (in {PRESETS_DIR}),"
                        " or give the path of a .yaml file.")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise UserError(f"Preset {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"Preset {path} must be a mapping of parameter: value, got {type(data).__name__}.")
    data.pop("description", None)
    return data


def parse_value(text: str):
    """A `-p NAME VALUE` value, read as YAML: "3" -> 3, "0.5" -> 0.5, "1e-4" -> 0.0001,
    "true" -> True, "null" -> None, "cwd" -> "cwd"; an empty or unparsable text stays a string."""
    if text.strip() == "":
        return text
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def from_preset(preset: str | None = DEFAULT_PRESET, overrides: dict | None = None) -> Config:
    """Defaults, then the preset's values, then `overrides`: what the command line builds."""
    return Config.from_dict({**(load_preset(preset) if preset else {}), **(overrides or {})})


# --------------------------------------------------------------------------- the README's table
README_START, README_END = "<!-- parameters:start -->", "<!-- parameters:end -->"


def parameters_markdown() -> str:
    """Every knob as a markdown table (Name | Default | Meaning), grouped as in `Config`, with the
    values the presets change."""
    presets = {p: load_preset(p) for p in available_presets()}
    rows = ["| Name | Default | Presets | Meaning |", "|---|---|---|---|"]
    for f in fields(Config):
        default = _literal(f.default)
        changed = ", ".join(f"{p}: `{_literal(v)}`" for p, values in presets.items()
                            if (v := values.get(f.name, f.default)) != f.default)
        meaning = f.metadata["help"] + (f" ({f.metadata['group']})" if f.metadata["group"] else "")
        rows.append(f"| `{f.name}` | `{default}` | {changed} | {meaning.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def _literal(v) -> str:
    return json.dumps(v) if isinstance(v, str) else repr(v)


def readme_with_parameters(text: str) -> str:
    """README text with the block between the parameter markers regenerated from `Config`."""
    if README_START not in text or README_END not in text:
        raise UserError(f"README.md lacks the markers {README_START} ... {README_END}.")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{parameters_markdown()}{README_END}{tail}"
