"""One cache for every downloaded weight file, resolved by name (URL and checksum here or in
config). Offline machines get a clear answer instead of a hang: `fetch` returns None with the
reason, and callers decide whether to fall back (VGG19 for the perceptual loss) or to stop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from animbench.downloads import download
from animbench.downloads import sha256_file as sha256sum
from animbench.errors import DataError


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    sha256_prefix: str  # torchvision names its files by the first 8 hex digits of the sha256

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_OPENMMLAB = "https://download.openmmlab.com/mmpose/pretrain_models"

WEIGHTS = {
    "vgg19": WeightFile(
        "vgg19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d"
    ),
    # ImageNet HRNet backbones (MTIA's TaiChi init; the files HRNet-pose, TransPose and TokenPose
    # load, mirrored by mmpose under these names). Keys are the official HRNet names.
    # The 8 hex digits are the file names' suffixes, which by the OpenMMLab / torchvision naming
    # convention are the sha256 prefix. UNVERIFIED here (no offline copy to hash): the names and
    # URLs are the ones mmpose's configs use, but the digests were not computed from the files.
    # A mismatch stops with a DataError naming the file (see `fetch`).
    "hrnet_w32": WeightFile("hrnet_w32", f"{_OPENMMLAB}/hrnet_w32-36af842e.pth", "36af842e"),
    "hrnet_w48": WeightFile("hrnet_w48", f"{_OPENMMLAB}/hrnet_w48-8ef0771d.pth", "8ef0771d"),
}


def cache_dir() -> Path:
    """$ANIMBENCH_CACHE, else resources/cache under the working directory (the workflow root)."""
    return Path(os.environ.get("ANIMBENCH_CACHE", "resources/cache")) / "weights"


def _candidates(entry: WeightFile) -> list[Path]:
    # torch hub's cache is checked too, so a machine that already has torchvision's file uses it
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return [cache_dir() / entry.filename, torch_home / "hub" / "checkpoints" / entry.filename]


def fetch(name: str, timeout: float = 30.0) -> tuple[Path | None, str]:
    """Path of a verified weight file, downloading it into the cache if needed.

    Returns (None, reason) when the file is neither cached nor downloadable.
    """
    entry = WEIGHTS[name]
    for path in _candidates(entry):
        if path.is_file():
            if not sha256sum(path).startswith(entry.sha256_prefix):
                raise DataError(
                    f"{path}: checksum does not match {entry.sha256_prefix}…; delete it"
                )
            return path, "cached"
    target = _candidates(entry)[0]
    try:
        download(entry.url, target, timeout=timeout)
    except DataError as exc:
        return None, f"{entry.url} unreachable ({exc})"
    if not sha256sum(target).startswith(entry.sha256_prefix):
        target.unlink()
        raise DataError(f"{entry.url}: downloaded file fails its checksum {entry.sha256_prefix}…")
    return target, "downloaded"
