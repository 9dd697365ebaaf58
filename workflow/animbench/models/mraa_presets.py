"""MRAA's presets (models/mraa.py, Siarohin et al., CVPR'21): the authors'
config/{vox256,taichi256,ted384,mgif256}.yaml (notes/reference-models.md) and the small MRAA of
the 64×64 synthetic benchmark, sized and scheduled as the small FOMM."""

from __future__ import annotations

from animbench.models.fomm_presets import (
    SMALL_DETECTOR,
    SMALL_GENERATOR,
    SMALL_HOURGLASS,
    small_preset,
)
from animbench.models.preset_helpers import (
    LIGHT,
    MGIF_DATASET_FULL,
    preset_builder,
    synthetic_variant,
)

# the networks that have an optimiser (the authors' single `lr` for one Adam over the three: an
# Adam per network here)
MRAA_NETWORKS = ("generator", "region_predictor", "bg_predictor")

MRAA_MODEL = {
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

# over PAPER_TRAIN and PAPER_TRAIN_AVD (preset_builder)
MRAA_TRAIN = {
    **{f"lr_{network}": 2.0e-4 for network in MRAA_NETWORKS},
    "batch_size": 14,
    "loss_weights": {"equivariance_shift": 10, "equivariance_affine": 10},
}
# second stage (animation via disentanglement), region predictor frozen
MRAA_TRAIN_AVD = {
    "num_epochs": 30,
    "num_repeats": 150,
    "epoch_milestones": [20, 25],
    "lambda_affine": 1,
}

_mraa = preset_builder("mraa", MRAA_MODEL, MRAA_TRAIN, MRAA_TRAIN_AVD, replace_augmentation=True)

MRAA_PRESETS: dict[str, dict] = {
    "mraa-vox256": _mraa(
        "MRAA config/vox256.yaml",
        model={"region_predictor_params": {"pad": 3}},
        train_avd={"num_repeats": 2000},
    ),
    "mraa-taichi256": _mraa("MRAA config/taichi256.yaml", train={"num_repeats": 150}),
    "mraa-ted384": _mraa(
        "MRAA config/ted384.yaml",
        train={"num_repeats": 150, "batch_size": 6},
        dataset={"frame_shape": [384, 384, 3]},
    ),
    "mraa-mgif256": _mraa(
        "MRAA config/mgif256.yaml",
        model={"bg_predictor_params": {"bg_type": "zero"}},
        train={"num_repeats": 50},
        train_avd={"num_repeats": 50, "epoch_milestones": [60, 90]},
        dataset=MGIF_DATASET_FULL,
    ),
}

# A small MRAA for the 64×64 synthetic benchmark on a CPU, sized and scheduled as fomm-synthetic.
MRAA_SMALL = small_preset(
    _mraa,
    "MRAA",
    {
        "region_predictor_params": SMALL_DETECTOR,
        "generator_params": {
            **SMALL_GENERATOR,
            "pixelwise_flow_predictor_params": SMALL_HOURGLASS,
        },
        "bg_predictor_params": {"block_expansion": 16, "max_features": 128, "num_blocks": 3},
    },
    MRAA_NETWORKS,
)
# faces at batch 4 lost much (L1 0.0457, AKD 3.04 against 0.0254, 0.635); bodies did not
MRAA_PRESETS |= {
    f"mraa-{name}": synthetic_variant(MRAA_SMALL, "MRAA", kind, epochs, LIGHT, batch_size=batch)
    for name, kind, epochs, batch in [
        ("synthetic", "faces", 5, 8),
        ("synthetic-body", "bodies", 8, 4),
    ]
}
