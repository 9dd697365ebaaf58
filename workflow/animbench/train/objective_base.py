"""What the first-stage training objectives (FOMM, MTIA, MRAA, TPSMM, CPABMM) share: the loss
weights and TPS parameters of `train_params`, the multi-scale perceptual reconstruction (+ the
offline presets' pixel L1), the VGG19 weights warning, and the weighting of equivariance terms.
"""

from __future__ import annotations

import torch
from torch import nn

from animbench.train.losses import PerceptualPyramidLoss


class ReconstructionObjective(nn.Module):
    """Base of the stage-1 objectives; subclasses add their terms in `generator_losses`.

    `paper` names the method in the error of `discriminator_losses` (no GAN unless a subclass
    sets `use_gan` and overrides it)."""

    use_gan = False
    paper = "this model"

    def __init__(self, train_params: dict, pretrained_vgg: bool = True):
        super().__init__()
        self.weights = train_params["loss_weights"]
        self.transform_params = train_params["transform_params"]
        self.perceptual = PerceptualPyramidLoss(
            train_params["scales"], self.weights["perceptual"], pretrained=pretrained_vgg
        )

    @property
    def warnings(self) -> list[str]:
        return [] if self.perceptual.vgg.pretrained else [self.perceptual.vgg.weights_note]

    def reconstruction_losses(
        self, prediction: torch.Tensor, driving: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The perceptual pyramid loss and, when weighted, the pixel L1 (not in the papers:
        weight 0 in their presets; see preset_helpers.py)."""
        losses = {"perceptual": self.perceptual(prediction, driving)}
        if self.weights.get("l1"):
            losses["l1"] = self.weights["l1"] * (prediction - driving).abs().mean()
        return losses

    def add_weighted(self, losses: dict, terms: dict[str, torch.Tensor]) -> None:
        """Add each term with a non-zero weight to `losses`, times its weight."""
        for name, value in terms.items():
            if self.weights.get(name):
                losses[name] = self.weights[name] * value

    def discriminator_losses(self, model, driving, out) -> dict[str, torch.Tensor]:
        raise RuntimeError(f"{self.paper} trains no discriminator")
