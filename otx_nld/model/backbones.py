"""Backbones (C3, C4, C5 at strides 8, 16, 32) and the FPN that turns them into P3..P7.

Every builder in :data:`BACKBONES` returns a :class:`Backbone`: a module whose forward gives an
``OrderedDict`` of three feature maps (strides 8, 16, 32) and whose ``out_channels`` lists their
channel counts. All weights are randomly initialised; nothing is downloaded. ``weights_path``
loads a local state dict (for the torchvision backbones: a torchvision *classification*
checkpoint such as ``resnet18-f37072fd.pth``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import mobilenet_v2, resnet18, resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from otx_nld.errors import ConfigError

__all__ = ["BACKBONES", "Backbone", "BackboneFPN", "build_backbone"]


class Backbone(nn.Module):
    """A feature extractor giving C3, C4, C5 (strides 8, 16, 32).

    Args:
        body: module whose forward returns an ``OrderedDict[str, Tensor]`` of three maps, finest first.
        out_channels: channel count of each map, same order.
    """

    def __init__(self, body: nn.Module, out_channels: Sequence[int]) -> None:
        super().__init__()
        self.body = body
        self.out_channels: list[int] = list(out_channels)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.body(x)


def _load_weights(module: nn.Module, weights_path: str | Path | None) -> None:
    if weights_path is None:
        return
    path = Path(weights_path)
    if not path.is_file():
        raise ConfigError(f"backbone weights_path: file not found: {path}")
    # weights_only=True: a state dict needs no pickled code, and refusing it keeps a
    # downloaded checkpoint from executing anything.
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"backbone weights_path: {path} does not fit this backbone: {err}") from err


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU (the only block of the CPU backbone)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PlainConvNet(nn.Module):
    """A VGG-like stack of 3x3 conv+BN+ReLU stages, each starting with a stride-2 conv.

    Plain dense 3x3 convolutions are what a small CPU runs fastest per FLOP (depthwise and 1x1
    convolutions are memory-bound there), so this is the CPU default.

    Args:
        widths: output channels of the five stages (strides 2, 4, 8, 16, 32).
        depths: number of convs per stage (the first of each has stride 2).
    """

    def __init__(
        self, widths: Sequence[int] = (16, 32, 64, 96, 128), depths: Sequence[int] = (1, 1, 2, 2, 2)
    ) -> None:
        super().__init__()
        if len(widths) != 5 or len(depths) != 5 or min(depths) < 1:
            raise ConfigError("cpu_plain: widths and depths need five entries each, depths >= 1")
        stages = []
        in_ch = 3
        for width, depth in zip(widths, depths):
            blocks = [conv_bn_relu(in_ch, width, stride=2)]
            blocks += [conv_bn_relu(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(widths[2:])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 2:
                out[f"c{i + 1}"] = x  # c3, c4, c5
        return out


def build_cpu_plain(
    weights_path: str | Path | None = None,
    widths: Sequence[int] = (16, 32, 64, 96, 128),
    depths: Sequence[int] = (1, 1, 2, 2, 2),
) -> Backbone:
    """Compact plain-conv backbone for CPU training (see :class:`PlainConvNet`)."""
    net = PlainConvNet(widths, depths)
    _load_weights(net, weights_path)
    return Backbone(net, net.out_channels)


def build_mobilenet_v2(weights_path: str | Path | None = None) -> Backbone:
    """torchvision MobileNetV2 (width 1.0), taps after 32 ch (s8), 96 ch (s16), 320 ch (s32).

    Same taps as OTX's MobileNetV2-ATSS (its FPN starts at the 32-channel stage); the final
    1x1 conv to 1280 channels is dropped.
    """
    model = mobilenet_v2(weights=None)
    _load_weights(model, weights_path)
    f = model.features
    # features[0:7] ends at stride 8 (32 ch), [7:14] at 16 (96 ch), [14:18] at 32 (320 ch).
    body = nn.Sequential(
        OrderedDict(
            [("c3", nn.Sequential(*f[:7])), ("c4", nn.Sequential(*f[7:14])), ("c5", nn.Sequential(*f[14:18]))]
        )
    )
    return Backbone(IntermediateLayerGetter(body, {"c3": "c3", "c4": "c4", "c5": "c5"}), [32, 96, 320])


def _resnet_backbone(model: nn.Module, channels: list[int]) -> Backbone:
    body = IntermediateLayerGetter(model, {"layer2": "c3", "layer3": "c4", "layer4": "c5"})
    return Backbone(body, channels)


def build_resnet18(weights_path: str | Path | None = None) -> Backbone:
    """torchvision ResNet-18, layer2..layer4 (128, 256, 512 channels)."""
    model = resnet18(weights=None)
    _load_weights(model, weights_path)
    return _resnet_backbone(model, [128, 256, 512])


def build_resnet50(weights_path: str | Path | None = None) -> Backbone:
    """torchvision ResNet-50, layer2..layer4 (512, 1024, 2048 channels)."""
    model = resnet50(weights=None)
    _load_weights(model, weights_path)
    return _resnet_backbone(model, [512, 1024, 2048])


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "cpu_plain": build_cpu_plain,
    "mobilenet_v2": build_mobilenet_v2,
    "resnet18": build_resnet18,
    "resnet50": build_resnet50,
}


def build_backbone(name: str, weights_path: str | Path | None = None) -> Backbone:
    """Look ``name`` up in :data:`BACKBONES` and build it."""
    if name not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](weights_path=weights_path)


class BackboneFPN(nn.Module):
    """Backbone + FPN: C3..C5 -> P3..P7 (strides 8..128), all with ``out_channels`` channels.

    P6 and P7 are computed from the FPN's P5 output (mmdet's ``add_extra_convs='on_output'``,
    as in ATSS): torchvision's ``LastLevelP6P7`` does that when its in and out channels match.

    Args:
        backbone: a :class:`Backbone` giving C3, C4, C5.
        out_channels: FPN channels.
    """

    def __init__(self, backbone: Backbone, out_channels: int = 64) -> None:
        super().__init__()
        if len(backbone.out_channels) != 3:
            raise ConfigError(f"backbone must give 3 feature maps (C3..C5), got {len(backbone.out_channels)}")
        self.backbone = backbone
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=backbone.out_channels,
            out_channels=out_channels,
            extra_blocks=LastLevelP6P7(out_channels, out_channels),
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        """Returns P3..P7, each ``[N, out_channels, ceil(H / s), ceil(W / s)]``."""
        return list(self.fpn(self.backbone(x)).values())
