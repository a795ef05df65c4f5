"""Helpers behind the notebooks: one module per job (see the module map in the README)."""
from .config import Config  # noqa: F401
from .errors import UserError  # noqa: F401
from .errors import install_ipython_handler as _install

_install()  # in IPython, a UserError shows as its message alone (the cell still fails)
