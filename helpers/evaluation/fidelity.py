"""Fidelity: does the student learn the teacher? The share of non-void val pixels where the student's argmax
equals the teacher's (Stanton, S., Izmailov, P., Kirichenko, P., Alemi, A. A., Wilson, A. G. "Does Knowledge
Distillation Really Work?" NeurIPS 2021: fidelity and accuracy can part ways).

Per image the counts [agreeing pixels, non-void pixels] are kept, so the interval functions of `metrics`
(as for boundary IoU, via `metrics.boundary_as_counts`) give the mean over seeds, its seed-level interval and
the paired Δ against the baseline. One pass over the images runs the teacher once and every student.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.voc import IGNORE_INDEX
from .protocol import predict


def agreement_counts(students: dict, teacher, ds, device, progress: bool = False) -> dict[str, np.ndarray]:
    """{key: (N, 1, 2) int64 per-image [agreeing pixels, non-void pixels]} for every student of `students`
    ({key: model}) against `teacher` on `ds` (full resolution, one image at a time, void pixels left out)."""
    from tqdm.auto import tqdm

    out = {k: np.zeros((len(ds), 1, 2), np.int64) for k in students}
    for i in tqdm(range(len(ds)), desc="agreement with the teacher", disable=not progress, leave=False):
        image, mask = ds[i]
        valid = torch.as_tensor(mask) != IGNORE_INDEX
        reference = predict(teacher, image[None], device)[0]
        for key, model in students.items():
            same = predict(model, image[None], device)[0] == reference
            out[key][i, 0] = (int((same & valid).sum()), int(valid.sum()))
    return out


def cached_agreement(
    students: dict, teacher, ds, device, folder: Path, sources: dict, tag: str, progress: bool = True
) -> dict[str, np.ndarray]:
    """`agreement_counts`, cached per student in folder/agreement-<key>-<tag>.npz (tag: the teacher's
    identity) while the cache is newer than the student's checkpoint in `sources`; one pass for the rest."""
    cache = {k: Path(folder) / f"agreement-{k}-{tag}.npz" for k in students}
    fresh = {
        k: np.load(p)["counts"]
        for k, p in cache.items()
        if p.is_file() and p.stat().st_mtime >= Path(sources[k]).stat().st_mtime
    }
    fresh = {k: v for k, v in fresh.items() if len(v) == len(ds)}
    todo = {k: m for k, m in students.items() if k not in fresh}
    if todo:
        counts = agreement_counts(todo, teacher, ds, device, progress)
        Path(folder).mkdir(parents=True, exist_ok=True)
        for k, v in counts.items():
            np.savez_compressed(cache[k], counts=v)
        fresh.update(counts)
    return fresh
