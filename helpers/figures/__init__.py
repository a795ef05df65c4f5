"""Figures: masks in colour and 4-panel cases (viz), charts (plots), and what KD transfers made visible
(response: soft labels; feature: feature maps; relation: affinities), each computed with the code that trains.
"""

from .curves import training_curves
from .feature import cwd_channel_figure, cwd_channel_kl, feature_figure, feature_path_table, format_rows, pca_rgb
from .plots import (
    class_deltas,
    class_frequency_chart,
    count_histogram,
    headline,
    scatter_tradeoff,
    score_histogram,
)
from .relation import affinity_figure, affinity_row, grid_for, object_node
from .response import (
    class_similarity,
    class_similarity_figure,
    entropy_map,
    kl_figure,
    kl_map,
    soft_label_figure,
    soft_labels,
    temperature_widget,
    top_confusable_pairs,
)
from .teaching import describe_parts, features_of, logits_of, loss_parts, show_code
from .viz import four_panel, progression_grid, sample_grid, save_figure

__all__ = [
    "affinity_figure",
    "affinity_row",
    "class_deltas",
    "class_frequency_chart",
    "class_similarity",
    "class_similarity_figure",
    "count_histogram",
    "cwd_channel_figure",
    "cwd_channel_kl",
    "describe_parts",
    "entropy_map",
    "feature_figure",
    "feature_path_table",
    "features_of",
    "format_rows",
    "four_panel",
    "grid_for",
    "headline",
    "kl_figure",
    "kl_map",
    "logits_of",
    "loss_parts",
    "object_node",
    "pca_rgb",
    "progression_grid",
    "sample_grid",
    "save_figure",
    "scatter_tradeoff",
    "score_histogram",
    "show_code",
    "soft_label_figure",
    "soft_labels",
    "temperature_widget",
    "top_confusable_pairs",
    "training_curves",
]
