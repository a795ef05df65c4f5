"""Evaluation: single-scale, full-resolution prediction with one dataset-level confusion matrix (label 255
ignored), boundary IoU beside it, and the statistics (per-image scores, seed-level and bootstrap intervals).
"""

from .protocol import evaluate, evaluate_cached, predict

__all__ = ["evaluate", "evaluate_cached", "predict"]
