"""Helpers behind the notebooks: knowledge distillation for semantic segmentation on VOC 2012.

One job per module (see README, "How the code is laid out"). Notebooks import this package and call
a few functions per cell; `python -m helpers` offers the same functions on the command line.
"""
from . import bench, checkpoint, demo_data, engine, metrics, models, viz, voc  # noqa: F401
from .config import Config  # noqa: F401
from .errors import UserError  # noqa: F401
from .errors import install_ipython_handler as _install

_install()  # in a notebook, a UserError shows as its message, not a traceback
