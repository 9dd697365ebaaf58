"""Loading a published weight file (declared in `animbench.weights.WEIGHTS`) into a network.

`load_or_random` is the policy of the frozen loss networks (VGG19, DINO ViT): fetch through the
weight cache, load strictly; without the file, warn and keep the random initialisation (the
trainer records the note; `train.pretrained` decides beforehand whether that is allowed).
`FrozenNetwork` is what every such measuring network (VGG19, LPIPS, the DINO/SAM losses) is.
"""

from __future__ import annotations

import abc
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


class FrozenNetwork(nn.Module, abc.ABC):
    """A network used as a fixed instrument (a loss's or a metric's): no gradient to its
    weights, always in eval mode. `pretrained` says whether its published weights loaded,
    `weights_note` from where, or why not."""

    def freeze(self, pretrained: bool, what: str) -> None:
        """End of `__init__`: `load_pretrained()` when `pretrained`, then freeze."""
        self.pretrained = False
        self.weights_note = f"{what} randomly initialised (pretrained=False requested)"
        if pretrained:
            self.pretrained, self.weights_note = self.load_pretrained()
        self.requires_grad_(False)
        self.eval()

    @abc.abstractmethod
    def load_pretrained(self) -> tuple[bool, str]:
        """Load the published weights; (loaded, note)."""

    def train(self, mode: bool = True) -> FrozenNetwork:
        return super().train(False)  # always frozen, never in training mode
