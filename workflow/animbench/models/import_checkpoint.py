"""Import the authors' released checkpoints into animbench's checkpoint format.

The authors' files (FOMM, MRAA, MTIA, TPSMM loggers) are torch pickles
``{network_key: state_dict, ..., 'epoch': n, 'optimizer_*': ...}``; the network keys are the
keys of ``model.networks``. Each network present in the file is loaded strictly: a missing,
unexpected or mis-shaped tensor fails with one line naming the network and the tensor.

Quirks handled:
- ``module.`` prefixes of ``nn.DataParallel`` wrappers are stripped (per network, only when
  every key has it).
- BatchNorm ``num_batches_tracked`` counters absent from files written before torch 0.4.1 are
  taken from the model (they only matter with ``momentum=None``); recorded as a warning.
- The discriminator (training only; unused by reconstruction and animation) may be absent: it
  keeps its fresh initialisation and a warning says so. So may the networks a model lists in
  `optional_networks` (TPSMM's avd_network: files written before the AVD stage). Every other
  network of the preset must be in the file.
- TPSMM files hold `optimizer`, `optimizer_bg_predictor` and `optimizer_avd`: ignored, as
  every optimiser state. CPABMM's logger writes the same layout (no CPABMM checkpoint is
  published; a file of theirs would load through the same path, its libcpab objects hold no
  tensors).
- The warps' grid_sample convention (`common_params.align_corners`, DESIGN.md §1) is the
  preset's, recorded in the checkpoint's spec: MRAA and MTIA False, the others True.
- Optimiser states may hold numpy scalars: the file is read with ``weights_only=True`` and,
  only if that fails on numpy globals, again with exactly those numpy types allowed.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from animbench import checkpoint as ckpt
from animbench.errors import DataError
from animbench.models.registry import build, get_preset

# networks that only training uses: may be missing from an authors' file
TRAINING_ONLY = ("discriminator",)


def _numpy_globals() -> list:
    """The numpy types optimiser states of old checkpoints pickle (scalars, dtypes, arrays),
    also under their numpy 1.x names (``numpy.core.multiarray.*``) for files written then."""
    import numpy as np

    try:  # numpy ≥ 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    allowed: list = [scalar, _reconstruct, np.dtype, np.ndarray, *dtypes]
    allowed += [
        (scalar, "numpy.core.multiarray.scalar"),
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
    ]
    return allowed


def read_authors_file(path: str | Path) -> dict:
    """The authors' checkpoint dict, loaded without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # torch raises UnpicklingError, RuntimeError, ...
        if "numpy" not in str(first):
            raise DataError(
                f"{path}: not a readable torch checkpoint ({_one_line(first)})"
            ) from first
        try:
            with torch.serialization.safe_globals(_numpy_globals()):
                payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"{path}: not a readable torch checkpoint ({_one_line(exc)})") from exc
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a dict of networks, found {type(payload).__name__}")
    return payload


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    match = re.search(r"Unsupported global: GLOBAL [\w.]+", text)
    return f"{type(exc).__name__}: {match.group(0) if match else text[:300]}"


def _strip_module_prefix(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def load_network(
    name: str, net: nn.Module, state: dict, source: str | Path, warnings: list[str]
) -> None:
    """Load `state` into `net` strictly; errors name `<source>: <name>.<tensor>`."""
    if not isinstance(state, dict):
        raise DataError(f"{source}: {name}: expected a state_dict, found {type(state).__name__}")
    state = _strip_module_prefix(state)
    expected = net.state_dict()
    for key, value in state.items():
        if key not in expected:
            raise DataError(f"{source}: {name}.{key}: unexpected tensor in the file")
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{source}: {name}.{key}: not a tensor ({type(value).__name__})")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise DataError(
                f"{source}: {name}.{key}: shape {_shape(value.shape)} in the file, "
                f"{_shape(expected[key].shape)} expected"
            )
    missing = [k for k in expected if k not in state]
    counters = [k for k in missing if k.endswith("num_batches_tracked")]
    other = [k for k in missing if k not in counters]
    if other:
        more = f" (and {len(other) - 1} more)" if len(other) > 1 else ""
        raise DataError(f"{source}: {name}.{other[0]}: missing from the file{more}")
    if counters:
        state = {**state, **{k: expected[k] for k in counters}}
        warnings.append(
            f"{name}: {len(counters)} BatchNorm num_batches_tracked counters absent from the "
            "authors' file, kept from initialisation"
        )
    net.load_state_dict(state, strict=True)


def load_authors_networks(model: nn.Module, payload: dict, source: str | Path) -> list[str]:
    """Load every network of `model.networks` from an authors' dict; returns warnings."""
    warnings: list[str] = []
    optional = tuple(getattr(model, "optional_networks", ()))
    for name, net in model.networks.items():
        if name not in payload:
            if name in TRAINING_ONLY:
                warnings.append(
                    f"{name} not in the authors' file: randomly initialised (training only, "
                    "unused by reconstruction and animation)"
                )
                continue
            if name in optional:
                warnings.append(
                    f"{name} not in the authors' file: randomly initialised (optional; "
                    "reconstruction does not use it)"
                )
                continue
            found = ", ".join(k for k in payload if isinstance(payload[k], dict)) or "none"
            raise DataError(f"{source}: network '{name}' missing (networks in the file: {found})")
        load_network(name, net, payload[name], source, warnings)
    return warnings


def import_checkpoint(preset: str, path: str | Path, out: str | Path) -> Path:
    """Convert an authors' checkpoint for `preset` into an animbench checkpoint at `out`."""
    path = Path(path)
    spec = get_preset(preset)
    model = build(spec)
    # the grid_sample convention the authors' weights were trained with, written out even
    # where the preset leaves it to the default, so the checkpoint says how to run it
    spec["model_params"]["common_params"]["align_corners"] = model.align_corners
    payload = read_authors_file(path)
    warnings = load_authors_networks(model, payload, path)
    networks_in_file = [k for k in model.networks if k in payload]
    ignored = sorted(
        k
        for k, v in payload.items()
        if isinstance(v, dict) and k not in model.networks and not k.startswith("optimizer")
    )
    if ignored:
        warnings.append(f"networks in the file not used by {preset}: {', '.join(ignored)}")
    epoch = next((payload[k] for k in ("epoch", "epoch_reconstruction") if k in payload), None)
    from animbench import __version__

    return ckpt.save(
        {
            "method": spec["model"],
            "preset": spec,
            "preset_name": preset,
            "networks": {name: net.state_dict() for name, net in model.networks.items()},
            "epoch": int(epoch) if epoch is not None else None,
            "step": None,
            "warnings": warnings,
            "imported": {
                "source": path.name,
                "source_sha256": ckpt.sha256(path),
                "networks": networks_in_file,
                "authors_epoch": int(epoch) if epoch is not None else None,
            },
            "animbench_version": __version__,
        },
        out,
    )


def save_untrained(preset: str, path: str | Path, note: str, seed: int = 0) -> Path:
    """A randomly initialised model of `preset` (torch seed `seed`) as an animbench checkpoint,
    for benchmarks and tests that need a model file but no training."""
    torch.manual_seed(seed)
    spec = get_preset(preset)
    model = build(spec)
    return ckpt.save(
        {
            "method": spec["model"],
            "preset": spec,
            "networks": {name: net.state_dict() for name, net in model.networks.items()},
            "epoch": 0,
            "step": 0,
            "warnings": [f"randomly initialised ({note})"],
        },
        path,
    )
