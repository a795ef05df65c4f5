"""The one exception type for a user's mistake: the CLI prints its message without a traceback, and
so does a notebook (in JupyterLab, papermill or the runner) once `helpers` is imported."""

import sys


class UserError(Exception):
    """Bad input or settings: the message says what happened, which file or parameter, what to do."""


def _show_in_ipython(shell, etype, value, tb, tb_offset=None):
    """IPython's handler for a UserError (and an interrupt, Ctrl-C or the stop button): the message alone, in red,
    instead of a 25-line traceback.
    The cell still fails (JupyterLab stops "Run All", papermill and the runner report the error
    with the message); `%tb` shows the full traceback."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    if hasattr(sys, "last_exc"):  # Python 3.12+: what %tb reads first
        sys.last_exc = value
    stb = [f"\x1b[0;31m{etype.__name__}: {value}\x1b[0m" if str(value) else etype.__name__]
    stb.append("(%tb shows where it was raised)")
    shell._showtraceback(etype, value, stb)
    return stb


def install_ipython_handler() -> bool:
    """Register `_show_in_ipython` for UserError and KeyboardInterrupt in the running IPython kernel, if any (and
    if no other custom exception handler is installed there). Returns whether it is registered."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    mine = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if mine and not all(getattr(e, "__name__", "") in ("UserError", "KeyboardInterrupt") for e in mine):
        return False  # someone else's handler: leave it
    shell.set_custom_exc((UserError, KeyboardInterrupt), _show_in_ipython)
    return True
