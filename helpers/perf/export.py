"""The deployable student: ONNX export (`torch.onnx`, checked by `onnx.checker`) and ONNX Runtime as an
inference path beside PyTorch's (`OrtModel`, what `optimize_for_inference(model, "onnxruntime")` returns).

The file holds the student alone (a KD adapter lives apart in the checkpoint and is never exported): one
input "image", float32 (N, 3, H, W), RGB scaled to [0, 1] and normalised with ImageNet's mean and std;
one output "logits", (N, 21, H, W), whose argmax over dim 1 is the VOC class index. The same facts are in
the file's metadata (`metadata`), so a deployment does not have to guess the normalisation.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..core.errors import UserError
from ..data.transforms import MEAN, STD
from ..data.voc import CLASSES
from .costs import model_device

INPUT, OUTPUT = "image", "logits"


class Logits(nn.Module):
    """The model with its output reduced to the (N, C, H, W) logits (torchvision returns {"out": ...})."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        out = self.model(image)
        if isinstance(out, dict):
            return out["out"]
        return out[0] if isinstance(out, (tuple, list)) else out


def _imports():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise UserError(
            f"ONNX export and the 'onnxruntime' path need the packages onnx, onnxscript and onnxruntime ({e}); "
            "they are in pyproject.toml: run `make setup` (or pip install -e .)."
        ) from None
    return onnx, onnxruntime


def to_onnx(model: nn.Module, image_size: int = 512, dynamic: bool = False, metadata: dict | None = None):
    """The eval-mode `model` as a checked onnx.ModelProto (torch.onnx.export, the dynamo exporter).

    Traced at batch 1 and `image_size` x `image_size`; `dynamic`: batch, height and width are free axes
    (any size the network accepts). `metadata`: extra key/value strings stored in the file, beside the
    normalisation and class names (`metadata`)."""
    onnx, _ = _imports()
    net = Logits(model).eval()
    x = torch.zeros(1, 3, image_size, image_size, device=model_device(model))
    shapes = None
    if dynamic:
        auto = torch.export.Dim.AUTO
        shapes = {"image": {0: auto, 2: auto, 3: auto}}
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net, (x,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT], dynamic_shapes=shapes, verbose=False
        )
    proto = program.model_proto
    for key, value in {**describe(image_size, dynamic), **(metadata or {})}.items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def describe(image_size: int, dynamic: bool) -> dict:
    """The metadata every exported file carries: what the input must be and what the output means."""
    return {
        "input": f"{INPUT}: float32 (N, 3, H, W), RGB in [0, 1] then (x - mean) / std per channel",
        "normalisation": json.dumps({"mean": list(MEAN), "std": list(STD), "scale": "pixel / 255"}),
        "output": f"{OUTPUT}: float32 (N, {len(CLASSES)}, H, W); argmax over dim 1 = the class index",
        "classes": json.dumps(list(CLASSES)),
        "shape": "batch, height and width dynamic" if dynamic else f"fixed (1, 3, {image_size}, {image_size})",
        "void": "label 255 (ignored in evaluation) is never predicted",
    }


class _quiet:
    """Silence the exporter's progress prints ("[torch.onnx] Obtain model graph ..."): they go to stdout."""

    def __enter__(self):
        import contextlib

        self._redirect = contextlib.redirect_stdout(io.StringIO())
        self._redirect.__enter__()

    def __exit__(self, *exc):
        self._redirect.__exit__(*exc)


def metadata(path) -> dict:
    """{key: value} of an .onnx file's metadata (what `to_onnx` stored)."""
    onnx, _ = _imports()
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


class OrtModel(nn.Module):
    """An ONNX model run by ONNX Runtime, called like the PyTorch model: (N, 3, H, W) tensor in, logits
    tensor out. The CPU execution provider, with as many intra-op threads as torch uses when it is first
    called (so `perf.latency`'s `threads` applies to it too); on a CUDA input, the CUDA execution
    provider when the installed onnxruntime has one (the `onnxruntime-gpu` wheel), bound to the tensors'
    memory so no copy is timed."""

    def __init__(self, proto_or_bytes):
        super().__init__()
        self._bytes = proto_or_bytes if isinstance(proto_or_bytes, bytes) else proto_or_bytes.SerializeToString()
        self._sessions = {}

    def session(self, device: torch.device):
        _, ort = _imports()
        key = (device.type, torch.get_num_threads())
        if key not in self._sessions:
            providers = ["CPUExecutionProvider"]
            if device.type == "cuda":
                if "CUDAExecutionProvider" not in ort.get_available_providers():
                    raise UserError(
                        "path 'onnxruntime' on a CUDA device needs onnxruntime's CUDA execution provider, which "
                        "the installed onnxruntime lacks (pip install onnxruntime-gpu); or measure it on the CPU."
                    )
                providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), *providers]
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.log_severity_level = 3  # errors only
            self._sessions[key] = ort.InferenceSession(self._bytes, options, providers=providers)
        return self._sessions[key]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = image.detach().float().contiguous()
        sess = self.session(image.device)
        if image.device.type == "cpu":
            return torch.from_numpy(sess.run([OUTPUT], {INPUT: image.numpy()})[0])
        return self._bound(sess, image)

    def _bound(self, sess, image: torch.Tensor) -> torch.Tensor:
        """Run on GPU memory through an IO binding (input and output stay on the device)."""
        import numpy as np

        out = torch.empty((image.shape[0], len(CLASSES), *image.shape[2:]), device=image.device)
        binding = sess.io_binding()
        where = ("cuda", image.device.index or 0, np.float32)
        binding.bind_input(INPUT, *where, tuple(image.shape), image.data_ptr())
        binding.bind_output(OUTPUT, *where, tuple(out.shape), out.data_ptr())
        torch.cuda.synchronize(image.device)
        sess.run_with_iobinding(binding)
        return out


def onnxruntime_model(model: nn.Module, image_size: int = 512) -> OrtModel:
    """`model` exported with free batch and size axes and loaded into ONNX Runtime (no file written)."""
    return OrtModel(to_onnx(model, image_size, dynamic=True))


def export_checkpoint(checkpoint, out, image_size: int | None = None, dynamic: bool = False) -> dict:
    """Write the student of a training checkpoint to `out` (.onnx) with `write`; image_size: default the
    run's `latency_size`. A teacher's checkpoint is refused (one paragraph), as is a file that is not one."""
    from ..models.store import load_model

    path = Path(checkpoint)
    model, state = load_model(path)
    if state.get("method") == "teacher":
        raise UserError(
            f"'{path}' holds the teacher ({state.get('arch')}), not a student. `export` writes the network a "
            "student ships: pass a student's checkpoint, checkpoints/<run>/<method>.pt (e.g. "
            "checkpoints/demo/response.pt); `python -m helpers runs` lists every run and its checkpoints."
        )
    size = int(image_size or (state.get("config") or {}).get("latency_size") or 512)
    meta = {"method": state.get("method", "?"), "arch": state["arch"], "checkpoint": path.name}
    return write(model, out, size, dynamic, meta)


def write(model: nn.Module, out, image_size: int, dynamic: bool = False, meta: dict | None = None) -> dict:
    """`to_onnx` written to `out`, then run once by ONNX Runtime beside PyTorch on a random input; returns
    what was written, with the max |Δ logits| and the argmax agreement of that run."""
    out = Path(out)
    proto = to_onnx(model, image_size, dynamic, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    x = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        eager, ort = Logits(copy.deepcopy(model).cpu().eval())(x), OrtModel(out.read_bytes())(x)
    return {
        "out": str(out),
        "bytes": out.stat().st_size,
        **(meta or {}),
        "image_size": image_size,
        "dynamic": dynamic,
        "max_abs_diff": float((eager - ort).abs().max()),
        "argmax_agreement": float((eager.argmax(1) == ort.argmax(1)).float().mean()),
        "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
    }
