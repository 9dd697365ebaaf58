"""Losses shared by the motion models: multi-scale VGG19 perceptual loss (the network:
networks/vgg.py), equivariance (value and Jacobian) under random TPS transforms, and the LSGAN
terms.

Facts from the reference implementations (notes/reference-models.md §0): VGG19 features sliced
at relu1_1 … relu5_1 on ImageNet-normalised input, weights [10]*5, summed over the pyramid
scales [1, 0.5, 0.25, 0.125]; TPS: θ = I + N(0, 0.05), 5×5 control points with N(0, 0.005)
weights and the r² log r kernel with r the L1 distance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from animbench.models.blocks import ImagePyramid, make_coordinate_grid
from animbench.networks.vgg import Vgg19


class PerceptualPyramidLoss(nn.Module):
    """Σ_scales Σ_i w_i · mean|φ_i(pred_s) − φ_i(real_s)| with the real features detached."""

    def __init__(self, scales, weights_per_layer, num_channels=3, pretrained=True):
        super().__init__()
        self.pyramid = ImagePyramid(scales, num_channels)
        self.vgg = Vgg19(pretrained=pretrained)
        self.layer_weights = list(weights_per_layer)
        # layers after the last non-zero weight cost time and add nothing: skip them
        self.num_slices = max((i + 1 for i, w in enumerate(self.layer_weights) if w), default=0)

    def forward(self, prediction: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        pyramid_pred = self.pyramid(prediction)
        with torch.no_grad():
            pyramid_real = self.pyramid(real)
        total = prediction.new_zeros(())
        if self.num_slices == 0:
            return total
        for key, pred in pyramid_pred.items():
            pred_features = self.vgg(pred, self.num_slices)
            with torch.no_grad():
                real_features = self.vgg(pyramid_real[key], self.num_slices)
            for weight, a, b in zip(self.layer_weights, pred_features, real_features):
                if weight:
                    total = total + weight * (a - b).abs().mean()
        return total


class RandomTPS:
    """A random affine + thin-plate-spline warp for the equivariance constraint.

    Coordinates are [-1, 1] (x, y); `warp_coordinates` maps points of the transformed frame to
    the original frame, so `transform_frame` samples the original at warped positions, with the
    model's grid_sample convention (`align_corners`: the authors' FOMM, MRAA and MTIA pass none,
    so their transform used the default of their torch, as their warps did).
    """

    def __init__(
        self,
        batch_size: int,
        sigma_affine=0.05,
        sigma_tps=0.005,
        points_tps=5,
        device=None,
        generator=None,
        align_corners: bool = True,
    ):
        self.align_corners = align_corners
        noise = torch.randn(batch_size, 2, 3, device=device, generator=generator) * sigma_affine
        self.theta = noise + torch.eye(2, 3, device=device).unsqueeze(0)
        self.control_points = make_coordinate_grid((points_tps, points_tps), device).view(1, -1, 2)
        self.control_params = (
            torch.randn(batch_size, 1, points_tps**2, device=device, generator=generator)
            * sigma_tps
        )
        self.batch_size = batch_size

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """coordinates [B or 1, N, 2] -> [B, N, 2]."""
        theta = self.theta.to(coordinates.dtype).unsqueeze(1)
        transformed = (theta[..., :2] @ coordinates.unsqueeze(-1)).squeeze(-1) + theta[..., 2]
        # r² log r with r the L1 distance to each control point (the reference kernel)
        distances = (
            (coordinates.unsqueeze(2) - self.control_points.to(coordinates).unsqueeze(1))
            .abs()
            .sum(-1)
        )
        kernel = distances**2 * torch.log(distances + 1e-6)
        return transformed + (kernel * self.control_params.to(coordinates)).sum(-1, keepdim=True)

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        b, _, h, w = frame.shape
        grid = make_coordinate_grid((h, w), frame.device, frame.dtype).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(b, h, w, 2)
        return F.grid_sample(
            frame, grid, padding_mode="reflection", align_corners=self.align_corners
        )

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """∂T/∂z at the given points by autograd: [B, N, 2, 2]."""
        with torch.enable_grad():
            if not coordinates.requires_grad:
                coordinates = coordinates.detach().requires_grad_(True)
            warped = self.warp_coordinates(coordinates)
            grad_x = torch.autograd.grad(warped[..., 0].sum(), coordinates, create_graph=True)[0]
            grad_y = torch.autograd.grad(warped[..., 1].sum(), coordinates, create_graph=True)[0]
        return torch.stack([grad_x, grad_y], dim=-2)


def warped_detection(
    detector,
    driving: torch.Tensor,
    transform_params: dict,
    generator=None,
    align_corners: bool = True,
) -> tuple[RandomTPS, dict]:
    """A random TPS T of the batch (`transform_params`) and the detector's output on T(driving)."""
    transform = RandomTPS(
        driving.shape[0],
        **transform_params,
        device=driving.device,
        generator=generator,
        align_corners=align_corners,
    )
    return transform, detector(transform.transform_frame(driving))


def jacobian_equivariance(
    transform: RandomTPS,
    jacobian_driving: torch.Tensor,
    points_transformed: torch.Tensor,
    jacobian_transformed: torch.Tensor,
    revert_axis_swap: bool = False,
) -> torch.Tensor:
    """mean|I − J_d⁻¹ · ∇T · J_t| over [B, K, 2, 2] Jacobians (or affine parts), ∇T at the
    transformed frame's points; `revert_axis_swap` multiplies the product by sign(·)₀₀ first
    (MRAA's SVD axis-swap fix)."""
    jacobian_back = transform.jacobian(points_transformed) @ jacobian_transformed
    value = torch.inverse(jacobian_driving) @ jacobian_back
    if revert_axis_swap:
        value = value * torch.sign(value[..., 0:1, 0:1])
    eye = torch.eye(2, device=value.device, dtype=value.dtype).view(1, 1, 2, 2)
    return (eye - value).abs().mean()


def equivariance_losses(
    kp_detector,
    driving,
    kp_driving,
    transform_params: dict,
    use_jacobian: bool,
    generator=None,
    align_corners: bool = True,
) -> dict[str, torch.Tensor]:
    """Keypoints of a randomly warped frame, mapped back, must equal the frame's keypoints;
    their Jacobians must compose to the identity: |I − J_d⁻¹ · ∇T · J_t| (FOMM Eq. 12).
    `align_corners`: the model's (its `align_corners` attribute)."""
    transform, transformed_kp = warped_detection(
        kp_detector, driving, transform_params, generator, align_corners
    )
    out = {
        "equivariance_value": (
            kp_driving["value"] - transform.warp_coordinates(transformed_kp["value"])
        )
        .abs()
        .mean()
    }
    if use_jacobian and "jacobian" in kp_driving:
        out["equivariance_jacobian"] = jacobian_equivariance(
            transform, kp_driving["jacobian"], transformed_kp["value"], transformed_kp["jacobian"]
        )
    return out


def generator_gan_loss(disc_generated: dict, scales) -> torch.Tensor:
    """LSGAN generator term: mean (1 − D(G))² per scale."""
    return sum(((1 - disc_generated[f"prediction_map_{s}"]) ** 2).mean() for s in scales)


def feature_matching_loss(
    disc_real: dict, disc_generated: dict, scales, layer_weights
) -> torch.Tensor:
    total = 0.0
    for s in scales:
        for w, a, b in zip(
            layer_weights, disc_real[f"feature_maps_{s}"], disc_generated[f"feature_maps_{s}"]
        ):
            if w:
                total = total + w * (a - b).abs().mean()
    return total


def discriminator_gan_loss(disc_real: dict, disc_generated: dict, scales) -> torch.Tensor:
    """LSGAN discriminator term: (1 − D(x))² + D(G)²."""
    return sum(
        (
            (1 - disc_real[f"prediction_map_{s}"]) ** 2 + disc_generated[f"prediction_map_{s}"] ** 2
        ).mean()
        for s in scales
    )
