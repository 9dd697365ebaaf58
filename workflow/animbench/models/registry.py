"""Registry of named models and presets.

`build(preset)` returns an animator module whose `networks` dict maps the authors' checkpoint
keys (generator, kp_detector, ...) to modules. A new model is a new motion estimator plus a
preset: register its builder in MODEL_BUILDERS and its presets in models/presets.py.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from animbench.errors import ConfigError, NotImplementedYet
from animbench.mappings import merge
from animbench.models.presets import PRESETS

# method -> human name used in the papers' tables
METHOD_NAMES = {
    "source-copy": "Source copy",
    "fomm": "FOMM",
    "mraa": "MRAA",
    "mtia": "MTIA",
    "tpsmm": "TPSMM",
    "cpabmm": "CPABMM",
}

# methods planned in the workflow but not built yet, with the issue that builds them
PLANNED: dict[str, str] = {}


def _build_fomm(model_params: dict) -> nn.Module:
    from animbench.models.fomm import FOMM

    return FOMM(**model_params)


def _build_mraa(model_params: dict) -> nn.Module:
    from animbench.models.mraa import MRAA

    return MRAA(**model_params)


def _build_mtia(model_params: dict) -> nn.Module:
    from animbench.models.mtia import MTIA

    return MTIA(**model_params)


def _build_tpsmm(model_params: dict) -> nn.Module:
    from animbench.models.tpsmm import TPSMM

    return TPSMM(**model_params)


def _build_cpabmm(model_params: dict) -> nn.Module:
    from animbench.models.cpabmm import CPABMM

    return CPABMM(**model_params)


MODEL_BUILDERS: dict[str, Callable[[dict], nn.Module]] = {
    "fomm": _build_fomm,
    "mraa": _build_mraa,
    "mtia": _build_mtia,
    "tpsmm": _build_tpsmm,
    "cpabmm": _build_cpabmm,
}


def is_implemented(method: str) -> bool:
    """Whether a method can be trained and evaluated (the source-copy baseline needs no model)."""
    return method == "source-copy" or method in MODEL_BUILDERS


def get_preset(name: str, overrides: dict | None = None) -> dict:
    """A copy of a named preset with overrides merged in."""
    if name not in PRESETS:
        method = name.split("-")[0]
        if method in PLANNED:
            raise NotImplementedYet(
                f"preset '{name}': {METHOD_NAMES[method]} is not implemented yet ({PLANNED[method]})"
            )
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(sorted(PRESETS))})")
    return merge(PRESETS[name], overrides or {})


def build(preset: str | dict, overrides: dict | None = None) -> nn.Module:
    """Instantiate the animator of a preset (name or resolved dict)."""
    spec = get_preset(preset, overrides) if isinstance(preset, str) else preset
    model = spec["model"]
    if model not in MODEL_BUILDERS:
        raise NotImplementedYet(
            f"model '{model}' is not implemented yet ({PLANNED.get(model, '?')})"
        )
    return MODEL_BUILDERS[model](spec["model_params"])
