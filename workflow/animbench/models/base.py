"""The interfaces the shared trainer and the reconstruction protocol call: what a model from
another package implements to be trained and evaluated as the built-in ones are.

A model is named in a config `methods` entry as `model: "my_pkg.module:MyModel"` (or by the
name of a Python entry point in the group `animbench.models`, e.g. `model: my-model`).
animbench imports it only when a job needs it (animbench.models.registry.resolve_model).

The class:

- is built as `MyModel(**preset["model_params"])`;
- has `presets()` (a classmethod/staticmethod returning {preset name: preset}) or its module a
  `PRESETS` dict; a preset is a built-in's shape: model_params, train_params (num_epochs,
  num_repeats, epoch_milestones, batch_size, lr or lr_<network>, checkpoint_freq, max_steps,
  loss_weights, ...), dataset_params (frame_shape, id_sampling, augmentation_params);
- has `objective_class` (or `objective`): a class built as `Objective(model, train_params)`
  implementing `MotionObjective`;
- may have `name`, the row label of the tables (default: the class name).

Nothing else is registered: train, resume, DDP, bf16, checkpoints, reconstruction and metrics
are the shared ones. A second (AVD) training stage is for built-in models only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class MotionModel(Protocol):
    """An animator: an nn.Module with these members."""

    @property
    def networks(self) -> dict[str, nn.Module]:
        """Name -> sub-network. Each gets its own Adam (learning rate `lr_<name>`, else `lr`),
        is checkpointed under its name, and is restored strictly by `load_state_dict`. A
        "discriminator" network is trained by the objective's discriminator side only."""
        ...

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, Any]:
        """Training pass on batches [B, 3, H, W] in [0, 1]: a dict with at least "prediction"
        (the source animated with the driving frame's motion, [B, 3, H, W])."""
        ...

    def detect(self, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        """Motion representation of frames [N, 3, H, W]: a dict of tensors with N rows each
        (reconstruction detects every frame once, and slices rows per clip)."""
        ...

    def animate(
        self, source: torch.Tensor, kp_source: dict, kp_driving: dict
    ) -> dict[str, torch.Tensor]:
        """Frames from sources [N, 3, H, W] and the `detect` outputs of source and driving
        frames: a dict with "prediction" [N, 3, H, W]. Each row must depend on its own row
        only (reconstruction batches frames of several clips). A model may also define
        `encode_source(source) -> list[Tensor]` and accept `source_features=` here, to encode
        each clip's source once."""
        ...


@runtime_checkable
class MotionObjective(Protocol):
    """What the trainer calls on an objective (an nn.Module built as `cls(model, train_params)`).
    Optional members: `trained_networks` (default for a model from another package: every
    network but "discriminator"), `set_epoch(epoch)`, and with `use_gan` True a
    `discriminator_losses(model, driving, out) -> {name: weighted loss}`."""

    use_gan: bool
    warnings: list[str]  # e.g. the random-VGG19 note of the shared perceptual loss

    def generator_losses(
        self, model: nn.Module, source: torch.Tensor, driving: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """({loss name: weighted scalar}, the model's forward output); the trainer back-
        propagates their sum and logs each."""
        ...
