"""MRAA's training objectives (Siarohin et al., CVPR 2021).

Stage 1 (`RegionObjective`, the trainer's objective for "mraa"): multi-scale perceptual
reconstruction + equivariance of the region shifts and affine parts under a random TPS; no
GAN, no background loss (the background predictor learns through the reconstruction alone).
Stage 2 (`AVDObjective`): the AVD network, with the region predictor frozen, rebuilds driving
regions from the source regions (identity) and randomly rescaled driving regions (pose).
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from animbench.train.losses import jacobian_equivariance, warped_detection
from animbench.train.objective_base import ReconstructionObjective

GENERATOR_SIDE = ("generator", "region_predictor", "bg_predictor")


def region_equivariance_losses(
    region_predictor: nn.Module,
    driving: torch.Tensor,
    regions_driving: dict,
    transform_params: dict,
    use_affine: bool = True,
    revert_axis_swap: bool = True,
    generator: torch.Generator | None = None,
    align_corners: bool = True,
) -> dict[str, torch.Tensor]:
    """Regions of a randomly warped frame, mapped back, must equal the frame's regions:
    shift mean|μ_d − T(μ_t)| and affine mean|I − A_d⁻¹·∇T·A_t| (times sign(·)₀₀ with
    `revert_axis_swap`, the SVD axis-swap fix). `align_corners`: the model's."""
    transform, transformed = warped_detection(
        region_predictor, driving, transform_params, generator, align_corners
    )
    shift_back = transform.warp_coordinates(transformed["shift"])
    out = {"equivariance_shift": (regions_driving["shift"] - shift_back).abs().mean()}
    if use_affine and "affine" in regions_driving:
        out["equivariance_affine"] = jacobian_equivariance(
            transform,
            regions_driving["affine"],
            transformed["shift"],
            transformed["affine"],
            revert_axis_swap,
        )
    return out


class RegionObjective(ReconstructionObjective):
    """MRAA stage 1: perceptual pyramid + region equivariance (+ the offline presets' pixel L1).

    `trained_networks` lists the networks the trainer optimises (the background predictor is
    left out when it has no parameters, bg_type 'zero').
    """

    paper = "MRAA"

    def __init__(self, model: nn.Module, train_params: dict, pretrained_vgg: bool = True):
        super().__init__(train_params, pretrained_vgg)
        self.trained_networks = [
            name for name in GENERATOR_SIDE if any(True for _ in model.networks[name].parameters())
        ]

    def generator_losses(self, model, source, driving) -> tuple[dict[str, torch.Tensor], dict]:
        out = model(source, driving)
        losses = self.reconstruction_losses(out["prediction"], driving)
        w = self.weights
        if w.get("equivariance_shift") or w.get("equivariance_affine"):
            equivariance = region_equivariance_losses(
                model.region_predictor,
                driving,
                out["regions_driving"],
                self.transform_params,
                use_affine=bool(w.get("equivariance_affine")),
                revert_axis_swap=model.generator.revert_axis_swap,
                align_corners=getattr(model, "align_corners", True),
            )
            self.add_weighted(losses, equivariance)
        return losses, out


def random_scale(
    regions: dict, scale: float, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Regions under a random per-sample axis scaling diag(a, b), a, b ~ U[1 − s, 1 + s]: a pose
    of an object of another shape (the AVD input augmentation)."""
    shift = regions["shift"]
    factors = torch.rand(shift.shape[0], 2, generator=generator) * (2 * scale) + (1 - scale)
    theta = torch.diag_embed(factors.to(shift)).unsqueeze(1)
    return {
        "shift": (theta @ shift.unsqueeze(-1)).squeeze(-1),
        "affine": theta @ regions["affine"],
    }


class AVDStageObjective(nn.Module, abc.ABC):
    """The AVD stage (MRAA, TPSMM, CPABMM): the AVD network rebuilds the driving motion from the
    source motion (identity) and a randomly rescaled driving motion (pose). The motion
    estimator is frozen (no gradient, eval mode for its BatchNorm statistics). Subclasses name
    the estimator, the rescaling and the reconstruction losses."""

    use_gan = False
    trained_networks = ("avd_network",)
    estimator = "region_predictor"

    def __init__(self, model: nn.Module, train_avd_params: dict):
        super().__init__()
        if model.avd_network is None:
            raise ValueError("the model has no AVD network (avd_network_params)")
        self.params = train_avd_params
        self.random_scale = train_avd_params["random_scale"]

    @property
    def warnings(self) -> list[str]:
        return []

    @abc.abstractmethod
    def rescale(self, motion: dict, generator: torch.Generator | None) -> dict:
        """The driving motion as a pose of an object of another shape (the AVD input)."""

    @abc.abstractmethod
    def reconstruction_losses(self, truth: dict, rebuilt: dict) -> dict[str, torch.Tensor]:
        """Weighted L1 terms between the driving motion and the AVD's reconstruction."""

    def losses(
        self, model, source, driving, generator: torch.Generator | None = None
    ) -> tuple[dict[str, torch.Tensor], dict]:
        estimator = getattr(model, self.estimator)
        was_training = estimator.training
        estimator.eval()
        try:
            with torch.no_grad():
                motion_id = estimator(source)
                motion_pose_gt = estimator(driving)
                motion_pose = self.rescale(motion_pose_gt, generator)
        finally:
            estimator.train(was_training)
        rebuilt = model.avd_network(motion_id, motion_pose)
        return self.reconstruction_losses(motion_pose_gt, rebuilt), rebuilt


class AVDObjective(AVDStageObjective):
    """MRAA stage 2: λ_shift·mean|μ − μ̂| + λ_affine·mean|A − Â| on the regions."""

    def rescale(self, motion: dict, generator: torch.Generator | None) -> dict:
        return random_scale(motion, self.random_scale, generator)

    def reconstruction_losses(self, truth: dict, rebuilt: dict) -> dict[str, torch.Tensor]:
        return {
            "reconstruction_shift": self.params["lambda_shift"]
            * (truth["shift"] - rebuilt["shift"]).abs().mean(),
            "reconstruction_affine": self.params["lambda_affine"]
            * (truth["affine"] - rebuilt["affine"]).abs().mean(),
        }
