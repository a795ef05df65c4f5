"""Small computations and figures that let a student SEE distillation happen (notebooks 03, 04).

Figures are `matplotlib.figure.Figure`s made as helpers.viz makes them. Logits: (C, H, W) or
(1, C, H, W); feature maps: (C, h, w) or (1, C, h, w); masks: (H, W) class ids, 255 = void. Models
run in eval mode under no_grad and get their train/eval state back (BN statistics never change).
"""
from __future__ import annotations

import contextlib

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from . import distill
from .viz import MASK_KW, _image_axis, _new_figure, colorize, denormalize
from .voc import CLASSES, IGNORE_INDEX


def _t(x) -> torch.Tensor:
    """A detached float32 CPU tensor (from numpy or torch)."""
    return torch.as_tensor(x).detach().float().cpu()


def _one(x) -> torch.Tensor:
    """One map as a float32 CPU tensor: (1, C, h, w) -> (C, h, w)."""
    return _t(x)[0] if x.ndim == 4 else _t(x)


@contextlib.contextmanager
def _frozen(*models):
    """Run `models` in eval mode without gradients; restore each one's train/eval state after."""
    states = [(m, m.training) for m in models]
    try:
        for m in models:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, state in states:
            m.train(state)


def soft_labels(logits, T: float = 1.0) -> torch.Tensor:
    """softmax(logits / T) over the class dimension (dim -3), per pixel: the teacher's soft labels."""
    return torch.softmax(_t(logits) / float(T), dim=-3)


def entropy_map(probs) -> torch.Tensor:
    """Per-pixel entropy (nats) of class probabilities (..., C, H, W): 0 = one-hot, ln C = uniform."""
    p = _t(probs)
    return -torch.special.xlogy(p, p).sum(dim=-3)


def soft_label_figure(image, teacher_logits, temperatures=(1.0, 4.0), top: int = 3, class_names=CLASSES):
    """One row per temperature: image | p(class) of the top classes | entropy map. Top classes: by mean
    probability over the image at the first temperature, the same in every row; all rows share one
    probability scale [0, 1] and one entropy scale [0, ln C]."""
    logits = _one(teacher_logits)
    mean_p = soft_labels(logits, temperatures[0]).mean(dim=(1, 2))
    classes = torch.argsort(mean_p, descending=True)[:top].tolist()
    img, h_max = denormalize(image), float(np.log(logits.shape[0]))
    fig = _new_figure((2.1 * (top + 2) + 1.2, 2.2 * len(temperatures) + 0.8))
    axes = fig.subplots(len(temperatures), top + 2, squeeze=False)
    for row, T in zip(axes, temperatures):
        p = soft_labels(logits, T)
        row[0].imshow(img)
        _image_axis(row[0], "image")
        row[0].set_ylabel(f"T = {T:g}", fontsize=11)
        for ax, c in zip(row[1:], classes):
            pim = ax.imshow(p[c].numpy(), vmin=0, vmax=1, cmap="viridis")
            _image_axis(ax, f"p({class_names[c]})  mean {p[c].mean():.2f}", fontsize=9)
        ent = entropy_map(p)
        eim = row[-1].imshow(ent.numpy(), vmin=0, vmax=h_max, cmap="magma")
        _image_axis(row[-1], f"entropy  mean {ent.mean():.2f} nats", fontsize=9)
    fig.colorbar(pim, ax=axes[:, 1:-1].ravel().tolist(), shrink=0.8, label="probability")
    fig.colorbar(eim, ax=axes[:, -1].tolist(), shrink=0.8, label=f"entropy (nats, max ln {len(logits)})")
    fig.suptitle("Teacher soft labels softmax(z/T), one row per temperature T.\nLook at: as T rises the "
                 "runner-up classes light up ('dark knowledge') and the entropy map brightens.", fontsize=10)
    return fig


def class_similarity(teacher, dataset, T: float = 4.0, device="cpu", max_images=None) -> np.ndarray:
    """(C, C) matrix: row c = the teacher's mean soft label (at T) over all pixels whose ground truth
    is c (pooled over images, void 255 ignored), diagonal kept. Rows of classes with no pixel are 0.

    `dataset[i]` gives (image (3, H, W) tensor, mask (H, W) tensor); images go one at a time."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    sums = counts = 0.0
    with _frozen(teacher):
        for i in range(n):
            image, mask = dataset[i]
            logits = teacher(torch.as_tensor(image)[None].to(device))[0]
            p = soft_labels(logits, T).reshape(logits.shape[0], -1).T.double()   # (H*W, C)
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
    off = np.ma.masked_array(np.divide(off, total, out=np.zeros_like(off), where=total > 0),
                             mask=np.eye(c, dtype=bool) | (sim.sum(1) == 0)[:, None])  # grey: hidden
    fig = _new_figure((0.36 * c + 5.5, 0.34 * c + 1.6))
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
    side.text(0, 1, "Most confused pairs\n(sim[a,b] + sim[b,a]):\n\n" + "\n".join(lines),
              va="top", fontsize=9, family="monospace", transform=side.transAxes)
    fig.suptitle("The teacher's dark knowledge: where the probability NOT on the true class goes (diagonal\n"
                 "hidden, rows renormalised). Look at: which classes it thinks look alike.", fontsize=10)
    return fig


def kl_map(student_logits, teacher_logits, T: float = 4.0, target=None) -> torch.Tensor:
    """Per-pixel T^2 * KL(softmax(t/T) || softmax(s/T)) over classes: (H, W), or (N, H, W) for
    batched logits; 0 where target == 255. Its mean over non-void pixels (of the whole batch) is
    distill.response_kd_loss."""
    log_s, log_t = (F.log_softmax(_t(z).double() / T, dim=-3) for z in (student_logits, teacher_logits))
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-3) * (T * T)
    if target is not None:
        kl = kl.masked_fill(torch.as_tensor(target).cpu() == IGNORE_INDEX, 0.0)
    return kl.float()


def loss_parts(student, teacher, images, masks, alpha: float = 0.5, T: float = 4.0) -> dict:
    """{"ce", "kd", "loss"} of the response-KD objective for a batch (both nets in eval mode): the
    values distill.distill_loss("response", ...) gives, built here from kl_map to show the parts."""
    with _frozen(student, teacher):
        s_logits, t_logits = student(images), teacher(images)
    masks = torch.as_tensor(masks).long().cpu()
    ce = F.cross_entropy(_t(s_logits), masks, ignore_index=IGNORE_INDEX).item()
    valid = (masks != IGNORE_INDEX).sum().item()
    kd = kl_map(s_logits, t_logits, T, masks).double().sum().item() / max(valid, 1)
    return {"ce": ce, "kd": kd, "loss": ce + alpha * kd}


def kl_figure(image, gt, kl_before, kl_after):
    """image | ground truth | KL map before training | after, the two maps on one colour scale."""
    before, after, valid = _t(kl_before), _t(kl_after), _t(gt) != IGNORE_INDEX
    vmax = max(float(before.max()), float(after.max()), 1e-8)
    fig = _new_figure((12.5, 3.6))
    axes = fig.subplots(1, 4)
    for ax, picture, title in zip(axes, (denormalize(image), colorize(gt)), ("image", "ground truth")):
        ax.imshow(picture, **MASK_KW)
        _image_axis(ax, title)
    for ax, kl, name in ((axes[2], before, "before"), (axes[3], after, "after")):
        im = ax.imshow(kl.numpy(), vmin=0, vmax=vmax, cmap="inferno")
        _image_axis(ax, f"T²·KL {name} training\nmean {kl[valid].mean() if valid.any() else 0:.3f}")
    fig.colorbar(im, ax=axes[2:].tolist(), shrink=0.8, label="T²·KL(teacher ‖ student)")
    fig.suptitle("Per-pixel KD loss: where the student's soft labels differ from the teacher's.\nLook at: "
                 "training darkens the map; what stays bright (borders, look-alikes) is hard.", fontsize=10)
    return fig


def temperature_widget(image, teacher_logits, T: float, temperatures=(0.5, 8.0)):
    """A slider for T (range `temperatures`, starting at `T`: pass the run's cfg.temperature, so the
    widget first shows the static figure's row) that redraws soft_label_figure (rows T = 1 and the
    slider's T) as a PNG in an Image widget (not an Output widget: nbclient, which papermill uses,
    can hang on a cell whose Output widget receives a large figure). Needs ipywidgets."""
    import io

    import ipywidgets as widgets

    def png(T: float) -> bytes:
        buf = io.BytesIO()
        soft_label_figure(image, teacher_logits, temperatures=(1.0, T)).savefig(buf, format="png", dpi=80)
        return buf.getvalue()

    lo, hi = map(float, temperatures)
    slider = widgets.FloatSlider(value=min(max(float(T), lo), hi), min=lo, max=hi, step=0.1,
                                 description="T", continuous_update=False)
    picture = widgets.Image(value=png(slider.value), format="png")
    slider.observe(lambda change: setattr(picture, "value", png(change["new"])), names="value")
    return widgets.VBox([slider, picture])


def feature_path_table(student, adapter, teacher, input_size=(64, 64)) -> list:
    """Rows (name, (C, h, w), stride) for the input and the maps feature KD compares, from a
    zero image of `input_size`; stride = input height / map height."""
    h, w = input_size
    x = torch.zeros(1, 3, h, w, device=next(student.parameters()).device)
    with _frozen(student, adapter, teacher):
        fs = student.forward_features(x, logits=False)[1]
        ft = teacher.forward_features(x.to(next(teacher.parameters()).device), logits=False)[1]
        maps = {"student feature": fs, "adapted student": adapter(fs), "teacher feature": ft}
    rows = [("input", (3, h, w))] + [(n, tuple(f.shape[1:])) for n, f in maps.items()]
    return [(n, s, (h // s[1] if h % s[1] == 0 else h / s[1])) for n, s in rows]


def format_rows(rows) -> str:
    """The rows of feature_path_table as an aligned text table."""
    cells = [("map", "shape (C, h, w)", "stride")]
    cells += [(n, " x ".join(map(str, s)), f"{st:g}") for n, s, st in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(3)]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def pca_rgb(features_list, per_map: bool = False) -> list:
    """Maps (C, h, w), all with the same C, -> (h, w, 3) float arrays in [0, 1]: the first 3 principal
    components fitted jointly on every pixel of every map, so a colour is one direction in feature
    space in every map. Scaled to [0, 1] jointly (min-max over all maps: equal colours mean similar
    features, and a weak map looks faint), or with `per_map` each map to its own min-max per component
    (a per-panel contrast stretch: a weak map shows its structure; colours then compare patterns, not
    magnitudes). Pass a single map for its own PCA."""
    maps = [_one(f).double() for f in features_list]
    if len({m.shape[0] for m in maps}) != 1:
        raise ValueError(f"pca_rgb fits one PCA: maps need one channel count, not {[len(m) for m in maps]}")
    x = torch.cat([m.reshape(m.shape[0], -1).T for m in maps])            # (pixels, C)
    x = x - x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    comps = vh[:3]
    comps = comps * torch.sign(comps[torch.arange(len(comps)), comps.abs().argmax(dim=1)])[:, None]
    proj = F.pad(x @ comps.T, (0, 3 - len(comps)))                        # (pixels, 3)
    parts = list(proj.split([m.shape[1] * m.shape[2] for m in maps]))
    scales = parts if per_map else [proj] * len(parts)                     # whose range is stretched to [0, 1]
    rgb = [(p - r.min(dim=0).values) / (r.max(dim=0).values - r.min(dim=0).values).clamp(min=1e-12)
           for p, r in zip(parts, scales)]
    return [p.reshape(m.shape[1], m.shape[2], 3).numpy() for p, m in zip(rgb, maps)]


def feature_figure(image, student_feat, adapted_before, adapted_after, teacher_feat):
    """image | student feature (own PCA) | adapted student before, after training | teacher (these
    three with one joint PCA, each panel contrast-stretched to its own range: the untrained adapter's
    map is far weaker than the teacher's and would be one flat colour on the joint scale), with the
    hint MSE to the teacher (which compares magnitudes) in the titles."""
    teacher = _one(teacher_feat)
    joint = pca_rgb([adapted_before, adapted_after, teacher], per_map=True)
    mse = [distill.hint_loss(_one(f)[None], teacher[None]).item() for f in (adapted_before, adapted_after)]
    panels = [(denormalize(image), "image"),
              (pca_rgb([student_feat])[0], f"student feature\n({_one(student_feat).shape[0]} ch, own PCA)"),
              (joint[0], f"adapted student, before\nMSE to teacher {mse[0]:.3f}"),
              (joint[1], f"adapted student, after\nMSE to teacher {mse[1]:.3f}"),
              (joint[2], f"teacher feature\n({teacher.shape[0]} ch)")]
    fig = _new_figure((13, 3.7))
    for ax, (picture, title) in zip(fig.subplots(1, 5), panels):
        ax.imshow(picture, **MASK_KW)
        _image_axis(ax, title, fontsize=9)
    fig.suptitle("Feature maps as colours: 3 principal components; the last three panels share one projection, "
                 "each stretched to its own\nrange (colours compare patterns, the MSE magnitudes). Look at: "
                 "noise before training; after it, the teacher's regions in its colours.", fontsize=10)
    return fig


def cwd_channel_kl(adapted_student_feat, teacher_feat, T: float = 4.0) -> torch.Tensor:
    """(C,) per-channel T^2 * KL(teacher || student) of the spatial softmax(map / T); its mean is
    distill.cwd_loss for one map. The student map is resized to the teacher's as cwd_loss does."""
    t = _one(teacher_feat).double()
    s = distill._match_size(_one(adapted_student_feat)[None], t[None])[0].double()
    log_s, log_t = (F.log_softmax(m.flatten(1) / T, dim=1) for m in (s, t))
    return ((log_t.exp() * (log_t - log_s)).sum(dim=1) * (T * T)).float()


def cwd_channel_figure(adapted_student_feat, teacher_feat, T: float = 4.0, channel=None):
    """One channel as CWD sees it: the spatial softmax(map / T) of teacher and adapted student side by
    side on one colour scale, the channel's T^2 * KL in the title. Default channel: the teacher
    channel with the largest spatial variance."""
    t = _one(teacher_feat)
    s = distill._match_size(_one(adapted_student_feat)[None], t[None])[0]
    if channel is None:
        channel = int(t.flatten(1).var(dim=1).argmax())
    dists = [torch.softmax(m[channel].flatten() / T, dim=0).reshape(m.shape[1:]) for m in (t, s)]
    kl = cwd_channel_kl(s, t, T)[channel].item()
    vmax = max(float(d.max()) for d in dists)
    fig = _new_figure((8, 3.9))
    axes = fig.subplots(1, 2)
    for ax, d, name in zip(axes, dists, ("teacher", "adapted student")):
        im = ax.imshow(d.numpy(), vmin=0, vmax=vmax, cmap="viridis", **MASK_KW)
        _image_axis(ax, f"{name}, channel {channel}")
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="share of the channel's mass")
    fig.suptitle(f"Channel-wise distillation at T = {T:g}: each channel is a distribution over positions.\n"
                 f"T²·KL(teacher ‖ student) = {kl:.4f}. Look at: where each puts the mass.", fontsize=10)
    return fig


# --------------------------------------------------------------------------- one image through a model
def logits_of(model, image, device="cpu") -> torch.Tensor:
    """(C, H, W) logits of one normalized (3, H, W) image (eval mode, no gradients, CPU result)."""
    with _frozen(model):
        return _t(model(_t(image)[None].to(device))[0])


def features_of(model, image, device="cpu", adapter=None) -> torch.Tensor:
    """(C, h, w) the tapped feature of one image (the map feature KD matches), through `adapter` if given."""
    with _frozen(*[m for m in (model, adapter) if m is not None]):
        f = model.forward_features(_t(image)[None].to(device), logits=False)[1]
        return _t(adapter(f) if adapter is not None else f)[0]


def describe_parts(parts: dict, weight: str, when: str) -> str:
    """'before training: loss 2.91 = CE 2.85 + α × KD 0.06' from `loss_parts` (weight: 'α = 1')."""
    return f"{when}: loss {parts['loss']:.4f} = CE {parts['ce']:.4f} + {weight} × KD {parts['kd']:.4f}"
