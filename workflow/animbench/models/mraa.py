"""Motion Representations for Articulated Animation (Siarohin et al., CVPR 2021).

Region predictor: an hourglass on a downscaled frame predicts K region heatmaps (spatial
softmax); a region's shift is the heatmap-weighted mean coordinate and its affine part comes
from PCA of the heatmap covariance, A = U·√S (SVD). Background motion predictor: one global
3×3 transform (zero / shift / affine / perspective) regressed from source and driving.
Generator: FOMM's occlusion-aware generator with a pixelwise flow predictor that renders regions
as Gaussians of their own covariance, composes K region motions and the background motion, and
warps the encoder skips too (skip·occlusion + decoder·(1 − occlusion) at every level).
AVD network: animation via disentanglement, an MLP autoencoder that takes the shape (identity)
from the source regions and the pose from the driving regions.

Parameter layout and counts equal the authors' checkpoints (tests/test_mraa.py): region
predictor 14,146,728; generator 45,575,391 (incl. the flow predictor); background predictor
6,282,438 (0 with bg_type 'zero'); AVD network 2,290,620.
"""

from __future__ import annotations

import torch
from torch import nn

from animbench.models.base import Animator
from animbench.models.blocks import (
    Encoder,
    heatmap_covariance,
    heatmap_mean,
    make_coordinate_grid,
    region2gaussian,
)
from animbench.models.fomm import DenseMotionNetwork, HeatmapPredictor, OcclusionAwareGenerator

BG_TYPES = ("zero", "shift", "affine", "perspective")


def pca_affine(covar: torch.Tensor, on_cpu: bool = True) -> torch.Tensor:
    """Affine part of regions from their covariances [..., 2, 2]: U·diag(√S) of the SVD.

    The column signs of U are arbitrary (the reference's "axis swap", undone downstream by
    `revert_axis_swap`). As the reference, the SVD runs on the CPU unless `on_cpu` is False
    (its `fast_svd` option: batched on the tensor's device).
    """
    flat = covar.reshape(-1, 2, 2)
    u, s, _ = torch.linalg.svd(flat.cpu() if on_cpu else flat)
    affine = u * s.clamp_min(0).sqrt().unsqueeze(-2)
    return affine.to(covar.device).view(covar.shape)


def _axis_swap_sign(affine: torch.Tensor) -> torch.Tensor:
    """sign(M[0, 0]) per matrix [..., 1, 1], the reference's fix of a swapped SVD basis."""
    return torch.sign(affine[..., 0:1, 0:1])


class RegionPredictor(HeatmapPredictor):
    """Region heatmaps on a `scale_factor`-downscaled frame → shift, covariance and affine.

    Output dict: `shift` [B, K, 2], `heatmap` [B, K, h, w] and, with `estimate_affine`, `covar`
    and `affine` [B, K, 2, 2] (PCA-based, or regressed FOMM-style when `pca_based` is False).
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_regions: int = 10,
        num_channels: int = 3,
        max_features: int = 1024,
        num_blocks: int = 5,
        temperature: float = 0.1,
        estimate_affine: bool = True,
        scale_factor: float = 0.25,
        pca_based: bool = True,
        fast_svd: bool = False,
        pad: int = 3,
    ):
        jacobian_maps = num_regions if estimate_affine and not pca_based else None
        super().__init__(
            "regions", num_regions, block_expansion, num_channels, max_features, num_blocks,
            temperature, scale_factor, pad, jacobian_maps,
        )  # fmt: skip
        self.estimate_affine = estimate_affine
        self.pca_based = pca_based
        self.fast_svd = fast_svd

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feature_map, heatmap = self.heatmaps(image)
        shift = heatmap_mean(heatmap)
        out = {"shift": shift, "heatmap": heatmap}
        if not self.estimate_affine:
            return out
        out["covar"] = heatmap_covariance(heatmap, shift)
        if self.pca_based:
            out["affine"] = pca_affine(out["covar"], on_cpu=not self.fast_svd)
        else:
            out["affine"] = self.jacobians(feature_map, heatmap)
        return out


class BGMotionPredictor(nn.Module):
    """Global background motion [B, 3, 3] from concat(source, driving) at full resolution.

    bg_type 'zero' is the identity (no parameters); 'shift', 'affine' and 'perspective' regress
    2, 6 or 8 numbers from the globally averaged encoder output, initialised to the identity.
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_channels: int = 3,
        max_features: int = 1024,
        num_blocks: int = 5,
        bg_type: str = "zero",
    ):
        super().__init__()
        if bg_type not in BG_TYPES:
            raise ValueError(f"bg_type {bg_type!r} is not one of {BG_TYPES}")
        self.bg_type = bg_type
        if bg_type == "zero":
            return
        self.encoder = Encoder(block_expansion, 2 * num_channels, num_blocks, max_features)
        identity = {"shift": [0, 0], "affine": [1, 0, 0, 0, 1, 0]}
        identity["perspective"] = identity["affine"] + [0, 0]
        init = torch.tensor(identity[bg_type], dtype=torch.float32)
        self.fc = nn.Linear(min(max_features, block_expansion * 2**num_blocks), len(init))
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(init)

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        b = source.shape[0]
        eye = torch.eye(3, device=source.device, dtype=source.dtype).expand(b, 3, 3)
        if self.bg_type == "zero":
            return eye.clone()
        features = self.encoder(torch.cat([source, driving], dim=1))[-1].mean(dim=(2, 3))
        params = self.fc(features)
        last_row = eye[:, 2:]
        if self.bg_type == "shift":
            top = torch.cat([eye[:, :2, :2], params.unsqueeze(-1)], dim=2)
        else:
            top = params[:, :6].view(b, 2, 3)
            if self.bg_type == "perspective":
                last_row = torch.cat([params[:, 6:], eye[:, 2:, 2]], dim=1).unsqueeze(1)
        return torch.cat([top, last_row], dim=1)


def apply_homography(grid: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Map points [B, ..., 2] by 3×3 matrices [B, 3, 3] in homogeneous coordinates."""
    b = matrix.shape[0]
    points = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1)
    mapped = points.reshape(b, -1, 3) @ matrix.transpose(1, 2)
    return (mapped[..., :2] / mapped[..., 2:]).view(grid.shape)


class PixelwiseFlowPredictor(DenseMotionNetwork):
    """FOMM's dense motion network on region motions.

    Region k moves z ↦ μ_s + A_s A_d⁻¹ (z − μ_d) (times sign((A_s A_d⁻¹)₀₀) with
    `revert_axis_swap`); the background moves by the 3×3 background transform. Regions are
    rendered as Gaussians of their own covariance (`use_covar_heatmap`) or of `region_var`.
    """

    def __init__(
        self,
        block_expansion: int = 64,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_regions: int = 10,
        num_channels: int = 3,
        estimate_occlusion_map: bool = True,
        scale_factor: float = 0.25,
        region_var: float = 0.01,
        use_covar_heatmap: bool = True,
        use_deformed_source: bool = True,
        revert_axis_swap: bool = True,
        align_corners: bool = True,
    ):
        if not use_deformed_source:
            raise ValueError("use_deformed_source=False is not supported (no MRAA config uses it)")
        super().__init__(
            block_expansion=block_expansion,
            num_blocks=num_blocks,
            max_features=max_features,
            num_kp=num_regions,
            num_channels=num_channels,
            estimate_occlusion_map=estimate_occlusion_map,
            scale_factor=scale_factor,
            kp_variance=region_var,
            align_corners=align_corners,
        )
        self.use_covar_heatmap = use_covar_heatmap
        self.revert_axis_swap = revert_axis_swap

    def _gaussian(self, regions: dict, size) -> torch.Tensor:
        covar = regions["covar"] if self.use_covar_heatmap else self.kp_variance
        return region2gaussian(regions["shift"], covar, size)

    def heatmap_representation(self, size, regions_driving, regions_source) -> torch.Tensor:
        """G(driving) − G(source) per region, zero channel for the background: [B,K+1,1,H,W]."""
        heatmap = self._gaussian(regions_driving, size) - self._gaussian(regions_source, size)
        zeros = heatmap.new_zeros(heatmap.shape[0], 1, *size)
        return torch.cat([zeros, heatmap], dim=1).unsqueeze(2)

    def sparse_motions(self, size, regions_driving, regions_source) -> torch.Tensor:
        """Background motion then the K region motions, driving → source: [B, K+1, H, W, 2]."""
        shift_d, shift_s = regions_driving["shift"], regions_source["shift"]
        b = shift_d.shape[0]
        identity = make_coordinate_grid(size, shift_d.device, shift_d.dtype).view(1, 1, *size, 2)
        offset = identity - shift_d.view(b, self.num_kp, 1, 1, 2)
        if "affine" in regions_driving:
            affine = regions_source["affine"] @ torch.inverse(regions_driving["affine"])
            if self.revert_axis_swap:
                affine = affine * _axis_swap_sign(affine)
            offset = torch.einsum("bkij,bkhwj->bkhwi", affine, offset)
        driving_to_source = offset + shift_s.view(b, self.num_kp, 1, 1, 2)
        background = identity.expand(b, 1, *size, 2)
        bg_params = regions_driving.get("bg_params")
        if bg_params is not None:
            background = apply_homography(background, bg_params)
        return torch.cat([background, driving_to_source], dim=1)

    def forward(
        self, source_image, regions_driving, regions_source, bg_params=None
    ) -> dict[str, torch.Tensor]:
        # FOMM's forward with region motions; the background transform rides with the driving
        # regions into sparse_motions
        regions_driving = {**regions_driving, "bg_params": bg_params}
        return super().forward(source_image, regions_driving, regions_source)


class Generator(OcclusionAwareGenerator):
    """FOMM's generator (same layout) driven by regions, with warped skip connections.

    With `skips`, each decoder level input becomes warp(skip)·occ + decoder·(1 − occ), and the
    output warp(source)·occ + output·(1 − occ), as in the reference.
    """

    def __init__(
        self,
        num_channels: int = 3,
        num_regions: int = 10,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        pixelwise_flow_predictor_params: dict | None = None,
        skips: bool = True,
        revert_axis_swap: bool = True,
        align_corners: bool = True,
    ):
        super().__init__(
            num_channels=num_channels,
            num_kp=num_regions,
            block_expansion=block_expansion,
            max_features=max_features,
            num_down_blocks=num_down_blocks,
            num_bottleneck_blocks=num_bottleneck_blocks,
            dense_motion_params=None,
            align_corners=align_corners,
        )
        del self.dense_motion_network
        self.pixelwise_flow_predictor = (
            PixelwiseFlowPredictor(
                num_regions=num_regions,
                num_channels=num_channels,
                revert_axis_swap=revert_axis_swap,
                align_corners=align_corners,
                **pixelwise_flow_predictor_params,
            )
            if pixelwise_flow_predictor_params is not None
            else None
        )
        self.skips = skips
        self.revert_axis_swap = revert_axis_swap

    def forward(
        self, source_image, regions_driving, regions_source, bg_params=None, source_features=None
    ) -> dict[str, torch.Tensor]:
        motion = None
        if self.pixelwise_flow_predictor is not None:
            motion = self.pixelwise_flow_predictor(
                source_image, regions_driving, regions_source, bg_params
            )
        return self.outputs(source_image, motion, source_features, self.skips)


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear → BatchNorm1d → ReLU between the sizes, a plain Linear last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class AVDNetwork(nn.Module):
    """Animation via disentanglement: identity (source shape) and pose (driving) encoders of the
    flattened regions (shift + affine, 6K numbers), and a decoder back to regions.

    `input_size` (default 6K) lets other motion representations reuse the three MLPs (TPSMM:
    its 5 control points per TPS, models/tpsmm.py).
    """

    def __init__(
        self,
        num_regions: int = 10,
        id_bottle_size: int = 64,
        pose_bottle_size: int = 64,
        revert_axis_swap: bool = True,
        input_size: int | None = None,
    ):
        super().__init__()
        size = 6 * num_regions if input_size is None else input_size
        self.id_encoder = _mlp([size, 256, 512, 1024, id_bottle_size])
        self.pose_encoder = _mlp([size, 256, 512, 1024, pose_bottle_size])
        self.decoder = _mlp([pose_bottle_size + id_bottle_size, 1024, 512, 256, size])
        self.num_regions = num_regions
        self.revert_axis_swap = revert_axis_swap

    @staticmethod
    def regions_to_embedding(regions: dict) -> torch.Tensor:
        shift, affine = regions["shift"], regions["affine"]
        return torch.cat([shift, affine.flatten(2)], dim=-1).flatten(1)

    def embedding_to_regions(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = embedding.view(embedding.shape[0], self.num_regions, 6)
        affine = embedding[..., 2:].reshape(*embedding.shape[:2], 2, 2)
        return {"shift": embedding[..., :2], "affine": affine}

    def forward(self, regions_id: dict, regions_pose: dict) -> dict[str, torch.Tensor]:
        if self.revert_axis_swap:
            relative = regions_id["affine"] @ torch.inverse(regions_pose["affine"])
            regions_id = {
                "shift": regions_id["shift"],
                "affine": regions_id["affine"] * _axis_swap_sign(relative),
            }
        pose = self.pose_encoder(self.regions_to_embedding(regions_pose))
        identity = self.id_encoder(self.regions_to_embedding(regions_id))
        out = self.embedding_to_regions(self.decoder(torch.cat([pose, identity], dim=1)))
        out["covar"] = out["affine"] @ out["affine"].transpose(-1, -2)
        return out


class MRAA(Animator):
    """The animator: region predictor + background motion predictor + generator (+ AVD network).

    Attribute names are the checkpoint keys of the authors' files. `detect` returns the region
    parameters of a frame and keeps the frame under `frame`, so that `animate` can run the
    background predictor on (source, driving) with the FOMM-style call animate(source, r_s, r_d).
    """

    method = "mraa"
    network_names = ("generator", "region_predictor", "bg_predictor", "avd_network")
    motion_detector = "region_predictor"
    motion_name = "regions"

    def __init__(
        self,
        common_params: dict,
        region_predictor_params: dict,
        generator_params: dict,
        bg_predictor_params: dict | None = None,
        avd_network_params: dict | None = None,
    ):
        super().__init__()
        # MRAA trained on torch 1.4, whose grid_sample default is align_corners=False
        common = self.resolve_common(
            common_params,
            {"num_channels": 3, "estimate_affine": True, "revert_axis_swap": True},
            required=("num_regions",),
        )
        num_regions, num_channels = common["num_regions"], common["num_channels"]
        estimate_affine, revert_axis_swap = common["estimate_affine"], common["revert_axis_swap"]
        self.region_predictor = RegionPredictor(
            num_regions=num_regions,
            num_channels=num_channels,
            estimate_affine=estimate_affine,
            **region_predictor_params,
        )
        self.bg_predictor = BGMotionPredictor(
            num_channels=num_channels, **(bg_predictor_params or {})
        )
        self.generator = Generator(
            num_channels=num_channels,
            num_regions=num_regions,
            revert_axis_swap=revert_axis_swap,
            align_corners=self.align_corners,
            **generator_params,
        )
        self.avd_network = (
            AVDNetwork(
                num_regions=num_regions, revert_axis_swap=revert_axis_swap, **avd_network_params
            )
            if avd_network_params is not None
            else None
        )

    def avd(self, regions_source: dict, regions_driving: dict) -> dict[str, torch.Tensor]:
        """Animation via disentanglement (`animate --mode avd`): the AVD network's regions with
        the shape (identity) of the source regions and the pose of the driving ones, batched
        alike ([B, K, ...]). As the reference's animate/demo, the result carries no driving
        frame, so `animate` then uses the identity background motion."""
        if self.avd_network is None:
            raise ValueError("this MRAA has no AVD network (avd_network_params)")
        return self.avd_network(regions_source, regions_driving)
