"""Qualitative results: ranked success and failure cases per model, and the cross-model progression.

Per model, into `qualitative_results_<method>/` (the layout of the user's guide):
    successful_cases/success_rank{k}_sample{id}_iou{score:.4f}.png   the N best val images
    failure_cases/failure_rank{k}_sample{id}_iou{score:.4f}.png      the N worst
    iou_distribution.png                                             per-image score histogram
    evaluation_metrics.txt                                           mIoU, per-class IoU, quantiles, ids
The per-image score is the image's own mIoU over the classes present in its ground truth or
prediction (void ignored); the dataset mIoU still comes from the dataset-level confusion matrix.
The two differ by construction (SCORE_NOTE); the histograms of all models share bins and axes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..data.voc import CLASSES
from ..evaluation.protocol import predict
from ..figures import plots, viz

SCORE_NOTE = (
    "Per-image mIoU: each image's own mean IoU over the classes in its ground truth or its prediction, "
    "then averaged over images; the table's mIoU pools the pixels of all images into one confusion "
    "matrix, then averages the classes' IoU. The per-image mean is lower mainly because a class the "
    "model predicts in an image where it does not occur (often a few stray pixels) scores IoU 0 in "
    "that image and weighs as much as each real class there, while in the pooled matrix those pixels "
    "are a few false positives against the class's large union. A small object, whose border errors "
    "are a large share of its pixels, also weighs as much as the background in its image."
)


def score_gap(ev: dict, name: str) -> str:
    """One line that measures SCORE_NOTE on an eval result (with "per_image_cm"): the per-image mean, the
    dataset-level mIoU, the per-image mean over only each image's ground-truth classes, and how many
    images hold a predicted class that their ground truth lacks (each scores IoU 0 there)."""
    cms = np.asarray(ev["per_image_cm"], dtype=np.float64)
    tp, in_gt, in_pred = np.diagonal(cms, axis1=1, axis2=2), cms.sum(2) > 0, cms.sum(1) > 0
    iou = np.divide(tp, cms.sum(1) + cms.sum(2) - tp, out=np.full(tp.shape, np.nan), where=in_gt)
    stray = (in_pred & ~in_gt).sum(1)
    gt_only = np.nanmean(iou[in_gt.any(1)], axis=1) if in_gt.any() else np.array([np.nan])
    return (
        f"{name}: per-image mIoU {np.nanmean(ev['per_image']):.3f} (mean over images), dataset-level "
        f"{ev['miou']:.3f}; over each image's ground-truth classes only {np.nanmean(gt_only):.3f}; "
        f"{np.mean(stray > 0):.0%} of images hold a predicted class absent from their ground truth "
        f"({stray.mean():.1f} per image, IoU 0 each)."
    )


def histograms(evals: dict) -> dict:
    """{name: per-image score histogram} for evals {name: eval result}: the same bins and the same y axis
    for every model (so they compare panel to panel), each with its dataset-level mIoU as a dotted line."""
    ymax = plots.shared_ymax([ev["per_image"] for ev in evals.values()])
    return {
        name: plots.score_histogram(
            ev["per_image"],
            f"{name}: per-image mIoU on {len(ev['ids'])} val images",
            ymax=ymax,
            reference=(ev["miou"], "dataset-level mIoU"),
        )
        for name, ev in evals.items()
    }


def rank_cases(scores, n_success: int, n_failure: int):
    """Indices of the best (descending score) and worst (ascending) images; NaN scores skipped."""
    scores = np.asarray(scores, dtype=float)
    valid = np.flatnonzero(~np.isnan(scores))
    order = valid[np.argsort(-scores[valid], kind="stable")]
    return order[:n_success].tolist(), order[::-1][:n_failure].tolist()


def _image_and_pred(model, ds, index, device):
    img, labels = ds.load(index)
    x, _ = ds.transform(img, labels)
    pred = predict(model, x[None], device)[0].numpy().astype(np.uint8)
    return np.asarray(img), labels, pred


def write_cases(
    model,
    ds,
    ev: dict,
    out_dir,
    num_success=10,
    num_failure=10,
    device="cpu",
    name="model",
    histogram=None,
    on_figure=None,
) -> dict:
    """Write the folder layout above for one model; returns {"success": [...], "failure": [...]}
    with (rank, id, score, path). Old case images in those folders are removed first. histogram: the
    figure to save as iou_distribution.png (write_all passes ones that share axes; default: its own);
    on_figure: called after each case figure is written (a progress bar's update)."""
    out_dir = Path(out_dir)
    scores, ids = ev["per_image"], ev["ids"]
    best, worst = rank_cases(scores, num_success, num_failure)
    written = {}
    for kind, folder, picks in (("success", "successful_cases", best), ("failure", "failure_cases", worst)):
        d = out_dir / folder
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob(f"{kind}_rank*.png"):
            old.unlink()
        written[kind] = []
        for k, i in enumerate(picks, 1):
            image, gt, pred = _image_and_pred(model, ds, i, device)
            path = d / f"{kind}_rank{k}_sample{ids[i]}_iou{scores[i]:.4f}.png"
            fig = viz.four_panel(image, gt, pred, f"{name} · {kind} #{k} · {ids[i]} · per-image mIoU {scores[i]:.4f}")
            viz.save_figure(fig, path)
            written[kind].append((k, ids[i], float(scores[i]), path))
            if on_figure is not None:
                on_figure()
    viz.save_figure(histograms({name: ev})[name] if histogram is None else histogram, out_dir / "iou_distribution.png")
    (out_dir / "evaluation_metrics.txt").write_text(metrics_text(ev, name, written))
    return written


def metrics_text(ev: dict, name: str, written: dict) -> str:
    s = np.asarray(ev["per_image"], dtype=float)
    s = s[~np.isnan(s)]
    q = np.quantile(s, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1]) if s.size else [np.nan] * 7
    lines = [
        f"Model: {name}",
        f"Images: {len(ev['ids'])}",
        f"mIoU (dataset-level confusion matrix): {ev['miou']:.4f}",
        f"Pixel accuracy: {ev['pixel_acc']:.4f}",
        "",
        "Per-class IoU:",
    ]
    lines += [f"  {c:<14} {'absent' if v is None else f'{v:.4f}'}" for c, v in zip(CLASSES, ev["iou_per_class"])]
    lines += [
        "",
        f"Per-image mIoU: mean {s.mean():.4f}, std {s.std():.4f}" if s.size else "",
        "Quantiles (min, 10%, 25%, median, 75%, 90%, max): " + ", ".join(f"{v:.4f}" for v in q),
        "",
        *textwrap.wrap(SCORE_NOTE, 100),
        "",
    ]
    if "per_image_cm" in ev:
        lines[-1:-1] = textwrap.wrap(score_gap(ev, name), 100)
    for kind in ("success", "failure"):
        lines.append(f"{kind.capitalize()} cases (rank, id, per-image mIoU):")
        lines += [f"  {k:>3}  {i}  {sc:.4f}" for k, i, sc, _ in written.get(kind, [])]
    return "\n".join(lines) + "\n"


def pick_progression(evals: dict, students, n_success=2, n_failure=1) -> list[tuple[int, str]]:
    """Images for the cross-model figure: best and worst by the students' mean score, then where KD (any
    KD method) gained and lost the most against the baseline. evals: {method: eval result} with every
    method of `students` (baseline first)."""
    s = {m: np.asarray(evals[m]["per_image"], dtype=float) for m in students}
    mean = np.nanmean(np.stack(list(s.values())), axis=0)
    best, worst = rank_cases(mean, n_success, n_failure)
    picks = [(i, "success") for i in best] + [(i, "failure") for i in worst]
    kd = np.stack([s[m] for m in students[1:]]) - s[students[0]] if len(students) > 1 else None
    if kd is not None:
        picks += [
            (int(np.nanargmax(np.nanmax(kd, 0))), "KD gained most"),
            (int(np.nanargmin(np.nanmin(kd, 0))), "KD lost most"),
        ]
    reasons = {}  # image index -> why it was picked (one row per image, reasons joined)
    for i, why in picks:
        reasons.setdefault(i, []).append(why)
    return [(i, " · ".join(r)) for i, r in reasons.items()]


def progression_figure(models: dict, ds, evals: dict, picks, device="cpu"):
    """Rows: picked images; columns: image | ground truth | each model in `models` (label -> model).
    `evals` maps the same labels to eval results (for the per-cell scores)."""
    rows = []
    for i, why in picks:
        img, labels = ds.load(i)
        x, _ = ds.transform(img, labels)
        preds = {lab: predict(m, x[None], device)[0].numpy().astype(np.uint8) for lab, m in models.items()}
        rows.append(
            {
                "image": np.asarray(img),
                "gt": labels,
                "preds": preds,
                "label": f"{ds.ids[i]} · {why}",
                "scores": {lab: float(evals[lab]["per_image"][i]) for lab in models},
            }
        )
    return viz.progression_grid(rows, list(models), title="Same images across models (per-image mIoU)")


SHOW = ("success", "failure", "all")


def sort_keys(evals: dict, baseline: str) -> dict:
    """{name: (N,) per-image score to sort by}: each model's score, and each other model's gain over
    `baseline` ("gain of X"); NaN (an all-void image) sorts last."""
    keys = {lab: np.asarray(e["per_image"], float) for lab, e in evals.items()}
    if baseline in keys:
        keys.update({f"gain of {lab}": keys[lab] - keys[baseline] for lab in list(keys) if lab != baseline})
    return keys


def image_options(
    ids, score: np.ndarray, show: str = "all", n: int = 20, signed: bool = False
) -> list[tuple[str, int]]:
    """Dropdown options "(id · score)" ordered by `score`: the n best ("success"), the n worst
    ("failure", worst first) or all, best first."""
    if show not in SHOW:
        raise ValueError(f"show must be one of {SHOW}, got {show!r}")
    order = [int(i) for i in np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")]
    order = order[:n] if show == "success" else order[::-1][:n] if show == "failure" else order
    spec = "+.4f" if signed else ".4f"  # (a gain has a sign, a score does not)
    return [(f"{ids[i]} · {score[i]:{spec}}" if np.isfinite(score[i]) else f"{ids[i]} · n/a", i) for i in order]


def browser(models: dict, ds, evals: dict, device="cpu", baseline: str | None = None):
    """An ipywidgets browser: success / failure / all images, sorted by any model's per-image score or
    by a model's gain over `baseline`; pick the models and the overlay opacity. Returns the widget, or
    None outside an IPython kernel. The notebook draws static figures as well, so a headless run
    (papermill, HTML export) shows the same content without the widget."""
    try:
        import ipywidgets as w
        from IPython import get_ipython
        from IPython.display import clear_output, display
    except ImportError:
        return None
    if get_ipython() is None:
        return None
    keys = sort_keys(evals, baseline or next(iter(evals)))
    show = w.ToggleButtons(options=SHOW, value="all", description="show")
    sort_by = w.Dropdown(options=list(keys), description="sort by")
    image = w.Dropdown(options=image_options(ds.ids, keys[sort_by.value], signed=False), description="image")
    chosen = w.SelectMultiple(options=list(models), value=tuple(models), description="models")
    alpha = w.FloatSlider(value=0.5, min=0, max=1, step=0.05, description="opacity")
    out = w.Output()

    def relist(*_):
        image.options = image_options(ds.ids, keys[sort_by.value], show.value, signed=sort_by.value.startswith("gain"))

    def draw(*_):
        with out:
            clear_output(wait=True)
            if image.value is None:
                return
            img, labels = ds.load(image.value)
            x, _ = ds.transform(img, labels)
            for lab in chosen.value:
                pred = predict(models[lab], x[None], device)[0].numpy().astype(np.uint8)
                sc = evals[lab]["per_image"][image.value]
                display(
                    viz.four_panel(
                        np.asarray(img), labels, pred, f"{lab} · {ds.ids[image.value]} · {sc:.4f}", alpha=alpha.value
                    )
                )

    for c in (show, sort_by):
        c.observe(relist, names="value")
    for c in (image, chosen, alpha):
        c.observe(draw, names="value")
    draw()
    return w.VBox([w.HBox([show, sort_by]), w.HBox([image, alpha]), chosen, out])


def write_all(models: dict, ds, evals: dict, out_dir, cfg, device="cpu") -> dict:
    """`write_cases` for every method of the run and the teacher into out_dir/qualitative_results_<method>/
    (the guide's layout); prints where each went. Returns {method: written}."""
    from tqdm.auto import tqdm

    from .. import kd
    from ..core.paths import portable

    written, methods = {}, [*cfg.students, "teacher"]
    figures = histograms({kd.label(m): evals[m] for m in methods})  # one set of bins and axes for all
    per_model = sum(len(p) for p in rank_cases(evals[methods[0]]["per_image"], cfg.num_success, cfg.num_failure))
    with tqdm(total=per_model * len(methods), desc="writing case figures", leave=False) as bar:
        for method in methods:
            folder = Path(out_dir) / f"qualitative_results_{method}"
            name = kd.label(method)
            written[method] = write_cases(
                models[method],
                ds,
                evals[method],
                folder,
                cfg.num_success,
                cfg.num_failure,
                device,
                name,
                figures[name],
                bar.update,
            )
            print(f"{name:<26} -> {portable(folder)}")
    return written
