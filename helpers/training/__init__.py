"""Training: one loop for the teacher and every KD method (resumable, refusing mixed settings), what a
run starts from, the teacher's training and feed, and every seed of a method as notebooks 02-04 run it.
"""

from ..scale.jobs import Job
from .loop import Trainee, fit, train_one_epoch
from .seeds import fit_seeds, side_by_side
from .setup import device, initial_adapter, initial_model, make_optimizer, trained_adapter
from .state import forget, read
from .teacher import TeacherFeed, get_teacher

__all__ = [
    "Job",
    "TeacherFeed",
    "Trainee",
    "device",
    "fit",
    "fit_seeds",
    "forget",
    "get_teacher",
    "initial_adapter",
    "initial_model",
    "make_optimizer",
    "read",
    "side_by_side",
    "train_one_epoch",
    "trained_adapter",
]
