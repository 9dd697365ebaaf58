"""One cache for every downloaded weight file, resolved by name (URL and checksum here or in
config). Offline machines get a clear answer instead of a hang: `fetch` returns None with the
reason, and callers decide whether to fall back (VGG19 for the perceptual loss) or to stop.

An entry whose digest is not known (`sha256_prefix=None`, e.g. DINO's files, published without
checksums) is *unpinned*: its file is accepted as found, and a loud warning gives its sha256 so
that it can be pinned here once someone has checked the file.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from animbench.downloads import download, offline
from animbench.downloads import sha256_file as sha256sum
from animbench.errors import ConfigError, DataError


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    # torchvision names its files by the first 8 hex digits of the sha256; any prefix length
    # works. None: unpinned (no trustworthy digest known), see `fetch`.
    sha256_prefix: str | None
    # the file's name in the caches; None: the URL's last component
    cache_name: str | None = None

    @property
    def filename(self) -> str:
        return self.cache_name or self.url.rsplit("/", 1)[-1]


_OPENMMLAB = "https://download.openmmlab.com/mmpose/pretrain_models"
_ADRIANBULAT = "https://www.adrianbulat.com/downloads/python-fan"

# Each network's file(s) are declared here once; the networks (in their published layouts) are
# in animbench.networks, which loads them (networks.published.load_or_random for the frozen
# loss networks).
WEIGHTS = {
    # torchvision's ImageNet VGG19 (networks/vgg.py; the perceptual loss)
    "vgg19": WeightFile(
        "vgg19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d"
    ),
    # openpifpaf 0.13.11's default checkpoint (body AKD/MKR; URL from its plugins/coco). The
    # name's last field is the sha256 prefix: openpifpaf loads http URLs with
    # torch.hub.load_state_dict_from_url(check_hash=True), which checks exactly that (the
    # authors' digest; not computed here, no copy reachable). A pickled model, not a state_dict.
    "openpifpaf_shufflenetv2k16": WeightFile(
        "openpifpaf_shufflenetv2k16",
        "http://github.com/openpifpaf/torchhub/releases/download/v0.13/"
        "shufflenetv2k16-210820-232500-cocokp-slurm726069-edge513-o10s-7189450a.pkl",
        "7189450a",
    ),
    # LPIPS v0.1 (evaluate/image_metrics.py): torchvision's ImageNet AlexNet (the trunk,
    # networks/alexnet.py) and the official linear heads (richzhang/PerceptualSimilarity
    # lpips/weights/v0.1/alex.pth, 6,009 bytes; the sha256 was computed here from the copies in the
    # lpips 0.1.4 wheel and in torchmetrics 1.9.0, which are identical). A public script pins
    # alexnet-owt-7be5be79.pth as sha256
    # 7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02 (not computed here: no copy
    # reachable), consistent with torchvision's 8-digit name prefix pinned below.
    "alexnet": WeightFile(
        "alexnet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79"
    ),
    "lpips_alex": WeightFile(
        "lpips_alex",
        "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        cache_name="lpips-v0.1-alex-df73285e.pth",  # "alex.pth" alone is too generic a name
    ),
    # ImageNet HRNet backbones (MTIA's TaiChi init; the files HRNet-pose, TransPose and TokenPose
    # load, mirrored by mmpose under these names). Keys are the official HRNet names
    # (networks/hrnet.py).
    # The 8 hex digits are the file names' suffixes, which by the OpenMMLab / torchvision naming
    # convention are the sha256 prefix. UNVERIFIED here (no offline copy to hash): the names and
    # URLs are the ones mmpose's configs use, but the digests were not computed from the files.
    # A mismatch stops with a DataError naming the file (see `fetch`).
    "hrnet_w32": WeightFile("hrnet_w32", f"{_OPENMMLAB}/hrnet_w32-36af842e.pth", "36af842e"),
    "hrnet_w48": WeightFile("hrnet_w48", f"{_OPENMMLAB}/hrnet_w48-8ef0771d.pth", "8ef0771d"),
    # DINO ViT-B/8 backbone (networks/vit.py; CPABMM's structure alignment loss; torch.hub
    # 'dino_vitb8' loads this file). Meta publishes no checksum and no public source with its
    # digest was found: unpinned.
    "dino_vitb8": WeightFile(
        "dino_vitb8",
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
        None,
    ),
    # Segment Anything (CPABMM's keypoint semantic loss). The file-name suffixes are md5 prefixes
    # (vit_b md5 01ec64d29a2fca3f0661936605ae66f8), not sha256. The full sha256 digests below are
    # the ones micro-sam's pooch registry (computational-cell-analytics/micro-sam, which verifies
    # downloads against them) and other public download scripts record; not computed here.
    "sam_vit_b": WeightFile(
        "sam_vit_b",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    "sam_vit_l": WeightFile(
        "sam_vit_l",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "sam_vit_h": WeightFile(
        "sam_vit_h",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    # face-alignment 1.5.0's SFD face detector and 2D FAN-4 (face AKD; URLs from the package's
    # sfd_detector.py and api.py). Both are plain state_dicts. Pinned by the file names' sha256
    # prefixes (torch hub convention: the author's own digest). A public project pins the full
    # digests 619a31681264d3f7…b33543 and 11f355bf06931202…32e4aa; not computed here (no copy
    # reachable), so only the authors' prefixes are enforced.
    "s3fd": WeightFile("s3fd", f"{_ADRIANBULAT}/s3fd-619a316812.pth", "619a316812"),
    "2dfan4": WeightFile("2dfan4", f"{_ADRIANBULAT}/2DFAN4-11f355bf06.pth.tar", "11f355bf06"),
    # AED identity networks (evaluate/backends/identity_backends.py). FaceNet Inception-ResNet-v1
    # (networks/inception_resnet.py) on VGGFace2 as converted by facenet-pytorch (a plain
    # state_dict, logits layer included). The full sha256 is the one an independent public project
    # pins for this file (its other pins, alex.pth df73285e… and alexnet-owt 7be5be79…, match ours);
    # NOT computed here: the file is unreachable from this machine.
    "facenet_vggface2": WeightFile(
        "facenet_vggface2",
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
        "20180402-114759-vggface2.pt",
        "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
    ),
    # torchreid model zoo ResNet-50 (networks/resnet.py) trained on Market-1501 (Google Drive
    # file 1dUUZ4rHDWohmsQXCRe2C_HbYkzz94iBV). UNPINNED: no public digest exists, so `fetch` accepts
    # the file with a loud warning giving its sha256, to be pinned here once checked.
    "reid_resnet50_market1501": WeightFile(
        "reid_resnet50_market1501",
        "https://drive.usercontent.google.com/download?id=1dUUZ4rHDWohmsQXCRe2C_HbYkzz94iBV"
        "&export=download&confirm=t",
        None,
        cache_name="resnet50_market1501.pt",
    ),
}

_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """$ANIMBENCH_CACHE, else resources/cache under the working directory (the workflow root)."""
    return Path(os.environ.get("ANIMBENCH_CACHE", "resources/cache")) / "weights"


def _candidates(entry: WeightFile) -> list[Path]:
    # torch hub's cache is checked too, so a machine that already has torchvision's file uses it
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return [cache_dir() / entry.filename, torch_home / "hub" / "checkpoints" / entry.filename]


def cached_path(name: str) -> Path | None:
    """Where the named file lies in the caches, unverified; None if in neither."""
    return next((p for p in _candidates(WEIGHTS[name]) if p.is_file()), None)


def _accept_unpinned(entry: WeightFile, path: Path) -> None:
    digest = sha256sum(path)
    message = (
        f"UNPINNED weight file {path} ({entry.name}, {entry.url}) used WITHOUT checksum "
        f"verification: sha256 {digest}. Check the file and pin this digest in "
        f"animbench.weights.WEIGHTS"
    )
    _log.warning(message)
    warnings.warn(message, stacklevel=3)


def configure(pins: Mapping[str, Mapping[str, str | None]]) -> None:
    """Apply config `weights:` entries over the built-in table, in this process: a mirror `url`
    and/or a `sha256` (full digest or prefix; null: unpinned) per known weight name. This is how
    a site pins a file the table cannot (e.g. the re-id weights) without editing the package."""
    for name, entry in pins.items():
        if name not in WEIGHTS:
            known = ", ".join(sorted(WEIGHTS))
            raise ConfigError(f"config key 'weights.{name}': unknown weight file (known: {known})")
        changes: dict = {}
        if "url" in entry:
            changes["url"] = entry["url"]
            # keep the cached file's name: a mirror serves the same file
            changes["cache_name"] = WEIGHTS[name].filename
        if "sha256" in entry:
            changes["sha256_prefix"] = entry["sha256"] or None
        WEIGHTS[name] = replace(WEIGHTS[name], **changes)


def fetch_all(names: Iterable[str], stamp: str | Path | None = None) -> dict[str, Path]:
    """Fetch (and verify) several weight files; a DataError names every one not available.

    `stamp`, when given, is written last (JSON: name -> path and sha256): the workflow's proof
    that the files are in the cache, so a compute node without internet finds them there."""
    paths, missing = {}, []
    for name in names:
        if name not in WEIGHTS:
            raise ConfigError(f"unknown weight file {name!r} (known: {', '.join(sorted(WEIGHTS))})")
        path, reason = fetch(name)
        if path is None:
            missing.append(f"{WEIGHTS[name].filename}: {reason}")
        else:
            paths[name] = path
    if missing:
        raise DataError(f"weights missing: {'; '.join(missing)}; put them in {cache_dir()}")
    if stamp is not None:
        record = {n: {"path": str(p), "sha256": sha256sum(p)} for n, p in paths.items()}
        Path(stamp).parent.mkdir(parents=True, exist_ok=True)
        Path(stamp).write_text(json.dumps(record, indent=2) + "\n")
    return paths


def fetch(name: str, timeout: float = 30.0) -> tuple[Path | None, str]:
    """Path of a verified weight file, downloading it into the cache if needed.

    Returns (None, reason) when the file is neither cached nor downloadable. An unpinned entry's
    file is accepted unverified, with a warning giving its sha256.
    """
    entry = WEIGHTS[name]
    for path in _candidates(entry):
        if path.is_file():
            if entry.sha256_prefix is None:
                _accept_unpinned(entry, path)
            elif not sha256sum(path).startswith(entry.sha256_prefix):
                raise DataError(
                    f"{path}: checksum does not match {entry.sha256_prefix}…; delete it"
                )
            return path, "cached"
    if offline():  # compute nodes without internet, and tests
        return None, f"{entry.url} not fetched (ANIMBENCH_OFFLINE is set)"
    target = _candidates(entry)[0]
    try:
        download(entry.url, target, timeout=timeout)
    except DataError as exc:
        return None, f"{entry.url} unreachable ({exc})"
    if entry.sha256_prefix is None:
        _accept_unpinned(entry, target)
    elif not sha256sum(target).startswith(entry.sha256_prefix):
        target.unlink()
        raise DataError(f"{entry.url}: downloaded file fails its checksum {entry.sha256_prefix}…")
    return target, "downloaded"
