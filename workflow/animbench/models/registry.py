"""Registry of named models and presets.

`build(preset)` returns an animator module whose `networks` dict maps the authors' checkpoint
keys (generator, kp_detector, ...) to modules. A new model is a new motion estimator plus a
preset: name its class in MODEL_BUILDERS and its presets in models/<family>_presets.py,
gathered into PRESETS by models/presets.py.

A model from another package (models/base.py) is named by a reference instead of a key:
"my_pkg.module:MyModel" or an entry point name of the group `animbench.models`. Its presets are
the class's own, named "<reference>/<preset>" (e.g. "my_pkg.module:MyModel/my-synthetic");
a config `methods` entry with `model:` writes its presets' names so (animbench.config).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from animbench.errors import ConfigError, NotImplementedYet
from animbench.mappings import merge
from animbench.models.presets import PRESETS

if TYPE_CHECKING:  # torch-free at import: the workflow reads presets through this module
    from torch import nn

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


# the built-in families by key: "module:Class", imported on first build (lazily, as the
# detectors' registry and models from other packages: reading presets needs no torch)
MODEL_BUILDERS: dict[str, str] = {
    "fomm": "animbench.models.fomm:FOMM",
    "mraa": "animbench.models.mraa:MRAA",
    "mtia": "animbench.models.mtia:MTIA",
    "tpsmm": "animbench.models.tpsmm:TPSMM",
    "cpabmm": "animbench.models.cpabmm:CPABMM",
}


def _built_in_builder(model: str) -> Callable[[dict], nn.Module]:
    module_name, _, class_name = MODEL_BUILDERS[model].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return lambda model_params: cls(**model_params)


ENTRY_POINT_GROUP = "animbench.models"
# separates an external model's reference from its own preset name in a qualified preset name
PRESET_SEPARATOR = "/"


def is_external(model: str) -> bool:
    """Whether `model` names a model from another package (a "module:Class" reference or an
    entry point of ENTRY_POINT_GROUP), not a built-in key."""
    if model in MODEL_BUILDERS or model == "source-copy" or model in PLANNED:
        return False
    return ":" in model or model in _entry_points()


@cache
def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def resolve_model(reference: str) -> type:
    """The class a reference names: "pkg.module:Class" (imported here, lazily) or an entry
    point name of the group `animbench.models`. A one-line ConfigError if it is not there."""
    if ":" in reference:
        module_name, _, attr = reference.partition(":")
        if not module_name or not attr:
            raise ConfigError(f"model '{reference}': expected 'package.module:ClassName'")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"model '{reference}': no module '{exc.name}' (is its package installed?)"
            ) from exc
        obj = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ConfigError(f"model '{reference}': module '{module_name}' has no '{attr}'")
            obj = getattr(obj, part)
    else:
        eps = _entry_points()
        if reference not in eps:
            known = ", ".join(sorted(eps)) or "none installed"
            raise ConfigError(
                f"model '{reference}': not a built-in model ({', '.join(MODEL_BUILDERS)}), "
                f"'module:Class' or an entry point of '{ENTRY_POINT_GROUP}' ({known})"
            )
        try:
            obj = eps[reference].load()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"model '{reference}': its entry point fails to load ({exc})"
            ) from exc
    if not isinstance(obj, type):
        raise ConfigError(f"model '{reference}': {obj!r} is not a class")
    if _objective_attr(obj) is None:
        raise ConfigError(
            f"model '{reference}': {obj.__name__} has no objective_class (models/base.py)"
        )
    return obj


def _objective_attr(cls: type) -> type | None:
    return getattr(cls, "objective_class", None) or getattr(cls, "objective", None)


def external_presets(reference: str) -> dict[str, dict]:
    """An external model's own presets {name: preset}, each with "model" set to `reference`:
    the class's `presets()`, else its module's PRESETS."""
    cls = resolve_model(reference)
    if hasattr(cls, "presets"):
        presets = cls.presets()
    else:
        presets = getattr(importlib.import_module(cls.__module__), "PRESETS", None)
    if not isinstance(presets, dict):
        raise ConfigError(
            f"model '{reference}': {cls.__name__} has no presets() and its module no PRESETS"
        )
    return {name: {**spec, "model": reference} for name, spec in presets.items()}


def qualified_preset(reference: str, preset: str) -> str:
    """The global name of an external model's preset: "<reference>/<preset>"."""
    return f"{reference}{PRESET_SEPARATOR}{preset}"


def external_objective(reference: str) -> type:
    """An external model's training objective class: its `objective_class` (or `objective`;
    models/base.py MotionObjective). Built-in objectives are in train/objectives.py."""
    return _objective_attr(resolve_model(reference))


def model_name(model: str) -> str:
    """Human name of a model: the papers' for a built-in, an external class's `name` (else
    its class name); an external model that does not resolve keeps its reference."""
    if model in METHOD_NAMES or not is_external(model):
        return METHOD_NAMES.get(model, model)
    try:
        cls = resolve_model(model)
    except ConfigError:
        return model
    return str(getattr(cls, "name", None) or cls.__name__)


def is_implemented(method: str) -> bool:
    """Whether a method can be trained and evaluated (the source-copy baseline needs no model)."""
    return method == "source-copy" or method in MODEL_BUILDERS or is_external(method)


def get_preset(name: str, overrides: dict | None = None) -> dict:
    """A copy of a named preset with overrides merged in; "<reference>/<preset>" names an
    external model's preset."""
    if PRESET_SEPARATOR in name:
        reference, _, local = name.rpartition(PRESET_SEPARATOR)
        presets = external_presets(reference)
        if local not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise ConfigError(f"model '{reference}' has no preset '{local}' (known: {known})")
        return merge(presets[local], overrides or {})
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
    if model in MODEL_BUILDERS:
        builder = _built_in_builder(model)
    elif model in PLANNED or not is_external(model):
        raise NotImplementedYet(
            f"model '{model}' is not implemented yet ({PLANNED.get(model, '?')})"
        )
    else:
        builder = _external_builder(model)
    try:
        return builder(spec["model_params"])
    except TypeError as exc:
        error = _unknown_key_error(exc, spec["model_params"], model)
        if error is None:
            raise
        raise error from exc


def _external_builder(reference: str) -> Callable[[dict], nn.Module]:
    def build_external(model_params: dict) -> nn.Module:
        model = resolve_model(reference)(**model_params)
        if not isinstance(getattr(model, "networks", None), dict):
            raise ConfigError(
                f"model '{reference}': {type(model).__name__} has no `networks` dict "
                "(models/base.py MotionModel)"
            )
        return model

    return build_external


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
        f"{' or '.join(paths)}: unknown key for {model_name(model)} "
        f"({exc.args[0].split('(')[0]} takes no '{key}')"
    )
