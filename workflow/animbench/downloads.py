"""Downloads shared by dataset sources and weight files: checksums and atomic HTTP fetches."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from animbench.errors import DataError

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dst: str | Path, timeout: float = 60.0) -> Path:
    """Stream `url` to `dst` atomically: a `.part` file beside it, renamed when complete, so
    an interrupted download never looks finished. Failures raise a one-line DataError."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, fh, CHUNK)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"download of {url} failed: {' '.join(str(reason).split())}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst
