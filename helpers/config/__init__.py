"""Configuration: every knob of a study (default, meaning, allowed values), presets, and how a notebook
or a command finds its run's settings (`study`).
"""

from .knobs import Config, names, shaping_keys, specs
from .presets import DEFAULT_PRESET, available_presets, from_preset, load_preset, parse_value

__all__ = [
    "DEFAULT_PRESET",
    "Config",
    "available_presets",
    "from_preset",
    "load_preset",
    "names",
    "parse_value",
    "shaping_keys",
    "specs",
]
