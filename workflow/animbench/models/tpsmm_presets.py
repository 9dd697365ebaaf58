"""TPSMM's presets (models/tpsmm.py, Zhao & Zhang, CVPR'22): the authors'
config/{vox,taichi,ted,mgif}-*.yaml (notes/reference-models.md §3; frame_shape null there: the
datasets' own size) and the small TPSMM of the 64×64 synthetic benchmark. CPABMM's presets
(models/cpabmm_presets.py) are TPSMM's with the CPAB changes."""

from __future__ import annotations

from animbench.models.fomm_presets import SMALL_HOURGLASS, small_preset
from animbench.models.preset_helpers import (
    LIGHT,
    MGIF_DATASET_FULL,
    merge,
    preset_builder,
    synthetic_variant,
)

# the networks that have an optimiser (the authors' `lr_generator` for their two Adams: an
# Adam per network here)
TPSMM_NETWORKS = ("inpainting_network", "dense_motion_network", "kp_detector", "bg_predictor")

TPSMM_MODEL = {
    "common_params": {
        "num_tps": 10,
        "num_channels": 3,
        "bg": True,
        "multi_mask": True,
        "align_corners": True,
    },
    "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 3},
    "dense_motion_params": {
        "block_expansion": 64,
        "max_features": 1024,
        "num_blocks": 5,
        "scale_factor": 0.25,
    },
    "avd_network_params": {"id_bottle_size": 128, "pose_bottle_size": 128},
}


def _clipping(bg: bool) -> dict:
    # clip_grad_norm_(max_norm=10, norm_type=inf) on kp, dense motion (and bg) after backward
    nets = ["kp_detector", "dense_motion_network"] + (["bg_predictor"] if bg else [])
    return {name: {"max_norm": 10, "norm_type": "inf"} for name in nets}


# over PAPER_TRAIN and PAPER_TRAIN_AVD (preset_builder)
TPSMM_TRAIN = {
    "epoch_milestones": [70, 90],
    **{f"lr_{network}": 2.0e-4 for network in TPSMM_NETWORKS},
    "weight_decay": 1.0e-4,
    "batch_size": 28,
    "dropout_epoch": 35,
    "dropout_maxp": 0.3,
    "dropout_startp": 0.1,
    "dropout_inc_epoch": 10,
    "bg_start": 0,
    "clip_grad_norm": _clipping(bg=True),
    "loss_weights": {"equivariance_value": 10, "warp_loss": 10, "bg": 10},
}
TPSMM_TRAIN_AVD = {"num_epochs": 100, "num_repeats": 150, "epoch_milestones": [70, 90]}

_tpsmm_paper = preset_builder(
    "tpsmm", TPSMM_MODEL, TPSMM_TRAIN, TPSMM_TRAIN_AVD, replace_augmentation=True
)


def _tpsmm(note: str, bg: bool = True, **overrides: dict) -> dict:
    """A TPSMM preset; without a background predictor (`bg` False) nothing clips its gradient."""
    spec = _tpsmm_paper(note, **overrides)
    spec["model_params"]["common_params"]["bg"] = bg
    spec["train_params"]["clip_grad_norm"] = _clipping(bg)
    return spec


TPSMM_PRESETS: dict[str, dict] = {
    "tpsmm-vox256": _tpsmm(
        "TPSMM config/vox-256.yaml",
        train={"dropout_startp": 0.1, "dropout_maxp": 0.3, "bg_start": 10},
        train_avd={"num_epochs": 200, "num_repeats": 300, "epoch_milestones": [140, 180]},
    ),
    "tpsmm-taichi256": _tpsmm(
        "TPSMM config/taichi-256.yaml",
        train={"num_repeats": 150, "dropout_startp": 0.0, "dropout_maxp": 0.7},
    ),
    "tpsmm-ted384": _tpsmm(
        "TPSMM config/ted-384.yaml",
        train={"num_repeats": 150, "batch_size": 12, "dropout_startp": 0.0, "dropout_maxp": 0.5},
        train_avd={"num_epochs": 30, "num_repeats": 500, "epoch_milestones": [20, 25]},
        dataset={"frame_shape": [384, 384, 3]},
    ),
    "tpsmm-mgif256": _tpsmm(
        "TPSMM config/mgif-256.yaml (no background predictor)",
        bg=False,
        train={"num_repeats": 50, "dropout_startp": 0.2, "dropout_maxp": 0.5},
        train_avd={"num_repeats": 50},
        dataset=MGIF_DATASET_FULL,
    ),
}

# A small TPSMM for the 64×64 synthetic benchmark on a CPU, scheduled as fomm-synthetic:
# ResNet-18s at width 16, dense motion at ½ resolution (3 hourglass levels + 1 UpBlock for
# the 4 occlusion masks), a 16→128 inpainting network. The dropout and bg_start schedules
# are the taichi preset's shape compressed to 15 epochs.
TPSMM_SMALL = small_preset(
    _tpsmm,
    "TPSMM",
    {
        "kp_detector_params": {"width": 16},
        "bg_predictor_params": {"width": 16},
        "generator_params": {"block_expansion": 16, "max_features": 128},
        "dense_motion_params": SMALL_HOURGLASS,
        "avd_network_params": {"id_bottle_size": 64, "pose_bottle_size": 64},
    },
    TPSMM_NETWORKS,
    dropout_epoch=5,
    dropout_startp=0.0,
    dropout_maxp=0.3,
    dropout_inc_epoch=2,
    bg_start=0,
)
# the dropout of the TPS transforms ends after a third of the epochs, as at 15 epochs
TPSMM_PRESETS |= {
    f"tpsmm-{name}": synthetic_variant(
        TPSMM_SMALL,
        "TPSMM",
        kind,
        epochs,
        merge(LIGHT, {"train_params": {"dropout_epoch": epochs // 3, "dropout_inc_epoch": 1}}),
        batch_size=batch,
    )
    # faces at batch 4 lost the markers in 112 of 192 test frames (0 at batch 8); bodies
    # lost about as many at either batch (79, 71)
    for name, kind, epochs, batch in [
        ("synthetic", "faces", 6, 8),
        ("synthetic-body", "bodies", 9, 4),
    ]
}
