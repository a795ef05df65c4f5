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


def save(source: str, path="checkpoints/methods/my_kd.py") -> str:
    """Write a method file from a notebook cell (root-relative paths mean the project root) so that other
    kernels and torchrun processes can import it, and import it here; returns its path for `method_files`."""
    target = paths.resolve(path)
    if target.suffix != ".py":
        raise ValueError(f"save: give the path of a .py file, e.g. checkpoints/methods/my_kd.py (got {path!r})")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source, encoding="utf-8")
    load_files([target], reload=True)
    return paths.portable(target)


def _method_file_magic(line: str, cell: str) -> None:
    """%%method_file PATH: this cell's code becomes that method file (saved, then imported)."""
    before = set(registered())
    path = save(cell, line.strip() or "checkpoints/methods/my_kd.py")
    new = [m for m in registered() if m not in before]
    print(
        f"saved {path}; registered: {', '.join(new) if new else 'the same methods again'}. "
        f"Use it with method_files=['{path}']."
    )


def _install_magic() -> None:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is not None and hasattr(shell, "register_magic_function"):
        shell.register_magic_function(_method_file_magic, magic_kind="cell", magic_name="method_file")


_install_magic()
