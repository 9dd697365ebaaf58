"""Training objectives: what each model family adds to the shared training loop.

An objective turns a batch into weighted losses for the generator side (every network but the
discriminator) and, when the preset uses a GAN, for the discriminator. The loss weights and
the loss definitions are the papers' (train/losses.py).
"""

from __future__ import annotations

import torch
from torch import nn

from animbench.models import registry
from animbench.models.blocks import ImagePyramid, make_coordinate_grid
from animbench.train.cpab_objective import CPABObjective
from animbench.train.losses import (
    discriminator_gan_loss,
    equivariance_losses,
    feature_matching_loss,
    generator_gan_loss,
)
from animbench.train.objective_base import ReconstructionObjective
from animbench.train.region_objective import AVDObjective, RegionObjective
from animbench.train.tps_objective import TPSAVDObjective, TPSObjective


def _detach_kp(kp: dict) -> dict:
    return {key: value.detach() for key, value in kp.items()}


class KeypointObjective(ReconstructionObjective):
    """FOMM's objective (also Monkey-Net's when Jacobians are off): multi-scale perceptual
    reconstruction + equivariance of keypoints and Jacobians (+ LSGAN and feature matching)."""

    def __init__(self, model: nn.Module, train_params: dict, pretrained_vgg: bool = True):
        super().__init__(train_params, pretrained_vgg)
        self.scales = train_params["scales"]
        self.use_gan = self.weights.get("generator_gan", 0) != 0 and model.discriminator is not None
        if self.use_gan:
            self.disc_scales = model.discriminator.scales
            self.pyramid = ImagePyramid(self.scales, 3)

    def generator_losses(self, model, source, driving) -> tuple[dict[str, torch.Tensor], dict]:
        out = model(source, driving)
        losses = self.reconstruction_losses(out["prediction"], driving)
        w = self.weights
        if self.use_gan:
            real = self.pyramid(driving)
            generated = self.pyramid(out["prediction"])
            kp = _detach_kp(out["kp_driving"])
            disc_generated = model.discriminator(generated, kp=kp)
            disc_real = model.discriminator(real, kp=kp)
            losses["gen_gan"] = w["generator_gan"] * generator_gan_loss(
                disc_generated, self.disc_scales
            )
            if sum(w["feature_matching"]) != 0:
                losses["feature_matching"] = feature_matching_loss(
                    disc_real, disc_generated, self.disc_scales, w["feature_matching"]
                )
        if w["equivariance_value"] or w["equivariance_jacobian"]:
            equivariance = equivariance_losses(
                model.kp_detector,
                driving,
                out["kp_driving"],
                self.transform_params,
                use_jacobian=bool(w["equivariance_jacobian"]),
                align_corners=getattr(model, "align_corners", True),
            )
            self.add_weighted(losses, equivariance)
        return losses, out

    def discriminator_losses(self, model, driving, out) -> dict[str, torch.Tensor]:
        real = self.pyramid(driving)
        generated = self.pyramid(out["prediction"].detach())
        kp = _detach_kp(out["kp_driving"])
        disc_generated = model.discriminator(generated, kp=kp)
        disc_real = model.discriminator(real, kp=kp)
        return {
            "disc_gan": self.weights["discriminator_gan"]
            * discriminator_gan_loss(disc_real, disc_generated, self.disc_scales)
        }


def bg_fg_mask_loss(mask: torch.Tensor) -> torch.Tensor:
    """MTIA (TaiChi): L1(m_bg, 1) + (10/K)·L1(m_fg, 0) on the K+1 dense-motion masks
    [B, K+1, H, W], background first."""
    num_kp = mask.shape[1] - 1
    return (mask[:, 0] - 1).abs().mean() + (10 / num_kp) * mask[:, 1:].abs().mean()


def fg_mask_concentration_loss(mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """MTIA (TaiChi): mean_B Σ_k Σ_z m̃_k(z)‖z − μ_k‖², m̃_k the spatially normalised foreground
    mask k and μ_k = Σ_z m̃_k(z) z (coordinates on [-1, 1]): the spatial variance of each mask."""
    fg = mask[:, 1:]
    fg = fg / (fg.sum(dim=(2, 3), keepdim=True) + eps)
    grid = make_coordinate_grid(fg.shape[2:], fg.device, fg.dtype).view(1, 1, *fg.shape[2:], 2)
    mean = (fg.unsqueeze(-1) * grid).sum(dim=(2, 3), keepdim=True)
    variance = (fg * ((grid - mean) ** 2).sum(-1)).sum(dim=(2, 3))
    return variance.sum(dim=1).mean()


class MotionTransformerObjective(KeypointObjective):
    """MTIA's objective: FOMM's, plus (TaiChi) the background predictor among the trained
    networks and the background/foreground-mask and mask-concentration terms (weights
    `bg_fg_mask`, `fg_mask_concentration`; 0 in the other presets)."""

    def __init__(self, model: nn.Module, train_params: dict, pretrained_vgg: bool = True):
        super().__init__(model, train_params, pretrained_vgg)
        self.trained_networks = [n for n in model.networks if n != "discriminator"]
        self._model_warnings = list(getattr(model, "warnings", []))

    @property
    def warnings(self) -> list[str]:
        return super().warnings + self._model_warnings

    def generator_losses(self, model, source, driving) -> tuple[dict[str, torch.Tensor], dict]:
        losses, out = super().generator_losses(model, source, driving)
        w = self.weights
        if w.get("bg_fg_mask"):
            losses["bg_fg_mask"] = w["bg_fg_mask"] * bg_fg_mask_loss(out["mask"])
        if w.get("fg_mask_concentration"):
            losses["fg_mask_concentration"] = w[
                "fg_mask_concentration"
            ] * fg_mask_concentration_loss(out["mask"])
        return losses, out


OBJECTIVES = {
    "fomm": KeypointObjective,
    "mraa": RegionObjective,
    "mtia": MotionTransformerObjective,
    "tpsmm": TPSObjective,
    "cpabmm": CPABObjective,
}

# second-stage (animation via disentanglement) objectives, for presets with train_avd_params
AVD_OBJECTIVES = {
    "mraa": AVDObjective,
    "tpsmm": TPSAVDObjective,
    "cpabmm": TPSAVDObjective,  # CPABMM's AVD network and stage are TPSMM's
}


def objective_class(model: str) -> type:
    """The training objective class of a model: a built-in's, or a model from another
    package's own `objective_class` (models/base.py MotionObjective)."""
    if model in OBJECTIVES:
        return OBJECTIVES[model]
    return registry.external_objective(model)
