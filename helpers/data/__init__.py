"""Data: VOC 2012 (and SBD) files, the generated demo set in the same layout, joint image + mask
transforms, and the datasets and loaders of a study (each epoch's order and augmentation from its seed).
"""

from . import demo, transforms, voc
from .loaders import data_seed, dataset, epoch_loader, loader, one_batch, prepare_data

__all__ = ["data_seed", "dataset", "demo", "epoch_loader", "loader", "one_batch", "prepare_data", "transforms", "voc"]
