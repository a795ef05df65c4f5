"""Models: the networks (torchvision's and our compact ones, one interface with feature taps), where a
run's trained models are stored and loaded, and the frozen teacher.
"""

from .nets import MODEL_NAMES, CompactSegNet, build_model
from .store import NotTrained, checkpoint_path, load_model, model_key, reports_dir, run_dir, seeds_of, teacher_history
from .teacher import freeze, load_teacher, teacher_identity, trains_here

__all__ = [
    "MODEL_NAMES",
    "CompactSegNet",
    "NotTrained",
    "build_model",
    "checkpoint_path",
    "freeze",
    "load_model",
    "load_teacher",
    "model_key",
    "reports_dir",
    "run_dir",
    "seeds_of",
    "teacher_history",
    "teacher_identity",
    "trains_here",
]
