"""Checkpoints as plain data: atomic save, safe load (`weights_only=True`), clear errors."""

from __future__ import annotations

import errno
import glob
import os
import pickle
import tempfile
from pathlib import Path

import torch

from .errors import UserError

FORMAT = "kdseg-checkpoint-v1"


def save(state: dict, path) -> Path:
    """Write `state` to `path` atomically: a temporary file in the same folder, fsync, os.replace.

    A crash or a full disk mid-write leaves the previous file at `path` untouched.
    """
    return _atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def write_text_atomic(path, text: str) -> Path:
    """A small text file (e.g. a history .json) written with the same guarantees as `save`."""
    return _atomic_write(path, lambda f: f.write(text.encode()))


def _atomic_write(path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        _remove_stale_temps(path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(
                f"No space left on the device while writing '{path}'. The previous version "
                "of that file (if any) is intact. Free some disk space and run again "
                "(training resumes from the last saved epoch)."
            ) from None
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders can't be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files that a killed writer of `path` left behind (`.<name>.*.tmp`)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def _unpickler_detail(e: Exception) -> str:
    """The informative line of a weights_only failure ("Unsupported global: GLOBAL x.Y ...")."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _not_a_checkpoint(path, detail: str) -> str:
    # There is one file per model (no per-epoch copies): a damaged one has to be trained again.
    return (
        f"Checkpoint '{path}' is truncated or not a PyTorch checkpoint ({detail}). If it is a checkpoint this "
        "project wrote, delete it and train again: that model then starts from epoch 1; otherwise check the path."
    )


def load(path, map_location="cpu") -> dict:
    """Load one of our checkpoints safely; every failure is a UserError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Checkpoint '{path}' does not exist. Train it first (notebooks 02-04 or "
            "`python -m helpers train --method ...`), or check the path."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError as e:
        raise UserError(f"Checkpoint '{path}' cannot be read ({e.strerror}). Check the file's permissions.") from None
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(e)
        # The weights_only unpickler refuses a GLOBAL (a class or function to import and call) with
        # "Unsupported global: ..."; any other unpickling failure ("Unsupported operand 72") means
        # the bytes are not a pickle at all: random data, a text file, a damaged file.
        if "global" in detail.lower():
            raise UserError(
                f"Refused to load '{path}': it needs unpickling of arbitrary Python objects, "
                "which could run code. Checkpoints of this project hold plain data only "
                f"(loaded with weights_only=True). Detail: {detail}"
            ) from None
        raise UserError(_not_a_checkpoint(path, f"UnpicklingError: {detail}")) from None
    except Exception as e:  # RuntimeError (bad zip), EOFError, KeyError (text), ValueError, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(_not_a_checkpoint(path, f"{type(e).__name__}: {first}")) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(
            f"'{path}' is a PyTorch file but not a checkpoint of this project (expected format '{FORMAT}')."
        )
    return state


def load_weights(model: torch.nn.Module, state: dict, path="<checkpoint>") -> None:
    """Load `state['model']` into `model`, explaining an architecture or class-count mismatch."""
    if not isinstance(state.get("model"), dict):
        raise UserError(
            f"Checkpoint '{path}' holds no model weights (no 'model' entry); it is not a "
            "model checkpoint of this project."
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        cfg = state.get("config", {})
        # torch's first line is only "Error(s) in loading state_dict for X:"; the next names the key.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else "")
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise UserError(
            f"Checkpoint '{path}' holds a '{state.get('arch')}' model with "
            f"{state.get('num_classes')} classes (dataset {cfg.get('dataset')}), which does not "
            f"fit the model built here ({type(model).__name__}). Use the same architecture and "
            f"class count. Detail: {detail}"
        ) from None


def rng_state() -> dict:
    import random

    st = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st
