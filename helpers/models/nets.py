"""Model registry: torchvision segmentation models and our compact demo nets, one interface.

Every model returned by `build_model` is an `nn.Module` whose
- `forward(x)` gives logits (N, num_classes, H, W) at the input's resolution (what is deployed
  and benchmarked), and
- `forward_features(x)` gives (logits, feature), where `feature` is the tapped intermediate map
  used by feature KD, with `feature_channels` channels; `forward_features(x, logits=False)` gives
  (None, feature) and skips the head (the feature-KD teacher needs nothing more).

Feature taps (why these layers): the tap is the deepest encoder output, the map that enters the
segmentation head in both networks. It is the most semantic representation each network has and
sits at a coarse stride (8 or 16) where matching is cheap; matching an early layer would mostly
transfer edges the student already learns from the labels.
- lraspp_mobilenet_v3_large: backbone "high" (960 ch, stride 16)
- deeplabv3_* / fcn_*: backbone "out" (2048 ch for ResNet-101, stride 8)
- compact_*: the last encoder stage (stride 8)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError

# --- our compact nets (learn from scratch in a CPU budget) ------------------------------------


def conv_bn(cin, cout, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), conv_bn(c, c, relu=False))

    def forward(self, x):
        return F.relu(x + self.body(x))


class CompactSegNet(nn.Module):
    """A small U-shaped net: stride-2 stem, three residual stages (strides 2, 4, 8), and a light
    decoder that upsamples the stride-8 map with two lateral skips, then bilinear x2 to the input."""

    def __init__(self, num_classes=21, widths=(16, 32, 64), blocks=(1, 1, 1), decoder=32):
        super().__init__()
        c1, c2, c3 = widths
        self.stem = conv_bn(3, c1, stride=2)
        self.stage1 = nn.Sequential(*[ResBlock(c1) for _ in range(blocks[0])])
        self.stage2 = nn.Sequential(conv_bn(c1, c2, 2), *[ResBlock(c2) for _ in range(blocks[1])])
        self.stage3 = nn.Sequential(conv_bn(c2, c3, 2), *[ResBlock(c3) for _ in range(blocks[2])])
        self.lat3 = nn.Conv2d(c3, decoder, 1)
        self.lat2 = nn.Conv2d(c2, decoder, 1)
        self.lat1 = nn.Conv2d(c1, decoder, 1)
        self.fuse2 = conv_bn(decoder, decoder)
        self.fuse1 = conv_bn(decoder, decoder)
        self.classifier = nn.Conv2d(decoder, num_classes, 1)
        self.feature_channels = c3

    def forward_features(self, x, logits: bool = True):
        size = x.shape[-2:]
        f1 = self.stage1(self.stem(x))  # (N, c1, H/2, W/2)
        f2 = self.stage2(f1)  # (N, c2, H/4, W/4)
        f3 = self.stage3(f2)  # (N, c3, H/8, W/8): the feature-KD tap
        if not logits:
            return None, f3
        d = F.interpolate(self.lat3(f3), size=f2.shape[-2:], mode="bilinear", align_corners=False)
        d = self.fuse2(d + self.lat2(f2))
        d = F.interpolate(d, size=f1.shape[-2:], mode="bilinear", align_corners=False)
        d = self.fuse1(d + self.lat1(f1))
        logits = F.interpolate(self.classifier(d), size=size, mode="bilinear", align_corners=False)
        return logits, f3

    def forward(self, x):
        return self.forward_features(x)[0]


# --- torchvision models --------------------------------------------------------------------------


class TorchvisionSeg(nn.Module):
    """Wraps a torchvision segmentation model (aux head dropped) in the interface above."""

    def __init__(self, net: nn.Module, feature_key: str, feature_channels: int):
        super().__init__()
        from torchvision.models.segmentation.lraspp import LRASPP

        self.backbone = net.backbone
        self.classifier = net.classifier
        self.head_takes_dict = isinstance(net, LRASPP)
        self.feature_key = feature_key
        self.feature_channels = feature_channels

    def forward_features(self, x, logits: bool = True):
        size = x.shape[-2:]
        feats = self.backbone(x)
        if not logits:
            return None, feats[self.feature_key]
        out = self.classifier(feats if self.head_takes_dict else feats["out"])
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False), feats[self.feature_key]

    def forward(self, x):
        return self.forward_features(x)[0]


TV_FEATURES = {  # torchvision builder -> (backbone key tapped for feature KD, its channels)
    "lraspp_mobilenet_v3_large": ("high", 960),
    "deeplabv3_mobilenet_v3_large": ("out", 960),
    "deeplabv3_resnet50": ("out", 2048),
    "deeplabv3_resnet101": ("out", 2048),
    "fcn_resnet50": ("out", 2048),
    "fcn_resnet101": ("out", 2048),
}

# name -> CompactSegNet arguments. compact_s: 106K parameters, 1/9 of compact_l; why its decoder has 32
# channels (a narrower one could not learn the demo's texture pairs): docs/demo_design.md.
COMPACT = {
    "compact_s": dict(widths=(16, 32, 48), blocks=(1, 1, 1), decoder=32),
    "compact_l": dict(widths=(32, 64, 128), blocks=(1, 2, 2), decoder=64),
}

MODEL_NAMES = tuple(COMPACT) + tuple(TV_FEATURES)


def _weights_help(weights) -> str:
    fname = Path(weights.url).name
    target = Path(torch.hub.get_dir()) / "checkpoints" / fname
    return (
        f"Could not get the pretrained weights '{weights}' (no internet?). Download\n  {weights.url}\n"
        f"on a machine that has internet and put the file at\n  {target}\n"
        "or choose teacher_weights='scratch' / a checkpoint path, or student_pretrained_backbone=False."
    )


def _tv_build(name, num_classes, weights=False, backbone_weights=False):
    from torchvision.models import segmentation as seg

    builder = getattr(seg, name)
    kwargs = {}
    if weights:
        enum = seg.get_model_weights(builder).DEFAULT  # e.g. COCO_WITH_VOC_LABELS_V1
        kwargs["weights"] = enum
        if len(enum.meta["categories"]) != num_classes:
            raise UserError(
                f"{name}'s torchvision weights have {len(enum.meta['categories'])} classes, "
                f"not num_classes={num_classes}."
            )
    else:
        kwargs["num_classes"] = num_classes
        kwargs["weights_backbone"] = None  # torchvision's default would download ImageNet weights
        if backbone_weights:
            from torchvision.models import get_model_weights

            bb = {
                "lraspp_mobilenet_v3_large": "mobilenet_v3_large",
                "deeplabv3_mobilenet_v3_large": "mobilenet_v3_large",
            }.get(name, name.split("_", 1)[1])
            kwargs["weights_backbone"] = get_model_weights(bb).DEFAULT
        if name.startswith(("deeplabv3", "fcn")):
            kwargs["aux_loss"] = False
    try:
        net = builder(**kwargs)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; offline or blocked download
        w = kwargs.get("weights") or kwargs.get("weights_backbone")
        if w is None:
            raise
        raise UserError(_weights_help(w) + f"\n(cause: {type(e).__name__}: {e})") from None
    key, ch = TV_FEATURES[name]
    return TorchvisionSeg(net, key, ch)


def build_model(
    name: str, num_classes: int = 21, pretrained: bool = False, pretrained_backbone: bool = False
) -> nn.Module:
    """A model from the registry. `pretrained`: the torchvision full-model weights (teacher);
    `pretrained_backbone`: ImageNet backbone weights (student). Compact nets have neither."""
    if name in COMPACT:
        return CompactSegNet(num_classes, **COMPACT[name])
    if name in TV_FEATURES:
        return _tv_build(name, num_classes, pretrained, pretrained_backbone)
    raise UserError(f"Unknown architecture '{name}'. Choose one of: {', '.join(MODEL_NAMES)}.")
