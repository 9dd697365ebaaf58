"""Nested configuration mappings."""

from __future__ import annotations

import copy
from collections.abc import Mapping


def merge(base: dict, update: Mapping) -> dict:
    """Merge `update` into a copy of `base` as Snakemake does: dicts recursively, the rest
    (lists included) replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out
