"""The KD methods, each registered once: a loss term, what it needs from the teacher, its knobs.

```python
from helpers.methods import register

@register("logit_mse", label="Logit MSE", teacher="logits", knobs={"gamma": 1.0})
def logit_mse(s, t, target, cfg):
    valid = (target != 255).unsqueeze(1)
    return cfg.gamma * ((s.logits - t.logits) ** 2 * valid).sum() / valid.sum().clamp(min=1)
```
`s` has `.logits` (N, C, H, W) at label resolution and `.feature` (the student's deepest encoder
feature); with `adapter=True` also `.adapted` (a 1x1 conv + BN to the teacher's channels, trained with
the student, dropped afterwards). `t` has what `teacher=` asks for: "logits", "feature", "both" or
None (nothing). The function returns the KD term (a tensor), or a dict of named parts whose sum is the
term; the framework (`kd.objective`) adds the cross-entropy and logs every part. `weight="alpha"`
names a knob the term is multiplied by (the built-in methods return their term as their paper
writes it, and the history logs it before weighting).

Everything that lists methods (training, the table, figures, the CLI, the sweep, the bench) reads
this registry and the run's `students` knob; nothing else names a method.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core import paths
from ..core.errors import UserError

TEACHER_NEEDS = (None, "logits", "feature", "both")


@dataclass(frozen=True)
class Knob:
    """A method's knob, described as config.py describes every knob: its type is its default's."""

    default: object
    help: str = ""
    choices: tuple = ()
    minimum: float | None = None
    needs: tuple | None = None  # (knob, value): it acts only when that knob has that value


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # the table's row label
    loss: Callable | None  # (s, t, target, cfg) -> tensor or {part: tensor}; None: cross-entropy only
    teacher: str | None = None  # what the loss reads from the teacher (TEACHER_NEEDS)
    adapter: bool = False  # s.adapted: the student's feature mapped to the teacher's channels
    knobs: dict = field(default_factory=dict)  # {name: Knob}
    weight: str | None = None  # the knob the term is multiplied by (None: 1)
    paper: str = ""
    notebook: str | None = None  # the notebook that trains it in a study (None: the runner, before 05)
    source: str = "helpers"  # the module (or method file) that registered it
    match_compute: bool = False  # trained for as many epochs as match the costliest KD method's FLOPs

    @property
    def needs_logits(self) -> bool:
        return self.teacher in ("logits", "both")

    @property
    def needs_feature(self) -> bool:
        return self.teacher in ("feature", "both")


REGISTRY: dict[str, Method] = {}


def _as_knob(value) -> Knob:
    return value if isinstance(value, Knob) else Knob(value)


def register(
    name: str,
    *,
    label: str,
    teacher: str | None = None,
    adapter: bool = False,
    knobs: dict | None = None,
    weight: str | None = None,
    paper: str = "",
    notebook: str | None = None,
    match_compute: bool = False,
):
    """Register the decorated loss term as KD method `name` (see the module docstring)."""
    where = f"register('{name}')"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or "") or name == "teacher":
        raise UserError(
            f"{where}: a method's name is lower-case letters, digits and _ (it names checkpoint "
            "files and folders), and not 'teacher'."
        )
    if teacher not in TEACHER_NEEDS:
        raise UserError(f"{where}: teacher={teacher!r}; choose one of {TEACHER_NEEDS}.")
    knobs = {k: _as_knob(v) for k, v in (knobs or {}).items()}
    if weight is not None and weight not in knobs:
        raise UserError(f"{where}: weight='{weight}' must be one of its own knobs ({', '.join(knobs) or 'none'}).")

    def add(fn):
        source = _source(fn)
        old = REGISTRY.get(name)
        if old is not None and old.source != source:
            raise UserError(
                f"The KD method '{name}' is registered twice: by {old.source} and by {source}. "
                "Give one of them another name."
            )
        for k in knobs:
            owner = next((m for m in REGISTRY.values() if k in m.knobs and m.name != name), None)
            if owner is not None:
                raise UserError(
                    f"{source}: the knob '{k}' of method '{name}' is already a knob of '{owner.name}' "
                    f"(registered by {owner.source}); give it another name (e.g. '{name}_{k}')."
                )
        REGISTRY[name] = Method(
            name, label, fn, teacher, adapter, knobs, weight, paper, notebook, source, match_compute
        )
        return fn

    return add


def _source(fn) -> str:
    """Where a method comes from, as messages name it: its file for a method file, else its module."""
    if fn is None:
        return __name__
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    name = getattr(fn, "__module__", "?")
    return paths.portable(path) if path and name.startswith("kd_method_") else name


def get(name: str) -> Method:
    """The registered method `name`; an unknown one is a UserError with a did-you-mean."""
    if name not in REGISTRY:
        hint = difflib.get_close_matches(name, list(REGISTRY), n=1)
        raise UserError(
            f"'{name}' is not a registered KD method"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f"; registered: {', '.join(REGISTRY)}. A method of your own is registered in a file "
            "named with -p method_files my_kd.py (README: 'Add your own KD method')."
        )
    return REGISTRY[name]


def registered() -> list[str]:
    return list(REGISTRY)


def visible(files=None) -> list[Method]:
    """The methods a study with these `method_files` can use: the built-in ones and those its files
    registered (None: every registered method). A method registered elsewhere (a notebook cell, another
    study's file imported in this process) is not part of it: other processes could not import it."""
    if files is None:
        return list(REGISTRY.values())
    own = {paths.portable(f) for f in files}
    return [m for m in REGISTRY.values() if m.source.startswith("helpers.") or m.source in own]


def method_knobs(files=None) -> dict[str, tuple[Method, Knob]]:
    """{knob name: (its method, Knob)} over the methods `visible(files)`, in registration order."""
    return {k: (m, knob) for m in visible(files) for k, knob in m.knobs.items()}


def label(name: str) -> str:
    """The table's row label of a method (or of the teacher's reference row)."""
    return "Teacher (reference)" if name == "teacher" else get(name).label


def trained_by(name: str) -> str | None:
    """The notebook that trains a method in a study (the teacher: 02_baseline); None for a method no notebook
    trains for every seed (pair-wise, your own): `python -m helpers run` trains those before 05."""
    return "02_baseline" if name == "teacher" else get(name).notebook


def load_files(files, reload: bool = False) -> list[str]:
    """Import each method file (a .py path, root-relative like every path knob) once per process (again with
    `reload`: a file just rewritten), so its @register calls run; returns the modules' names. A missing file
    or one that fails to import is a UserError naming it (nothing has trained yet)."""
    if isinstance(files, str):  # "-p method_files a.py,b.py"
        files = [f.strip() for f in files.split(",") if f.strip()]
    loaded = []
    for f in files or []:
        path = paths.resolve(f)
        module = "kd_method_" + re.sub(r"\W", "_", str(path))
        if module not in sys.modules or reload:
            _import(f, path, module)
        loaded.append(module)
    return loaded


def _import(given, path, module: str) -> None:
    if path.suffix != ".py" or not path.is_file():
        raise UserError(
            f"method_files: '{given}' is not a .py file ({path}). Give the path of a Python file that "
            "registers a method with @register (paths are relative to the project root)."
        )
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    try:
        spec.loader.exec_module(mod)
    except UserError:
        del sys.modules[module]
        raise
    except Exception as e:  # a student's file: which file, what went wrong, one paragraph
        del sys.modules[module]
        line = next((f" (line {tb.lineno})" for tb in _frames(e) if tb.filename == str(path)), "")
        raise UserError(
            f"method_files: '{given}' failed to import{line}: {type(e).__name__}: {e}. Fix the file "
            "and run again; nothing was trained."
        ) from None


def _frames(e: BaseException):
    import traceback

    return traceback.extract_tb(e.__traceback__)


register("baseline", label="Without KD (Baseline)", notebook="02_baseline")(None)
# The baseline given the training compute of the costliest KD method of the run (training/cost.py): does KD
# still win when the baseline may train as long? (-p students baseline,response,feature,baseline_matched)
register("baseline_matched", label="Without KD, compute-matched", match_compute=True)(None)
