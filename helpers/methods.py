"""Your own KD method, in one file: register it here and every table, figure and statistic includes it.

```python
# my_kd.py: name it with -p method_files my_kd.py (or in a preset / overrides), add it to `students`
from helpers.methods import register

@register("logit_mse", label="Logit MSE", teacher="logits", knobs={"gamma": 1.0})
def logit_mse(s, t, target, cfg):
    valid = (target != 255).unsqueeze(1)
    return cfg.gamma * ((s.logits - t.logits) ** 2 * valid).sum() / valid.sum().clamp(min=1)
```
See helpers/kd/registry.py for what `s`, `t` and `register`'s arguments mean, and `check_method(name)`
for the contract a method must meet (run on every registered method by the tests and by notebook 07).
"""

import sys

from .core import paths
from .kd import Knob, check, check_method, get, label, load_files, register, registered

__all__ = ["Knob", "check", "check_method", "get", "label", "register", "registered", "save"]
METHODS_DIR = "checkpoints/methods"  # where a method written in a notebook cell is saved (root-relative)


def save(source: str, filename: str = "my_kd.py") -> str:
    """Write a method file from a notebook cell into checkpoints/methods/ (so other kernels and torchrun
    processes can import it) and import it here; returns its path for `method_files` (root-relative)."""
    path = paths.resolve(METHODS_DIR) / filename
    if path.suffix != ".py" or path.parent != paths.resolve(METHODS_DIR):
        raise ValueError(f"save: give a file name ending in .py, e.g. my_kd.py (got {filename!r})")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    load_files([path], reload=True)
    return paths.portable(path)


def _method_file_magic(line: str, cell: str) -> None:
    """%%method_file my_kd.py: this cell's code becomes that method file (saved, then imported)."""
    before = set(registered())
    path = save(cell, line.strip() or "my_kd.py")
    new = [m for m in registered() if m not in before] or "(re-registered)"
    print(
        f"saved {path}; registered: {', '.join(new) if isinstance(new, list) else new}. "
        f"Use it with overrides={{'method_files': ['{path}']}}."
    )


def _install_magic() -> None:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is not None and hasattr(shell, "register_magic_function"):
        shell.register_magic_function(_method_file_magic, magic_kind="cell", magic_name="method_file")


_install_magic()
