"""Presets and values given as text: a preset (helpers/config/presets/<name>.yaml, or any YAML file) holds
only what differs from the defaults; `-p NAME VALUE` values are read as YAML; `from_preset` is what the
command line builds (defaults, then the preset, then overrides)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

from ..core import paths
from ..core.errors import UserError
from .knobs import Config

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "demo"


class _Loader(yaml.SafeLoader):
    """yaml.safe_load, except that `1e-4` is a float (YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name_or_path) -> dict:
    """A preset's knobs (only those that differ from the defaults): helpers/presets/<name>.yaml, or the
    path of any such YAML file. Its `description` is dropped; names are checked by `Config.from_dict`."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    elif not path.is_absolute() and not path.is_file():
        path = paths.resolve(path)
    if not path.is_file():
        hint = difflib.get_close_matches(str(name_or_path), available_presets(), n=1)
        raise UserError(
            f"Unknown preset '{name_or_path}'"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f". Available presets: {', '.join(available_presets()) or 'none'} (in {PRESETS_DIR}),"
            " or give the path of a .yaml file."
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise UserError(f"Preset {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"Preset {path} must be a mapping of parameter: value, got {type(data).__name__}.")
    data.pop("description", None)
    return data


def parse_value(text: str):
    """A `-p NAME VALUE` value, read as YAML: "3" -> 3, "0.5" -> 0.5, "1e-4" -> 0.0001,
    "true" -> True, "null" -> None, "cwd" -> "cwd"; an empty or unparsable text stays a string."""
    if text.strip() == "":
        return text
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def from_preset(preset: str | None = DEFAULT_PRESET, overrides: dict | None = None) -> Config:
    """Defaults, then the preset's values, then `overrides`: what the command line builds."""
    return Config.from_dict({**(load_preset(preset) if preset else {}), **(overrides or {})})
