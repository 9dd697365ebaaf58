"""Configuration: load (merge) YAML files, validate against the schema, fill defaults.

The schema is schemas/config.schema.yaml. Every error is a `ConfigError` whose message is one
line naming the dotted key path, e.g.
``config key 'datasets.vox.resolution': 'abc' is not of type 'integer'``.
"""

from __future__ import annotations

import copy
import csv
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from animbench.errors import ConfigError
from animbench.mappings import merge

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"
# output names the fixed table rules write (a paper table of that name would clash)
RESERVED_TABLES = ("table1", "table2")


@lru_cache(maxsize=1)
def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_config(paths: Iterable[str | Path], validate: bool = True) -> dict:
    """Read YAML files, merge later ones over earlier ones, and (by default) validate."""
    config: dict = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file '{path}': {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"config file '{path}' is not valid YAML: {detail}") from exc
        if data is None:
            continue
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"config file '{path}' must hold a mapping, not {type(data).__name__}"
            )
        config = merge(config, data)
    return validate_config(config) if validate else config


def config_hash(config: Mapping) -> str:
    """sha256 of the canonical JSON of a (validated) config."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- validation


def _key(path: Iterable) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _fail(path: Iterable, message: str) -> ConfigError:
    return ConfigError(f"config key '{_key(path)}': {' '.join(str(message).split())}")


def _resolve(schema: Any, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        merged = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **merged}
    return schema if isinstance(schema, dict) else {}


def _fill_defaults(instance: Any, schema: Any, root: dict, validator) -> None:
    """Insert schema `default`s for missing keys, recursively (also through $ref, allOf,
    if/then and additionalProperties schemas)."""
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key not in instance:
            resolved = _resolve(sub, root)
            if "default" in resolved:
                instance[key] = copy.deepcopy(resolved["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root, validator)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in props:
                _fill_defaults(value, extra, root, validator)
    for sub in schema.get("allOf", []):
        _fill_defaults(instance, sub, root, validator)
    if "if" in schema and "then" in schema:
        if validator.evolve(schema=_resolve(schema["if"], root)).is_valid(instance):
            _fill_defaults(instance, schema["then"], root, validator)


def _schema_error(error) -> ConfigError:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in known)
        if unknown:
            return _fail([*path, unknown[0]], "unknown key")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return _fail([*path, missing], "required key is missing")
    if error.validator == "propertyNames" or (
        error.validator == "pattern" and "propertyNames" in error.schema_path
    ):
        separators = "dashes or underscores" if "_" in error.schema.get("pattern", "") else "dashes"
        return _fail(
            [*path, error.instance],
            f"invalid name: use lower-case letters, digits and single {separators}",
        )
    return _fail(path, error.message)


def _check_references(config: dict) -> None:
    datasets = config["datasets"]
    methods = config["methods"]
    bench = config["benchmark"]
    for i, name in enumerate(bench["datasets"]):
        if name not in datasets:
            known = ", ".join(sorted(datasets)) or "none"
            raise _fail(
                ["benchmark", "datasets", i], f"unknown dataset '{name}' (defined: {known})"
            )
    for i, name in enumerate(bench["methods"]):
        if name not in methods:
            known = ", ".join(sorted(methods)) or "none"
            raise _fail(["benchmark", "methods", i], f"unknown method '{name}' (defined: {known})")
    for name in bench.get("baselines", []):
        if name in methods:
            raise _fail(["methods", name], f"'{name}' is a baseline and cannot be trained")
    for method, entry in methods.items():
        for dataset in entry["presets"]:
            if dataset not in datasets:
                raise _fail(["methods", method, "presets", dataset], f"unknown dataset '{dataset}'")
    for method in bench["methods"]:
        presets = methods[method]["presets"]
        for dataset in bench["datasets"]:
            if dataset not in presets:
                raise _fail(
                    ["methods", method, "presets"],
                    f"no preset for benchmark dataset '{dataset}'",
                )


@lru_cache(maxsize=1)
def paper_table_keys() -> frozenset[tuple[str, str]]:
    """(paper, table) pairs of the packaged paper_tables.csv (read without pandas: the
    Snakefile validates the config on every run)."""
    source = resources.files("animbench") / "resources" / "paper_tables.csv"
    with source.open("r", encoding="utf-8", newline="") as handle:
        return frozenset((row["paper"], row["table"]) for row in csv.DictReader(handle))


def paper_table_datasets(paper: str, table: str) -> frozenset[str]:
    """The dataset names a table of paper_tables.csv reports numbers on."""
    source = resources.files("animbench") / "resources" / "paper_tables.csv"
    with source.open("r", encoding="utf-8", newline="") as handle:
        return frozenset(
            row["dataset"]
            for row in csv.DictReader(handle)
            if (row["paper"], row["table"]) == (paper, table)
        )


def _check_paper_tables(config: dict) -> None:
    datasets, methods = config["datasets"], config["methods"]
    for name, spec in config.get("paper_tables", {}).items():
        where = ["paper_tables", name]
        if name in RESERVED_TABLES:
            raise _fail(where, f"'{name}' is reserved (the {name} rule writes {name}.parquet)")
        if (spec["paper"], spec["table"]) not in paper_table_keys():
            raise _fail(
                [*where, "table"],
                f"paper_tables.csv has no table '{spec['table']}' of paper '{spec['paper']}'",
            )
        for i, dataset in enumerate(spec["datasets"]):
            if dataset not in datasets:
                known = ", ".join(sorted(datasets)) or "none"
                raise _fail(
                    [*where, "datasets", i], f"unknown dataset '{dataset}' (defined: {known})"
                )
        reported = paper_table_datasets(spec["paper"], spec["table"])
        ours = {datasets[d].get("paper_name") for d in spec["datasets"]}
        for paper_name in spec.get("unavailable_datasets", {}):
            if paper_name not in reported:
                known = ", ".join(sorted(reported)) or "none"
                raise _fail(
                    [*where, "unavailable_datasets", paper_name],
                    f"{spec['paper']} {spec['table']} reports nothing on '{paper_name}' "
                    f"(it reports: {known})",
                )
            if paper_name in ours:
                raise _fail(
                    [*where, "unavailable_datasets", paper_name],
                    f"'{paper_name}' is the paper_name of one of the table's datasets",
                )
        for label, row in spec["rows"].items():
            method = row["method"]
            if method is None:
                continue
            if method not in methods:
                known = ", ".join(sorted(methods)) or "none"
                raise _fail(
                    [*where, "rows", label, "method"],
                    f"unknown methods entry '{method}' (defined: {known})",
                )
            if not set(methods[method]["presets"]) & set(spec["datasets"]):
                raise _fail(
                    [*where, "rows", label, "method"],
                    f"methods entry '{method}' has no preset for any of the table's datasets",
                )


def validate_config(config: Mapping) -> dict:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, not {type(config).__name__}")
    schema = load_schema()
    validator = Draft202012Validator(schema)
    # plain dicts (Snakemake may hand over its own mapping types)
    out = json.loads(json.dumps(config, default=str)) if config else {}
    _fill_defaults(out, schema, schema, validator)
    error = best_match(validator.iter_errors(out))
    if error is not None:
        raise _schema_error(error)
    _check_references(out)
    _qualify_external_presets(out)
    _check_presets(out)
    _check_paper_tables(out)
    _check_submissions(out)
    _check_weights(out)
    return out


# Override keys that no preset holds but the code reads (train/trainer.py, the objectives,
# data/datasets.py's augmentation): a key is valid if a preset of the same model has it or it is
# listed here. "*" accepts any key beneath (clip_grad_norm is keyed by network name). A listed
# key counts only for a model whose presets have its top-level section (no AVD keys for FOMM).
AUGMENTATION_KEYS = {  # data/datasets.py _KNOWN_PARAMS (tests/test_config.py keeps them equal)
    "flip_param": ("horizontal_flip", "time_flip"),
    "rotation_param": ("degrees",),
    "resize_param": ("ratio",),
    "crop_param": ("size",),
    "jitter_param": ("brightness", "contrast", "saturation", "hue"),
}
OPTIONAL_OVERRIDES = (
    *(
        f"{stage}.{key}"
        for stage in ("train_params", "train_avd_params")
        for key in ("max_steps", "num_workers", "weight_decay", "clip_grad_norm.*")
    ),
    *(
        f"dataset_params.augmentation_params.{group}.{key}"
        for group, keys in AUGMENTATION_KEYS.items()
        for key in keys
    ),
)


def _dotted_keys(value: Mapping, prefix: str, keys: dict[str, bool]) -> dict[str, bool]:
    """{dotted key: whether keys beneath it are unchecked} of a preset: a mapping's keys are
    known; beneath a leaf set to None or an empty mapping anything may go."""
    for key, sub in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        is_open = sub is None or (isinstance(sub, Mapping) and not sub)
        keys[path] = keys.get(path, False) or is_open
        if isinstance(sub, Mapping):
            _dotted_keys(sub, path, keys)
    return keys


@cache
def override_keys(model: str) -> dict[str, bool]:
    """Valid override keys of a model: every preset's of that model, and OPTIONAL_OVERRIDES."""
    # imported here: presets import this module (merge)
    from animbench.models import registry
    from animbench.models.presets import PRESETS

    presets = registry.external_presets(model) if registry.is_external(model) else PRESETS
    keys: dict[str, bool] = {}
    for spec in presets.values():
        if spec.get("model") == model:
            _dotted_keys(spec, "", keys)
    sections = {k for k in keys if "." not in k}
    for optional in OPTIONAL_OVERRIDES:
        path = optional.removesuffix(".*")
        if path.split(".")[0] not in sections:
            continue
        parts = path.split(".")
        for i in range(1, len(parts)):
            keys.setdefault(".".join(parts[:i]), False)
        keys[path] = keys.get(path, False) or optional.endswith(".*")
    return keys


def _check_override_keys(overrides: Mapping, prefix: str, model: str, where: list) -> None:
    keys = override_keys(model)
    for key, value in overrides.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if path not in keys:
            siblings = sorted(k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == prefix)
            close = difflib.get_close_matches(str(key), siblings, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(siblings)}"
            raise _fail([*where, *path.split(".")], f"unknown key for a {model} preset ({hint})")
        if isinstance(value, Mapping) and not keys[path]:
            _check_override_keys(value, path, model, where)


def _qualify_external_presets(config: dict) -> None:
    """A methods entry with `model:` (a model from another package, models/base.py) names its
    presets by the model's own names: they become "<model>/<preset>", the registry's global
    names, so every job resolves them without the entry. The model must import."""
    from animbench.models import registry

    for method, entry in config["methods"].items():
        model = entry.get("model")
        if model is None:
            continue
        if not registry.is_external(model):
            raise _fail(
                ["methods", method, "model"],
                f"'{model}' is not a model from another package ('package.module:Class' or an "
                f"entry point of {registry.ENTRY_POINT_GROUP}); a built-in model is named by "
                "its presets",
            )
        try:
            registry.resolve_model(model)
        except ConfigError as exc:
            raise _fail(["methods", method, "model"], str(exc)) from None
        sep = registry.PRESET_SEPARATOR
        entry["presets"] = {
            dataset: preset if sep in preset else registry.qualified_preset(model, preset)
            for dataset, preset in entry["presets"].items()
        }


def _check_presets(config: dict) -> None:
    """Every methods entry's presets exist, and its overrides name keys of their model."""
    from animbench.models import registry
    from animbench.models.presets import PRESETS

    for method, entry in config["methods"].items():
        models = []
        for dataset, preset in entry["presets"].items():
            if registry.PRESET_SEPARATOR in preset:  # an external model's (models/base.py)
                try:
                    models.append(registry.get_preset(preset)["model"])
                except ConfigError as exc:
                    raise _fail(["methods", method, "presets", dataset], str(exc)) from None
                continue
            if preset not in PRESETS:
                close = difflib.get_close_matches(preset, list(PRESETS), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise _fail(
                    ["methods", method, "presets", dataset], f"unknown preset '{preset}'{hint}"
                )
            models.append(PRESETS[preset]["model"])
        for model in dict.fromkeys(models):
            _check_override_keys(
                entry.get("overrides") or {}, "", model, ["methods", method, "overrides"]
            )


def _check_submissions(config: dict) -> None:
    """A submission is neither a methods entry nor a baseline, and names defined datasets."""
    reserved = set(config["methods"]) | set(config["benchmark"].get("baselines", []))
    for name, entry in config.get("submissions", {}).items():
        if name in reserved:
            raise _fail(["submissions", name], f"'{name}' is already a method or baseline")
        for dataset in entry["predictions"]:
            if dataset not in config["datasets"]:
                known = ", ".join(sorted(config["datasets"])) or "none"
                raise _fail(
                    ["submissions", name, "predictions", dataset],
                    f"unknown dataset '{dataset}' (defined: {known})",
                )


def submission_runs(config: Mapping) -> list[tuple[str, str]]:
    """(dataset, submission) pairs table2 reads: each benchmark dataset a submission has
    predictions for."""
    return [
        (dataset, name)
        for name, entry in config.get("submissions", {}).items()
        for dataset in config["benchmark"]["datasets"]
        if dataset in entry["predictions"]
    ]


def _check_weights(config: dict) -> None:
    from animbench.weights import WEIGHTS

    for name in config.get("weights", {}):
        if name not in WEIGHTS:
            known = ", ".join(sorted(WEIGHTS))
            raise _fail(["weights", name], f"unknown weight file '{name}' (known: {known})")


# --------------------------------------------------------------------------- helpers


def metrics_for(dataset: Mapping) -> list[str]:
    """The metrics evaluated on a dataset: L1 always, AKD with a keypoint detector, MKR when
    asked, AED with an identity embedder."""
    names = ["L1"]
    if dataset.get("keypoints", "none") != "none":
        names.append("AKD")
        if dataset.get("mkr", False):
            names.append("MKR")
    if dataset.get("identity", "none") != "none":
        names.append("AED")
    return names


def table2_spec(config: Mapping) -> dict:
    """The benchmark spec handed to `animbench table table2`."""
    bench = config["benchmark"]
    return {
        "datasets": {
            name: {
                "paper_name": config["datasets"][name].get("paper_name"),
                "metrics": metrics_for(config["datasets"][name]),
            }
            for name in bench["datasets"]
        },
        "methods": list(bench["methods"]),
        "baselines": list(bench.get("baselines", [])),
        "entries": {m: _entry(config, m) for m in bench["methods"]},
        "submissions": {
            name: {"name": entry.get("name"), "datasets": sorted(entry["predictions"])}
            for name, entry in config.get("submissions", {}).items()
        },
        "config_hash": config_hash(config),
    }


def _entry(config: Mapping, method: str, datasets: Iterable[str] | None = None) -> dict:
    """What a table needs of a methods entry: its row label and presets (which name the model),
    those of `datasets` only when given."""
    entry = config["methods"][method]
    presets = entry["presets"]
    if datasets is not None:
        presets = {d: presets[d] for d in datasets if d in presets}
    return {"name": entry.get("name"), "presets": dict(presets)}


def paper_table_runs(config: Mapping, name: str) -> list[tuple[str, str]]:
    """(dataset, method) pairs whose metrics paper table `name` reads: every row with a methods
    entry, on each of the table's datasets the entry has a preset for."""
    spec = config["paper_tables"][name]
    runs = []
    for dataset in spec["datasets"]:
        for row in spec["rows"].values():
            method = row["method"]
            if method is not None and dataset in config["methods"][method]["presets"]:
                runs.append((dataset, method))
    return list(dict.fromkeys(runs))


def paper_table_spec(config: Mapping, name: str) -> dict:
    """The spec handed to `animbench table paper` (tables.write_paper_table). A table with
    param_networks counts parameters on each entry's presets, so its entries carry their
    overrides too."""
    spec = config["paper_tables"][name]
    param_networks = list(spec.get("param_networks") or [])

    def entry(method: str) -> dict:
        out = _entry(config, method, spec["datasets"])
        if param_networks:
            out["overrides"] = dict(config["methods"][method].get("overrides") or {})
        return out

    return {
        "name": name,
        "paper": spec["paper"],
        "table": spec["table"],
        "datasets": {
            d: {
                "paper_name": config["datasets"][d].get("paper_name"),
                "metrics": metrics_for(config["datasets"][d]),
            }
            for d in spec["datasets"]
        },
        "rows": [
            {
                "label": label,
                "method": row["method"],
                "note": row.get("note"),
                "entry": entry(row["method"]) if row["method"] else None,
            }
            for label, row in spec["rows"].items()
        ],
        "unavailable": dict(spec.get("unavailable_datasets") or {}),
        "param_networks": param_networks,
        "config_hash": config_hash(config),
    }
