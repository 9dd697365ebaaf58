"""HRNet-W32/W48 stages 1–3 in the layout of the official HRNet
(HRNet/HRNet-Image-Classification, as mirrored by mmpose: `conv1`, `bn1`, `conv2`, `bn2`,
`layer1`, `transition1`, `stage2`, `transition2`, `stage3`), the backbone of TokenPose's
HRNET_base and of MTIA's keypoint detector (models/mtia.py).

Written here because timm (whose `hrnet_w32` has these names too) needs torchvision, which is
not importable beside this torch. The ImageNet files `weights.WEIGHTS["hrnet_w32"/"hrnet_w48"]`
load key by key (stage 4 and the classifier, not built here, are left out). The residual blocks
are torchvision's (networks/resnet.py): same keys, and the official HRNet's BatchNorm momentum
0.1 is PyTorch's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from animbench import weights
from animbench.networks.published import read
from animbench.networks.resnet import BasicBlock, Bottleneck, resnet_stage

BN_MOMENTUM = 0.1


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _bn(num_features: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(num_features, momentum=BN_MOMENTUM)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every output branch sums all (resized) inputs.

    With multi_scale_output=False only the highest-resolution output is fused (and built).
    """

    def __init__(self, channels: list[int], num_blocks: int = 4, multi_scale_output=True):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            resnet_stage(BasicBlock, c, c, num_blocks, stride=1) for c in channels
        )
        self.fuse_layers = nn.ModuleList()
        for i in range(n if multi_scale_output else 1):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:  # lower resolution: 1×1 conv, nearest upsampling
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(channels[j], channels[i], 1, bias=False),
                            _bn(channels[i]),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        )
                    )
                elif j == i:
                    row.append(nn.Identity())
                else:  # higher resolution: (i − j) strided 3×3 convs
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out_c = channels[i] if last else channels[j]
                        step = [_conv3x3(channels[j], out_c, 2), _bn(out_c)]
                        if not last:
                            step.append(nn.ReLU())
                        steps.append(nn.Sequential(*step))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        return [F.relu(sum(fuse(x) for fuse, x in zip(row, xs))) for row in self.fuse_layers]


def _transition(in_channels: list[int], out_channels: list[int]) -> nn.ModuleList:
    """New branches by a strided 3×3 conv from the lowest-resolution input; kept branches pass
    through (None) when their width is unchanged."""
    layers: list[nn.Module | None] = []
    for i, out_c in enumerate(out_channels):
        if i < len(in_channels):
            layers.append(
                None
                if in_channels[i] == out_c
                else nn.Sequential(_conv3x3(in_channels[i], out_c), _bn(out_c), nn.ReLU())
            )
        else:
            layers.append(
                nn.Sequential(
                    nn.Sequential(_conv3x3(in_channels[-1], out_c, 2), _bn(out_c), nn.ReLU())
                )
            )
    return nn.ModuleList(layers)


class HRNetBackbone(nn.Module):
    """HRNet stages 1–3 (TokenPose's HRNET_base): stem (two stride-2 3×3 convs) → layer1 (4
    Bottlenecks, 256 ch) → stage2 (1 module, widths [w, 2w]) → stage3 (4 modules, [w, 2w, 4w]),
    the last one fusing to the highest resolution only: output [B, w, H/4, W/4].

    `width=None` is the *Stem* backbone of MTIA Table 5: stem + layer1, output [B, 256, H/4, W/4].
    """

    def __init__(self, width: int | None = 32, num_channels: int = 3):
        super().__init__()
        self.conv1 = _conv3x3(num_channels, 64, 2)
        self.bn1 = _bn(64)
        self.conv2 = _conv3x3(64, 64, 2)
        self.bn2 = _bn(64)
        self.layer1 = resnet_stage(Bottleneck, 64, 64, 4, stride=1)
        self.width = width
        self.out_channels = 256 if width is None else width
        if width is not None:
            c2, c3 = [width, 2 * width], [width, 2 * width, 4 * width]
            self.transition1 = _transition([256], c2)
            self.stage2 = nn.Sequential(HighResolutionModule(c2))
            self.transition2 = _transition(c2, c3)
            self.stage3 = nn.Sequential(
                *(HighResolutionModule(c3, multi_scale_output=i < 3) for i in range(4))
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' HRNet init: conv N(0, 0.001), BN (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        if self.width is None:
            return x
        xs = [t(x) if t is not None else x for t in self.transition1]
        xs = self.stage2(xs)
        xs = [t(xs[-1]) if t is not None else xs[i] for i, t in enumerate(self.transition2)]
        return self.stage3(xs)[0]

    def load_imagenet(self, name: str = "hrnet_w32") -> tuple[bool, str]:
        """Load the ImageNet weights of the backbone keys present here (the authors load
        conv1 … stage3 with strict=False). Returns (loaded, note)."""
        path, reason = weights.fetch(name)
        if path is None:
            return False, f"HRNet ImageNet weights unavailable ({reason}); random init"
        state = read(path)
        state = state.get("state_dict", state)
        state = {k.removeprefix("backbone."): v for k, v in state.items()}
        own = self.state_dict()
        matched = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        missing = sorted(set(own) - set(matched))
        if missing:
            raise ValueError(f"{path}: {len(missing)} backbone keys missing, e.g. {missing[:3]}")
        self.load_state_dict(matched)
        return True, f"HRNet ImageNet weights from {path}"
