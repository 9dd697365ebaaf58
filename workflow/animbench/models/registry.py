"""Registry of named models and presets.

`build(preset)` returns an animator module whose `networks` dict maps the authors' checkpoint
keys (generator, kp_detector, ...) to modules. A new model is a new motion estimator plus a
preset: register its builder in MODEL_BUILDERS and its presets in models/presets.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

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
    try:
        return MODEL_BUILDERS[model](spec["model_params"])
    except TypeError as exc:
        error = _unknown_key_error(exc, spec["model_params"], model)
        if error is None:
            raise
        raise error from exc


def _dotted_keys(params: dict, prefix: str = "model_params") -> Iterator[str]:
    for key, value in params.items():
        yield f"{prefix}.{key}"
        if isinstance(value, dict):
            yield from _dotted_keys(value, f"{prefix}.{key}")


def _unknown_key_error(exc: TypeError, model_params: dict, model: str) -> ConfigError | None:
    """A constructor's "unexpected keyword argument 'x'" as a one-line error naming where `x`
    is in model_params (a typo in a preset override); None when `x` is not there (a bug)."""
    match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
    if match is None:
        return None
    key = match.group(1)
    paths = [p for p in _dotted_keys(model_params) if p.rsplit(".", 1)[-1] == key]
    if not paths:
        return None
    return ConfigError(
        f"{' or '.join(paths)}: unknown key for {METHOD_NAMES.get(model, model)} "
        f"({exc.args[0].split('(')[0]} takes no '{key}')"
    )
