"""Performance: what a model costs (parameters, FLOPs, latency, faster inference paths), where training
time goes (the bench), and calibrating a KD method's knobs on holdout (the sweep).
"""

from .costs import FLOP_CONVENTION, count_parameters, format_params, gflops
from .inference import MIN_AGREEMENT, PATHS, TABLE_PATHS, argmax_agreement, optimize_for_inference
from .timing import latency

__all__ = [
    "FLOP_CONVENTION",
    "MIN_AGREEMENT",
    "PATHS",
    "TABLE_PATHS",
    "argmax_agreement",
    "count_parameters",
    "format_params",
    "gflops",
    "latency",
    "optimize_for_inference",
]
