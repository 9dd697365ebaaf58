"""ResNet-18 with torchvision's module names, so state_dicts match `torchvision.models.resnet18`.

TPSMM regresses its keypoints and background affine transform with a ResNet-18 trained from
scratch (`pretrained=False`), so only the layout matters: conv1, bn1, layer1…layer4 of
BasicBlocks (conv1, bn1, conv2, bn2, downsample.0/.1) and fc. `width` scales the channels
(64 in the papers; smaller for CPU presets) without changing the keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN pairs with an identity (or 1×1 conv-BN, `downsample`) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet18(nn.Module):
    """ResNet-18 (2 BasicBlocks per stage) → global average pool → fc(num_outputs).

    Initialised as torchvision does: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0,
    PyTorch's default Linear initialisation.
    """

    def __init__(self, num_outputs: int = 1000, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        planes = [width, 2 * width, 4 * width, 8 * width]
        in_planes = width
        for i, out_planes in enumerate(planes):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(
                BasicBlock(in_planes, out_planes, stride), BasicBlock(out_planes, out_planes)
            )
            self.add_module(f"layer{i + 1}", stage)
            in_planes = out_planes
        self.fc = nn.Linear(in_planes, num_outputs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = stage(out)
        return self.fc(out.mean(dim=(2, 3)))
