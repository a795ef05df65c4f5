"""What every teaching figure needs: one image through a model (eval mode, no gradients, its train/eval
state given back), a method's loss parts on a batch (from `kd.objective`, the code that trains), and the
source of a loss shown in a notebook. Logits: (C, H, W) or (1, C, H, W); feature maps: (C, h, w) or
(1, C, h, w); masks: (H, W) class ids, 255 = void."""

from __future__ import annotations

import contextlib
import inspect

import torch

from .. import kd


def as_cpu(x) -> torch.Tensor:
    """A detached float32 CPU tensor (from numpy or torch)."""
    return torch.as_tensor(x).detach().float().cpu()


def one_map(x) -> torch.Tensor:
    """One map as a float32 CPU tensor: (1, C, h, w) -> (C, h, w)."""
    return as_cpu(x)[0] if x.ndim == 4 else as_cpu(x)


@contextlib.contextmanager
def frozen(*models):
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


def logits_of(model, image, device="cpu") -> torch.Tensor:
    """(C, H, W) logits of one normalized (3, H, W) image (eval mode, no gradients, CPU result)."""
    with frozen(model):
        return as_cpu(model(as_cpu(image)[None].to(device))[0])


def features_of(model, image, device="cpu", adapter=None) -> torch.Tensor:
    """(C, h, w) the tapped feature of one image (the map feature KD matches), through `adapter` if given."""
    with frozen(*[m for m in (model, adapter) if m is not None]):
        f = model.forward_features(as_cpu(image)[None].to(device), logits=False)[1]
        return as_cpu(adapter(f) if adapter is not None else f)[0]


def loss_parts(method: str, student, teacher, images, masks, cfg, adapter=None) -> dict:
    """{part: value} of `method`'s training objective on a batch, both nets (and the adapter) in eval mode:
    `kd.objective`, the function training calls, so the numbers are the ones a training step sees."""
    with frozen(*[m for m in (student, teacher, adapter) if m is not None]):
        t_out = kd.teacher_outputs(teacher, images, method)
        parts = kd.objective(
            method, student.forward_features(images), torch.as_tensor(masks).to(images.device), t_out, adapter, cfg
        )
    return {k: v.item() for k, v in parts.items()}


def describe_parts(parts: dict, weight: str, value: float, when: str) -> str:
    """'before training: loss = CE + α·KD = 2.8500 + 1 × 0.0600 = 2.9100' from `loss_parts` (weight: 'α')."""
    terms = [k for k in parts if k not in ("loss", "ce")]
    kd = " + ".join(f"{parts[k]:.4f}" for k in terms)
    kd = f"({kd})" if len(terms) > 1 else kd
    names = "(" + " + ".join(terms) + ")" if len(terms) > 1 else "KD"
    return f"{when}: loss = CE + {weight}·{names} = {parts['ce']:.4f} + {value:g} × {kd} = {parts['loss']:.4f}"


def show_code(*functions):
    """The source of `functions` as a Markdown code block: in a notebook, the loss code that trains."""
    from IPython.display import Markdown

    return Markdown("```python\n" + "\n\n".join(inspect.getsource(f).rstrip() for f in functions) + "\n```")
