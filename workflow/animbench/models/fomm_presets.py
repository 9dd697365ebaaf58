"""FOMM's presets (models/fomm.py): the authors' config/{vox,taichi,mgif,nemo,bair}-256.yaml
(notes/reference-models.md), TED-talks at 384, Table 1's ablation and Table 3's Monkey-Net
rows, and the small FOMM of the 64×64 synthetic benchmark.

The small FOMM is where the synthetic presets of every family start: its network sizes, its
schedule and its dataset are shared here (SMALL_*, `small_preset`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from animbench.models.preset_helpers import (
    LIGHT,
    MGIF_DATASET,
    merge,
    preset_builder,
    synthetic_variant,
)

# common_params.align_corners: grid_sample's convention for every warp and the equivariance
# transform, the one the authors' checkpoints learned (DESIGN.md §1): FOMM (torch 1.0) and
# TPSMM/CPABMM (passed explicitly) True; MRAA (torch 1.4) and MTIA (torch 1.6) pass none and got
# torch's default since 1.3.0, False. A spec without the key (older checkpoints) means True.
FOMM_MODEL = {
    "common_params": {
        "num_kp": 10,
        "num_channels": 3,
        "estimate_jacobian": True,
        "align_corners": True,
    },
    "kp_detector_params": {
        "temperature": 0.1,
        "block_expansion": 32,
        "max_features": 1024,
        "scale_factor": 0.25,
        "num_blocks": 5,
    },
    "generator_params": {
        "block_expansion": 64,
        "max_features": 512,
        "num_down_blocks": 2,
        "num_bottleneck_blocks": 6,
        "estimate_occlusion_map": True,
        "dense_motion_params": {
            "block_expansion": 64,
            "max_features": 1024,
            "num_blocks": 5,
            "scale_factor": 0.25,
        },
    },
    "discriminator_params": {
        "scales": [1],
        "block_expansion": 32,
        "max_features": 512,
        "num_blocks": 4,
        "sn": True,
    },
}

# over PAPER_TRAIN (preset_builder)
FOMM_TRAIN = {
    "lr_generator": 2.0e-4,
    "lr_discriminator": 2.0e-4,
    "lr_kp_detector": 2.0e-4,
    "batch_size": 40,
    "loss_weights": {
        "generator_gan": 0,
        "discriminator_gan": 1,
        "feature_matching": [10, 10, 10, 10],
        "equivariance_value": 10,
        "equivariance_jacobian": 10,
    },
}

_fomm = preset_builder("fomm", FOMM_MODEL, FOMM_TRAIN)

FOMM_PRESETS: dict[str, dict] = {
    "fomm-vox256": _fomm("FOMM config/vox-256.yaml"),
    "fomm-taichi256": _fomm(
        "FOMM config/taichi-256.yaml",
        model={"discriminator_params": {"sn": False}},
        train={"num_repeats": 150, "batch_size": 30},
    ),
    "fomm-mgif256": _fomm(
        "FOMM config/mgif-256.yaml",
        model={"kp_detector_params": {"single_jacobian_map": True}},
        train={
            "num_repeats": 25,
            "batch_size": 36,
            "checkpoint_freq": 100,
            "loss_weights": {"generator_gan": 1},
        },
        dataset=MGIF_DATASET,
    ),
    "fomm-ted384": _fomm(
        "FOMM on TED-talks at 384 (no authors' config: the TaiChi schedule at 384, as in MRAA's "
        "comparison)",
        model={"discriminator_params": {"sn": False}},
        train={"num_repeats": 150, "batch_size": 12},
        dataset={"frame_shape": [384, 384, 3]},
    ),
    "fomm-nemo256": _fomm("FOMM config/nemo-256.yaml", train={"num_repeats": 8}),
    "fomm-bair256": _fomm(
        "FOMM config/bair-256.yaml", train={"num_repeats": 20}, dataset={"id_sampling": False}
    ),
}

# The small networks: narrower and shallower hourglasses at ½ resolution. MRAA's and TPSMM's
# small presets use the same sizes for their counterparts.
SMALL_HOURGLASS = {"block_expansion": 16, "max_features": 128, "num_blocks": 3, "scale_factor": 0.5}
SMALL_DETECTOR = {**SMALL_HOURGLASS, "pad": 3}
SMALL_GENERATOR = {"block_expansion": 16, "max_features": 128, "num_bottleneck_blocks": 2}
# Offline, VGG19 is randomly initialised: its deep layers cost most of the step and carry little
# signal, and a pixel L1 term anchors colours. Paper presets keep perceptual [10]*5 and l1 0.
SMALL_LOSS_WEIGHTS = {"perceptual": [10, 10, 10, 0, 0], "l1": 10}
SMALL_DATASET = {"frame_shape": [64, 64, 3], "id_sampling": False}

# The small FOMM the synthetic presets of every family start from (CPU, 64×64 frames): same
# architecture family, narrower and shallower, 15 epochs of 30 steps; each synthetic preset
# sets its own schedule.
FOMM_SMALL = _fomm(
    "small FOMM for the 64×64 synthetic benchmark (CPU, minutes; 450 steps)",
    model={
        "kp_detector_params": SMALL_DETECTOR,
        "generator_params": {**SMALL_GENERATOR, "dense_motion_params": SMALL_HOURGLASS},
    },
    train={
        # the paper's schedule shape: decay ×0.1 at 60% and 90% of the epochs (BatchNorm's
        # running statistics only settle once the learning rate drops)
        "num_epochs": 15,
        "num_repeats": 10,
        "epoch_milestones": [9, 13],
        "batch_size": 8,
        "max_steps": None,
        "checkpoint_freq": 1,
        "lr_generator": 1.0e-3,
        "lr_kp_detector": 1.0e-3,
        "scales": [1, 0.5, 0.25],  # VGG19 needs ≥ 16 px: 64 × 0.125 is too small
        "loss_weights": SMALL_LOSS_WEIGHTS,
    },
    dataset=SMALL_DATASET,
)


def small_preset(
    build: Callable[..., dict], name: str, model: dict, networks: Iterable[str], **train: object
) -> dict:
    """Family `name`'s small preset from its preset builder `build`: network sizes `model`,
    sized and scheduled as FOMM_SMALL (its schedule, batch, pyramid, loss weights and 64×64
    frames; a checkpoint per epoch, lr 1e-3 for each of `networks`, then `train`), and a
    3-epoch second (AVD) stage."""
    shared = ("num_epochs", "num_repeats", "epoch_milestones", "batch_size", "scales")
    return build(
        f"small {name} for the 64×64 synthetic benchmark (CPU, minutes; 450 steps)",
        model=model,
        train={
            **{key: FOMM_SMALL["train_params"][key] for key in shared},
            "checkpoint_freq": 1,
            **{f"lr_{network}": 1.0e-3 for network in networks},
            "loss_weights": SMALL_LOSS_WEIGHTS,
            **train,
        },
        train_avd={"num_epochs": 3, "num_repeats": 10, "epoch_milestones": [2], "batch_size": 8},
        dataset=SMALL_DATASET,
    )


# FOMM's bodies keep the earlier small preset's three-scale pyramid and 750 steps (the longest
# schedule here: articulated bodies are the harder kind; not shortened further without a test).
FOMM_PRESETS["fomm-synthetic"] = synthetic_variant(
    FOMM_SMALL, "FOMM", "faces", 8, LIGHT, batch_size=4
)
FOMM_PRESETS["fomm-synthetic-body"] = synthetic_variant(FOMM_SMALL, "FOMM", "bodies", 25)


def _switches(note: str, jacobian: bool, occlusion: bool, scales: list, eq_jacobian: float) -> dict:
    """A note and the overrides of FOMM's ablation switches: Jacobians (J_k = I otherwise,
    Eq. 4), occlusion map (O = 1 otherwise, Eq. 8), perceptual-loss scales, the
    Jacobian-equivariance weight."""
    return {
        "note": note,
        "model_params": {
            "common_params": {"estimate_jacobian": jacobian},
            "generator_params": {"estimate_occlusion_map": occlusion},
        },
        "train_params": {
            "scales": scales,
            "loss_weights": {"equivariance_jacobian": eq_jacobian},
        },
    }


# FOMM's ablation, Table 1 (Tai-Chi-HD only), Sec. 4 "Ablation Study": each row adds one switch.
_PYRAMID = [1, 0.5, 0.25, 0.125]
_TABLE1 = {
    "baseline": ("Baseline: no occlusion, no Jacobians, L_rec at full scale", 0, 0, [1], 0),
    "pyr": ("Pyr.: Baseline + the pyramid loss", 0, 0, _PYRAMID, 0),
    "pyr-occ": ("Pyr.+O: Pyr. + the occlusion-aware generator", 0, 1, _PYRAMID, 0),
    "jac-no-eq": ("Jac. w/o Eq. (12): Jacobians, no Jacobian equivariance", 1, 1, _PYRAMID, 0),
    "full": ("Full: Jacobians and their equivariance (= fomm-taichi256)", 1, 1, _PYRAMID, 10),
}
FOMM_PRESETS |= {
    f"fomm-taichi256-{name}": merge(
        FOMM_PRESETS["fomm-taichi256"],
        _switches(
            f"FOMM Table 1 (Tai-Chi-HD ablation) row {row}", bool(jac), bool(occ), scales, eq
        ),
    )
    for name, (row, jac, occ, scales, eq) in _TABLE1.items()
}

# Monkey-Net (Table 3's comparison, 4 datasets) as FOMM's zeroth-order motion model (J_k = I:
# "we get the motion model of Monkey-Net", Sec. 3.1); FOMM's occlusion-aware generator,
# pyramid loss and keypoint equivariance are kept, so on taichi256 it equals Pyr.+O.
FOMM_PRESETS |= {
    f"fomm-{dataset}-monkeynet": merge(
        FOMM_PRESETS[f"fomm-{dataset}"],
        _switches(
            f"FOMM Table 3 row Monkey-Net on {dataset}, approximated by FOMM's zeroth-order "
            "case (no Jacobians); not the authors' Monkey-Net architecture",
            False,
            True,
            _PYRAMID,
            0,
        ),
    )
    for dataset in ["taichi256", "vox256", "nemo256", "bair256"]
}
