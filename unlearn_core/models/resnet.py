"""ResNet-18 with a CIFAR stem.

Origin: "Deep Residual Learning for Image Recognition" (He et al., 2016), as used by the RUM / SCRUB
reference code (RUM `models/ResNet.py`, itself torchvision's ResNet with the ImageNet stem swapped out).

Differences from torchvision's `resnet18`, all taken from the reference:
  * stem is a 3×3 conv, stride 1, padding 1 (no bias) + BN + ReLU and there is no max-pool, so a 32×32
    input keeps full resolution into `layer1`;
  * a `Normalize` layer comes first, so inputs are floats in [0, 1].

Variants:
  * `resnet18`: BasicBlock, layers [2, 2, 2, 2]; 11,173,962 parameters at 10 classes, 11,220,132 at 100.

`width` scales every channel count (64·width, 128·width, ...) so CPU tests can build tiny models.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import MODELS
from .normalize import Normalize

__all__ = ["BasicBlock", "ResNet", "resnet18"]


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN pairs with an identity (or 1×1 conv-BN projection) shortcut; torchvision layout."""

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # `out` is a fresh activation, so the in-place add/ReLU never touch the block input.
        out += shortcut
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet for small (CIFAR-size) images.

    Variants: `resnet18` ([2, 2, 2, 2] BasicBlocks).

    Args:
        layers: number of blocks in each of the four stages.
        num_classes: size of the linear head.
        in_chans: input channels (3 for RGB, 1 for grey-scale digits).
        width: multiplier on every channel count (rounded, at least 1 channel).
        mean, std: per-channel input statistics for the leading `Normalize` (None: 0.5 / 0.5).
    """

    def __init__(
        self,
        layers: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_chans: int = 3,
        width: float = 1.0,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        stem_chs = _scaled(64, width)
        stage_chs = [_scaled(c, width) for c in (64, 128, 256, 512)]

        self.normalize = Normalize(mean, std, num_channels=in_chans)
        self.conv1 = nn.Conv2d(in_chans, stem_chs, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.relu = nn.ReLU(inplace=True)
        # Reference replaces the ImageNet max-pool with Identity; 32×32 inputs are too small to pool early.
        self.maxpool = nn.Identity()

        in_chs = stem_chs
        stages = []
        for i, (depth, out_chs) in enumerate(zip(layers, stage_chs)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_chs, out_chs, stride)]
            blocks += [BasicBlock(out_chs, out_chs) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_chs = out_chs
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.num_features = in_chs
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's scheme, which the reference keeps (no zero-init of the last BN in each block).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, N×num_features."""
        x = self.normalize(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # flatten, not view: channels_last pooled maps are not contiguous in NCHW order.
        return self.global_pool(x).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_resnet(layers: Sequence[int], **kwargs) -> ResNet:
    return ResNet(layers=layers, **kwargs)


@MODELS.register("resnet18")
def resnet18(**kwargs) -> ResNet:
    """ResNet-18, CIFAR stem (RUM `models/ResNet.py`)."""
    model_args = dict(layers=(2, 2, 2, 2))
    return _create_resnet(**dict(model_args, **kwargs))
