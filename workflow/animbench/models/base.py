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

The built-in families (FOMM, MRAA, MTIA, TPSMM, CPABMM) implement `MotionModel` through
`Animator`, which holds what they share: the networks dict, per-frame motion detection, the
source encoding done once per clip, the background motion and the training forward. A family
names its networks and writes its `__init__` and `animate`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from animbench.errors import ConfigError


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


def resolve_common_params(given: dict, method: str, defaults: dict, required: tuple = ()) -> dict:
    """A family's `model_params.common_params` with its defaults filled in; a missing required
    or an unknown key is a one-line error (a typo must not fall back to a default)."""
    unknown = sorted(set(given) - set(defaults) - set(required))
    if unknown:
        raise ConfigError(
            f"model_params.common_params: unknown {', '.join(unknown)} for {method.upper()}"
        )
    missing = [key for key in required if key not in given]
    if missing:
        raise ConfigError(
            f"model_params.common_params: {method.upper()} needs {', '.join(missing)}"
        )
    return {**defaults, **given}


class Animator(nn.Module):
    """The shared body of the built-in families (a `MotionModel`).

    Attribute names are the authors' checkpoint keys. Subclasses set `network_names` and build
    those attributes in `__init__` (None for an optional network the preset leaves out); one
    whose generator takes other arguments (TPSMM) writes its own `animate`.
    """

    method = ""
    network_names: tuple[str, ...] = ()  # in the authors' order; None attributes are skipped
    motion_detector = "kp_detector"  # the network `detect` runs on a frame
    generator_network = "generator"  # animates; its `encode` is the per-clip source encoding
    motion_name = "kp"  # the forward output's f"{motion_name}_source" / "_driving"
    # whether `detect` keeps the frame in the motion dict, so that `animate(source, m_s, m_d)`
    # can predict the background motion from (source, driving) with FOMM's call signature;
    # None: when the model has a background predictor
    keep_frame: bool | None = None

    @property
    def networks(self) -> dict[str, nn.Module]:
        nets = {name: getattr(self, name, None) for name in self.network_names}
        return {name: net for name, net in nets.items() if net is not None}

    def resolve_common(self, common_params: dict, defaults: dict, required: tuple = ()) -> dict:
        """`resolve_common_params` for this family; it also sets `self.align_corners`, the
        grid_sample convention of its warps (DESIGN.md §1; each family's presets state theirs).
        Absent (checkpoints written before the key existed): True, what animbench then ran."""
        common = resolve_common_params(
            common_params, self.method, {**defaults, "align_corners": True}, required
        )
        self.align_corners = bool(common["align_corners"])
        return common

    def _keeps_frame(self) -> bool:
        if self.keep_frame is None:
            return getattr(self, "bg_predictor", None) is not None
        return self.keep_frame

    def detect(self, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        """Motion representation of frames [N, 3, H, W] (and the frames, see `keep_frame`)."""
        out = getattr(self, self.motion_detector)(frame)
        return {**out, "frame": frame} if self._keeps_frame() else out

    def encode_source(self, source: torch.Tensor) -> list[torch.Tensor]:
        """What `animate` computes from the source alone (the encoder's feature maps)."""
        return getattr(self, self.generator_network).encode(source)

    def background_motion(self, source: torch.Tensor, motion_driving: dict) -> torch.Tensor | None:
        """The background predictor's motion from (source, driving frame); None without a
        predictor or without a driving frame (relative and AVD modes: a still background)."""
        predictor = getattr(self, "bg_predictor", None)
        driving = motion_driving.get("frame")
        if predictor is None or driving is None:
            return None
        return predictor(source, driving)

    def animate(
        self,
        source: torch.Tensor,
        motion_source: dict,
        motion_driving: dict,
        source_features: list[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The source moved from its motion to the driving one: the generator called with
        `<motion_name>_driving`, `<motion_name>_source` (FOMM's keyword names) and, with a
        background motion, `bg_params`, which the output keeps."""
        bg_params = self.background_motion(source, motion_driving)
        motion = {
            f"{self.motion_name}_driving": motion_driving,
            f"{self.motion_name}_source": motion_source,
        }
        if bg_params is not None:
            motion["bg_params"] = bg_params
        generator = getattr(self, self.generator_network)
        out = generator(source, **motion, source_features=source_features)
        if bg_params is not None:
            out["bg_params"] = bg_params
        return out

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass: detect both frames, animate the source, keep both motions."""
        motion_source = self.detect(source)
        motion_driving = self.detect(driving)
        out = self.animate(source, motion_source, motion_driving)
        out[f"{self.motion_name}_source"] = motion_source
        out[f"{self.motion_name}_driving"] = motion_driving
        return out
