"""First Order Motion Model (Siarohin et al., NeurIPS 2019).

Motion estimator: an hourglass keypoint detector predicting K keypoints and their local affine
Jacobians. Dense motion: K+1 sparse motions T_k(z) = kp_s + J_s J_d⁻¹ (z − kp_d) (plus the
identity for the background) combined by softmax masks, with an occlusion map. Generator:
encoder → warp by the dense motion → occlusion → residual bottleneck → decoder.

At the paper's vox-256 configuration the parameter layout and counts equal the authors'
(generator 45,575,391 incl. dense motion; kp_detector 14,215,368).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from animbench.models.base import Animator
from animbench.models.blocks import (
    AntiAliasInterpolation2d,
    Hourglass,
    ResBlock2d,
    SourceEncoder,
    UpBlock2d,
    heatmap_mean,
    init_identity_jacobian,
    kp2gaussian,
    make_coordinate_grid,
    softmax_heatmap,
    warp,
)


class HeatmapPredictor(nn.Module):
    """What FOMM's keypoint detector and MRAA's region predictor share: an hourglass on a
    `scale_factor`-downscaled frame, a 7×7 convolution named `head` ("kp", "regions") to K
    heatmaps (softmax with `temperature`) and, with `num_jacobian_maps`, a 7×7 convolution to
    4 Jacobian channels per map, initialised to the identity."""

    def __init__(
        self,
        head: str,
        num_maps: int,
        block_expansion: int,
        num_channels: int,
        max_features: int,
        num_blocks: int,
        temperature: float,
        scale_factor: float,
        pad: int,
        num_jacobian_maps: int | None,
    ):
        super().__init__()
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
        self.head = head
        conv = nn.Conv2d(self.predictor.out_filters, num_maps, kernel_size=7, padding=pad)
        setattr(self, head, conv)  # the authors' checkpoint key
        self.num_jacobian_maps = num_jacobian_maps
        if num_jacobian_maps:
            self.jacobian = nn.Conv2d(
                self.predictor.out_filters, 4 * num_jacobian_maps, kernel_size=7, padding=pad
            )
            init_identity_jacobian(self.jacobian, num_jacobian_maps)
        else:
            self.jacobian = None
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def heatmaps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the hourglass's feature map, the softmax heatmaps [B, K, h, w])."""
        if self.scale_factor != 1:
            image = self.down(image)
        feature_map = self.predictor(image)
        logits = getattr(self, self.head)(feature_map)
        return feature_map, softmax_heatmap(logits, self.temperature)

    def jacobians(self, feature_map: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        """Heatmap-weighted averages of the Jacobian channels: [B, K, 2, 2]."""
        b, k, h, w = heatmap.shape
        maps = self.jacobian(feature_map).view(b, self.num_jacobian_maps, 4, h, w)
        return (heatmap.unsqueeze(2) * maps).flatten(3).sum(-1).view(b, k, 2, 2)


class KPDetector(HeatmapPredictor):
    """Keypoints (expected coordinate of a softmax heatmap) and Jacobians (heatmap-weighted
    average of 4 regressed channels per keypoint), on a 0.25-downscaled image."""

    def __init__(
        self,
        block_expansion: int = 32,
        num_kp: int = 10,
        num_channels: int = 3,
        max_features: int = 1024,
        num_blocks: int = 5,
        temperature: float = 0.1,
        estimate_jacobian: bool = True,
        scale_factor: float = 0.25,
        single_jacobian_map: bool = False,
        pad: int = 0,
    ):
        jacobian_maps = (1 if single_jacobian_map else num_kp) if estimate_jacobian else None
        super().__init__(
            "kp", num_kp, block_expansion, num_channels, max_features, num_blocks,
            temperature, scale_factor, pad, jacobian_maps,
        )  # fmt: skip

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feature_map, heatmap = self.heatmaps(image)
        out = {"value": heatmap_mean(heatmap)}
        if self.jacobian is not None:
            out["jacobian"] = self.jacobians(feature_map, heatmap)
        return out


class DenseMotionNetwork(nn.Module):
    """Combines the K+1 sparse motions into a dense backward flow and an occlusion map."""

    def __init__(
        self,
        block_expansion: int = 64,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 10,
        num_channels: int = 3,
        estimate_occlusion_map: bool = True,
        scale_factor: float = 0.25,
        kp_variance: float = 0.01,
        align_corners: bool = True,
    ):
        super().__init__()
        # input per motion (bg first): heatmap difference (1 channel) + warped source (C)
        in_features = (num_kp + 1) * (num_channels + 1)
        self.hourglass = Hourglass(block_expansion, in_features, num_blocks, max_features)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.align_corners = align_corners  # of the deformed sources' grid_sample
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def heatmap_representation(self, size, kp_driving, kp_source) -> torch.Tensor:
        """G(kp_d) − G(kp_s) per keypoint, with a zero channel for the background: [B,K+1,1,H,W]."""
        heatmap = kp2gaussian(kp_driving["value"], size, self.kp_variance) - kp2gaussian(
            kp_source["value"], size, self.kp_variance
        )
        zeros = heatmap.new_zeros(heatmap.shape[0], 1, *size)
        return torch.cat([zeros, heatmap], dim=1).unsqueeze(2)

    def sparse_motions(self, size, kp_driving, kp_source) -> torch.Tensor:
        """T_k(z) = kp_s + J_s J_d⁻¹ (z − kp_d) for each keypoint, identity first: [B,K+1,H,W,2]."""
        b = kp_driving["value"].shape[0]
        identity = make_coordinate_grid(size, kp_driving["value"].device, kp_driving["value"].dtype)
        identity = identity.view(1, 1, *size, 2)
        offset = identity - kp_driving["value"].view(b, self.num_kp, 1, 1, 2)
        if "jacobian" in kp_driving:
            jacobian = kp_source["jacobian"] @ torch.inverse(kp_driving["jacobian"])
            offset = torch.einsum("bkij,bkhwj->bkhwi", jacobian, offset)
        driving_to_source = offset + kp_source["value"].view(b, self.num_kp, 1, 1, 2)
        return torch.cat([identity.expand(b, 1, *size, 2), driving_to_source], dim=1)

    def forward(self, source_image, kp_driving, kp_source) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        b, c, h, w = source_image.shape
        heatmap = self.heatmap_representation((h, w), kp_driving, kp_source)
        motions = self.sparse_motions((h, w), kp_driving, kp_source)
        k1 = self.num_kp + 1
        repeated = source_image.unsqueeze(1).expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = warp(
            repeated, motions.reshape(b * k1, h, w, 2), align_corners=self.align_corners
        ).view(b, k1, c, h, w)
        # channel order per motion = [heatmap, R, G, B], as the authors' checkpoints expect
        prediction = self.hourglass(torch.cat([heatmap, deformed], dim=2).view(b, -1, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)
        out = {"sparse_deformed": deformed, "mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out


class OcclusionAwareGenerator(SourceEncoder):
    """Encoder, warp of the encoded source by the dense motion, occlusion, bottleneck, decoder."""

    def __init__(
        self,
        num_channels: int = 3,
        num_kp: int = 10,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        estimate_occlusion_map: bool = True,
        dense_motion_params: dict | None = None,
        align_corners: bool = True,
    ):
        super().__init__()
        self.align_corners = align_corners  # of every warp, the dense motion's included
        self.dense_motion_network = (
            DenseMotionNetwork(
                num_kp=num_kp,
                num_channels=num_channels,
                estimate_occlusion_map=estimate_occlusion_map,
                align_corners=align_corners,
                **dense_motion_params,
            )
            if dense_motion_params is not None
            else None
        )

        def channels(level: int) -> int:
            return min(max_features, block_expansion * (2**level))

        self.build_encoder(num_channels, block_expansion, max_features, num_down_blocks)
        self.up_blocks = nn.ModuleList(
            UpBlock2d(channels(num_down_blocks - i), channels(num_down_blocks - i - 1))
            for i in range(num_down_blocks)
        )
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(channels(num_down_blocks)))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)
        self.num_channels = num_channels

    def decode(
        self,
        features: list[torch.Tensor],
        source_image: torch.Tensor,
        motion: dict | None,
        warped_skips: bool = False,
    ) -> torch.Tensor:
        """The prediction from the source's encoder `features`: the deepest warped by `motion`
        and weighted by its occlusion, then bottleneck and decoder. With `warped_skips` (MRAA's
        and MTIA's generators), each decoder input and the output become
        warp(skip)·occ + decoder·(1 − occ), the source as the output's skip."""

        def blend(image: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
            return occlusion_blend(image, previous, motion, self.align_corners)

        out = self.bottleneck(features[-1] if motion is None else blend(features[-1], None))
        for i, block in enumerate(self.up_blocks):
            if warped_skips:
                out = blend(features[-(i + 1)], out)
            out = block(out)
        if warped_skips:
            out = blend(features[0], out)
        out = torch.sigmoid(self.final(out))
        if warped_skips:
            out = blend(source_image, out)
        return out

    def forward(
        self, source_image, kp_driving, kp_source, source_features=None
    ) -> dict[str, torch.Tensor]:
        motion = None
        if self.dense_motion_network is not None:
            motion = self.dense_motion_network(source_image, kp_driving, kp_source)
        return self.outputs(source_image, motion, source_features)

    def outputs(
        self,
        source_image: torch.Tensor,
        motion: dict | None,
        source_features: list[torch.Tensor] | None = None,
        warped_skips: bool = False,
    ) -> dict[str, torch.Tensor]:
        """What every generator of this layout returns: the dense motion's outputs, the source
        warped by it (`deformed`) and the `prediction` (`decode`)."""
        if source_features is None:
            source_features = self.encode(source_image)
        result: dict[str, torch.Tensor] = {}
        if motion is not None:
            result.update(motion)
            result["deformed"] = warp(
                source_image, motion["deformation"], align_corners=self.align_corners
            )
        result["prediction"] = self.decode(
            source_features, source_image, motion, warped_skips and motion is not None
        )
        return result


def occlusion_blend(
    image: torch.Tensor, previous: torch.Tensor | None, motion: dict, align_corners: bool
) -> torch.Tensor:
    """warp(image)·occ + previous·(1 − occ): `image` warped by the motion's `deformation`, the
    occlusion map resized to it; without a previous, warp(image)·occ; without an occlusion
    map, warp(image)."""
    warped = warp(image, motion["deformation"], align_corners=align_corners)
    occlusion = motion.get("occlusion_map")
    if occlusion is None:
        return warped
    if occlusion.shape[2:] != warped.shape[2:]:
        occlusion = F.interpolate(occlusion, size=warped.shape[2:], mode="bilinear")
    if previous is None:
        return warped * occlusion
    return warped * occlusion + previous * (1 - occlusion)


class DiscriminatorBlock(nn.Module):
    """Conv 4×4 (no padding), optional instance norm, LeakyReLU 0.2, optional 2×2 average pool."""

    def __init__(self, in_features, out_features, norm=False, kernel_size=4, pool=False, sn=False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, (2, 2)) if self.pool else out


class Discriminator(nn.Module):
    """Patch discriminator; optionally conditioned on keypoint heatmaps (use_kp)."""

    def __init__(
        self,
        num_channels=3,
        block_expansion=64,
        num_blocks=4,
        max_features=512,
        sn=False,
        use_kp=False,
        num_kp=10,
        kp_variance=0.01,
    ):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DiscriminatorBlock(
                num_channels + num_kp * use_kp
                if i == 0
                else min(max_features, block_expansion * (2**i)),
                min(max_features, block_expansion * (2 ** (i + 1))),
                norm=(i != 0),
                pool=(i != num_blocks - 1),
                sn=sn,
            )
            for i in range(num_blocks)
        )
        last = min(max_features, block_expansion * (2**num_blocks))
        self.conv = nn.Conv2d(last, 1, kernel_size=1)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)
        self.use_kp = use_kp
        self.kp_variance = kp_variance

    def forward(self, x, kp=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        out = x
        if self.use_kp:
            out = torch.cat([out, kp2gaussian(kp["value"], x.shape[2:], self.kp_variance)], dim=1)
        feature_maps = []
        for block in self.down_blocks:
            out = block(out)
            feature_maps.append(out)
        return feature_maps, self.conv(out)


class MultiScaleDiscriminator(nn.Module):
    """One discriminator per pyramid scale; keys as in the reference checkpoints."""

    def __init__(self, scales=(1,), **kwargs):
        super().__init__()
        self.scales = list(scales)
        self.discs = nn.ModuleDict(
            {str(s).replace(".", "-"): Discriminator(**kwargs) for s in scales}
        )

    def forward(self, pyramid: dict[str, torch.Tensor], kp=None) -> dict:
        out = {}
        for key, disc in self.discs.items():
            scale = key.replace("-", ".")
            feature_maps, prediction_map = disc(pyramid[f"prediction_{scale}"], kp)
            out[f"feature_maps_{scale}"] = feature_maps
            out[f"prediction_map_{scale}"] = prediction_map
        return out


class FOMM(Animator):
    """The animator: keypoint detector + occlusion-aware generator (+ discriminator if a GAN
    loss is used). Attribute names are the checkpoint keys of the authors' files."""

    method = "fomm"
    network_names = ("generator", "kp_detector", "discriminator")

    def __init__(
        self,
        common_params: dict,
        kp_detector_params: dict,
        generator_params: dict,
        discriminator_params: dict | None = None,
    ):
        super().__init__()
        common = dict(common_params)
        estimate_jacobian = common.pop("estimate_jacobian", True)
        # absent from presets and checkpoints written before it existed: True, as FOMM trained
        self.align_corners = bool(common.pop("align_corners", True))
        self.kp_detector = KPDetector(
            **kp_detector_params, **common, estimate_jacobian=estimate_jacobian
        )
        self.generator = OcclusionAwareGenerator(
            **generator_params, **common, align_corners=self.align_corners
        )
        self.discriminator = (
            MultiScaleDiscriminator(**discriminator_params, **common)
            if discriminator_params is not None
            else None
        )
