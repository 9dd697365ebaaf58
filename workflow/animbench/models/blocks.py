"""Building blocks shared by every model family (written once; the reference repositories copy
them between projects).

Conventions (DESIGN.md §1): images are float in [0, 1]; coordinates live on [-1, 1], x first,
with pixel centres at the endpoints (the align_corners=True convention); warping is backward,
a driving→source grid applied with grid_sample, whose `align_corners` is a per-model setting
(`common_params.align_corners`, see `warp`). Module attribute names follow the authors' code
so their checkpoints load strictly.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(
    spatial_size: tuple[int, int], device=None, dtype=torch.float32
) -> torch.Tensor:
    """[H, W, 2] grid of (x, y) in [-1, 1], endpoints at the pixel centres."""
    h, w = spatial_size
    x = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype) if w > 1 else torch.zeros(1)
    y = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype) if h > 1 else torch.zeros(1)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def kp2gaussian(
    kp: torch.Tensor, spatial_size: tuple[int, int], kp_variance: float
) -> torch.Tensor:
    """Gaussian heatmaps [B, K, H, W] centred on keypoints kp [B, K, 2]."""
    grid = make_coordinate_grid(spatial_size, kp.device, kp.dtype)
    diff = grid.view(1, 1, *grid.shape) - kp.view(*kp.shape[:2], 1, 1, 2)
    return torch.exp(-0.5 * (diff**2).sum(-1) / kp_variance)


def warp(
    image: torch.Tensor,
    grid: torch.Tensor,
    padding_mode: str = "zeros",
    resize_align_corners: bool = False,
    align_corners: bool = True,
) -> torch.Tensor:
    """Backward warp: sample `image` [B, C, H, W] at `grid` [B, h, w, 2] (x, y in [-1, 1]).

    A grid of another resolution than the image is resized first (bilinear, as the reference
    generators do for their feature maps; TPSMM resizes with align_corners=True).

    `align_corners` is grid_sample's: True puts ±1 on the centres of the border pixels, False on
    their outer edges. The authors' FOMM, MRAA and MTIA pass none, so their checkpoints learned
    the default of the torch they trained with (True before 1.3.0, False since): each model
    passes its own (`common_params.align_corners`).
    """
    if grid.shape[1:3] != image.shape[2:]:
        grid = F.interpolate(
            grid.permute(0, 3, 1, 2),
            size=image.shape[2:],
            mode="bilinear",
            align_corners=True if resize_align_corners else None,
        )
        grid = grid.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, padding_mode=padding_mode, align_corners=align_corners)


def batch_norm(num_features: int) -> nn.Module:
    # FOMM/MRAA used synchronised batch norm; under DDP the trainer converts to SyncBatchNorm.
    return nn.BatchNorm2d(num_features, affine=True)


def instance_norm(num_features: int) -> nn.Module:
    # TPSMM/CPABMM's blocks: same parameter keys (weight, bias) as batch_norm, no buffers
    return nn.InstanceNorm2d(num_features, affine=True)


class ResBlock2d(nn.Module):
    """Pre-activation residual block that keeps the resolution."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1, norm=batch_norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.norm1 = norm(in_features)
        self.norm2 = norm(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class _ConvNorm(nn.Module):
    """A conv followed by a norm; the attribute names (conv, norm) are the checkpoint keys."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size=3, padding=1, norm=batch_norm
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = norm(out_features)


class UpBlock2d(_ConvNorm):
    """Nearest ×2 upsampling, conv, norm, ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2)
        return F.relu(self.norm(self.conv(out)))


class DownBlock2d(_ConvNorm):
    """Conv, norm, ReLU, 2×2 average pooling."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size=3, padding=1, norm=batch_norm
    ):
        super().__init__(in_features, out_features, kernel_size, padding, norm)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(_ConvNorm):
    """Conv, norm, ReLU at constant resolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


def _hourglass_channels(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * (2**level))


class SourceEncoder(nn.Module):
    """Base of the generators (FOMM's, hence MRAA's and MTIA's, and TPSMM's inpainting
    network): the source encoder under the authors' keys, `first` (a 7×7 SameBlock2d) and
    `down_blocks` (level i has min(max_features, block_expansion·2^i) channels)."""

    def build_encoder(
        self,
        num_channels: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        norm=batch_norm,
    ) -> None:
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3, norm=norm)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                _hourglass_channels(block_expansion, max_features, i),
                _hourglass_channels(block_expansion, max_features, i + 1),
                norm=norm,
            )
            for i in range(num_down_blocks)
        )

    def encode(self, source_image: torch.Tensor) -> list[torch.Tensor]:
        """The source's encoder features, every level (`first`'s, then each down block's):
        they depend on the source alone, so reconstruction computes them once per clip and
        passes them as `source_features`."""
        levels = [self.first(source_image)]
        for block in self.down_blocks:
            levels.append(block(levels[-1]))
        return levels


class _HourglassPart(nn.Module, abc.ABC):
    """The hourglass and its halves: level i has min(max_features, block_expansion·2^i)
    channels; `build` makes the modules (the hyper-parameters are not stored, so the module
    keeps only its checkpoint keys)."""

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        num_blocks=3,
        max_features=256,
        norm=batch_norm,
    ):
        super().__init__()
        self.build(block_expansion, in_features, num_blocks, max_features, norm)

    @abc.abstractmethod
    def build(self, block_expansion, in_features, num_blocks, max_features, norm) -> None:
        """Make the part's modules (Encoder, Decoder and Hourglass each their own)."""


class Encoder(_HourglassPart):
    """Hourglass encoder; returns the input and every level's output (the skips)."""

    def build(self, block_expansion, in_features, num_blocks, max_features, norm) -> None:
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else _hourglass_channels(block_expansion, max_features, i),
                _hourglass_channels(block_expansion, max_features, i + 1),
                norm=norm,
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(_HourglassPart):
    """Hourglass decoder; concatenates each level with its encoder skip."""

    def build(self, block_expansion, in_features, num_blocks, max_features, norm) -> None:
        self.up_blocks = nn.ModuleList()
        # channels of each level's output (up block + skip), top level last
        self.level_channels = [
            2 * _hourglass_channels(block_expansion, max_features, i) for i in range(num_blocks)
        ][::-1]
        self.level_channels[-1] = block_expansion + in_features
        for i in reversed(range(num_blocks)):
            multiplier = 1 if i == num_blocks - 1 else 2
            self.up_blocks.append(
                UpBlock2d(
                    multiplier * _hourglass_channels(block_expansion, max_features, i + 1),
                    _hourglass_channels(block_expansion, max_features, i),
                    norm=norm,
                )
            )
        self.out_filters = block_expansion + in_features

    def forward(
        self, skips: list[torch.Tensor], all_levels: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """The top level's output, or (`all_levels`, TPSMM) every level's, coarsest first."""
        skips = list(skips)
        out = skips.pop()
        levels = []
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
            levels.append(out)
        return levels if all_levels else out


class Hourglass(_HourglassPart):
    """U-Net style encoder-decoder; output channels = block_expansion + in_features."""

    def build(self, block_expansion, in_features, num_blocks, max_features, norm) -> None:
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.out_filters = self.decoder.out_filters
        self.level_channels = self.decoder.level_channels

    def forward(self, x: torch.Tensor, all_levels: bool = False) -> torch.Tensor | list:
        return self.decoder(self.encoder(x), all_levels)


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then subsampling: a downscale without aliasing.

    σ = (1/scale − 1)/2 and kernel 2·round(4σ)+1 (13 taps at scale 0.25), as in the reference;
    the kernel is a buffer named `weight` so checkpoints carry it. The subsampling is a stride
    slice (FOMM/MRAA/MTIA) or, with `interpolate`, nearest F.interpolate (TPSMM/CPABMM; the
    same pixels whenever the size is a multiple of 1/scale).
    """

    def __init__(self, channels: int, scale: float, interpolate: bool = False):
        super().__init__()
        self.interpolate = interpolate
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        coords = torch.arange(kernel_size, dtype=torch.float32)
        mean = (kernel_size - 1) / 2
        gauss = torch.exp(-((coords - mean) ** 2) / (2 * sigma**2)) if sigma > 0 else torch.ones(1)
        kernel = gauss[:, None] * gauss[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, *kernel.shape).repeat(channels, 1, 1, 1))
        self.groups = channels
        self.scale = scale
        self.int_inv_scale = int(round(1 / scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight.to(out.dtype), groups=self.groups)
        if self.interpolate:
            return F.interpolate(out, scale_factor=(self.scale, self.scale))
        return out[:, :, :: self.int_inv_scale, :: self.int_inv_scale]


class ImagePyramid(nn.Module):
    """Anti-aliased image pyramid; keys 'prediction_<scale>' as in the reference loss code."""

    def __init__(self, scales: list[float], num_channels: int):
        super().__init__()
        self.scales = list(scales)
        self.downs = nn.ModuleDict(
            {str(s).replace(".", "-"): AntiAliasInterpolation2d(num_channels, s) for s in scales}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"prediction_{s}": self.downs[str(s).replace(".", "-")](x) for s in self.scales}


def count_parameters(module: nn.Module) -> int:
    """Every parameter (trainable or frozen), no buffers: how the papers count capacity."""
    return sum(p.numel() for p in module.parameters())


def init_identity_jacobian(conv: nn.Conv2d, num_maps: int) -> None:
    """Zero weights and bias [1, 0, 0, 1] per map, so training starts from identity Jacobians."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * num_maps))


def softmax_heatmap(prediction: torch.Tensor, temperature: float) -> torch.Tensor:
    """Spatial softmax over each channel of [B, K, H, W]."""
    b, k, h, w = prediction.shape
    heatmap = F.softmax(prediction.view(b, k, -1) / temperature, dim=2)
    return heatmap.view(b, k, h, w)


def heatmap_mean(heatmap: torch.Tensor) -> torch.Tensor:
    """Expected coordinate E[z] under each heatmap: [B, K, H, W] -> [B, K, 2]."""
    grid = make_coordinate_grid(heatmap.shape[2:], heatmap.device, heatmap.dtype)
    return (heatmap.unsqueeze(-1) * grid.view(1, 1, *grid.shape)).sum(dim=(2, 3))


def heatmap_covariance(heatmap: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Covariance Σ h(z)(z − μ)(z − μ)ᵀ of each heatmap: [B, K, H, W], [B, K, 2] -> [B, K, 2, 2]."""
    grid = make_coordinate_grid(heatmap.shape[2:], heatmap.device, heatmap.dtype)
    centred = grid.view(1, 1, *grid.shape) - mean.view(*mean.shape[:2], 1, 1, 2)
    outer = centred.unsqueeze(-1) * centred.unsqueeze(-2)
    return (heatmap.view(*heatmap.shape, 1, 1) * outer).sum(dim=(2, 3))


def region2gaussian(
    mean: torch.Tensor, covar: torch.Tensor | float, spatial_size: tuple[int, int]
) -> torch.Tensor:
    """Gaussian heatmaps [B, K, H, W] of regions with centres [B, K, 2] and covariances
    [B, K, 2, 2] (or one isotropic variance, as kp2gaussian)."""
    if not torch.is_tensor(covar):
        return kp2gaussian(mean, spatial_size, float(covar))
    grid = make_coordinate_grid(spatial_size, mean.device, mean.dtype)
    centred = grid.view(1, 1, *grid.shape) - mean.view(*mean.shape[:2], 1, 1, 2)
    precision = torch.inverse(covar).view(*covar.shape[:2], 1, 1, 2, 2)
    mahalanobis = (centred.unsqueeze(-2) @ precision @ centred.unsqueeze(-1))[..., 0, 0]
    return torch.exp(-0.5 * mahalanobis)
