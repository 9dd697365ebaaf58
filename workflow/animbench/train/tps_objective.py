"""TPSMM's training objectives (Zhao & Zhang, CVPR 2022).

Stage 1 (`TPSObjective`, the trainer's objective for "tpsmm"): multi-scale perceptual
reconstruction, keypoint equivariance (value only) under a random TPS with TPSMM's kernel
d²·log(d² + 1e-9), the warp loss (encoder features of the driving frame against the warped
source features, only the flow learning from it) and, from epoch `bg_start`, the background
loss |I − A_{s→d}·A_{d→s}|. No GAN. During the first `dropout_epoch` epochs the dense motion
network drops TPS transforms with probability P = min(epoch/dropout_inc_epoch·maxp + startp,
maxp); before `bg_start` the background predictor is not used (identity background).
Stage 2 (`TPSAVDObjective`): the AVD network, kp detector frozen, rebuilds the driving
keypoints from the source keypoints (identity) and randomly rescaled driving keypoints (pose).
"""

from __future__ import annotations

import torch
from torch import nn

from animbench.models.tpsmm import TPS
from animbench.train.objective_base import ReconstructionObjective
from animbench.train.region_objective import AVDStageObjective

GENERATOR_SIDE = ("inpainting_network", "dense_motion_network", "kp_detector", "bg_predictor")


def dropout_probability(
    epoch: int, dropout_epoch: int, startp: float, maxp: float, inc_epoch: int
) -> float | None:
    """The TPS dropout probability of an epoch, None once dropout has stopped."""
    if epoch >= dropout_epoch:
        return None
    return min(epoch / inc_epoch * maxp + startp, maxp)


def tps_equivariance_value(
    kp_detector: nn.Module,
    driving: torch.Tensor,
    kp_driving: dict,
    transform_params: dict,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """mean|kp_d − T(kp(T(frame)))| for a random TPS T (TPSMM's 'random' mode)."""
    transform = TPS.random(
        driving.shape[0],
        **transform_params,
        device=driving.device,
        dtype=driving.dtype,
        generator=generator,
    )
    transformed = kp_detector(transform.transform_frame(driving))
    return (kp_driving["fg_kp"] - transform.warp_coordinates(transformed["fg_kp"])).abs().mean()


def warp_loss(encoded: list[torch.Tensor], warped: list[torch.Tensor]) -> torch.Tensor:
    """Σ_levels mean|E(driving)·occ − warp(E(source))·occ|; `encoded` finest first (the
    inpainting network's `get_encode`), `warped` coarsest first (`warped_encoder_maps`)."""
    return sum((e - w).abs().mean() for e, w in zip(encoded, reversed(warped)))


def bg_loss(bg_param: torch.Tensor, bg_param_reverse: torch.Tensor) -> torch.Tensor:
    """mean|I − A_{s→d}·A_{d→s}| over the 3×3 background transforms."""
    eye = torch.eye(3, device=bg_param.device, dtype=bg_param.dtype)
    return (eye - bg_param @ bg_param_reverse).abs().mean()


class TPSObjective(ReconstructionObjective):
    """TPSMM stage 1; the trainer calls `set_epoch` before each step (dropout, bg_start).

    `trained_networks`: inpainting, dense motion and kp detector (one Adam over the three in
    the reference; one per network here, the same updates) and the background predictor.
    """

    paper = "TPSMM"

    def __init__(self, model: nn.Module, train_params: dict, pretrained_vgg: bool = True):
        super().__init__(train_params, pretrained_vgg)
        self.dropout = {
            "dropout_epoch": train_params["dropout_epoch"],
            "startp": train_params["dropout_startp"],
            "maxp": train_params["dropout_maxp"],
            "inc_epoch": train_params["dropout_inc_epoch"],
        }
        self.bg_start = train_params.get("bg_start", 0)
        self.trained_networks = [n for n in GENERATOR_SIDE if n in model.networks]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def dropout_p(self) -> float | None:
        return dropout_probability(self.epoch, **self.dropout)

    def generator_losses(self, model, source, driving) -> tuple[dict[str, torch.Tensor], dict]:
        use_bg = model.bg_predictor is not None and self.epoch >= self.bg_start
        out = model(source, driving, dropout_p=self.dropout_p, use_bg=use_bg)
        losses = self.reconstruction_losses(out["prediction"], driving)
        w = self.weights
        if w.get("equivariance_value"):
            losses["equivariance_value"] = w["equivariance_value"] * tps_equivariance_value(
                model.kp_detector, driving, out["kp_driving"], self.transform_params
            )
        if w.get("warp_loss"):
            encoded = model.inpainting_network.get_encode(driving, out["occlusion_map"])
            losses["warp_loss"] = w["warp_loss"] * warp_loss(encoded, out["warped_encoder_maps"])
        if use_bg and w.get("bg"):
            reverse = model.bg_predictor(driving, source)
            losses["bg"] = w["bg"] * bg_loss(out["bg_param"], reverse)
        return losses, out


def random_scale_keypoints(
    kp: dict, scale: float, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Keypoints under a random per-sample axis scaling diag(a, b), a, b ~ U[1 − s, 1 + s]."""
    fg_kp = kp["fg_kp"]
    factors = torch.rand(fg_kp.shape[0], 1, 2, generator=generator) * (2 * scale) + (1 - scale)
    return {"fg_kp": fg_kp * factors.to(fg_kp)}


class TPSAVDObjective(AVDStageObjective):
    """TPSMM stage 2: λ_shift·mean|kp_d − AVD(kp_s, scaled kp_d)| on the keypoints."""

    estimator = "kp_detector"

    def rescale(self, motion: dict, generator: torch.Generator | None) -> dict:
        return random_scale_keypoints(motion, self.random_scale, generator)

    def reconstruction_losses(self, truth: dict, rebuilt: dict) -> dict[str, torch.Tensor]:
        value = (truth["fg_kp"] - rebuilt["fg_kp"]).abs().mean()
        return {"reconstruction_kp": self.params["lambda_shift"] * value}
