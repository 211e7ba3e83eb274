"""VGG-16 with batch norm, the "LTH" CIFAR variant.

Origin: "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015),
in the form used by the lottery-ticket / sparse-unlearning code that RUM builds on (RUM `models/VGG_LTH.py`).

Differences from torchvision's `vgg16_bn`, all taken from the reference:
  * convs keep their bias even though BN follows;
  * the fifth max-pool is dropped, so a 32×32 input ends as a 2×2 map (16×16 digits end at 1×1);
  * the classifier is one linear layer 512→C after global average pooling (no 4096-wide MLP);
  * a `Normalize` layer comes first, so inputs are floats in [0, 1].

Variants:
  * `vgg16_bn`: config D (13 convs); 14,728,266 parameters at 10 classes, 14,774,436 at 100. The reference
    calls this `vgg16_bn_lth`; its plain `vgg16_bn` (2×2 pool, 2048→256→256→C MLP) is not provided here.

`width` scales every channel count (64·width, 128·width, ...) so CPU tests can build tiny models.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import MODELS
from .normalize import Normalize

__all__ = ["VGG", "vgg16_bn"]

# Channel counts per conv, "M" = 2×2 max-pool. Config D minus the final pool (LTH variant).
_CFGS: dict[str, list[int | str]] = {
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class VGG(nn.Module):
    """VGG with BN, no final pool, global average pooling and a single linear classifier.

    Variants: `vgg16_bn` (config D).

    Args:
        cfg: conv widths and "M" pool markers.
        num_classes: size of the linear head.
        in_chans: input channels (3 for RGB, 1 for grey-scale digits).
        width: multiplier on every channel count (rounded, at least 1 channel).
        mean, std: per-channel input statistics for the leading `Normalize` (None: 0.5 / 0.5).
    """

    def __init__(
        self,
        cfg: Sequence[int | str] = _CFGS["D"],
        num_classes: int = 10,
        in_chans: int = 3,
        width: float = 1.0,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = Normalize(mean, std, num_channels=in_chans)

        layers: list[nn.Module] = []
        in_chs = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_chs = _scaled(int(v), width)
            # bias=True although BN follows: the reference keeps it, and the parameter count depends on it.
            layers += [
                nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=True),
                nn.BatchNorm2d(out_chs),
                nn.ReLU(inplace=True),
            ]
            in_chs = out_chs
        self.features = nn.Sequential(*layers)

        self.num_features = in_chs
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, N×num_features."""
        x = self.features(self.normalize(x))
        # flatten, not view: channels_last pooled maps are not contiguous in NCHW order.
        return self.global_pool(x).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_vgg(cfg: str, **kwargs) -> VGG:
    return VGG(cfg=_CFGS[cfg], **kwargs)


@MODELS.register("vgg16_bn")
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16-BN, LTH variant (RUM `models/VGG_LTH.py`)."""
    model_args = dict(cfg="D")
    return _create_vgg(**dict(model_args, **kwargs))
