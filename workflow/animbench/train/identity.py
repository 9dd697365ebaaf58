"""What a run folder was trained from, so a rerun never serves weights of another configuration.

A run's identity is everything that changes its weights: the resolved preset (after overrides),
the seed, the training clip list (and the crop parameters the clips were cut with), the
numeric precision and the methods entry. It is stored in every checkpoint of the run and in
``identity.json``; resuming compares the stored identity with the new one and raises a one-line
`ConfigError` naming the dotted keys that differ. Extending the schedule (a larger
``num_epochs`` or ``max_steps``) is allowed, so a finished run can be continued.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from animbench.data.video import clip_name, list_clips
from animbench.errors import ConfigError

FILE = "identity.json"
# descriptive only: a preset's note never changes what is trained
IGNORED = frozenset({"preset.note"})
STAGES = ("train_params", "train_avd_params")
SHOWN = 6  # differing keys named in the error before "and N more"


def data_digest(data: str | Path) -> str:
    """sha256 of the training split's sorted clip names and of `<data>/crop.json` (the crop
    parameters of real datasets): a re-cropped or another dataset gives another digest."""
    data = Path(data)
    digest = hashlib.sha256()
    for clip in list_clips(data / "train"):
        digest.update(clip_name(clip).encode() + b"\n")
    crop = data / "crop.json"
    if crop.is_file():
        digest.update(b"crop.json\n" + crop.read_bytes())
    return digest.hexdigest()


def run_identity(
    method: str, spec: Mapping, seed: int, data: str | Path, precision: str
) -> dict[str, Any]:
    """The identity of a run (JSON-compatible: lists, not tuples, so a stored copy compares
    equal)."""
    return json.loads(
        json.dumps(
            {
                "method": method,
                "preset": spec,
                "seed": seed,
                "data": data_digest(data),
                "precision": precision,
            }
        )
    )


def stored_identity(payload: Mapping) -> dict[str, Any]:
    """The identity a checkpoint was written under; checkpoints from before identities were
    recorded carry only their resolved preset, which is then all that is compared."""
    if "identity" in payload:
        return dict(payload["identity"])
    return {"preset": json.loads(json.dumps(payload.get("preset", {})))}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        for key, sub in value.items():
            _flatten(sub, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def _extends(key: str, old: Any, new: Any) -> bool:
    """Whether `old` -> `new` only lengthens a stage's schedule (max_steps None = no cap)."""
    stage, _, name = key.removeprefix("preset.").partition(".")
    if stage not in STAGES or name not in ("num_epochs", "max_steps"):
        return False
    if name == "max_steps" and new is None:
        return True
    return isinstance(old, int) and isinstance(new, int) and new >= old


def differences(old: Mapping, new: Mapping) -> list[str]:
    """Dotted keys whose values differ between two identities, schedule extensions excepted.
    A legacy identity (preset only) is compared on the keys it has. A second stage (AVD) that
    the old run did not have is an extension too: none of its steps has run yet."""
    old_flat = _flatten(dict(old), "", {})
    new_flat = _flatten({k: v for k, v in new.items() if k in old}, "", {})
    keys = sorted(set(old_flat) | set(new_flat))
    if not (old.get("preset") or {}).get("train_avd_params"):
        keys = [k for k in keys if not k.startswith("preset.train_avd_params")]
    return [
        key
        for key in keys
        if key not in IGNORED
        and old_flat.get(key, "<absent>") != new_flat.get(key, "<absent>")
        and not _extends(key, old_flat.get(key), new_flat.get(key))
    ]


def check_resume(old: Mapping, new: Mapping, run: str | Path) -> None:
    """Raise a one-line ConfigError naming the keys that differ when `run` was trained under
    another identity than `new`."""
    keys = differences(old, new)
    if not keys:
        return
    shown = ", ".join(keys[:SHOWN]) + (
        f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    )
    raise ConfigError(
        f"run folder '{run}' was trained with another configuration ({shown} differ): "
        "restore those settings to resume, or delete the folder to train anew"
    )


def write(run: str | Path, identity: Mapping) -> Path:
    """identity.json in the run folder, for a reader of the results."""
    path = Path(run) / FILE
    tmp = path.with_name(f".{FILE}.tmp")
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True))
    tmp.replace(path)
    return path
