"""Atomic file writes: write under a temporary name in the target's folder, then `os.replace`,
so a reader (or a rerun after a kill) never sees a torn file under the final name."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path`; on any
    failure the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


def write_parquet_atomic(df, out: str | Path) -> Path:
    """A pandas DataFrame as Parquet (no index), atomically."""
    return write_atomic(out, lambda tmp: df.to_parquet(tmp, index=False))
