"""What a model costs to deploy: parameters, FLOPs, batch-1 latency, and faster inference paths.

- `count_parameters` / `format_params`: the size of the deployable network (pass the student
  without its KD adapters: adapters are dropped after training).
- `gflops`: FLOPs of one forward pass from `torch.utils.flop_counter.FlopCounterMode`, which counts
  a multiply-add as 2 FLOPs (so GFLOPs = 2 x GMACs) and counts only the ops it has formulas for
  (convolutions, matmuls, attention); BatchNorm, activations, pooling and interpolation are free.
  This is the convention of every GFLOPs figure here (`FLOP_CONVENTION`). Some model zoos quote
  GMACs as "GFLOPS" (torchvision's 258.7 for DeepLabV3-ResNet101 is of that kind, at 520x520 with
  its aux head); by this count that model costs 482 GFLOPs at 512x512 (aux head dropped, as in `models`).
- `latency`: batch-1 latency of several models measured in one process, interleaved round-robin
  after warm-up, so clock or thermal drift hits every model alike.
- `optimize_for_inference`: eager / fused (Conv+BN folding, channels_last) / jit (trace + freeze +
  optimize_for_inference) / int8 (FX static quantization, CPU only) versions of a model, checked
  against eager with `argmax_agreement`.
"""
from __future__ import annotations

import copy
import timeit
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.flop_counter import FlopCounterMode

from .errors import UserError
from .runtime import sync

PATHS = ("eager", "fused", "jit", "int8")
# The one FLOP convention of this project (bench, table, README): state it next to every figure.
FLOP_CONVENTION = ("GFLOPs: 10^9 floating-point operations, a multiply-add counted as 2, "
                   "from torch.utils.flop_counter")
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


def _logits(out) -> torch.Tensor:
    """The (N, C, H, W) logits of a model's output: a tensor, torchvision's {"out": ...}, or a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return out["out"]
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")


def _device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={str(device)!r} was asked for, but PyTorch sees no CUDA GPU "
                        f"(torch.cuda.is_available() is False). Use device='cpu', or run on a "
                        f"machine with an NVIDIA GPU and a CUDA build of PyTorch.")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device={str(device)!r} is not supported here; use 'cpu' or 'cuda'.")
    return dev


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")  # e.g. a frozen TorchScript module: its weights are constants


def gflops(model: nn.Module, input_size=DEFAULT_INPUT) -> float:
    """GFLOPs (1e9 FLOPs, multiply-add = 2 FLOPs) of one eval-mode forward pass on `input_size`.

    A Conv2d contributes 2 * N * C_out * H_out * W_out * (C_in / groups) * kH * kW (its bias is not
    counted). The model is run once on zeros, on the device of its parameters.
    """
    x = torch.zeros(input_size, device=_model_device(model))
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9



def _ready(model: nn.Module, dev: torch.device, dtype: torch.dtype) -> nn.Module:
    """The model on `dev` in `dtype`: itself when already there, else a moved copy (never mutated)."""
    if isinstance(model, torch.jit.ScriptModule):
        return model  # frozen / traced: used as built (build it on the device you measure)
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == dev and (not t.is_floating_point() or t.dtype == dtype) for t in tensors):
        return model
    return copy.deepcopy(model).to(dev, dtype)


def _benchmark_timers():
    """torch.utils.benchmark's Timer and its synchronising clock. Importing them imports
    torch.utils.cpp_extension, which on a machine with a CUDA toolkit but no GPU logs "No CUDA runtime
    is found, using CUDA_HOME=...": a note for compiling C++ extensions (which this project never
    does) that a student reads as a failure. That one logger is quiet for the import, nothing else."""
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
        from torch.utils.benchmark.utils.timer import timer
    finally:
        log.setLevel(level)
    return Timer, timer


def latency(models: dict[str, nn.Module], input_size=DEFAULT_INPUT, device="cpu", warmup: int = 3,
            rounds: int = 5, min_run_time: float = 0.2, threads: int | None = None,
            dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, dict]:
    """Batch-1 forward latency of each model, measured interleaved in this one process.

    models: {name: module}; every model gets the same random input of `input_size` (N, 3, H, W).
    After `warmup` untimed calls each, `rounds` rounds go round-robin over the models (the order
    reversed every other round); in each round torch.utils.benchmark.Timer.blocked_autorange runs
    the model in blocks for at least `min_run_time` seconds (at least one block, so a model slower
    than that costs about two calls per round). Everything runs under torch.inference_mode() in
    eval mode with `threads` CPU threads (default: torch.get_num_threads()); on CUDA the timer
    synchronises the GPU. Defaults: 4 small models take about 5-10 s on 2 idle cores; for
    report-quality numbers raise `rounds` and `min_run_time`, and keep the machine otherwise idle.

    Returns {name: {"mean_ms", "std_ms" (std over rounds of the per-call mean), "runs" (timed
    calls in all), "device", "threads", "dtype", "input_size"}}. Models are not modified: one on
    another device / dtype is measured as a copy; a TorchScript module is used as it is.
    """
    Timer, _synced_timer = _benchmark_timers()

    dev = _device(device)
    if not models:
        raise UserError("latency: no models given.")
    if rounds < 1 or min_run_time <= 0 or warmup < 0:
        raise UserError(f"latency: need rounds >= 1, min_run_time > 0, warmup >= 0 (got {rounds}, "
                        f"{min_run_time}, {warmup}).")
    threads = int(threads or torch.get_num_threads())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(input_size), generator=gen).to(dev, dtype)
    ready = {name: _ready(m, dev, dtype) for name, m in models.items()}
    modes = {name: m.training for name, m in ready.items()  # frozen TorchScript has no .training
             if not isinstance(m, torch.jit.ScriptModule)}
    clock = timeit.default_timer if dev.type == "cpu" else _synced_timer
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timers, runs = {}, {}
        with torch.inference_mode():
            for name, m in ready.items():
                if name in modes:
                    m.eval()
                for _ in range(warmup):
                    m(x)
                sync(dev)
                timers[name] = Timer("m(x)", globals={"m": m, "x": x}, num_threads=threads,
                                     timer=clock)
                runs[name] = 0
            per_round = {name: [] for name in ready}
            names = list(ready)
            for r in range(rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    meas = timers[name].blocked_autorange(min_run_time=min_run_time)
                    per_round[name].append(meas.mean)  # seconds per call in this round
                    runs[name] += meas.number_per_run * len(meas.raw_times)
    finally:
        torch.set_num_threads(old_threads)
        for name, mode in modes.items():
            ready[name].train(mode)
    out = {}
    for name, times in per_round.items():
        t = torch.tensor(times, dtype=torch.float64) * 1e3
        out[name] = {"mean_ms": float(t.mean()), "std_ms": float(t.std()) if len(t) > 1 else 0.0,
                     "runs": runs[name], "device": str(dev), "threads": threads,
                     "dtype": str(dtype).replace("torch.", ""), "input_size": list(input_size)}
    return out


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
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and bn.num_features == conv.out_channels):
                if conv.training or bn.training:
                    raise UserError("fold_conv_bn: call model.eval() first (training-mode BN "
                                    "normalises with batch statistics, which cannot be folded).")
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
    batches = calibration if calibration is not None else [
        torch.randn(tuple(input_size), generator=torch.Generator().manual_seed(i)) for i in range(8)]
    with torch.no_grad():
        for x in batches:
            model(x)


def optimize_for_inference(model: nn.Module, path: str = "eager", input_size=DEFAULT_INPUT,
                           calibration=None) -> nn.Module:
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
    """
    if path not in PATHS:
        raise UserError(f"optimize_for_inference: unknown path {path!r}; choose one of {PATHS}.")
    m = copy.deepcopy(model).eval()
    if path == "eager":
        return m
    if path == "fused":
        fold_conv_bn(m)
        return ChannelsLast(m.to(memory_format=torch.channels_last)).eval()
    example = torch.randn(tuple(input_size), device=_model_device(m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit / torch.ao.quantization deprecation notices
        if path == "jit":
            wrapped = ChannelsLast(m.to(memory_format=torch.channels_last)).eval()
            with torch.no_grad():
                traced = torch.jit.trace(wrapped, example, strict=False)
                return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        # int8
        if _model_device(m).type != "cpu":
            raise UserError("optimize_for_inference(path='int8') runs on CPU only; pass a CPU model.")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
        try:
            prepared = prepare_fx(m, get_default_qconfig_mapping("x86"), (example,))
        except Exception as e:  # FX cannot trace data-dependent Python control flow
            raise UserError(f"int8: torch.fx could not trace this model ({type(e).__name__}: "
                            f"{e}); use path='fused' or 'jit' instead.") from e
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
            pa = _logits(model_a(x.to(_model_device(model_a)))).argmax(1).cpu()
            pb = _logits(model_b(x.to(_model_device(model_b)))).argmax(1).cpu()
            if pa.shape != pb.shape:
                raise UserError(f"argmax_agreement: label maps differ in shape {tuple(pa.shape)} "
                                f"vs {tuple(pb.shape)}.")
            same += int((pa == pb).sum())
            total += pa.numel()
    if total == 0:
        raise UserError("argmax_agreement: no images given.")
    return same / total
