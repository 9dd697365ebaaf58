"""The paper's names of models, presets and config `methods` entries (table row labels)."""

from __future__ import annotations

from collections.abc import Mapping

from animbench.errors import NotImplementedYet
from animbench.models import registry
from animbench.models.registry import METHOD_NAMES, PLANNED


def method_name(method: str) -> str:
    """The paper's display name of a model key (fomm -> FOMM); an external model's `name`."""
    return METHOD_NAMES[method] if method in METHOD_NAMES else registry.model_name(method)


def not_implemented_note(model: str) -> str:
    """'MRAA is not implemented yet (issue 4)', with the issue the registry plans it in."""
    return f"{method_name(model)} is not implemented yet ({PLANNED.get(model, '?')})"


def preset_model(preset: str) -> str:
    """The model a preset builds (cpabmm-taichi256-cpab -> cpabmm).

    Presets of a planned model are not registered until the model lands (get_preset raises
    NotImplementedYet); their model is the name's prefix, which is how the registry reads it.
    An unknown preset of no planned model is a config mistake and raises ConfigError.
    """
    try:
        return registry.get_preset(preset)["model"]
    except NotImplementedYet:
        return preset.split("-")[0]


def entry_model(method: str, entry: Mapping | None, dataset: str | None = None) -> str:
    """The model behind a config `methods` entry: a variant key (cpabmm-cpab) is an experiment,
    not a model, so the model comes from its preset (the dataset's, else any). Without an
    entry (baselines, bare keys) the key is the model."""
    presets = dict((entry or {}).get("presets") or {})
    preset = presets.get(dataset) if dataset else None
    preset = preset or next(iter(presets.values()), None)
    return preset_model(preset) if preset else method


def display_name(method: str, entry: Mapping | None = None) -> str:
    """A methods entry's row label: its `name`; a model key's paper name (fomm -> FOMM); else
    the model's paper name with the key, so an unnamed variant never poses as the model."""
    if entry and entry.get("name"):
        return str(entry["name"])
    if method in METHOD_NAMES or not entry:
        return method_name(method)
    model = entry_model(method, entry)
    return f"{method_name(model)} ({method})" if model != method else method
