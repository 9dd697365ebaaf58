"""A global-affine animator: the smallest model animbench trains and evaluates as its own.

Each frame gets one absolute pose, a 2×3 affine map A (a tiny CNN, `pose_net`). The source is
warped by A_source · A_driving⁻¹ (grid_sample); a small network (`refiner`) then predicts, from
the warped and the original source, a soft mask m that composes the moving part over the still
one, m·warp + (1−m)·source, and a residual. No keypoints, no dense motion: one global motion a
frame pair over a static background, which is what a synthetic head mostly does.

It implements animbench's MotionModel (animbench/models/base.py): `networks`, `forward`,
`detect`, `animate`, with `presets()` and `objective_class`. Only torch and animbench's
shared perceptual loss are used; animbench's trainer and reconstruction do the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# the shared losses of animbench (VGG19 pyramid; random VGG19 offline, recorded as a warning)
from animbench.train.losses import PerceptualPyramidLoss

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.GroupNorm(1, cout),
        nn.LeakyReLU(0.2),
    )


class PoseNet(nn.Module):
    """Frame [N, 3, H, W] -> its pose, an affine map [N, 2, 3] whose linear part is I + M
    with |M_ij| < 0.45 (always invertible)."""

    def __init__(self, channels: int = 16, depth: int = 4):
        super().__init__()
        layers, cin = [], 3
        for i in range(depth):
            cout = channels * 2 ** min(i, 2)
            layers.append(_conv(cin, cout, stride=2))
            cin = cout
        self.features = nn.Sequential(*layers)
        # a 4×4 map flattened, not averaged: a pose needs to know where things are
        self.head = nn.Linear(cin * 16, 6)
        nn.init.zeros_(self.head.weight)  # every pose starts as the identity
        nn.init.zeros_(self.head.bias)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        features = F.adaptive_avg_pool2d(self.features(frame), 4).flatten(1)
        raw = self.head(features).float()
        linear = torch.eye(2, device=raw.device) + 0.45 * torch.tanh(raw[:, [0, 1, 3, 4]]).view(
            -1, 2, 2
        )
        translation = torch.tanh(raw[:, [2, 5]]).view(-1, 2, 1)
        return torch.cat([linear, translation], dim=2)


class Refiner(nn.Module):
    """(warped source, source) -> (moving-part mask logits [N, 1, H, W], residual [N, 3, H, W])."""

    def __init__(self, channels: int = 32, blocks: int = 3):
        super().__init__()
        layers = [_conv(6, channels)] + [_conv(channels, channels) for _ in range(blocks - 1)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels, 4, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts as half warp, half source, no residual
        nn.init.zeros_(self.out.bias)

    def forward(self, warped: torch.Tensor, source: torch.Tensor):
        out = self.out(self.body(torch.cat([warped, source], dim=1)))
        return out[:, :1], out[:, 1:]


def _homogeneous(affine: torch.Tensor) -> torch.Tensor:
    bottom = affine.new_tensor([0.0, 0.0, 1.0]).expand(affine.shape[0], 1, 3)
    return torch.cat([affine, bottom], dim=1)


class GlobalAffineAnimator(nn.Module):
    """animbench MotionModel: one learned global affine motion per frame pair, refined."""

    name = "Global affine"  # the tables' row label

    def __init__(self, pose_params: dict | None = None, refiner_params: dict | None = None):
        super().__init__()
        self.pose_net = PoseNet(**(pose_params or {}))
        self.refiner = Refiner(**(refiner_params or {}))

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"pose_net": self.pose_net, "refiner": self.refiner}

    def detect(self, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"affine": self.pose_net(frame)}

    def animate(self, source, kp_source, kp_driving) -> dict[str, torch.Tensor]:
        # driving coordinates -> the pose's canonical frame -> source coordinates
        motion = _homogeneous(kp_source["affine"]) @ torch.linalg.inv(
            _homogeneous(kp_driving["affine"])
        )
        grid = F.affine_grid(motion[:, :2], list(source.shape), align_corners=False)
        warped = F.grid_sample(source.float(), grid, padding_mode="border", align_corners=False).to(
            source.dtype
        )
        mask_logits, residual = self.refiner(warped, source)
        mask = torch.sigmoid(mask_logits)
        prediction = mask * warped + (1 - mask) * source + residual
        if not self.training:
            prediction = prediction.clamp(0, 1)
        return {"prediction": prediction, "warped": warped, "mask": mask, "motion": motion}

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        kp_source, kp_driving = self.detect(source), self.detect(driving)
        out = self.animate(source, kp_source, kp_driving)
        out.update(kp_source=kp_source, kp_driving=kp_driving)
        return out

    @staticmethod
    def presets() -> dict[str, dict]:
        return PRESETS

    # set below: the class is defined after the model
    objective_class: type


class GlobalAffineObjective(nn.Module):
    """animbench MotionObjective: L1 on the prediction (and, weight `warp_l1`, on the bare
    warp), plus animbench's shared perceptual pyramid."""

    use_gan = False
    trained_networks = ("pose_net", "refiner")

    def __init__(self, model: nn.Module, train_params: dict, pretrained_vgg: bool = True):
        super().__init__()
        self.weights = train_params["loss_weights"]
        self.perceptual = PerceptualPyramidLoss(
            train_params["scales"], self.weights["perceptual"], pretrained=pretrained_vgg
        )

    @property
    def warnings(self) -> list[str]:
        return [] if self.perceptual.vgg.pretrained else [self.perceptual.vgg.weights_note]

    def generator_losses(self, model, source, driving):
        out = model(source, driving)
        w = self.weights
        losses = {"l1": w["l1"] * (out["prediction"] - driving).abs().mean()}
        if w.get("warp_l1"):
            losses["warp_l1"] = w["warp_l1"] * (out["warped"] - driving).abs().mean()
        if any(w["perceptual"]):
            losses["perceptual"] = self.perceptual(out["prediction"], driving)
        return losses, out


GlobalAffineAnimator.objective_class = GlobalAffineObjective


def _synthetic(num_epochs: int, note: str) -> dict:
    """A preset for animbench's 64×64 synthetic datasets: epochs of 30 steps (24 training
    videos × 10 repeats / batch 8); the learning rate drops ×0.1 at 60% and 90%."""
    return {
        "note": note,
        "model_params": {
            "pose_params": {"channels": 16, "depth": 4},
            "refiner_params": {"channels": 32, "blocks": 3},
        },
        "train_params": {
            "num_epochs": num_epochs,
            "num_repeats": 10,
            "epoch_milestones": [int(0.6 * num_epochs), int(0.9 * num_epochs)],
            "batch_size": 8,
            "max_steps": None,
            "checkpoint_freq": 1,
            "lr_pose_net": 2.0e-3,
            "lr_refiner": 2.0e-3,
            "scales": [1, 0.5],
            "loss_weights": {"l1": 10, "warp_l1": 0, "perceptual": [10, 10, 0, 0, 0]},
        },
        "dataset_params": {
            "frame_shape": [64, 64, 3],
            "id_sampling": False,
            "augmentation_params": {
                "flip_param": {"horizontal_flip": True, "time_flip": True},
            },
        },
    }


PRESETS = {
    "affine-synthetic": _synthetic(3, "global affine on the 64×64 synthetic faces (90 steps)"),
    "affine-synthetic-body": _synthetic(
        3, "global affine on the 64×64 synthetic bodies (90 steps)"
    ),
}
