"""Every knob of a study in one place: default (the demo), type, meaning, allowed values, validation.

- `Config` holds the knobs: each field's metadata says what it means, and each registered KD method
  brings its own knobs (helpers/kd: `register(..., knobs=...)`), which a Config holds beside its
  fields and serves as attributes (`cfg.alpha`); `specs()` lists them all (docs/parameters.md is
  generated from it).
- `Config.from_dict` imports the run's `method_files` first, then checks every name (did-you-mean),
  type and allowed value before anything runs.
- `shaping_keys(method)`: the knobs that shape a model's weights (a checkpoint made with other
  values is neither reused nor continued); `TEACHER_KEYS`: what determines the teacher.
Presets and values from the command line: `presets.py`; a notebook's run settings: `study.py`.
Relative paths mean the project root whatever the working directory (`core.paths`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

from .. import kd
from ..core import paths
from ..core.errors import UserError
from .fields import CACHE_KEYS, STUDENT_KEYS, TEACHER_KEYS, Knobs

# Knobs that name a file or folder: a relative value means the project root (`paths.root()`), never
# the working directory (JupyterLab runs notebooks in notebooks/). Held absolute in a Config,
# stored root-relative by `to_dict()`. Values that are not paths ("" or "scratch") stay as they are.
PATH_KNOBS = ("checkpoints_dir", "reports_dir", "data_root", "sbd_root", "teacher_weights")
_NOT_A_PATH = {"sbd_root": ("",), "teacher_weights": ("scratch", "torchvision")}
# dataset="voc": the split each split knob should name when VOC lacks its value
_VOC_SPLIT_ADVICE = {"train_split": "train", "teacher_split": "train", "monitor_split": "val", "eval_split": "val"}
TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "int | str": (int, str)}


@dataclass
class Config(Knobs):
    # the registered KD methods' knobs (alpha, temperature, ...): read as cfg.alpha like every other knob
    method_values: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name in ("students", "method_files"):  # "-p students a,b" gives a string
            if isinstance(getattr(self, name), str):
                setattr(self, name, [s.strip() for s in getattr(self, name).split(",") if s.strip()])
        problems = [p for s in specs(with_methods=False) if (p := _check(self, s))]
        if problems:
            raise UserError("\n".join(problems))
        for name in PATH_KNOBS:  # relative paths mean the project root, whatever the working directory
            v = getattr(self, name)
            if v not in _NOT_A_PATH.get(name, ("",)):
                setattr(self, name, str(paths.resolve(v)))
        self.method_files = [paths.portable(f) for f in self.method_files]
        kd.load_files(self.method_files)
        self._check_methods()
        self._check_voc_splits()

    def __getattr__(self, name):  # a registered method's knob (called only when no field has the name)
        values = self.__dict__.get("method_values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"Config has no knob '{name}'")

    def _check_methods(self):
        """The students are registered methods (baseline first, no repeats); every method knob has a value
        of its type, within its choices; no method knob shadows a field."""
        mine = {m.name for m in kd.registry.visible(self.method_files)}
        for name in self.students:
            if kd.get(name).name not in mine:  # (did-you-mean for a name that is not registered)
                raise UserError(
                    f"students: '{name}' is registered by {kd.get(name).source}, which is not one of "
                    f"method_files {self.method_files}; save the method to a .py file and name it there "
                    "(other processes, torchrun's included, import only those)."
                )
        if not self.students or self.students[0] != "baseline" or len(set(self.students)) != len(self.students):
            raise UserError(
                f"students={self.students}: list each method once, 'baseline' first (every KD row is "
                "compared with it), e.g. -p students baseline,response,feature."
            )
        clash = [(k, m) for k, (m, _) in kd.method_knobs(self.method_files).items() if k in _field_names()]
        if clash:
            raise UserError(
                "; ".join(
                    f"{m.source}: the knob '{k}' of method '{m.name}' has the name of a knob of the study"
                    for k, m in clash
                )
                + ". Give it another name."
            )
        own = [s for s in specs(files=self.method_files) if s.method]
        unknown = sorted(set(self.method_values) - {s.name for s in own})
        if unknown:
            raise UserError("\n".join(_unknown(n, self.method_files) for n in unknown))
        self.method_values = {s.name: self.method_values.get(s.name, s.default) for s in own}
        problems = [p for s in own if (p := _check(self, s))]
        if problems:
            raise UserError("\n".join(problems))

    def _check_voc_splits(self):
        """dataset="voc": refuse split names VOC lacks (the demo's teacher/holdout) before anything runs.
        A split list of your own in a real VOC tree (data_root/VOCdevkit/VOC2012/ImageSets/Segmentation/
        <name>.txt, in a folder that is not a generated demo set) counts as a split."""
        if self.dataset != "voc":
            return
        from ..data import demo as demo_data
        from ..data import voc

        folder = voc.voc_dir(self.data_root) / "ImageSets" / "Segmentation"
        own_lists = not (Path(self.data_root) / "demo.json").is_file()
        bad = [
            (k, getattr(self, k), advice)
            for k, advice in _VOC_SPLIT_ADVICE.items()
            if getattr(self, k)
            and getattr(self, k) not in (*voc.STANDARD_SPLITS, "train_aug")
            and not (own_lists and (folder / f"{getattr(self, k)}.txt").is_file())
        ]
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
            f"as {folder}/<name>.txt in a real VOC tree.)"
        )

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """A Config from {knob: value}: the method files it names are imported first (they register
        knobs); unknown names are refused with a did-you-mean, all at once."""
        files = _as_list(d.get("method_files", []))
        kd.load_files(files)
        unknown = sorted(set(d) - set(names(files)))
        if unknown:
            raise UserError(
                "\n".join(_unknown(n, files) for n in unknown) + f"\nKnown parameters: {', '.join(names(files))}."
            )
        own = _field_names()
        return cls(
            **{k: v for k, v in d.items() if k in own}, method_values={k: v for k, v in d.items() if k not in own}
        )

    def to_dict(self) -> dict:
        """The knobs as plain values (method knobs included); path knobs root-relative where they lie
        under the root."""
        d = {k: portable_value(k, getattr(self, k)) for k in _field_names()}
        return {**d, **self.method_values}

    def replace(self, **kw) -> Config:
        """A copy with some knobs changed (fields and method knobs alike), checked again."""
        files = _as_list(kw.get("method_files", self.method_files))
        kd.load_files(files)
        unknown = sorted(set(kw) - set(names(files)))
        if unknown:
            raise UserError("\n".join(_unknown(n, files) for n in unknown))
        own = {k: v for k, v in kw.items() if k in _field_names()}
        methods = {**self.method_values, **{k: v for k, v in kw.items() if k not in own}}
        return dataclasses.replace(self, **own, method_values=methods)

    def teacher_key(self) -> str:
        """Hash of everything that determines the teacher, so a finished one is reused."""
        d = self.to_dict()  # (paths in their root-relative form: the key doesn't depend on the checkout)
        blob = json.dumps({k: d[k] for k in TEACHER_KEYS}, sort_keys=True)
        if self.dataset == "voc":
            blob += d["data_root"]
        return f"{self.teacher_arch}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def shaping_keys(method: str) -> tuple[str, ...]:
    """The knobs that shape a `method` model's weights: the student's, the teacher's when the method reads
    the teacher (the cache's when it reads only logits), and the method's own knobs."""
    if method == "teacher":
        return TEACHER_KEYS
    m = kd.get(method)
    teacher = (TEACHER_KEYS + (CACHE_KEYS if m.teacher == "logits" else ())) if m.teacher else ()
    return tuple(dict.fromkeys(STUDENT_KEYS + teacher + tuple(m.knobs)))


class Spec(NamedTuple):
    """One knob as the checks and the docs see it: a field of Config, or a method's knob."""

    name: str
    default: object
    type: str
    help: str
    choices: tuple
    minimum: float | None
    group: str
    method: str | None = None  # the method that registered it


def specs(with_methods: bool = True, files=None) -> list[Spec]:
    """Every knob: Config's fields in their groups, then the knobs of the methods a study with these
    `method_files` can use (None: of every registered method)."""
    out = [
        Spec(
            f.name,
            f.default_factory() if callable(f.default_factory) else f.default,
            f.type,
            f.metadata["help"],
            f.metadata["choices"],
            f.metadata["min"],
            f.metadata["group"],
        )
        for f in fields(Config)
        if "help" in f.metadata
    ]
    if with_methods:
        out += [
            Spec(k, kn.default, type(kn.default).__name__, kn.help, kn.choices, kn.minimum, f"method: {m.name}", m.name)
            for k, (m, kn) in kd.method_knobs(files).items()
        ]
    return out


def _field_names() -> list[str]:
    return [f.name for f in fields(Config) if "help" in f.metadata]


def _check(cfg: Config, s: Spec) -> str | None:
    """The problem with one knob's value (type, allowed values, minimum), or None; ints become floats."""
    v = getattr(cfg, s.name)
    want = TYPES[s.type]
    if want is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
        if s.method:
            cfg.method_values[s.name] = v
        else:
            setattr(cfg, s.name, v)
    elif not isinstance(v, want) or (want is int and isinstance(v, bool)):
        return f"Parameter '{s.name}' must be {s.type}, got {v!r} ({type(v).__name__})."
    if want is list and not all(isinstance(x, str) for x in v):
        return f"Parameter '{s.name}' must be a list of names, got {v!r}."
    if s.type == "int | str":  # a number or "auto"
        if isinstance(v, bool) or (isinstance(v, str) and v != "auto"):
            return f"Parameter '{s.name}' is {v!r}; give 'auto' or a whole number (at least {s.minimum})."
        if v == "auto":
            return None
    if s.choices and v not in s.choices:
        return f"Parameter '{s.name}' is {v!r}; choose one of {s.choices}."
    if s.minimum is not None and v < s.minimum:
        return f"Parameter '{s.name}' must be at least {s.minimum}, got {v}."
    return None


def _as_list(v) -> list:
    return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else list(v or [])


def _unknown(name: str, files=None) -> str:
    hint = difflib.get_close_matches(name, names(files), n=1)
    return f"Unknown parameter '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "") + "."


def names(files=None) -> list[str]:
    """Every knob's name: Config's fields, then the knobs of the methods `kd.registry.visible(files)`."""
    return _field_names() + list(kd.method_knobs(files))


def portable_value(name: str, value):
    """A knob's value as stored and compared: path knobs root-relative where possible (see paths)."""
    if name in PATH_KNOBS and isinstance(value, str) and value not in _NOT_A_PATH.get(name, ("",)):
        return paths.portable(value)
    return value
