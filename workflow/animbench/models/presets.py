"""Paper hyperparameters per (model, dataset), as the authors' configuration files give them
(notes/reference-models.md). config.yaml selects a preset per experiment and may override any
key; overrides merge recursively.

A preset holds `model` (the registry name), `model_params` (constructor arguments),
`train_params` (schedule, losses) and `dataset_params` (frame size, sampling, augmentation).
"""

from __future__ import annotations

from animbench.mappings import merge

# common_params.align_corners: grid_sample's convention for every warp and the equivariance
# transform, the one the authors' checkpoints learned (DESIGN.md §1): FOMM (torch 1.0) and
# TPSMM/CPABMM (passed explicitly) True; MRAA (torch 1.4) and MTIA (torch 1.6) pass none and got
# torch's default since 1.3.0, False. A spec without the key (older checkpoints) means True.
_FOMM_MODEL = {
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

_FOMM_TRAIN = {
    "num_epochs": 100,
    "num_repeats": 75,
    "epoch_milestones": [60, 90],
    "lr_generator": 2.0e-4,
    "lr_discriminator": 2.0e-4,
    "lr_kp_detector": 2.0e-4,
    "batch_size": 40,
    "scales": [1, 0.5, 0.25, 0.125],
    "checkpoint_freq": 50,
    "max_steps": None,  # optional cap on optimiser steps (small configurations only)
    "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
    "loss_weights": {
        "generator_gan": 0,
        "discriminator_gan": 1,
        "feature_matching": [10, 10, 10, 10],
        "perceptual": [10, 10, 10, 10, 10],
        "equivariance_value": 10,
        "equivariance_jacobian": 10,
        "l1": 0,  # pixel L1, not a term of the papers; only small offline presets use it
    },
}

_FLIPS_JITTER = {
    "flip_param": {"horizontal_flip": True, "time_flip": True},
    "jitter_param": {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.1},
}


def _fomm(note: str, model=None, train=None, dataset=None) -> dict:
    return {
        "model": "fomm",
        "note": note,
        "model_params": merge(_FOMM_MODEL, model or {}),
        "train_params": merge(_FOMM_TRAIN, train or {}),
        "dataset_params": merge(
            {
                "frame_shape": [256, 256, 3],
                "id_sampling": True,
                "augmentation_params": _FLIPS_JITTER,
            },
            dataset or {},
        ),
    }


PRESETS: dict[str, dict] = {
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
        dataset={
            "id_sampling": False,
            "augmentation_params": {
                "crop_param": {"size": [256, 256]},
                "resize_param": {"ratio": [0.9, 1.1]},
                "jitter_param": {"hue": 0.5},
            },
        },
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

# The small FOMM the synthetic presets of every family start from (CPU, 64×64 frames): same
# architecture family, narrower and shallower, 15 epochs of 30 steps; each synthetic preset
# below sets its own schedule.
_FOMM_SMALL = _fomm(
    "small FOMM for the 64×64 synthetic benchmark (CPU, minutes; 450 steps)",
    model={
        "kp_detector_params": {
            "block_expansion": 16,
            "max_features": 128,
            "num_blocks": 3,
            "scale_factor": 0.5,
            "pad": 3,
        },
        "generator_params": {
            "block_expansion": 16,
            "max_features": 128,
            "num_bottleneck_blocks": 2,
            "dense_motion_params": {
                "block_expansion": 16,
                "max_features": 128,
                "num_blocks": 3,
                "scale_factor": 0.5,
            },
        },
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
        "loss_weights": {
            # Offline, VGG19 is randomly initialised: its deep layers cost most of the step
            # and carry little signal, and a pixel L1 term anchors colours. Paper presets
            # keep perceptual [10]*5 and l1 0.
            "perceptual": [10, 10, 10, 0, 0],
            "l1": 10,
        },
    },
    dataset={"frame_shape": [64, 64, 3], "id_sampling": False},
)

SYNTHETIC_STEPS_PER_EPOCH = 30  # 24 training videos × 10 repeats / batch 8


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


def synthetic_variant(base: dict, model: str, kind: str, num_epochs: int, extra=None) -> dict:
    """A small synthetic preset with its own schedule (epochs of 30 steps). Each model's
    schedule is the shortest that keeps it clearly below source copy on L1 and AKD on both
    synthetic kinds (README: the synthetic benchmark); bodies take longer than rigid heads."""
    steps = num_epochs * SYNTHETIC_STEPS_PER_EPOCH
    return merge(
        base,
        merge(
            {
                "note": f"small {model} for the 64×64 synthetic {kind} (CPU, minutes; "
                f"{steps} steps)",
                "train_params": small_schedule(num_epochs),
            },
            extra or {},
        ),
    )


# FOMM's bodies keep the earlier small preset's three-scale pyramid and 750 steps (the longest
# schedule here: articulated bodies are the harder kind; not shortened further without a test).
PRESETS["fomm-synthetic"] = synthetic_variant(
    _FOMM_SMALL, "FOMM", "faces", 8, {"train_params": LIGHT_PERCEPTUAL}
)
PRESETS["fomm-synthetic-body"] = synthetic_variant(_FOMM_SMALL, "FOMM", "bodies", 25)


def _fomm_switches(jacobian: bool, occlusion: bool, scales: list, equivariance_jacobian: float):
    """Overrides for FOMM's ablation switches: Jacobians (J_k = I otherwise, Eq. 4), occlusion
    map (O = 1 otherwise, Eq. 8), perceptual-loss scales, the Jacobian-equivariance weight."""
    return {
        "model_params": {
            "common_params": {"estimate_jacobian": jacobian},
            "generator_params": {"estimate_occlusion_map": occlusion},
        },
        "train_params": {
            "scales": scales,
            "loss_weights": {"equivariance_jacobian": equivariance_jacobian},
        },
    }


# FOMM's ablation, Table 1 (Tai-Chi-HD only), Sec. 4 "Ablation Study": each row adds one switch.
_PYRAMID = [1, 0.5, 0.25, 0.125]
for _name, _row, _switches in [
    ("baseline", "Baseline: no occlusion, no Jacobians, L_rec at full scale", (0, 0, [1], 0)),
    ("pyr", "Pyr.: Baseline + the pyramid loss", (0, 0, _PYRAMID, 0)),
    ("pyr-occ", "Pyr.+O: Pyr. + the occlusion-aware generator", (0, 1, _PYRAMID, 0)),
    ("jac-no-eq", "Jac. w/o Eq. (12): Jacobians, no Jacobian equivariance", (1, 1, _PYRAMID, 0)),
    ("full", "Full: Jacobians and their equivariance (= fomm-taichi256)", (1, 1, _PYRAMID, 10)),
]:
    _jac, _occ, _scales, _eq = _switches
    PRESETS[f"fomm-taichi256-{_name}"] = merge(
        PRESETS["fomm-taichi256"],
        {
            "note": f"FOMM Table 1 (Tai-Chi-HD ablation) row {_row}",
            **_fomm_switches(bool(_jac), bool(_occ), _scales, _eq),
        },
    )

# Monkey-Net (Table 3's comparison, 4 datasets) as FOMM's zeroth-order motion model (J_k = I:
# "we get the motion model of Monkey-Net", Sec. 3.1); FOMM's occlusion-aware generator,
# pyramid loss and keypoint equivariance are kept, so on taichi256 it equals Pyr.+O.
for _dataset in ["taichi256", "vox256", "nemo256", "bair256"]:
    PRESETS[f"fomm-{_dataset}-monkeynet"] = merge(
        PRESETS[f"fomm-{_dataset}"],
        {
            "note": f"FOMM Table 3 row Monkey-Net on {_dataset}, approximated by FOMM's "
            "zeroth-order case (no Jacobians); not the authors' Monkey-Net architecture",
            **_fomm_switches(False, True, _PYRAMID, 0),
        },
    )

# --- MRAA (Siarohin et al., CVPR'21): the authors' config/{vox256,taichi256,ted384,mgif256}.yaml

_MRAA_MODEL = {
    "common_params": {
        "num_regions": 10,
        "num_channels": 3,
        "estimate_affine": True,
        "revert_axis_swap": True,
        "align_corners": False,  # torch 1.4.0's grid_sample default
    },
    "region_predictor_params": {
        "temperature": 0.1,
        "block_expansion": 32,
        "max_features": 1024,
        "scale_factor": 0.25,
        "num_blocks": 5,
        "pca_based": True,
        "pad": 0,  # vox256.yaml omits it: the class default 3
        "fast_svd": False,
    },
    "generator_params": {
        "block_expansion": 64,
        "max_features": 512,
        "num_down_blocks": 2,
        "num_bottleneck_blocks": 6,
        "skips": True,
        "pixelwise_flow_predictor_params": {
            "block_expansion": 64,
            "max_features": 1024,
            "num_blocks": 5,
            "scale_factor": 0.25,
            "use_deformed_source": True,
            "use_covar_heatmap": True,
            "estimate_occlusion_map": True,
        },
    },
    "bg_predictor_params": {
        "block_expansion": 32,
        "max_features": 1024,
        "num_blocks": 5,
        "bg_type": "affine",
    },
    "avd_network_params": {"id_bottle_size": 64, "pose_bottle_size": 64},
}

_MRAA_TRAIN = {
    "num_epochs": 100,
    "num_repeats": 75,
    "epoch_milestones": [60, 90],
    # the authors' single `lr` for one Adam over the three networks (an Adam per network here)
    "lr_generator": 2.0e-4,
    "lr_region_predictor": 2.0e-4,
    "lr_bg_predictor": 2.0e-4,
    "batch_size": 14,
    "scales": [1, 0.5, 0.25, 0.125],
    "checkpoint_freq": 50,
    "max_steps": None,
    "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
    "loss_weights": {
        "perceptual": [10, 10, 10, 10, 10],
        "equivariance_shift": 10,
        "equivariance_affine": 10,
        "l1": 0,
    },
}

# second stage (animation via disentanglement), region predictor frozen
_MRAA_TRAIN_AVD = {
    "num_epochs": 30,
    "num_repeats": 150,
    "epoch_milestones": [20, 25],
    "lr": 1.0e-3,
    "batch_size": 256,
    "checkpoint_freq": 50,
    "lambda_shift": 1,
    "lambda_affine": 1,
    "random_scale": 0.25,
}


def _mraa(note: str, model=None, train=None, train_avd=None, dataset=None) -> dict:
    dataset = dict(dataset or {})
    augmentation = dataset.pop("augmentation_params", _FLIPS_JITTER)  # replaced, not merged
    return {
        "model": "mraa",
        "note": note,
        "model_params": merge(_MRAA_MODEL, model or {}),
        "train_params": merge(_MRAA_TRAIN, train or {}),
        "train_avd_params": merge(_MRAA_TRAIN_AVD, train_avd or {}),
        "dataset_params": merge(
            {
                "frame_shape": [256, 256, 3],
                "id_sampling": True,
                "augmentation_params": augmentation,
            },
            dataset,
        ),
    }


PRESETS["mraa-vox256"] = _mraa(
    "MRAA config/vox256.yaml",
    model={"region_predictor_params": {"pad": 3}},
    train_avd={"num_repeats": 2000},
)
PRESETS["mraa-taichi256"] = _mraa("MRAA config/taichi256.yaml", train={"num_repeats": 150})
PRESETS["mraa-ted384"] = _mraa(
    "MRAA config/ted384.yaml",
    train={"num_repeats": 150, "batch_size": 6},
    dataset={"frame_shape": [384, 384, 3]},
)
PRESETS["mraa-mgif256"] = _mraa(
    "MRAA config/mgif256.yaml",
    model={"bg_predictor_params": {"bg_type": "zero"}},
    train={"num_repeats": 50},
    train_avd={"num_repeats": 50, "epoch_milestones": [60, 90]},
    dataset={
        "id_sampling": False,
        "augmentation_params": {
            "flip_param": {"horizontal_flip": True, "time_flip": True},
            "crop_param": {"size": [256, 256]},
            "resize_param": {"ratio": [0.9, 1.1]},
            "jitter_param": {"hue": 0.5},
        },
    },
)
# A small MRAA for the 64×64 synthetic benchmark on a CPU, sized and scheduled as fomm-synthetic.
_MRAA_SMALL = _mraa(
    "small MRAA for the 64×64 synthetic benchmark (CPU, minutes; 450 steps)",
    model={
        "region_predictor_params": {
            "block_expansion": 16,
            "max_features": 128,
            "num_blocks": 3,
            "scale_factor": 0.5,
            "pad": 3,
        },
        "generator_params": {
            "block_expansion": 16,
            "max_features": 128,
            "num_bottleneck_blocks": 2,
            "pixelwise_flow_predictor_params": {
                "block_expansion": 16,
                "max_features": 128,
                "num_blocks": 3,
                "scale_factor": 0.5,
            },
        },
        "bg_predictor_params": {"block_expansion": 16, "max_features": 128, "num_blocks": 3},
    },
    train={
        key: _FOMM_SMALL["train_params"][key]
        for key in ("num_epochs", "num_repeats", "epoch_milestones", "batch_size", "scales")
    }
    | {
        "checkpoint_freq": 1,
        "lr_generator": 1.0e-3,
        "lr_region_predictor": 1.0e-3,
        "lr_bg_predictor": 1.0e-3,
        "loss_weights": {"perceptual": [10, 10, 10, 0, 0], "l1": 10},  # as fomm-synthetic
    },
    train_avd={"num_epochs": 3, "num_repeats": 10, "epoch_milestones": [2], "batch_size": 8},
    dataset={"frame_shape": [64, 64, 3], "id_sampling": False},
)
_light = {"train_params": LIGHT_PERCEPTUAL}
PRESETS["mraa-synthetic"] = synthetic_variant(_MRAA_SMALL, "MRAA", "faces", 5, _light)
PRESETS["mraa-synthetic-body"] = synthetic_variant(_MRAA_SMALL, "MRAA", "bodies", 8, _light)


# --- MTIA (Tao et al., ECCV'22): the authors' config/{voxceleb1,taichi256,ted384,mgif256}.yaml
# FOMM's generator (+ warped skips, + an affine background predictor on TaiChi) driven by a
# transformer keypoint detector (models/mtia.py). Batches are the global batch of 8 GPUs.
_MTIA_MODEL = {
    "common_params": {
        "num_kp": 10,
        "num_channels": 3,
        "estimate_jacobian": True,
        "align_corners": False,  # torch 1.6.0's grid_sample default
    },
    "kp_detector_params": {
        "image_size": [256, 256],
        "backbone": "hrnet_w32",
        "pretrained": False,
        "patch_size": 4,
        "dim": 192,
        "depth": 12,
        "heads": 8,
        "mlp_ratio": 3,
        "position_encoding": True,
    },
    "generator_params": merge(_FOMM_MODEL["generator_params"], {"skips": True}),
}

_MTIA_TRAIN = merge(
    _FOMM_TRAIN,
    {
        "num_repeats": 150,
        "batch_size": 64,
        "checkpoint_freq": 100,
        "lr_bg_predictor": 2.0e-4,
        # the reference clips the keypoint detector's gradient L2 norm to 1
        "clip_grad_norm": {"kp_detector": 1.0},
        "loss_weights": {"bg_fg_mask": 0, "fg_mask_concentration": 0},
    },
)


def _mtia(note: str, model=None, train=None, dataset=None) -> dict:
    return {
        "model": "mtia",
        "note": note,
        "model_params": merge(_MTIA_MODEL, model or {}),
        "train_params": merge(_MTIA_TRAIN, train or {}),
        "dataset_params": merge(
            {
                "frame_shape": [256, 256, 3],
                "id_sampling": True,
                "augmentation_params": _FLIPS_JITTER,
            },
            dataset or {},
        ),
    }


PRESETS.update(
    {
        "mtia-vox256": _mtia("MTIA config/voxceleb1.yaml"),
        "mtia-taichi256": _mtia(
            "MTIA config/taichi256.yaml (affine background, mask losses, HRNet ImageNet init)",
            model={
                "kp_detector_params": {"pretrained": True},
                "bg_predictor_params": {
                    "block_expansion": 32,
                    "max_features": 1024,
                    "num_blocks": 5,
                    "bg_type": "affine",
                },
            },
            train={
                "num_repeats": 250,
                "loss_weights": {"bg_fg_mask": 1, "fg_mask_concentration": 1},
            },
            dataset={
                "augmentation_params": {
                    "flip_param": {"horizontal_flip": False, "time_flip": True},
                    "rotation_param": {"degrees": 20},
                }
            },
        ),
        "mtia-ted384": _mtia(
            "MTIA config/ted384.yaml",
            model={
                "kp_detector_params": {"image_size": [384, 384]},
                "generator_params": {"skips": False},
            },
            train={"batch_size": 56},
            dataset={
                "frame_shape": [384, 384, 3],
                "augmentation_params": {"rotation_param": {"degrees": 20}},
            },
        ),
        "mtia-mgif256": _mtia(
            "MTIA config/mgif256.yaml",
            model={"generator_params": {"skips": False}},
            train={"num_repeats": 50},
            dataset={
                "id_sampling": False,
                "augmentation_params": {
                    "crop_param": {"size": [256, 256]},
                    "resize_param": {"ratio": [0.9, 1.1]},
                    "jitter_param": {"hue": 0.5},
                },
            },
        ),
    }
)

# MTIA ablations on TaiChi (Tables 4-6): position encoding, CNN backbone, transformer depth
for _name, _note, _kp in [
    ("nope", "without position encoding (Table 4)", {"position_encoding": False}),
    ("stem", "Stem-net backbone (Table 5)", {"backbone": "stem"}),
    ("hrw48", "HRNet-W48 backbone (Table 5)", {"backbone": "hrnet_w48"}),
    ("4layers", "4 transformer layers (Table 6)", {"depth": 4}),
    ("8layers", "8 transformer layers (Table 6)", {"depth": 8}),
]:
    PRESETS[f"mtia-taichi256-{_name}"] = merge(
        PRESETS["mtia-taichi256"],
        {"note": f"MTIA taichi256 {_note}", "model_params": {"kp_detector_params": _kp}},
    )

# A small MTIA for the 64×64 synthetic benchmark on a CPU: fomm-synthetic's generator and
# schedule, a Stem backbone and a 2-layer, 96-d transformer over 2×2 patches (64 image tokens).
_MTIA_SMALL = merge(
    _FOMM_SMALL,
    {
        "model": "mtia",
        "note": "small MTIA for the 64×64 synthetic benchmark (CPU, minutes; 450 steps)",
        "model_params": {
            "common_params": {"align_corners": False},  # MTIA's, not the FOMM base's
            "generator_params": {"skips": True},
        },
        "train_params": {
            "lr_bg_predictor": 1.0e-3,
            "clip_grad_norm": {"kp_detector": 1.0},
            "loss_weights": {"bg_fg_mask": 0, "fg_mask_concentration": 0},
        },
    },
)
_MTIA_SMALL["model_params"].pop("discriminator_params")  # no GAN: not built
_MTIA_SMALL["model_params"]["kp_detector_params"] = merge(  # not FOMM's keys
    _MTIA_MODEL["kp_detector_params"],
    {
        "image_size": [64, 64],
        "backbone": "stem",
        "patch_size": 2,
        "dim": 96,
        "depth": 2,
        "heads": 4,
    },
)
# The transformer's keypoints need a gentler learning rate than the CNNs': at 1e-3 they
# collapse onto a few points within ~100 steps and MTIA's L1 stays near source copy (README).
_mtia_lr = merge(_light, {"train_params": {"lr_kp_detector": 2.0e-4}})
PRESETS["mtia-synthetic"] = synthetic_variant(_MTIA_SMALL, "MTIA", "faces", 15, _mtia_lr)
# bodies keep the three-scale pyramid, as FOMM's: with two, MTIA's body AKD (5.89) was above
# source copy's (5.56); with three, 4.32 at the same 360 steps
PRESETS["mtia-synthetic-body"] = synthetic_variant(
    _MTIA_SMALL, "MTIA", "bodies", 12, {"train_params": {"lr_kp_detector": 2.0e-4}}
)


# --- TPSMM (Zhao & Zhang, CVPR'22): the authors' config/{vox,taichi,ted,mgif}-*.yaml
# (notes/reference-models.md §3; frame_shape null there: the datasets' own size)
_TPSMM_MODEL = {
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


def _tpsmm_clipping(bg: bool) -> dict:
    # clip_grad_norm_(max_norm=10, norm_type=inf) on kp, dense motion (and bg) after backward
    nets = ["kp_detector", "dense_motion_network"] + (["bg_predictor"] if bg else [])
    return {name: {"max_norm": 10, "norm_type": "inf"} for name in nets}


_TPSMM_TRAIN = {
    "num_epochs": 100,
    "num_repeats": 75,
    "epoch_milestones": [70, 90],
    # the authors' `lr_generator` for their two Adams (an Adam per network here)
    "lr_inpainting_network": 2.0e-4,
    "lr_dense_motion_network": 2.0e-4,
    "lr_kp_detector": 2.0e-4,
    "lr_bg_predictor": 2.0e-4,
    "weight_decay": 1.0e-4,
    "batch_size": 28,
    "scales": [1, 0.5, 0.25, 0.125],
    "checkpoint_freq": 50,
    "max_steps": None,
    "dropout_epoch": 35,
    "dropout_maxp": 0.3,
    "dropout_startp": 0.1,
    "dropout_inc_epoch": 10,
    "bg_start": 0,
    "clip_grad_norm": _tpsmm_clipping(bg=True),
    "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
    "loss_weights": {
        "perceptual": [10, 10, 10, 10, 10],
        "equivariance_value": 10,
        "warp_loss": 10,
        "bg": 10,
        "l1": 0,
    },
}

_TPSMM_TRAIN_AVD = {
    "num_epochs": 100,
    "num_repeats": 150,
    "epoch_milestones": [70, 90],
    "lr": 1.0e-3,
    "batch_size": 256,
    "checkpoint_freq": 50,
    "lambda_shift": 1,
    "random_scale": 0.25,
}


def _tpsmm(note: str, bg=True, model=None, train=None, train_avd=None, dataset=None) -> dict:
    dataset = dict(dataset or {})
    augmentation = dataset.pop("augmentation_params", _FLIPS_JITTER)  # replaced, not merged
    model_params = merge(_TPSMM_MODEL, model or {})
    model_params["common_params"]["bg"] = bg
    train_params = merge(_TPSMM_TRAIN, train or {})
    train_params["clip_grad_norm"] = _tpsmm_clipping(bg)  # no bg_predictor to clip without bg
    return {
        "model": "tpsmm",
        "note": note,
        "model_params": model_params,
        "train_params": train_params,
        "train_avd_params": merge(_TPSMM_TRAIN_AVD, train_avd or {}),
        "dataset_params": merge(
            {
                "frame_shape": [256, 256, 3],
                "id_sampling": True,
                "augmentation_params": augmentation,
            },
            dataset,
        ),
    }


PRESETS["tpsmm-vox256"] = _tpsmm(
    "TPSMM config/vox-256.yaml",
    train={"dropout_startp": 0.1, "dropout_maxp": 0.3, "bg_start": 10},
    train_avd={"num_epochs": 200, "num_repeats": 300, "epoch_milestones": [140, 180]},
)
PRESETS["tpsmm-taichi256"] = _tpsmm(
    "TPSMM config/taichi-256.yaml",
    train={"num_repeats": 150, "dropout_startp": 0.0, "dropout_maxp": 0.7},
)
PRESETS["tpsmm-ted384"] = _tpsmm(
    "TPSMM config/ted-384.yaml",
    train={"num_repeats": 150, "batch_size": 12, "dropout_startp": 0.0, "dropout_maxp": 0.5},
    train_avd={"num_epochs": 30, "num_repeats": 500, "epoch_milestones": [20, 25]},
    dataset={"frame_shape": [384, 384, 3]},
)
PRESETS["tpsmm-mgif256"] = _tpsmm(
    "TPSMM config/mgif-256.yaml (no background predictor)",
    bg=False,
    train={"num_repeats": 50, "dropout_startp": 0.2, "dropout_maxp": 0.5},
    train_avd={"num_repeats": 50},
    dataset={
        "id_sampling": False,
        "augmentation_params": {
            "flip_param": {"horizontal_flip": True, "time_flip": True},
            "crop_param": {"size": [256, 256]},
            "resize_param": {"ratio": [0.9, 1.1]},
            "jitter_param": {"hue": 0.5},
        },
    },
)

# A small TPSMM for the 64×64 synthetic benchmark on a CPU, scheduled as fomm-synthetic:
# ResNet-18s at width 16, dense motion at ½ resolution (3 hourglass levels + 1 UpBlock for
# the 4 occlusion masks), a 16→128 inpainting network. The dropout and bg_start schedules
# are the taichi preset's shape compressed to 15 epochs.
_TPSMM_SMALL = _tpsmm(
    "small TPSMM for the 64×64 synthetic benchmark (CPU, minutes; 450 steps)",
    model={
        "kp_detector_params": {"width": 16},
        "bg_predictor_params": {"width": 16},
        "generator_params": {"block_expansion": 16, "max_features": 128},
        "dense_motion_params": {
            "block_expansion": 16,
            "max_features": 128,
            "num_blocks": 3,
            "scale_factor": 0.5,
        },
        "avd_network_params": {"id_bottle_size": 64, "pose_bottle_size": 64},
    },
    train={
        key: _FOMM_SMALL["train_params"][key]
        for key in ("num_epochs", "num_repeats", "epoch_milestones", "batch_size", "scales")
    }
    | {
        "checkpoint_freq": 1,
        "lr_inpainting_network": 1.0e-3,
        "lr_dense_motion_network": 1.0e-3,
        "lr_kp_detector": 1.0e-3,
        "lr_bg_predictor": 1.0e-3,
        "dropout_epoch": 5,
        "dropout_startp": 0.0,
        "dropout_maxp": 0.3,
        "dropout_inc_epoch": 2,
        "bg_start": 0,
        "loss_weights": {"perceptual": [10, 10, 10, 0, 0], "l1": 10},  # as fomm-synthetic
    },
    train_avd={"num_epochs": 3, "num_repeats": 10, "epoch_milestones": [2], "batch_size": 8},
    dataset={"frame_shape": [64, 64, 3], "id_sampling": False},
)
for _name, _kind, _epochs in [("synthetic", "faces", 6), ("synthetic-body", "bodies", 9)]:
    # the dropout of the TPS transforms ends after a third of the epochs, as at 15 epochs
    _dropout = {"dropout_epoch": _epochs // 3, "dropout_inc_epoch": 1}
    PRESETS[f"tpsmm-{_name}"] = synthetic_variant(
        _TPSMM_SMALL, "TPSMM", _kind, _epochs, merge(_light, {"train_params": _dropout})
    )


# --- CPABMM (Wang et al., AAAI'24): TPSMM with CPAB transforms, the authors'
# config/{taichi-256,ted-384,mgif-256}.yaml (notes/reference-models.md §5): TPSMM's settings
# but lr 1e-4 (ted 2e-4), batch 8, taichi repeats 300, checkpoint_freq 25 (taichi, ted), the θ
# fit's max_iter, DINO's structure alignment loss (λ_s 0.1, hard-coded in their code) and the
# SAM keypoint semantic loss L_KS (λ_k 1 as `sam` in their configs; its code is unpublished,
# train/semantic_losses.py). Their AVD network call is broken (num_tps vs num_cpab): the AVD
# stage here is TPSMM's, with their train_avd_params.
_CPABMM_DENSE_MOTION = {
    "max_iter": 100,  # Adam steps of each local fit; the global fit runs int(1.5 · max_iter)
    "global_iter_factor": 1.5,
    "use_global_cpab": True,
    "local_tessellation": 4,
    "global_tessellation": 6,
    "fit_lr": 1.0e-2,
}
_CPABMM_LOSSES = {
    "loss_weights": {"structure": 0.1, "keypoint_semantic": 1},
    # StructureAlignmentLoss / KeypointSemanticLoss arguments (train/semantic_losses.py)
    "structure_params": {"size": 224, "max_size": 480},
    "keypoint_semantic_params": {"variant": "vit_b", "prompts": "joint", "reduction": "sum"},
}


_TPSMM_NETWORKS = ("inpainting_network", "dense_motion_network", "kp_detector", "bg_predictor")


def _as_cpabmm(preset: dict, note: str, max_iter: int, lr: float = 1.0e-4, **train) -> dict:
    """A TPSMM preset turned into CPABMM's: num_cpab, the CPAB dense motion, the two losses."""
    spec = merge(
        preset,
        {
            "model": "cpabmm",
            "note": note,
            "model_params": {"dense_motion_params": {**_CPABMM_DENSE_MOTION, "max_iter": max_iter}},
            "train_params": merge(
                _CPABMM_LOSSES,
                {
                    **{f"lr_{n}": lr for n in _TPSMM_NETWORKS},
                    "batch_size": 8,
                    **train,
                },
            ),
        },
    )
    common = spec["model_params"]["common_params"]
    common["num_cpab"] = common.pop("num_tps")
    return spec


PRESETS["cpabmm-vox256"] = _as_cpabmm(
    PRESETS["tpsmm-vox256"],
    "CPABMM on VoxCeleb: the authors' config/vox-256.yaml is broken (it still says num_tps and "
    "crashes), so TPSMM's vox settings (repeats 75, dropout 0.1→0.3, bg_start 10) with the "
    "CPAB changes of their other configs (lr 1e-4, batch 8, max_iter 100, the two losses)",
    max_iter=100,
)
PRESETS["cpabmm-taichi256"] = _as_cpabmm(
    PRESETS["tpsmm-taichi256"],
    "CPABMM config/taichi-256.yaml (full model, Table 2 last row)",
    max_iter=200,
    num_repeats=300,
    checkpoint_freq=25,
)
PRESETS["cpabmm-ted384"] = _as_cpabmm(
    PRESETS["tpsmm-ted384"],
    "CPABMM config/ted-384.yaml",
    max_iter=100,
    lr=2.0e-4,
    checkpoint_freq=25,
)
PRESETS["cpabmm-mgif256"] = _as_cpabmm(
    PRESETS["tpsmm-mgif256"],
    "CPABMM config/mgif-256.yaml (no background predictor)",
    max_iter=100,
)
for _name in ("vox256", "taichi256", "ted384", "mgif256"):
    # their train_avd_params: TPSMM's per dataset, checkpoint_freq 10 (vox 50)
    PRESETS[f"cpabmm-{_name}"]["train_avd_params"]["checkpoint_freq"] = (
        50 if _name == "vox256" else 10
    )

# CPABMM's ablation, Table 2 (TaiChi-HD; row "TPSMM" is tpsmm-taichi256): each row adds one
# component to CPABMM's taichi configuration; everything else is cpabmm-taichi256.
for _name, _row, _global, _ks, _struc in [
    ("cpab", "+CPAB: 10 local CPAB replace the TPS, no global, no L_KS, no L_struc", 0, 0, 0),
    ("cpab-global", "+CPAB,Global: + the global 6×6 CPAB", 1, 0, 0),
    ("cpab-global-ks", "+CPAB,Global,L_KS: + the keypoint semantic loss", 1, 1, 0),
    ("cpab-global-struc", "+CPAB,Global,L_struc: + the structure alignment loss", 1, 0, 0.1),
]:
    PRESETS[f"cpabmm-taichi256-{_name}"] = merge(
        PRESETS["cpabmm-taichi256"],
        {
            "note": f"CPABMM Table 2 row {_row}",
            "model_params": {"dense_motion_params": {"use_global_cpab": bool(_global)}},
            "train_params": {"loss_weights": {"keypoint_semantic": _ks, "structure": _struc}},
        },
    )

# Small CPABMMs for the 64×64 synthetic benchmark on a CPU: tpsmm-synthetic(-body) with the
# CPAB dense motion (32² grids). Two reductions, for CPU time: the structure and keypoint
# semantic weights are 0 (DINO ViT-B/8 at 224² and SAM ViT-B at 1024² take tens of seconds
# to minutes per batch on a CPU), and each θ fit runs 10 Adam steps (global 15) at lr 0.1
# instead of 100–200 at 1e-2: the fits are most of the step (≈0.1–0.5 s per Adam step at
# batch 8, growing with |θ|); on 5-point groups moved by N(0, 0.15) the fitted error is 0.084
# (0.044 after the reference's 100 steps at 1e-2, 0.155 after 10 steps at 1e-2).
_CPABMM_SYNTHETIC = {
    "model_params": {
        "dense_motion_params": {**_CPABMM_DENSE_MOTION, "max_iter": 10, "fit_lr": 0.1}
    },
    "train_params": merge(
        _CPABMM_LOSSES, {"loss_weights": {"structure": 0, "keypoint_semantic": 0}}
    ),
}
# CPABMM keeps the 15- and 25-epoch schedules (it runs in the opt-in extra benchmark only).
for _name, _what, _epochs in [
    ("synthetic", "synthetic benchmark", 15),
    ("synthetic-body", "synthetic bodies", 25),
]:
    PRESETS[f"cpabmm-{_name}"] = merge(
        merge(_TPSMM_SMALL, {"train_params": small_schedule(_epochs)}),
        merge(
            _CPABMM_SYNTHETIC,
            {
                "model": "cpabmm",
                "note": f"small CPABMM for the 64×64 {_what} (CPU; tpsmm-{_name} with CPAB "
                "motion; L_struc and L_KS off and θ fits of 10/15 Adam steps at lr 0.1, for "
                "CPU time)",
            },
        ),
    )
    _common = PRESETS[f"cpabmm-{_name}"]["model_params"]["common_params"]
    _common["num_cpab"] = _common.pop("num_tps")
