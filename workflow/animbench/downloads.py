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

# Set in every job Snakemake runs on a compute node (rules/weights.smk): cluster nodes may have no
# internet, so everything a job needs from outside is fetched by local rules beforehand, and a
# job that would still download fails at once, naming the URL, rather than hanging on a timeout.
OFFLINE_VAR = "ANIMBENCH_OFFLINE"


def offline() -> bool:
    """True when downloads are switched off: $ANIMBENCH_OFFLINE set to anything but "" or "0"."""
    return os.environ.get(OFFLINE_VAR, "") not in ("", "0")


def check_online(url: str) -> None:
    """Raise a one-line DataError naming `url` when downloads are switched off."""
    if offline():
        raise DataError(
            f"download of {url} refused: {OFFLINE_VAR} is set (no downloads in this job; "
            "the file must be fetched beforehand by the workflow's local rules)"
        )


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dst: str | Path, timeout: float = 60.0) -> Path:
    """Stream `url` to `dst` atomically: a `.part` file beside it, renamed when complete, so
    an interrupted download never looks finished. Failures raise a one-line DataError, and so
    does any call while $ANIMBENCH_OFFLINE is set."""
    check_online(url)
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
