"""Knowledge distillation: the method registry (one entry per method) and the methods' loss terms.

Built in, one per family of the survey taxonomy (Gou et al., IJCV 2021): response (soft labels),
feature (FitNets hint / CWD, with an adapter) and relation (pair-wise affinities); plus the baseline.
"""

from . import response, feature, relation  # noqa: F401, I001  (they register the built-in methods, in this order)
from .contract import check, check_method
from .objective import objective, teacher_outputs, views
from .registry import Knob, Method, get, label, load_files, method_knobs, register, registered, trained_by

__all__ = [
    "Knob",
    "Method",
    "check",
    "check_method",
    "get",
    "label",
    "load_files",
    "method_knobs",
    "objective",
    "register",
    "registered",
    "teacher_outputs",
    "trained_by",
    "views",
]
