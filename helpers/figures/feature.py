"""Feature-based KD made visible (notebook 04): the path of the features (shapes and strides through the
adapter), the feature maps as PCA colours before and after training, and one channel as channel-wise
distillation sees it (`kd.feature`, the code that trains)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kd.feature import hint_loss, match_size
from .teaching import frozen, one_map
from .viz import MASK_KW, denormalize, image_axis, new_figure


def feature_path_table(student, adapter, teacher, input_size=(64, 64)) -> list:
    """Rows (name, (C, h, w), stride) for the input and the maps feature KD compares, from a
    zero image of `input_size`; stride = input height / map height."""
    h, w = input_size
    x = torch.zeros(1, 3, h, w, device=next(student.parameters()).device)
    with frozen(student, adapter, teacher):
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
    maps = [one_map(f).double() for f in features_list]
    if len({m.shape[0] for m in maps}) != 1:
        raise ValueError(f"pca_rgb fits one PCA: maps need one channel count, not {[len(m) for m in maps]}")
    x = torch.cat([m.reshape(m.shape[0], -1).T for m in maps])  # (pixels, C)
    x = x - x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    comps = vh[:3]
    comps = comps * torch.sign(comps[torch.arange(len(comps)), comps.abs().argmax(dim=1)])[:, None]
    proj = F.pad(x @ comps.T, (0, 3 - len(comps)))  # (pixels, 3)
    parts = list(proj.split([m.shape[1] * m.shape[2] for m in maps]))
    scales = parts if per_map else [proj] * len(parts)  # whose range is stretched to [0, 1]
    rgb = [
        (p - r.min(dim=0).values) / (r.max(dim=0).values - r.min(dim=0).values).clamp(min=1e-12)
        for p, r in zip(parts, scales)
    ]
    return [p.reshape(m.shape[1], m.shape[2], 3).numpy() for p, m in zip(rgb, maps)]


def feature_figure(image, student_feat, adapted_before, adapted_after, teacher_feat):
    """image | student feature (own PCA) | adapted student before, after training | teacher (these
    three with one joint PCA, each panel contrast-stretched to its own range: the untrained adapter's
    map is far weaker than the teacher's and would be one flat colour on the joint scale), with the
    hint MSE to the teacher (which compares magnitudes) in the titles."""
    teacher = one_map(teacher_feat)
    joint = pca_rgb([adapted_before, adapted_after, teacher], per_map=True)
    mse = [hint_loss(one_map(f)[None], teacher[None]).item() for f in (adapted_before, adapted_after)]
    panels = [
        (denormalize(image), "image"),
        (pca_rgb([student_feat])[0], f"student feature\n({one_map(student_feat).shape[0]} ch, own PCA)"),
        (joint[0], f"adapted student, before\nMSE to teacher {mse[0]:.3f}"),
        (joint[1], f"adapted student, after\nMSE to teacher {mse[1]:.3f}"),
        (joint[2], f"teacher feature\n({teacher.shape[0]} ch)"),
    ]
    fig = new_figure((13, 3.7))
    for ax, (picture, title) in zip(fig.subplots(1, 5), panels):
        ax.imshow(picture, **MASK_KW)
        image_axis(ax, title, fontsize=9)
    fig.suptitle(
        "Feature maps as colours: 3 principal components; the last three panels share one projection, "
        "each stretched to its own\nrange (colours compare patterns, the MSE magnitudes). Look at: "
        "noise before training; after it, the teacher's regions in its colours.",
        fontsize=10,
    )
    return fig


def cwd_channel_kl(adapted_student_feat, teacher_feat, T: float = 4.0) -> torch.Tensor:
    """(C,) per-channel T^2 * KL(teacher || student) of the spatial softmax(map / T); its mean is
    kd.feature.cwd_loss for one map. The student map is resized to the teacher's as cwd_loss does."""
    t = one_map(teacher_feat).double()
    s = match_size(one_map(adapted_student_feat)[None], t[None])[0].double()
    log_s, log_t = (F.log_softmax(m.flatten(1) / T, dim=1) for m in (s, t))
    return ((log_t.exp() * (log_t - log_s)).sum(dim=1) * (T * T)).float()


def cwd_channel_figure(adapted_student_feat, teacher_feat, T: float = 4.0, channel=None):
    """One channel as CWD sees it: the spatial softmax(map / T) of teacher and adapted student side by
    side on one colour scale, the channel's T^2 * KL in the title. Default channel: the teacher
    channel with the largest spatial variance."""
    t = one_map(teacher_feat)
    s = match_size(one_map(adapted_student_feat)[None], t[None])[0]
    if channel is None:
        channel = int(t.flatten(1).var(dim=1).argmax())
    dists = [torch.softmax(m[channel].flatten() / T, dim=0).reshape(m.shape[1:]) for m in (t, s)]
    kl = cwd_channel_kl(s, t, T)[channel].item()
    vmax = max(float(d.max()) for d in dists)
    fig = new_figure((8, 3.9))
    axes = fig.subplots(1, 2)
    for ax, d, name in zip(axes, dists, ("teacher", "adapted student")):
        im = ax.imshow(d.numpy(), vmin=0, vmax=vmax, cmap="viridis", **MASK_KW)
        image_axis(ax, f"{name}, channel {channel}")
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="share of the channel's mass")
    fig.suptitle(
        f"Channel-wise distillation at T = {T:g}: each channel is a distribution over positions.\n"
        f"T²·KL(teacher ‖ student) = {kl:.4f}. Look at: where each puts the mass.",
        fontsize=10,
    )
    return fig
