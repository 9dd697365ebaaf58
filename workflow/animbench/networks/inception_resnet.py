"""FaceNet Inception-ResNet-v1 in the layout of facenet-pytorch's `InceptionResnetV1`
(David Sandberg's 20180402-114759 VGGFace2 model as ported by facenet-pytorch,
`InceptionResnetV1(pretrained='vggface2')`, logits layer included).

Written here because facenet-pytorch needs torchvision, which is not importable beside this
torch. Module names are facenet-pytorch's (`conv2d_1a.conv`, `repeat_1.0.branch0`, …), so the
published file (`weights.WEIGHTS["facenet_vggface2"]`) loads key for key. The AED face-identity
backend (evaluate/backends/identity_backends.py) uses it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VGGFACE2_CLASSES = 8631  # the published file's logits layer (training identities)

# (in, out, kernel, stride, padding) of one BasicConv2d
ConvSpec = tuple[int, int, int | tuple[int, int], int, int | tuple[int, int]]


def conv_bn_relu(spec: ConvSpec) -> nn.Sequential:
    """Conv (no bias: the BatchNorm shifts) + BatchNorm (TensorFlow's eps 0.001) + ReLU.

    Children named conv/bn/relu: facenet-pytorch's ``BasicConv2d`` keys (``conv.weight``, ...).
    """
    cin, cout, kernel, stride, padding = spec
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            bn=nn.BatchNorm2d(cout, eps=0.001, momentum=0.1),
            relu=nn.ReLU(),
        )
    )


def conv_chain(*specs: ConvSpec) -> nn.Module:
    """One conv_bn_relu as is, several in an nn.Sequential (indexed keys, as upstream)."""
    if len(specs) == 1:
        return conv_bn_relu(specs[0])
    return nn.Sequential(*(conv_bn_relu(spec) for spec in specs))


class Branches(nn.Module):
    """Parallel branches ``branch0``, ``branch1``, ... concatenated over channels."""

    def __init__(self, branches: Iterable[nn.Module]) -> None:
        super().__init__()
        self.count = 0
        for branch in branches:
            self.add_module(f"branch{self.count}", branch)
            self.count += 1

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.count)], 1)


class ScaledResidual(Branches):
    """Inception-ResNet block: x + scale · conv2d(branches(x)), then ReLU unless ``relu=False``.

    ``conv2d`` is a biased 1×1 convolution back to the input's channels; the small scale keeps
    the residual stack stable (Szegedy et al. 2016).
    """

    def __init__(
        self, branches: Iterable[nn.Module], mixed: int, channels: int, scale: float, relu: bool
    ) -> None:
        super().__init__(branches)
        self.conv2d = nn.Conv2d(mixed, channels, kernel_size=1)
        self.scale = scale
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        out = x + self.scale * self.conv2d(super().forward(x))
        return F.relu(out) if self.relu else out


def block35(scale: float = 0.17) -> ScaledResidual:
    """35×35 grid block (Inception-ResNet-A), 256 channels."""
    return ScaledResidual(
        [
            conv_chain((256, 32, 1, 1, 0)),
            conv_chain((256, 32, 1, 1, 0), (32, 32, 3, 1, 1)),
            conv_chain((256, 32, 1, 1, 0), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1)),
        ],
        mixed=96,
        channels=256,
        scale=scale,
        relu=True,
    )


def _factorised_block(
    channels: int, width: int, kernel: int, mixed: int, scale: float, relu: bool
) -> ScaledResidual:
    """Inception-ResNet-B and -C: a 1×1 branch beside 1×1 → 1×k → k×1, both ``width`` wide."""
    pad = kernel // 2
    return ScaledResidual(
        [
            conv_chain((channels, width, 1, 1, 0)),
            conv_chain(
                (channels, width, 1, 1, 0),
                (width, width, (1, kernel), 1, (0, pad)),
                (width, width, (kernel, 1), 1, (pad, 0)),
            ),
        ],
        mixed=mixed,
        channels=channels,
        scale=scale,
        relu=relu,
    )


def block17(scale: float = 0.10) -> ScaledResidual:
    """17×17 grid block (Inception-ResNet-B), 896 channels, factorised 7×7."""
    return _factorised_block(896, 128, 7, mixed=256, scale=scale, relu=True)


def block8(scale: float = 0.20, relu: bool = True) -> ScaledResidual:
    """8×8 grid block (Inception-ResNet-C), 1792 channels, factorised 3×3."""
    return _factorised_block(1792, 192, 3, mixed=384, scale=scale, relu=relu)


def mixed_6a() -> Branches:
    """Reduction 35→17: 384 + 256 convolved + 256 max-pooled = 896 channels."""
    return Branches(
        [
            conv_chain((256, 384, 3, 2, 0)),
            conv_chain((256, 192, 1, 1, 0), (192, 192, 3, 1, 1), (192, 256, 3, 2, 0)),
            nn.MaxPool2d(3, stride=2),
        ]
    )


def mixed_7a() -> Branches:
    """Reduction 17→8: 384 + 256 + 256 convolved + 896 max-pooled = 1792 channels."""
    return Branches(
        [
            conv_chain((896, 256, 1, 1, 0), (256, 384, 3, 2, 0)),
            conv_chain((896, 256, 1, 1, 0), (256, 256, 3, 2, 0)),
            conv_chain((896, 256, 1, 1, 0), (256, 256, 3, 1, 1), (256, 256, 3, 2, 0)),
            nn.MaxPool2d(3, stride=2),
        ]
    )


class InceptionResnetV1(nn.Module):
    """FaceNet Inception-ResNet-v1: standardised RGB [N, 3, 160, 160] -> unit 512-d embeddings.

    The state_dict is facenet-pytorch's ``InceptionResnetV1(pretrained='vggface2')`` one,
    including the 8631-way ``logits`` layer (unused here, present so that the published file
    loads key for key).
    """

    def __init__(self, num_classes: int = VGGFACE2_CLASSES, dropout: float = 0.6) -> None:
        super().__init__()
        self.conv2d_1a = conv_bn_relu((3, 32, 3, 2, 0))
        self.conv2d_2a = conv_bn_relu((32, 32, 3, 1, 0))
        self.conv2d_2b = conv_bn_relu((32, 64, 3, 1, 1))
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = conv_bn_relu((64, 80, 1, 1, 0))
        self.conv2d_4a = conv_bn_relu((80, 192, 3, 1, 0))
        self.conv2d_4b = conv_bn_relu((192, 256, 3, 2, 0))
        self.repeat_1 = nn.Sequential(*(block35() for _ in range(5)))
        self.mixed_6a = mixed_6a()
        self.repeat_2 = nn.Sequential(*(block17() for _ in range(10)))
        self.mixed_7a = mixed_7a()
        self.repeat_3 = nn.Sequential(*(block8() for _ in range(5)))
        self.block8 = block8(scale=1.0, relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)  # identity in eval mode; kept for the layout
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1)
        self.logits = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b"):
            x = getattr(self, name)(x)
        for name in ("conv2d_4a", "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2"):
            x = getattr(self, name)(x)
        x = self.block8(self.repeat_3(self.mixed_7a(x)))
        x = self.dropout(self.avgpool_1a(x).flatten(1))
        return F.normalize(self.last_bn(self.last_linear(x)), p=2, dim=1)
