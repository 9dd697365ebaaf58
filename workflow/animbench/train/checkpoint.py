"""animbench checkpoint files: one dict per file, written atomically, loaded with
weights_only=True (no pickled code). Keys:

    format            "animbench-checkpoint/1"
    method, preset    the registry name and the fully resolved preset (model/train/dataset params)
    networks          {checkpoint key (generator, kp_detector, ...): state_dict}
    epoch, step       progress when written
    warnings          things a reader of the results must know (e.g. random-init VGG19)
    training_state    optimisers, schedulers, RNG states (only in the resumable last checkpoint)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from animbench.errors import DataError
from animbench.weights import sha256sum as sha256  # noqa: F401  (checkpoint digests)

FORMAT = "animbench-checkpoint/1"


def save(payload: dict, path: str | Path) -> Path:
    """Write atomically: a kill during the write never leaves a torn file under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": FORMAT, **payload}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise DataError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DataError(f"{path}: not an animbench checkpoint (found {found!r})")
    return payload
