"""ResNets in the layout of torchvision.models.resnet (`resnet18`, `resnet50`; torchreid's
ResNet-50 adds its `classifier`), and the residual blocks that HRNet (networks/hrnet.py) shares.

Written here because torchvision is not importable beside this torch. The module names are
torchvision's: conv1, bn1, layer1…layer4 of BasicBlocks (conv1, bn1, conv2, bn2,
downsample.0/.1) or Bottlenecks (… conv3, bn3), so torchvision-layout files load key for key.
`BasicBlock` and `Bottleneck` take torchvision's arguments (inplanes, planes, stride,
downsample); BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5), as torchvision's and
the official HRNet's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MARKET1501_CLASSES = 751  # torchreid's Market-1501 classifier (training identities)


def _downsample(inplanes: int, out: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut (1×1 conv + BatchNorm) when the block changes shape, else None."""
    if stride == 1 and inplanes == out:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
    )


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN pairs with an identity (or `downsample`) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride, "ResNet v1.5"), 1×1 expand ×4, plus shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def resnet_stage(block, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage (torchvision's `_make_layer`): the first block changes resolution/width
    (with a projection shortcut when the shape changes), the others keep it."""
    out = planes * block.expansion
    layers = [block(inplanes, planes, stride, _downsample(inplanes, out, stride))]
    layers += [block(out, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet18(nn.Module):
    """ResNet-18 (2 BasicBlocks per stage) → global average pool → fc(num_outputs).

    TPSMM regresses its keypoints and background affine transform with a ResNet-18 trained from
    scratch (`pretrained=False`), so only the layout matters. `width` scales the channels (64 in
    the papers; smaller for CPU presets) without changing the keys.

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
            self.add_module(
                f"layer{i + 1}", resnet_stage(BasicBlock, in_planes, out_planes, 2, stride)
            )
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


class ReidResNet50(nn.Module):
    """ResNet-50 re-id network: normalised RGB [N, 3, 256, 128] -> 2048-d pooled features.

    Keys: torchvision's resnet50 without ``fc``, plus torchreid's ``classifier`` (751 Market-1501
    identities, unused here: torchreid's eval-mode output is the pooled feature too).
    """

    def __init__(self, num_classes: int = MARKET1501_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = resnet_stage(Bottleneck, 64, 64, 3, stride=1)
        self.layer2 = resnet_stage(Bottleneck, 256, 128, 4, stride=2)
        self.layer3 = resnet_stage(Bottleneck, 512, 256, 6, stride=2)
        # torchreid's resnet50: last_stride 2
        self.layer4 = resnet_stage(Bottleneck, 1024, 512, 3, stride=2)
        self.classifier = nn.Linear(512 * Bottleneck.expansion, num_classes)
        # torchreid's initialisation (only matters for random-weight tests): He fan-out convs,
        # unit BatchNorm, small classifier
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))
