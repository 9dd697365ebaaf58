"""CPABMM's training objective (Wang et al., AAAI 2024): TPSMM's plus two semantic losses.

L = λ_r L_recon + λ_e L_eq + λ_k L_KS + λ_s L_struc (paper Eq. 14), with TPSMM's warp and
background losses kept (the authors' GeneratorFullModel is TPSMM's with the DINO loss added):

* `structure` (λ_s, 0.1 in the authors' code, hard-coded there as `lambda_str`): the DINO
  ViT-B/8 structure alignment loss between the generated and the driving frame;
* `keypoint_semantic` (λ_k, 1 in the paper; `sam` in the authors' configs): the SAM keypoint
  semantic loss between source and driving keypoints (unpublished by the authors; ours is
  written from the paper, train/semantic_losses.py).

Each loss network is built only when its weight is non-zero: DINO ViT-B/8 (86M) and SAM ViT-B
(94M, 1024² inputs) are large, and SAM's encoder takes minutes per batch on a CPU. Their
arguments come from `train_params.structure_params` / `keypoint_semantic_params`. Without
their weight files they stay randomly initialised and `warnings` says so (as for VGG19).
The AVD stage is TPSMM's (`TPSAVDObjective`).
"""

from __future__ import annotations

import torch
from torch import nn

from animbench.train.semantic_losses import KeypointSemanticLoss, StructureAlignmentLoss
from animbench.train.tps_objective import TPSObjective


class CPABObjective(TPSObjective):
    """TPSMM stage 1 (+ structure alignment, + keypoint semantic loss when weighted).

    `pretrained_semantic` False builds the DINO / SAM networks randomly initialised without
    looking for weights (tests, with tiny `*_params`)."""

    def __init__(
        self,
        model: nn.Module,
        train_params: dict,
        pretrained_vgg: bool = True,
        pretrained_semantic: bool = True,
    ):
        super().__init__(model, train_params, pretrained_vgg)
        w = self.weights
        self.structure = None
        if w.get("structure"):
            self.structure = StructureAlignmentLoss(
                pretrained=pretrained_semantic, **train_params.get("structure_params", {})
            )
        self.keypoint_semantic = None
        if w.get("keypoint_semantic"):
            self.keypoint_semantic = KeypointSemanticLoss(
                pretrained=pretrained_semantic,
                **train_params.get("keypoint_semantic_params", {}),
            )

    @property
    def warnings(self) -> list[str]:
        notes = super().warnings
        for loss in (self.structure, self.keypoint_semantic):
            if loss is not None and not loss.pretrained:
                notes.append(loss.weights_note)
        return notes

    def generator_losses(self, model, source, driving) -> tuple[dict[str, torch.Tensor], dict]:
        losses, out = super().generator_losses(model, source, driving)
        w = self.weights
        if self.structure is not None:
            losses["structure"] = w["structure"] * self.structure(out["prediction"], driving)
        if self.keypoint_semantic is not None:
            losses["keypoint_semantic"] = w["keypoint_semantic"] * self.keypoint_semantic(
                source, driving, out["kp_source"]["fg_kp"], out["kp_driving"]["fg_kp"]
            )
        return losses, out
