"""Response-based KD made visible (notebook 03): the teacher's soft labels and their entropy at a
temperature, its dark knowledge (which classes it finds alike), and the per-pixel KL term before and
after training, computed by `kd.response.kl_per_pixel`, the function that trains."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from ..data.voc import CLASSES, IGNORE_INDEX
from ..kd.response import kl_per_pixel
from .teaching import as_cpu, frozen, one_map
from .viz import MASK_KW, colorize, denormalize, image_axis, new_figure


def soft_labels(logits, T: float = 1.0) -> torch.Tensor:
    """softmax(logits / T) over the class dimension (dim -3), per pixel: the teacher's soft labels."""
    return torch.softmax(as_cpu(logits) / float(T), dim=-3)


def entropy_map(probs) -> torch.Tensor:
    """Per-pixel entropy (nats) of class probabilities (..., C, H, W): 0 = one-hot, ln C = uniform."""
    p = as_cpu(probs)
    return -torch.special.xlogy(p, p).sum(dim=-3)


def soft_label_figure(image, teacher_logits, temperatures=(1.0, 4.0), top: int = 3, class_names=CLASSES):
    """One row per temperature: image | p(class) of the top classes | entropy map. Top classes: by mean
    probability over the image at the first temperature, the same in every row; all rows share one
    probability scale [0, 1] and one entropy scale [0, ln C]."""
    logits = one_map(teacher_logits)
    mean_p = soft_labels(logits, temperatures[0]).mean(dim=(1, 2))
    classes = torch.argsort(mean_p, descending=True)[:top].tolist()
    img, h_max = denormalize(image), float(np.log(logits.shape[0]))
    fig = new_figure((2.1 * (top + 2) + 1.2, 2.2 * len(temperatures) + 0.8))
    axes = fig.subplots(len(temperatures), top + 2, squeeze=False)
    for row, T in zip(axes, temperatures):
        p = soft_labels(logits, T)
        row[0].imshow(img)
        image_axis(row[0], "image")
        row[0].set_ylabel(f"T = {T:g}", fontsize=11)
        for ax, c in zip(row[1:], classes):
            pim = ax.imshow(p[c].numpy(), vmin=0, vmax=1, cmap="viridis")
            image_axis(ax, f"p({class_names[c]})  mean {p[c].mean():.2f}", fontsize=9)
        ent = entropy_map(p)
        eim = row[-1].imshow(ent.numpy(), vmin=0, vmax=h_max, cmap="magma")
        image_axis(row[-1], f"entropy  mean {ent.mean():.2f} nats", fontsize=9)
    fig.colorbar(pim, ax=axes[:, 1:-1].ravel().tolist(), shrink=0.8, label="probability")
    fig.colorbar(eim, ax=axes[:, -1].tolist(), shrink=0.8, label=f"entropy (nats, max ln {len(logits)})")
    fig.suptitle(
        "Teacher soft labels softmax(z/T), one row per temperature T.\nLook at: as T rises the "
        "runner-up classes light up ('dark knowledge') and the entropy map brightens.",
        fontsize=10,
    )
    return fig


def class_similarity(teacher, dataset, T: float = 4.0, device="cpu", max_images=None) -> np.ndarray:
    """(C, C) matrix: row c = the teacher's mean soft label (at T) over all pixels whose ground truth
    is c (pooled over images, void 255 ignored), diagonal kept. Rows of classes with no pixel are 0.

    `dataset[i]` gives (image (3, H, W) tensor, mask (H, W) tensor); images go one at a time."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    sums = counts = 0.0
    with frozen(teacher):
        for i in range(n):
            image, mask = dataset[i]
            logits = teacher(torch.as_tensor(image)[None].to(device))[0]
            p = soft_labels(logits, T).reshape(logits.shape[0], -1).T.double()  # (H*W, C)
            m = torch.as_tensor(mask).reshape(-1).long()
            onehot = F.one_hot(m[m != IGNORE_INDEX], logits.shape[0]).double()  # (valid pixels, C)
            sums, counts = sums + onehot.T @ p[m != IGNORE_INDEX], counts + onehot.sum(dim=0)
    return (sums / counts.clamp(min=1)[:, None]).numpy()


def top_confusable_pairs(sim, class_names=CLASSES, k: int = 5) -> list:
    """The k class pairs the teacher confuses most: (class_a, class_b, mass) with mass =
    sim[a, b] + sim[b, a] (soft-label mass each class gives the other), largest first, a before b."""
    s = np.asarray(sim, dtype=np.float64)
    a, b = np.triu_indices(s.shape[0], k=1)
    mass = s[a, b] + s[b, a]
    order = np.argsort(-mass, kind="stable")[:k]
    return [(class_names[a[i]], class_names[b[i]], float(mass[i])) for i in order]


def class_similarity_figure(sim, class_names=CLASSES, top_pairs: int = 5):
    """Heatmap of where the teacher puts the probability NOT on the true class (row = true class,
    columns = other classes, diagonal hidden, rows renormalised), the top pairs outlined and listed."""
    from matplotlib.patches import Rectangle

    sim = np.asarray(sim, dtype=np.float64)
    c = sim.shape[0]
    off = sim * (1 - np.eye(c))
    total = off.sum(axis=1, keepdims=True)  # each row's off-diagonal mass, renormalised to 1 below
    off = np.ma.masked_array(
        np.divide(off, total, out=np.zeros_like(off), where=total > 0),
        mask=np.eye(c, dtype=bool) | (sim.sum(1) == 0)[:, None],
    )  # grey: hidden
    fig = new_figure((0.36 * c + 5.5, 0.34 * c + 1.6))
    ax, side = fig.subplots(1, 2, width_ratios=(4, 1.3))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    im = ax.imshow(off, cmap=cmap, vmin=0, interpolation="nearest")
    ax.set_xticks(range(c), class_names[:c], rotation=90, fontsize=8)
    ax.set_yticks(range(c), class_names[:c], fontsize=8)
    ax.set(xlabel="class given the probability", ylabel="true class of the pixels")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the off-diagonal mass")
    pairs = top_confusable_pairs(sim, class_names, top_pairs)
    index = {n: i for i, n in enumerate(class_names[:c])}
    for a, b, _ in pairs:
        for r, q in ((index[a], index[b]), (index[b], index[a])):
            ax.add_patch(Rectangle((q - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    side.set_axis_off()
    lines = [f"{a} <-> {b}: {m:.3f}" for a, b, m in pairs]
    side.text(
        0,
        1,
        "Most confused pairs\n(sim[a,b] + sim[b,a]):\n\n" + "\n".join(lines),
        va="top",
        fontsize=9,
        family="monospace",
        transform=side.transAxes,
    )
    fig.suptitle(
        "The teacher's dark knowledge: where the probability NOT on the true class goes (diagonal\n"
        "hidden, rows renormalised). Look at: which classes it thinks look alike.",
        fontsize=10,
    )
    return fig


def kl_map(student_logits, teacher_logits, T: float = 4.0, target=None) -> torch.Tensor:
    """Per-pixel T^2 * KL(softmax(t/T) || softmax(s/T)): (H, W), or (N, H, W) for batched logits; 0 where
    target == 255. Its mean over the non-void pixels of a batch is the response-KD term (`kd.response`)."""
    s, t = as_cpu(student_logits), as_cpu(teacher_logits)
    one = s.ndim == 3
    kl = T * T * kl_per_pixel(s[None] if one else s, t[None] if one else t, T)
    kl = kl[0] if one else kl
    if target is not None:
        kl = kl.masked_fill(torch.as_tensor(target).cpu() == IGNORE_INDEX, 0.0)
    return kl


def kl_figure(image, gt, kl_before, kl_after):
    """image | ground truth | KL map before training | after, the two maps on one colour scale."""
    before, after, valid = as_cpu(kl_before), as_cpu(kl_after), as_cpu(gt) != IGNORE_INDEX
    vmax = max(float(before.max()), float(after.max()), 1e-8)
    fig = new_figure((12.5, 3.6))
    axes = fig.subplots(1, 4)
    for ax, picture, title in zip(axes, (denormalize(image), colorize(gt)), ("image", "ground truth")):
        ax.imshow(picture, **MASK_KW)
        image_axis(ax, title)
    for ax, kl, name in ((axes[2], before, "before"), (axes[3], after, "after")):
        im = ax.imshow(kl.numpy(), vmin=0, vmax=vmax, cmap="inferno")
        image_axis(ax, f"T²·KL {name} training\nmean {kl[valid].mean() if valid.any() else 0:.3f}")
    fig.colorbar(im, ax=axes[2:].tolist(), shrink=0.8, label="T²·KL(teacher ‖ student)")
    fig.suptitle(
        "Per-pixel KD loss: where the student's soft labels differ from the teacher's.\nLook at: "
        "training darkens the map; what stays bright (borders, look-alikes) is hard.",
        fontsize=10,
    )
    return fig


def temperature_widget(image, teacher_logits, T: float, temperatures=(0.5, 8.0)):
    """A slider for T (range `temperatures`, starting at `T`: pass the run's cfg.temperature, so the
    widget first shows the static figure's second row) that redraws soft_label_figure at the slider's T
    (one row: the static figure above holds T = 1) as a PNG in an Image widget (not an Output widget:
    nbclient, which papermill uses, can hang on a cell whose Output widget receives a large figure).
    Needs ipywidgets."""
    import io

    import ipywidgets as widgets

    def png(T: float) -> bytes:
        buf = io.BytesIO()
        soft_label_figure(image, teacher_logits, temperatures=(T,)).savefig(buf, format="png", dpi=80)
        return buf.getvalue()

    lo, hi = map(float, temperatures)
    slider = widgets.FloatSlider(
        value=min(max(float(T), lo), hi), min=lo, max=hi, step=0.1, description="T", continuous_update=False
    )
    picture = widgets.Image(value=png(slider.value), format="png")
    slider.observe(lambda change: setattr(picture, "value", png(change["new"])), names="value")
    return widgets.VBox([slider, picture])
