"""Checkpoints as plain data: atomic save, safe load (`weights_only=True`), clear errors."""
from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import UserError

FORMAT = "kdseg-checkpoint-v1"


def save(state: dict, path) -> Path:
    """Write `state` to `path` atomically: a temporary file in the same folder, fsync, os.replace.

    A crash or a full disk mid-write leaves the previous file at `path` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"No space left on the device while writing '{path}'. The previous version "
                            "of that file (if any) is intact. Free some disk space and run again "
                            "(training resumes from the last saved epoch).") from None
        raise
    return path


def load(path, map_location="cpu") -> dict:
    """Load one of our checkpoints safely; every failure is a UserError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint '{path}' does not exist. Train it first (notebooks 02-04 or "
                        "`python -m helpers train --method ...`), or check the path.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"Refused to load '{path}': it needs unpickling of arbitrary Python objects, "
                        "which could run code. Checkpoints of this project hold plain data only "
                        f"(loaded with weights_only=True). Detail: {str(e).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"Checkpoint '{path}' is truncated or not a PyTorch checkpoint ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}). Delete it and train again; with "
                        "--resume the previous epoch's file is used when present.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"'{path}' is a PyTorch file but not a checkpoint of this project "
                        f"(expected format '{FORMAT}').")
    return state


def load_weights(model: torch.nn.Module, state: dict, path="<checkpoint>") -> None:
    """Load `state['model']` into `model`, explaining an architecture or class-count mismatch."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        cfg = state.get("config", {})
        raise UserError(f"Checkpoint '{path}' holds a '{state.get('arch')}' model with "
                        f"{state.get('num_classes')} classes (dataset {cfg.get('dataset')}), which does not "
                        f"fit the model built here. Use the same architecture and class count. "
                        f"Detail: {str(e).splitlines()[0]}") from None


def rng_state() -> dict:
    import random

    st = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st
