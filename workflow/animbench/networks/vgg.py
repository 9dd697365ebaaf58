"""VGG19 in the layout of torchvision.models.vgg19 `features` (indices 0–29, up to relu5_1).

Written here because torchvision is not importable beside this torch; the layer indices equal
torchvision's, so its ImageNet file (`weights.WEIGHTS["vgg19"]`) loads key for key. The motion
models' perceptual loss (train/losses.py) uses it frozen: relu1_1 … relu5_1 on
ImageNet-normalised input (notes/reference-models.md §0).
"""

from __future__ import annotations

import torch
from torch import nn

from animbench.networks.published import FrozenNetwork, load_or_random

# torchvision's vgg19 `features` up to relu5_1 (index 29); M = 2×2 max pooling
_VGG19_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
_VGG19_SLICES = [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]


class Vgg19(FrozenNetwork):
    """Frozen VGG19 feature extractor returning relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.

    Layer indices equal torchvision's `vgg19().features`, so its ImageNet file loads directly.
    Without that file (offline), the network keeps torchvision's random initialisation and
    `self.pretrained` is False; the trainer records a warning in its outputs.
    """

    def __init__(self, pretrained: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                conv = nn.Conv2d(in_channels, item, kernel_size=3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                layers += [conv, nn.ReLU(inplace=True)]
                in_channels = item
        layers = layers[:30]
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.freeze(pretrained, "VGG19")

    def load_pretrained(self) -> tuple[bool, str]:
        """torchvision's ImageNet file."""
        return load_or_random(
            self.features,
            "vgg19",
            "VGG19 ImageNet",
            "perceptual loss uses a randomly initialised VGG19",
            select=_features,
            stacklevel=4,  # the caller of Vgg19(), past freeze and __init__
        )

    def forward(self, x: torch.Tensor, num_slices: int = 5) -> list[torch.Tensor]:
        """The first `num_slices` feature maps (deeper layers are not computed)."""
        out = (x - self.mean) / self.std
        feats = []
        for start, stop in _VGG19_SLICES[:num_slices]:
            for layer in self.features[start:stop]:
                out = layer(out)
            feats.append(out)
        return feats


def _features(state: dict) -> dict:
    """torchvision's vgg19 state_dict -> `features` keys 0–29 (relu5_1; the rest is unused)."""
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    return {k: v for k, v in features.items() if int(k.split(".")[0]) < 30}
