"""Where relative paths point: the project root, whatever the working directory.

JupyterLab starts a notebook's kernel in notebooks/, papermill in the folder it is called from, the
runner in the project root. So that `data_root="data/demo"` means the same folder in all of them,
every relative path knob of `Config` (data_root, checkpoints_dir, reports_dir, sbd_root, a
teacher_weights file) is read against `root()`: the folder that holds helpers/ (this checkout),
or the folder in the environment variable KDSEG_ROOT when it is set (tests use it to work in a
temporary folder). Absolute paths (and `~/...`) stay as given.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: helpers/, notebooks/, README.md
ROOT_ENV = "KDSEG_ROOT"


def root() -> Path:
    """The folder relative paths are resolved against: $KDSEG_ROOT if set, else the project root."""
    override = os.environ.get(ROOT_ENV, "").strip()
    return Path(override).expanduser().resolve() if override else PROJECT_ROOT


def resolve(path) -> Path:
    """`path` as an absolute path: relative ones are taken from `root()`, not the working directory."""
    p = Path(path).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else root() / p))


def portable(path) -> str:
    """The short form of a path for storing and comparing: relative to `root()` when it lies inside it
    (so "checkpoints" and "<root>/checkpoints" are one value), absolute otherwise."""
    p = resolve(path)
    try:
        return p.relative_to(root()).as_posix() or "."
    except ValueError:
        return str(p)
