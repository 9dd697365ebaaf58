"""Thin-Plate Spline Motion Model (Zhao & Zhang, CVPR 2022).

Motion estimator: a ResNet-18 regresses K×5 keypoints `fg_kp` in [-1, 1] (sigmoid·2 − 1); each
group of 5 driving→source pairs defines one thin-plate-spline transform (Eq. 2). A second
ResNet-18 on concat(source, driving) regresses the background affine transform. Dense motion:
at ¼ resolution, the K TPS warps and the background warp of the source plus Gaussian heatmap
differences feed an hourglass whose top level gives K+1 contribution maps (softmax, with the
TPS *dropout* during the first epochs) and whose last levels, upsampled, give 4 occlusion maps
of increasing resolution. Inpainting network: an encoder whose features are warped and
occluded level by level and decoded; the output keeps warp(source) where visible.
AVD network: MRAA's MLP autoencoder on the flattened keypoints.

Parameter layout and counts equal the authors' (tests/test_tpsmm.py): kp_detector 11,227,812,
bg_predictor 11,188,998, dense_motion_network 37,941,397, inpainting_network 24,737,283,
avd_network 2,583,652.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from animbench.errors import ConfigError
from animbench.models.base import Animator
from animbench.models.blocks import (
    AntiAliasInterpolation2d,
    Hourglass,
    ResBlock2d,
    SourceEncoder,
    UpBlock2d,
    instance_norm,
    kp2gaussian,
    make_coordinate_grid,
    warp,
)
from animbench.models.mraa import AVDNetwork, apply_homography
from animbench.networks.resnet import ResNet18

POINTS_PER_TPS = 5


def tps_kernel(squared_distance: torch.Tensor) -> torch.Tensor:
    """TPSMM's radial basis U(d²) = d²·log(d² + 1e-9) (d² the squared L2 distance)."""
    return squared_distance * torch.log(squared_distance + 1e-9)


class TPS:
    """Thin-plate-spline transforms z ↦ A z + t + Σ_i w_i U(‖z − c_i‖²) on [-1, 1] coordinates.

    Two constructions, as the reference's two modes:
    - `TPS.from_keypoints(kp_1, kp_2)` ('kp' mode, Eq. 2): per group of control points, the
      spline mapping kp_1 [B, G, N, 2] onto kp_2, solved from (L + λI)·[w; A] = [kp_2; 0]
      with λ = `regularization` (0.01 in the reference; 0 interpolates exactly).
      `warp_coordinates` returns [B, G, M, 2].
    - `TPS.random(batch, sigma_affine, sigma_tps, points_tps)` ('random' mode, the
      equivariance loss): θ = I + N(0, σ_affine), a points_tps² control grid with scalar
      weights N(0, σ_tps) shared by x and y. `warp_coordinates` returns [B, M, 2].
    """

    def __init__(
        self,
        theta: torch.Tensor,
        control_points: torch.Tensor,
        control_params: torch.Tensor,
        mode: str,
    ):
        # theta [B, G, 2, 3]; control_points [B or 1, G, N, 2]; control_params [B, G, N, 2]
        self.theta = theta
        self.control_points = control_points
        self.control_params = control_params
        self.mode = mode

    @classmethod
    def from_keypoints(
        cls, kp_1: torch.Tensor, kp_2: torch.Tensor, regularization: float = 0.01
    ) -> TPS:
        """The splines mapping each group of kp_1 [B, G, N, 2] onto kp_2 (driving → source),
        solved in fp32 under any autocast (see `warp_coordinates`)."""
        kp_1, kp_2 = kp_1.float(), kp_2.float()
        with torch.autocast(kp_1.device.type, enabled=False):
            b, g, n, _ = kp_1.shape
            kernel = tps_kernel((kp_1.unsqueeze(3) - kp_1.unsqueeze(2)).square().sum(-1))
            p = torch.cat([kp_1, torch.ones_like(kp_1[..., :1])], dim=-1)  # [B, G, N, 3]
            zeros = kp_1.new_zeros(b, g, 3, 3)
            system = torch.cat(
                [torch.cat([kernel, p], dim=3), torch.cat([p.transpose(2, 3), zeros], dim=3)], dim=2
            )
            eye = torch.eye(n + 3, device=kp_1.device, dtype=kp_1.dtype)
            target = torch.cat([kp_2, kp_1.new_zeros(b, g, 3, 2)], dim=2)
            params = torch.linalg.solve(system + regularization * eye, target)  # [B, G, N+3, 2]
            theta = params[:, :, n:, :].transpose(2, 3)  # rows (x, y), columns (x, y, 1)
            return cls(theta, kp_1, params[:, :, :n, :], mode="kp")

    @classmethod
    def random(
        cls,
        batch_size: int,
        sigma_affine: float = 0.05,
        sigma_tps: float = 0.005,
        points_tps: int = 5,
        device=None,
        dtype=torch.float32,
        generator: torch.Generator | None = None,
    ) -> TPS:
        """A random affine + TPS warp (the equivariance transform)."""
        noise = torch.randn(batch_size, 2, 3, device=device, dtype=dtype, generator=generator)
        theta = sigma_affine * noise + torch.eye(2, 3, device=device, dtype=dtype)
        grid = make_coordinate_grid((points_tps, points_tps), device, dtype).view(1, 1, -1, 2)
        weights = sigma_tps * torch.randn(
            batch_size, 1, points_tps**2, 1, device=device, dtype=dtype, generator=generator
        )
        return cls(theta.unsqueeze(1), grid, weights.expand(-1, -1, -1, 2), mode="random")

    @property
    def batch_size(self) -> int:
        return self.theta.shape[0]

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Map points [B or 1, M, 2] (or, 'kp' mode, [B or 1, G, M, 2]) through the transforms:
        [B, G, M, 2] in 'kp' mode, [B, M, 2] in 'random' mode. Always fp32, autocast or not:
        summed in bf16 over the control points, the spline terms of nearby keypoints cancel
        badly (up to 5.3 px off at 64², mean 0.04 px, for 10 random TPS of jittered points)."""
        coordinates = coordinates.float()
        with torch.autocast(coordinates.device.type, enabled=False):
            theta = self.theta.to(coordinates)
            points = self.control_points.to(coordinates)
            if coordinates.dim() == 3:
                coordinates = coordinates.unsqueeze(1)  # shared by every group
            affine = coordinates @ theta[..., :2].transpose(2, 3) + theta[..., 2].unsqueeze(2)
            squared = (coordinates.unsqueeze(3) - points.unsqueeze(2)).square().sum(-1)  # [.,G,M,N]
            out = affine + tps_kernel(squared) @ self.control_params.to(coordinates)
            return out[:, 0] if self.mode == "random" else out

    def grid(self, spatial_size: tuple[int, int], device=None, dtype=torch.float32):
        """The transforms sampled on an [H, W] grid: [B, G, H, W, 2] ('kp') or [B, H, W, 2]."""
        h, w = spatial_size
        coordinates = make_coordinate_grid((h, w), device, dtype).view(1, h * w, 2)
        warped = self.warp_coordinates(coordinates)
        return warped.view(*warped.shape[:-2], h, w, 2)

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """'random' mode: the frame [B, C, H, W] warped, reflection padding (equivariance)."""
        grid = self.grid(frame.shape[2:], frame.device).to(frame.dtype)
        return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=True)


def _keypoint_groups(kp: torch.Tensor) -> torch.Tensor:
    """fg_kp [B, K·5, 2] → [B, K, 5, 2]."""
    return kp.view(kp.shape[0], -1, POINTS_PER_TPS, 2)


class KPDetector(nn.Module):
    """ResNet-18 (`fg_encoder`, full-resolution input, no normalisation) → num_tps×5 keypoints
    `fg_kp` [B, K·5, 2] = sigmoid(fc)·2 − 1."""

    def __init__(self, num_tps: int = 10, num_channels: int = 3, width: int = 64):
        super().__init__()
        self.num_tps = num_tps
        self.fg_encoder = ResNet18(num_tps * POINTS_PER_TPS * 2, num_channels, width)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        fg_kp = torch.sigmoid(self.fg_encoder(image)) * 2 - 1
        return {"fg_kp": fg_kp.view(image.shape[0], self.num_tps * POINTS_PER_TPS, 2)}


class BGMotionPredictor(nn.Module):
    """ResNet-18 (`bg_encoder`, conv1 on 2×C channels) on concat(source, driving) → the 2×3
    affine background transform as a 3×3 matrix, fc initialised to the identity."""

    def __init__(self, num_channels: int = 3, width: int = 64):
        super().__init__()
        self.bg_encoder = ResNet18(6, 2 * num_channels, width)
        with torch.no_grad():
            self.bg_encoder.fc.weight.zero_()
            self.bg_encoder.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        b = source.shape[0]
        top = self.bg_encoder(torch.cat([source, driving], dim=1)).view(b, 2, 3)
        last = torch.tensor([0.0, 0.0, 1.0], device=top.device, dtype=top.dtype)
        return torch.cat([top, last.expand(b, 1, 3)], dim=1)


def dropout_softmax(
    logits: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """TPS dropout (Eqs. 7-8): softmax over channels of [B, K+1, H, W] where each TPS channel
    (never the background, channel 0) is dropped per sample with probability p; a dropped
    channel gets weight 0 and the kept ones are renormalised by their sum (+1e-6).

    The reference's `/(1 − p)` rescale runs on the logits after exp(), so it changes nothing;
    it is left out.
    """
    b, k = logits.shape[:2]
    keep = torch.rand(b, k, device=logits.device, generator=generator) < (1 - p)
    keep[:, 0] = True
    exp = (logits - logits.max(dim=1, keepdim=True).values).exp()
    exp = exp * keep.view(b, k, 1, 1).to(exp.dtype)
    return exp / (exp.sum(dim=1, keepdim=True) + 1e-6)


class DenseMotionNetwork(nn.Module):
    """K+1 motion transforms → optical flow (Eq. 6) and multi-resolution occlusion masks.

    Extension point: `foreground_transformations` returns the [B, T, H, W, 2] driving→source
    grids of the T non-background transforms (here the K TPS transforms); a motion model with
    other transforms (CPABMM: 10 local + 1 global CPAB) overrides it and passes
    `num_transforms`. The hourglass input is the heatmap differences of the `num_kp` keypoints
    (+ a zero background channel) and the source warped by each of the T+1 transforms:
    num_kp + 1 + C·(T + 1) channels (84 for TPSMM, 87 for CPABMM).
    """

    def __init__(
        self,
        block_expansion: int = 64,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_tps: int = 10,
        num_channels: int = 3,
        scale_factor: float = 0.25,
        bg: bool = False,
        multi_mask: bool = True,
        kp_variance: float = 0.01,
        num_transforms: int | None = None,
        num_kp: int | None = None,
    ):
        super().__init__()
        self.num_tps = num_tps
        self.num_transforms = num_tps if num_transforms is None else num_transforms
        self.num_kp = num_tps * POINTS_PER_TPS if num_kp is None else num_kp
        self.scale_factor = scale_factor
        self.bg = bg
        self.multi_mask = multi_mask
        self.kp_variance = kp_variance
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor, interpolate=True)
        in_features = num_channels * (self.num_transforms + 1) + self.num_kp + 1
        self.hourglass = Hourglass(
            block_expansion, in_features, num_blocks, max_features, norm=instance_norm
        )
        levels = self.hourglass.level_channels
        self.maps = nn.Conv2d(levels[-1], self.num_transforms + 1, kernel_size=7, padding=3)
        if multi_mask:
            # 4 masks: the last decoder levels, then `up_nums` UpBlocks back to full resolution
            self.occlusion_num = 4
            self.up_nums = int(math.log2(1 / scale_factor))
            if self.up_nums > self.occlusion_num or num_blocks < self.occlusion_num - self.up_nums:
                raise ValueError("multi_mask needs num_blocks ≥ 4 − log2(1/scale_factor)")
            up_channels = [levels[-1] // 2**i for i in range(self.up_nums + 1)]
            self.up = nn.ModuleList(
                UpBlock2d(up_channels[i], up_channels[i + 1], norm=instance_norm)
                for i in range(self.up_nums)
            )
            mask_channels = levels[len(levels) - (self.occlusion_num - self.up_nums) :]
            mask_channels += up_channels[1:]
        else:
            self.occlusion_num, self.up_nums = 1, 0
            self.up = nn.ModuleList()
            mask_channels = [levels[-1]]
        self.occlusion = nn.ModuleList(
            nn.Conv2d(c, 1, kernel_size=7, padding=3) for c in mask_channels
        )

    def heatmap_representation(self, size, kp_driving: dict, kp_source: dict) -> torch.Tensor:
        """G(kp_d) − G(kp_s) per keypoint after a zero background channel: [B, num_kp+1, H, W]."""
        heatmap = kp2gaussian(kp_driving["fg_kp"], size, self.kp_variance) - kp2gaussian(
            kp_source["fg_kp"], size, self.kp_variance
        )
        return torch.cat([heatmap.new_zeros(heatmap.shape[0], 1, *size), heatmap], dim=1)

    def foreground_transformations(self, size, kp_driving: dict, kp_source: dict) -> torch.Tensor:
        """The K TPS transforms (each 5 driving → source keypoints): [B, K, H, W, 2]."""
        kp_d = kp_driving["fg_kp"]
        tps = TPS.from_keypoints(_keypoint_groups(kp_d), _keypoint_groups(kp_source["fg_kp"]))
        return tps.grid(size, kp_d.device)  # fp32 (TPS.warp_coordinates)

    def background_transformation(
        self, size, batch_size: int, bg_param: torch.Tensor | None, like: torch.Tensor
    ) -> torch.Tensor:
        """The identity grid, moved by the 3×3 background transform when given: [B, 1, H, W, 2]."""
        identity = make_coordinate_grid(size, like.device, like.dtype)
        grid = identity.view(1, 1, *size, 2).expand(batch_size, 1, *size, 2)
        return grid if bg_param is None else apply_homography(grid, bg_param)

    def transformations(
        self, size, kp_driving: dict, kp_source: dict, bg_param: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Background first, then the foreground transforms: [B, T+1, H, W, 2]."""
        foreground = self.foreground_transformations(size, kp_driving, kp_source)
        background = self.background_transformation(size, foreground.shape[0], bg_param, foreground)
        return torch.cat([background, foreground], dim=1)

    def forward(
        self,
        source_image: torch.Tensor,
        kp_driving: dict,
        kp_source: dict,
        bg_param: torch.Tensor | None = None,
        dropout_p: float | None = None,
    ) -> dict:
        """Flow `deformation` [B, H, W, 2], `contribution_maps` [B, T+1, H, W], the warped
        sources `deformed_source` [B, T+1, C, H, W] (dense-motion resolution) and
        `occlusion_map`, a list of masks coarsest first. `dropout_p` (training): TPS dropout."""
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        b, c, h, w = source_image.shape
        heatmap = self.heatmap_representation((h, w), kp_driving, kp_source)
        transforms = self.transformations((h, w), kp_driving, kp_source, bg_param)
        t1 = transforms.shape[1]
        repeated = source_image.unsqueeze(1).expand(b, t1, c, h, w).reshape(b * t1, c, h, w)
        deformed = F.grid_sample(
            repeated, transforms.reshape(b * t1, h, w, 2), align_corners=True
        ).view(b, t1, c, h, w)
        levels = self.hourglass(
            torch.cat([heatmap, deformed.view(b, t1 * c, h, w)], dim=1), all_levels=True
        )
        logits = self.maps(levels[-1])
        if dropout_p is None:
            maps = F.softmax(logits, dim=1)
        else:
            maps = dropout_softmax(logits, dropout_p)
        deformation = (transforms * maps.unsqueeze(-1)).sum(dim=1)
        from_levels = self.occlusion_num - self.up_nums
        features = levels[len(levels) - from_levels :]
        top = levels[-1]
        for block in self.up:
            top = block(top)
            features.append(top)
        occlusion = [torch.sigmoid(conv(f)) for conv, f in zip(self.occlusion, features)]
        return {
            "deformed_source": deformed,
            "contribution_maps": maps,
            "deformation": deformation,
            "occlusion_map": occlusion,
        }


class InpaintingNetwork(SourceEncoder):
    """Encoder (SameBlock + `num_down_blocks` DownBlocks), then per level from the bottleneck:
    2 ResBlocks + UpBlock, concatenated with the warped, occluded encoder feature of the next
    level (occlusion mask i ↔ level i). Output: out·(1 − occ) + warp(source)·occ.

    Channels: level i has min(max_features, block_expansion·2^i); at the paper's
    (64, 512, 3) they equal the reference's hard-coded lists.
    """

    def __init__(
        self,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 3,
        multi_mask: bool = True,
    ):
        super().__init__()

        def channels(level: int) -> int:
            return min(max_features, block_expansion * 2**level)

        n = num_down_blocks
        self.num_down_blocks = n
        self.multi_mask = multi_mask
        self.num_channels = num_channels
        self.build_encoder(num_channels, block_expansion, max_features, n, norm=instance_norm)
        in_features = [channels(n)] + [2 * channels(n - i) for i in range(1, n)]
        self.up_blocks = nn.ModuleList(
            UpBlock2d(in_features[i], channels(n - i - 1), norm=instance_norm) for i in range(n)
        )
        self.resblock = nn.ModuleList(
            ResBlock2d(in_features[i // 2], norm=instance_norm) for i in range(2 * n)
        )
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)

    @staticmethod
    def deform_input(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        return warp(inp, deformation, resize_align_corners=True)

    @staticmethod
    def occlude_input(inp: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
        if occlusion.shape[2:] != inp.shape[2:]:  # single-mask mode: one mask for all levels
            occlusion = F.interpolate(
                occlusion, size=inp.shape[2:], mode="bilinear", align_corners=True
            )
        return inp * occlusion

    def _mask(self, occlusion: list[torch.Tensor], index: int) -> torch.Tensor:
        return occlusion[index] if self.multi_mask else occlusion[0]

    def forward(
        self,
        source_image: torch.Tensor,
        dense_motion: dict,
        source_features: list[torch.Tensor] | None = None,
    ) -> dict:
        encoder_maps = source_features
        if encoder_maps is None:
            encoder_maps = self.encode(source_image)
        out = encoder_maps[-1]
        deformation = dense_motion["deformation"]
        occlusion = dense_motion["occlusion_map"]

        def warped(feature: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
            # (with gradient, detached features and mask for the warp loss: only the flow
            # learns from it)
            mask = self._mask(occlusion, level)
            return (
                self.occlude_input(self.deform_input(feature, deformation), mask),
                self.occlude_input(self.deform_input(feature.detach(), deformation), mask.detach()),
            )

        out, for_loss = warped(out, 0)
        warped_encoder_maps = [for_loss]
        n = self.num_down_blocks
        for i in range(n):
            out = self.resblock[2 * i + 1](self.resblock[2 * i](out))
            out = self.up_blocks[i](out)
            skip, for_loss = warped(encoder_maps[-(i + 2)], i + 1)
            warped_encoder_maps.append(for_loss)
            if i < n - 1:
                out = torch.cat([out, skip], dim=1)
        deformed = self.deform_input(source_image, deformation)
        last = self._mask(occlusion, n)
        if last.shape[2:] != out.shape[2:]:
            last = F.interpolate(last, size=out.shape[2:], mode="bilinear", align_corners=True)
        out = out * (1 - last) + skip
        out = torch.sigmoid(self.final(out))
        out = out * (1 - last) + deformed * last
        return {
            "prediction": out,
            "deformed": deformed,
            "warped_encoder_maps": warped_encoder_maps,
        }

    def get_encode(self, driving: torch.Tensor, occlusion: list[torch.Tensor]) -> list:
        """Occluded encoder features of the driving frame, finest first, without gradient (the
        warp loss's targets)."""
        with torch.no_grad():
            out = self.first(driving)
            n = self.num_down_blocks
            maps = [self.occlude_input(out, self._mask(occlusion, n).detach())]
            for i, block in enumerate(self.down_blocks):
                out = block(out)
                maps.append(self.occlude_input(out, self._mask(occlusion, n - 1 - i).detach()))
        return maps


class KeypointAVDNetwork(AVDNetwork):
    """MRAA's AVD MLPs on the flattened TPS keypoints (input num_tps·5·2): identity from the
    source keypoints, pose from the driving ones."""

    def __init__(self, num_tps: int = 10, id_bottle_size: int = 64, pose_bottle_size: int = 64):
        size = num_tps * POINTS_PER_TPS * 2
        super().__init__(
            num_regions=num_tps,
            id_bottle_size=id_bottle_size,
            pose_bottle_size=pose_bottle_size,
            revert_axis_swap=False,
            input_size=size,
        )

    def forward(self, kp_id: dict, kp_pose: dict) -> dict[str, torch.Tensor]:
        b = kp_id["fg_kp"].shape[0]
        pose = self.pose_encoder(kp_pose["fg_kp"].reshape(b, -1))
        identity = self.id_encoder(kp_id["fg_kp"].reshape(b, -1))
        rec = self.decoder(torch.cat([pose, identity], dim=1))
        return {"fg_kp": rec.view(b, -1, 2)}


class TPSMM(Animator):
    """The animator: keypoint detector + (background predictor) + dense motion network +
    inpainting network (+ AVD network). Attribute names are the authors' checkpoint keys.

    `detect` keeps the frame under `frame` (as MRAA), so that `animate` can run the background
    predictor on (source, driving) with the FOMM-style call animate(source, kp_s, kp_d), as the
    reference's reconstruction does; without a driving frame (relative and AVD modes, as the
    reference's demo) the background stays still.
    """

    method = "tpsmm"
    network_names = (
        "inpainting_network",
        "dense_motion_network",
        "kp_detector",
        "bg_predictor",
        "avd_network",
    )
    generator_network = "inpainting_network"
    keep_frame = True
    # may be absent from an authors' file (checkpoints before the AVD stage)
    optional_networks = ("avd_network",)

    def __init__(
        self,
        common_params: dict,
        generator_params: dict,
        dense_motion_params: dict,
        kp_detector_params: dict | None = None,
        bg_predictor_params: dict | None = None,
        avd_network_params: dict | None = None,
    ):
        super().__init__()
        common = self.resolve_common(
            common_params,
            {"num_channels": 3, "bg": False, "multi_mask": True},
            required=("num_tps",),
        )
        num_tps, num_channels = common["num_tps"], common["num_channels"]
        bg, multi_mask = common["bg"], common["multi_mask"]
        # the authors pass align_corners=True to every grid_sample (CPABMM's code is TPSMM's)
        if not self.align_corners:
            raise ConfigError(
                f"model_params.common_params.align_corners: {self.method.upper()} warps with "
                "align_corners=True (its authors pass it explicitly); False is not supported"
            )
        self.kp_detector = KPDetector(num_tps, num_channels, **(kp_detector_params or {}))
        self.bg_predictor = (
            BGMotionPredictor(num_channels, **(bg_predictor_params or {})) if bg else None
        )
        self.dense_motion_network = self.build_dense_motion_network(
            num_tps=num_tps,
            num_channels=num_channels,
            bg=bg,
            multi_mask=multi_mask,
            **dense_motion_params,
        )
        self.inpainting_network = InpaintingNetwork(
            num_channels=num_channels, multi_mask=multi_mask, **generator_params
        )
        self.avd_network = (
            KeypointAVDNetwork(num_tps, **avd_network_params)
            if avd_network_params is not None
            else None
        )

    def build_dense_motion_network(self, **params) -> DenseMotionNetwork:
        """The dense motion network; a model with other transforms (CPABMM) overrides it."""
        return DenseMotionNetwork(**params)

    def animate(
        self,
        source: torch.Tensor,
        kp_source: dict,
        kp_driving: dict,
        source_features: list[torch.Tensor] | None = None,
        dropout_p: float | None = None,
    ) -> dict:
        """Dense motion + inpainting; the background moves when `kp_driving` keeps its frame
        and the model has a background predictor. `dropout_p` (training): TPS dropout."""
        bg_param = self.background_motion(source, kp_driving)
        motion = self.dense_motion_network(source, kp_driving, kp_source, bg_param, dropout_p)
        out = {**motion, **self.inpainting_network(source, motion, source_features)}
        if bg_param is not None:
            out["bg_param"] = bg_param
        return out

    def relative_motion(
        self, kp_source: dict, kp_driving: dict, kp_driving_initial: dict, adapt_scale: bool
    ) -> dict:
        """The demo's relative mode: kp = (kp_d − kp_d0)·s + kp_s, s the adapt-movement scale
        √area(hull(kp_s)) / √area(hull(kp_d0)) (1 without adapt_scale). No driving frame is
        kept: the background stays still, as in the reference's demo."""
        from animbench.models.keypoints import movement_scale

        scale = 1.0
        if adapt_scale:
            scale = movement_scale(
                {"value": kp_source["fg_kp"]}, {"value": kp_driving_initial["fg_kp"]}
            )
        diff = (kp_driving["fg_kp"] - kp_driving_initial["fg_kp"]) * scale
        return {"fg_kp": diff + kp_source["fg_kp"]}

    def avd(self, kp_source: dict, kp_driving: dict) -> dict[str, torch.Tensor]:
        """Animation via disentanglement: keypoints with the source's identity and the driving
        pose (no driving frame: still background, as the reference's demo)."""
        if self.avd_network is None:
            raise ValueError("this TPSMM has no AVD network (avd_network_params)")
        return self.avd_network(kp_source, kp_driving)

    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        dropout_p: float | None = None,
        use_bg: bool = True,
    ) -> dict:
        """Training / reconstruction pass; `use_bg` False keeps the background still (the
        epochs before bg_start), `dropout_p` enables the TPS dropout."""
        kp_source = self.kp_detector(source)
        kp_driving = self.kp_detector(driving)
        with_frame = {**kp_driving, "frame": driving} if use_bg else kp_driving
        out = self.animate(source, kp_source, with_frame, dropout_p=dropout_p)
        out["kp_source"] = kp_source
        out["kp_driving"] = kp_driving
        return out
