"""What a model costs to deploy: its parameters and FLOPs (latency: `latency.py`; faster paths: `inference.py`).

- `count_parameters` / `format_params`: the size of the deployable network (pass the student
  without its KD adapters: adapters are dropped after training).
- `gflops`: FLOPs of one forward pass from `torch.utils.flop_counter.FlopCounterMode`, which counts
  a multiply-add as 2 FLOPs (so GFLOPs = 2 x GMACs) and counts only the ops it has formulas for
  (convolutions, matmuls, attention); BatchNorm, activations, pooling and interpolation are free.
  This is the convention of every GFLOPs figure here (`FLOP_CONVENTION`). Some model zoos quote
  GMACs as "GFLOPS" (torchvision's 258.7 for DeepLabV3-ResNet101 is of that kind, at 520x520 with
  its aux head); by this count that model costs 482 GFLOPs at 512x512 (aux head dropped, as in `models`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# The one FLOP convention of this project (bench, table, README): state it next to every figure.
FLOP_CONVENTION = "GFLOPs: 10^9 floating-point operations, a multiply-add counted as 2, from torch.utils.flop_counter"
DEFAULT_INPUT = (1, 3, 512, 512)  # batch 1, VOC-sized image (VOC images are at most 500 x 500)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of `model` (each shared tensor once), trainable or not."""
    return sum(p.numel() for p in model.parameters())


def format_params(n: int) -> str:
    """3_221_000 -> "3.22M", 81_200 -> "81.2K", 950 -> "950", 1.5e9 -> "1.50G"."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}G"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(int(n))


def model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")  # e.g. a frozen TorchScript module: its weights are constants


def gflops(model: nn.Module, input_size=DEFAULT_INPUT) -> float:
    """GFLOPs (1e9 FLOPs, multiply-add = 2 FLOPs) of one eval-mode forward pass on `input_size`.

    A Conv2d contributes 2 * N * C_out * H_out * W_out * (C_in / groups) * kH * kW (its bias is not
    counted). The model is run once on zeros, on the device of its parameters.
    """
    x = torch.zeros(input_size, device=model_device(model))
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9
