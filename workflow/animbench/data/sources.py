"""Real dataset sources: pinned metadata files, video/archive download, cropping.

`run(step, dataset, spec, inputs, out)` is what `animbench data <step>` calls. The workflow's
`--spec` JSON is the dataset's config entry plus `cache` (the cache folder); for the metadata
step it is the pinned file itself: ``{"url": ..., "sha256": ..., "cache": ...}``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from animbench.errors import AnimbenchError, DataError, NotImplementedYet

DEFAULT_CACHE = "resources/cache"
CHUNK = 1 << 20
TIMEOUT_S = 60


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download(url: str, dst: Path) -> None:
    """Stream `url` to `dst` atomically (a .part file renamed at the end)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
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


def cached_path(url: str, cache: str | Path) -> Path:
    """Where a URL lives in the cache: <cache>/downloads/<sha256(url)[:16]>/<basename>."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "download"
    return Path(cache) / "downloads" / key / name


def fetch(url: str, sha256: str | None, cache: str | Path) -> Path:
    """Return the cached copy of `url`, downloading it once and checking its sha256.

    A checksum mismatch raises a one-line DataError naming the URL (and removes the bad copy);
    with `sha256` None the computed checksum is printed so it can be pinned in config.yaml.
    """
    path = cached_path(url, cache)
    if not path.exists():
        _download(url, path)
    actual = sha256_file(path)
    if sha256 is None:
        print(
            f"animbench: {url} is not pinned; its sha256 is {actual} (add it to config.yaml)",
            file=sys.stderr,
        )
    elif actual != sha256.lower():
        path.unlink(missing_ok=True)
        raise DataError(f"sha256 mismatch for {url}: expected {sha256}, got {actual}")
    return path


def metadata(dataset: str, spec: Mapping, out: str | Path) -> Path:
    """Fetch a pinned file (spec: url, sha256, cache) and copy it to `out` atomically."""
    entry = spec.get("metadata", spec)
    if not isinstance(entry, Mapping) or not entry.get("url"):
        raise DataError(f"dataset '{dataset}': the metadata spec has no url")
    src = fetch(entry["url"], entry.get("sha256"), spec.get("cache", DEFAULT_CACHE))
    dst = Path(out)
    _atomic_copy(src, dst)
    return dst


def _not_implemented(dataset: str) -> NotImplementedYet:
    return NotImplementedYet(
        f"real dataset download/crop for '{dataset}' is not implemented yet (issue 3); "
        "use the synthetic benchmark"
    )


def download(dataset: str, spec: Mapping, inputs: Sequence[str], out: str | Path) -> None:
    """Download the videos (youtube) or the archive of a dataset into `out`; writes
    `out/manifest.csv` last. Issue 3."""
    raise _not_implemented(dataset)


def crop(dataset: str, spec: Mapping, inputs: Sequence[str], out: str | Path) -> None:
    """Crop the downloaded videos into `out/train` and `out/test` clip folders. Issue 3."""
    raise _not_implemented(dataset)


def run(
    step: str,
    dataset: str,
    spec: Mapping,
    inputs: Sequence[str] = (),
    out: str | Path = "",
) -> None:
    """Entry point of `animbench data <step>`."""
    if not out:
        raise AnimbenchError("--out is required")
    if step == "metadata":
        metadata(dataset, spec, out)
    elif step == "download":
        download(dataset, spec, inputs, out)
    elif step == "crop":
        crop(dataset, spec, inputs, out)
    else:
        raise AnimbenchError(f"unknown data step '{step}' (metadata, download, crop)")
