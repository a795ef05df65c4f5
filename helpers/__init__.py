"""The package behind the notebooks, one folder per layer (README: "How the code fits together").

Notebooks import the layers by name, `from helpers import study, data, figures, training`: each folder
is a package (its __init__ says its job); the few modules reached directly are in SHORT_NAMES.
"""

import importlib

from .core.errors import UserError
from .core.errors import install_ipython_handler as _install

SHORT_NAMES = {  # the modules a notebook reaches by a short name; the folders (data, kd, training, ...) are packages
    "study": "helpers.config.study",  # a notebook's run settings
    "metrics": "helpers.evaluation.metrics",  # IoU, per-image scores, seed-level intervals
}
__all__ = ["Config", "UserError", *SHORT_NAMES]


def __getattr__(name: str):
    if name == "Config":
        from .config.knobs import Config

        return Config
    if name in SHORT_NAMES:
        module = importlib.import_module(SHORT_NAMES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'helpers' has no attribute '{name}'")


_install()  # in IPython, a UserError shows as its message alone (the cell still fails)
