"""Loading a published weight file (declared in `animbench.weights.WEIGHTS`) into a network.

`load_or_random` is the policy of the frozen loss networks (VGG19, DINO ViT): fetch through the
weight cache, load strictly; without the file, warn and keep the random initialisation (the
trainer records the note; `train.pretrained` decides beforehand whether that is allowed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from animbench import weights


def read(path: str | Path) -> dict:
    """A weight file's contents (tensors only: `weights_only`), on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_or_random(
    module: nn.Module,
    name: str,
    what: str,
    unavailable: str,
    select: Callable[[dict], dict] | None = None,
    stacklevel: int = 3,
) -> tuple[bool, str]:
    """Load weight file `name` into `module` (strict), `select` picking its keys first.

    Returns (True, "<what> weights from <path>"), or, when the file is unavailable, warns
    "<what> weights unavailable (<reason>); <unavailable>" and returns (False, that note).
    `stacklevel` counts from the caller of this function (as `warnings.warn`'s does from it).
    """
    path, reason = weights.fetch(name)
    if path is None:
        note = f"{what} weights unavailable ({reason}); {unavailable}"
        warnings.warn(note, stacklevel=stacklevel + 1)
        return False, note
    state = read(path)
    module.load_state_dict(select(state) if select else state, strict=True)
    return True, f"{what} weights from {path}"
