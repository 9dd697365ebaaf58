"""What the presets of every model family share: the paper presets' builder, dataset defaults
and common train_params, the small synthetic presets' schedule and perceptual pyramid, and
`merge`.

The family modules (models/<family>_presets.py) build on these; models/presets.py gathers their
presets into PRESETS. Torch-free: the workflow reads presets without building models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from animbench.mappings import merge

__all__ = [
    "FLIPS_JITTER",
    "LIGHT",
    "LIGHT_PERCEPTUAL",
    "MGIF_AUGMENTATION",
    "MGIF_DATASET",
    "MGIF_DATASET_FULL",
    "PAPER_TRAIN",
    "PAPER_TRAIN_AVD",
    "SYNTHETIC_STEPS_PER_EPOCH",
    "merge",
    "preset_builder",
    "small_schedule",
    "synthetic_variant",
]

FLIPS_JITTER = {
    "flip_param": {"horizontal_flip": True, "time_flip": True},
    "jitter_param": {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.1},
}

# The authors' mgif configs: crop and resize, hue jitter only (on top of FLIPS_JITTER for FOMM
# and MTIA, whose overrides merge; MRAA's and TPSMM's replace it, so they add the flips).
MGIF_AUGMENTATION = {
    "crop_param": {"size": [256, 256]},
    "resize_param": {"ratio": [0.9, 1.1]},
    "jitter_param": {"hue": 0.5},
}
MGIF_DATASET = {"id_sampling": False, "augmentation_params": MGIF_AUGMENTATION}
# the same with the flips spelled out, for the builders whose augmentation replaces FLIPS_JITTER
MGIF_DATASET_FULL = merge(
    MGIF_DATASET, {"augmentation_params": {"flip_param": FLIPS_JITTER["flip_param"]}}
)


# What the authors' train_params of every family keep from FOMM's repository, which the others
# grew from (each family's module adds its schedule, networks and losses; preset_builder merges).
PAPER_TRAIN = {
    "num_epochs": 100,
    "num_repeats": 75,
    "epoch_milestones": [60, 90],
    "scales": [1, 0.5, 0.25, 0.125],
    "checkpoint_freq": 50,
    "max_steps": None,  # optional cap on optimiser steps (small configurations only)
    "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
    "loss_weights": {
        "perceptual": [10, 10, 10, 10, 10],
        "l1": 0,  # pixel L1, not a term of the papers; only small offline presets use it
    },
}
# and of the second stage (animation via disentanglement) of MRAA and TPSMM
PAPER_TRAIN_AVD = {
    "lr": 1.0e-3,
    "batch_size": 256,
    "checkpoint_freq": 50,
    "lambda_shift": 1,
    "random_scale": 0.25,
}


def preset_builder(
    name: str,
    model_params: dict,
    train_params: dict,
    train_avd_params: dict | None = None,
    *,
    replace_augmentation: bool = False,
) -> Callable[..., dict]:
    """The builder of registry model `name`'s paper presets, `build(note, model=, train=,
    train_avd=, dataset=)`: each override merges onto the family's defaults (`model_params`;
    `train_params` over PAPER_TRAIN; `train_avd_params` over PAPER_TRAIN_AVD, where the family
    has that stage), the dataset's onto 256² frames sampled by identity with flips and jitter.
    With `replace_augmentation`, a dataset's augmentation_params replace the flips and jitter
    instead of merging (MRAA's and TPSMM's configs list all of theirs)."""
    train_params = merge(PAPER_TRAIN, train_params)
    if train_avd_params is not None:
        train_avd_params = merge(PAPER_TRAIN_AVD, train_avd_params)

    def build(
        note: str,
        model: Mapping | None = None,
        train: Mapping | None = None,
        train_avd: Mapping | None = None,
        dataset: Mapping | None = None,
    ) -> dict:
        dataset = dict(dataset or {})
        augmentation = FLIPS_JITTER
        if replace_augmentation:
            augmentation = dataset.pop("augmentation_params", FLIPS_JITTER)
        spec = {
            "model": name,
            "note": note,
            "model_params": merge(model_params, model or {}),
            "train_params": merge(train_params, train or {}),
        }
        if train_avd_params is not None:
            spec["train_avd_params"] = merge(train_avd_params, train_avd or {})
        spec["dataset_params"] = merge(
            {
                "frame_shape": [256, 256, 3],
                "id_sampling": True,
                "augmentation_params": augmentation,
            },
            dataset,
        )
        return spec

    return build


SYNTHETIC_STEPS_PER_EPOCH = 30  # 24 training videos × 10 repeats / batch 8 (× 5 / batch 4)


def small_schedule(num_epochs: int) -> dict:
    """The paper's schedule shape compressed to `num_epochs`: the learning rate drops ×0.1
    at 60% and 90% of the epochs (BatchNorm's running statistics settle once it drops)."""
    return {
        "num_epochs": num_epochs,
        "epoch_milestones": [int(0.6 * num_epochs), int(0.9 * num_epochs)],
    }


# The shallow perceptual pyramid of the small presets: VGG19 at 64² and 32² only, its first two
# feature levels. Deeper levels and a 16² scale cost most of a step on a CPU and, offline
# (VGG19 randomly initialised), carry little signal; a pixel L1 term anchors colours.
LIGHT_PERCEPTUAL = {"scales": [1, 0.5], "loss_weights": {"perceptual": [10, 10, 0, 0, 0]}}
LIGHT = {"train_params": LIGHT_PERCEPTUAL}  # as a preset override


def synthetic_variant(
    base: dict,
    model: str,
    kind: str,
    num_epochs: int,
    extra: Mapping | None = None,
    batch_size: int = 8,
) -> dict:
    """A small synthetic preset with its own schedule (epochs of 30 steps) and batch size (8,
    or 4 with half the repeats: the same steps at about half the cost). Each model's schedule
    and batch are the cheapest that kept it below source copy on L1 and AKD on both synthetic
    kinds (README: the synthetic benchmark); bodies take longer than rigid heads."""
    if batch_size not in (4, 8):
        raise ValueError(f"synthetic presets train with batch 8 or 4, not {batch_size}")
    steps = num_epochs * SYNTHETIC_STEPS_PER_EPOCH
    train = small_schedule(num_epochs)
    if batch_size == 4:
        train |= {"batch_size": 4, "num_repeats": 5}
    return merge(
        base,
        merge(
            {
                "note": f"small {model} for the 64×64 synthetic {kind} (CPU, minutes; "
                f"{steps} steps of batch {batch_size})",
                "train_params": train,
            },
            extra or {},
        ),
    )
