"""Small pieces every part of the report shares: HTML escaping, number formatting, the
"not produced yet" and "could not read" notes, `data:` URIs and the errors a report turns into
a note rather than a crash."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from animbench.errors import AnimbenchError

# what a report cannot read is a note, not a crash: parquet, CSV, image and clip errors
READ_ERRORS = (OSError, ValueError, KeyError, IndexError, AnimbenchError)


def esc(value: Any) -> str:
    """Text (any value) escaped for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def missing_note(what: str, path: str | Path | None = None) -> str:
    """The visible note for an input that is not there (yet)."""
    where = f" (<code>{esc(path)}</code>)" if path is not None else ""
    return f'<p class="missing-note">{esc(what)}: not produced yet{where}</p>'


def error_note(path: str | Path, exc: BaseException) -> str:
    """The visible note for an input that is there but cannot be read."""
    message = f"could not read {path}: {type(exc).__name__}: {exc}"
    return f'<p class="missing-note">{esc(message)}</p>'


def data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def fmt(value: Any) -> str:
    """A table cell: numbers to 4 significant digits (integers whole), NaN/None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value.is_integer() and abs(value) >= 1e4:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


def is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
