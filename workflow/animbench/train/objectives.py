"""Training objectives: what each model family adds to the shared training loop.

An objective turns a batch into weighted losses for the generator side (every network but the
discriminator) and, when the preset uses a GAN, for the discriminator. The loss weights and
the loss definitions are the papers' (train/losses.py).
"""

from __future__ import annotations

import torch
from torch import nn

from animbench.models.blocks import ImagePyramid
from animbench.train.losses import (
    PerceptualPyramidLoss,
    discriminator_gan_loss,
    equivariance_losses,
    feature_matching_loss,
    generator_gan_loss,
)


def _detach_kp(kp: dict) -> dict:
    return {key: value.detach() for key, value in kp.items()}


class KeypointObjective(nn.Module):
    """FOMM's objective (also Monkey-Net's when Jacobians are off): multi-scale perceptual
    reconstruction + equivariance of keypoints and Jacobians (+ LSGAN and feature matching)."""

    def __init__(self, model: nn.Module, train_params: dict, pretrained_vgg: bool = True):
        super().__init__()
        self.weights = train_params["loss_weights"]
        self.transform_params = train_params["transform_params"]
        self.scales = train_params["scales"]
        self.perceptual = PerceptualPyramidLoss(
            self.scales, self.weights["perceptual"], pretrained=pretrained_vgg
        )
        self.use_gan = self.weights.get("generator_gan", 0) != 0 and model.discriminator is not None
        if self.use_gan:
            self.disc_scales = model.discriminator.scales
            self.pyramid = ImagePyramid(self.scales, 3)

    @property
    def warnings(self) -> list[str]:
        return [] if self.perceptual.vgg.pretrained else [self.perceptual.vgg.weights_note]

    def generator_losses(self, model, source, driving) -> tuple[dict[str, torch.Tensor], dict]:
        out = model(source, driving)
        losses = {"perceptual": self.perceptual(out["prediction"], driving)}
        w = self.weights
        if w.get("l1"):  # not in the papers (weight 0 in their presets); see presets.py
            losses["l1"] = w["l1"] * (out["prediction"] - driving).abs().mean()
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
            )
            for name, value in equivariance.items():
                if w[name]:
                    losses[name] = w[name] * value
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


OBJECTIVES = {"fomm": KeypointObjective}
