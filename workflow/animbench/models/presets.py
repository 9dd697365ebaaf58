"""Paper hyperparameters per (model, dataset), as the authors' configuration files give them
(notes/reference-models.md). config.yaml selects a preset per experiment and may override any
key; overrides merge recursively.

A preset holds `model` (the registry name), `model_params` (constructor arguments),
`train_params` (schedule, losses) and `dataset_params` (frame size, sampling, augmentation);
MRAA, TPSMM and CPABMM add `train_avd_params` (the animation-via-disentanglement stage).

Each family's presets sit beside it, in models/<family>_presets.py (torch-free, unlike the
family's module, so the workflow reads presets without torch); what they share is in
models/preset_helpers.py. This module gathers them into PRESETS, the one registry.
"""

from __future__ import annotations

from animbench.models.cpabmm_presets import CPABMM_PRESETS
from animbench.models.fomm_presets import FOMM_PRESETS
from animbench.models.mraa_presets import MRAA_PRESETS
from animbench.models.mtia_presets import MTIA_PRESETS
from animbench.models.preset_helpers import (
    LIGHT_PERCEPTUAL,
    SYNTHETIC_STEPS_PER_EPOCH,
    merge,
    small_schedule,
    synthetic_variant,
)
from animbench.models.tpsmm_presets import TPSMM_PRESETS

__all__ = [
    "LIGHT_PERCEPTUAL",
    "PRESETS",
    "SYNTHETIC_STEPS_PER_EPOCH",
    "merge",
    "small_schedule",
    "synthetic_variant",
]

PRESETS: dict[str, dict] = {
    **FOMM_PRESETS,
    **MRAA_PRESETS,
    **MTIA_PRESETS,
    **TPSMM_PRESETS,
    **CPABMM_PRESETS,
}
