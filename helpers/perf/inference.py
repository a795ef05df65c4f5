"""Faster inference paths, each a new module with the same output, checked against eager fp32:
eager / fused (Conv+BN folding, channels_last) / jit (trace + freeze + optimize_for_inference) / int8 (FX
static quantization, CPU only) / onnxruntime (the exported ONNX file run by ONNX Runtime, `export.py`);
`argmax_agreement` measures how often a path's label map equals eager's, and a path is offered as the
table's latency column only when that is at least `MIN_AGREEMENT` on real images."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..core.errors import UserError
from .costs import DEFAULT_INPUT, model_device

PATHS = ("eager", "fused", "jit", "int8", "onnxruntime")
TABLE_PATHS = ("eager", "fused", "jit", "onnxruntime")  # the choices of the `inference_path` knob
MIN_AGREEMENT = 0.999  # argmax agreement with eager fp32 a table path needs on real images


def _logits(out) -> torch.Tensor:
    """The (N, C, H, W) logits of a model's output: a tensor, torchvision's {"out": ...}, or a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return out["out"]
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")


def fold_conv_bn(module: nn.Module) -> int:
    """Fold, in place, each eval-mode BatchNorm2d into the Conv2d right before it in an nn.Sequential.

    The conv gets the BN's affine map in its weight and bias; the BN becomes nn.Identity. Pairs not
    inside an nn.Sequential (e.g. ResNet's conv1/bn1 attributes) are left alone. Returns the number
    of folded pairs. The module must be in eval mode (running statistics are what gets folded).
    """
    n = 0
    for child in module.children():
        n += fold_conv_bn(child)
    if isinstance(module, nn.Sequential):
        keys = list(module._modules)
        for a, b in zip(keys, keys[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if (
                type(conv) is nn.Conv2d
                and type(bn) is nn.BatchNorm2d
                and bn.track_running_stats
                and bn.num_features == conv.out_channels
            ):
                if conv.training or bn.training:
                    raise UserError(
                        "fold_conv_bn: call model.eval() first (training-mode BN "
                        "normalises with batch statistics, which cannot be folded)."
                    )
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
                n += 1
    return n


class ChannelsLast(nn.Module):
    """Runs the wrapped (channels_last) model on a channels_last copy of its (N, C, H, W) input."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.contiguous(memory_format=torch.channels_last))


def _calibrate(model, calibration, input_size) -> None:
    batches = (
        calibration
        if calibration is not None
        else [torch.randn(tuple(input_size), generator=torch.Generator().manual_seed(i)) for i in range(8)]
    )
    with torch.no_grad():
        for x in batches:
            model(x)


def optimize_for_inference(
    model: nn.Module, path: str = "eager", input_size=DEFAULT_INPUT, calibration=None
) -> nn.Module:
    """A new eval-mode module computing `model`'s output faster on CPU; `model` is not modified.

    path:
      "eager": an fp32 copy as it is (the reference).
      "fused": Conv+BN folded (`fold_conv_bn`), weights and input in channels_last.
      "jit":   torch.jit.trace on a channels_last input of `input_size`, then torch.jit.freeze
               (which also folds Conv+BN) and torch.jit.optimize_for_inference. Other input sizes
               work too. TorchScript is deprecated upstream (warnings are silenced here).
      "int8":  FX post-training static quantization (x86 backend, CPU only), calibrated on
               `calibration` (an iterable of (N, 3, H, W) float batches, normalised like real
               inputs) or, if None, on 8 random batches; expect a small accuracy change, so check
               it with `argmax_agreement` on real images.
      "onnxruntime": exported by torch.onnx (batch, height and width free), checked by onnx.checker and
               run by ONNX Runtime (`export.OrtModel`: the CPU execution provider; CUDA where the
               installed onnxruntime has it).
    """
    if path not in PATHS:
        raise UserError(f"optimize_for_inference: unknown path {path!r}; choose one of {PATHS}.")
    m = copy.deepcopy(model).eval()
    if path == "eager":
        return m
    if path == "onnxruntime":
        from .export import onnxruntime_model

        return onnxruntime_model(m, int(input_size[-1]))
    if path == "fused":
        fold_conv_bn(m)
        return ChannelsLast(m.to(memory_format=torch.channels_last)).eval()
    example = torch.randn(tuple(input_size), device=model_device(m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit / torch.ao.quantization deprecation notices
        return _jit(m, example) if path == "jit" else _int8(m, example, calibration, input_size)


def _jit(m: nn.Module, example) -> nn.Module:
    wrapped = ChannelsLast(m.to(memory_format=torch.channels_last)).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, example, strict=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def _int8(m: nn.Module, example, calibration, input_size) -> nn.Module:
    if model_device(m).type != "cpu":
        raise UserError("optimize_for_inference(path='int8') runs on CPU only; pass a CPU model.")
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    try:
        prepared = prepare_fx(m, get_default_qconfig_mapping("x86"), (example,))
    except Exception as e:  # FX cannot trace data-dependent Python control flow
        raise UserError(
            f"int8: torch.fx could not trace this model ({type(e).__name__}: {e}); use path='fused' or 'jit' instead."
        ) from e
    _calibrate(prepared, calibration, input_size)
    return convert_fx(prepared).eval()


def argmax_agreement(model_a: nn.Module, model_b: nn.Module, images) -> float:
    """Fraction of pixels where the two models' argmax classes agree.

    images: a (N, 3, H, W) float tensor or an iterable of such batches. Both models run in
    inference mode on each batch (moved to each model's device); 1.0 means identical label maps.
    """
    batches = [images] if isinstance(images, torch.Tensor) else images
    same = total = 0
    with torch.inference_mode():
        for x in batches:
            pa = _logits(model_a(x.to(model_device(model_a)))).argmax(1).cpu()
            pb = _logits(model_b(x.to(model_device(model_b)))).argmax(1).cpu()
            if pa.shape != pb.shape:
                raise UserError(f"argmax_agreement: label maps differ in shape {tuple(pa.shape)} vs {tuple(pb.shape)}.")
            same += int((pa == pb).sum())
            total += pa.numel()
    if total == 0:
        raise UserError("argmax_agreement: no images given.")
    return same / total
