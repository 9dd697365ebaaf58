"""Safe archive extraction and MGIF (moving-gif) conversion to the clip layout.

* `safe_extract` unpacks a downloaded .zip / .tar(.gz/.bz2/.xz) without trusting member names:
  every member is checked before anything is written, and the result appears under its final
  name only once complete (temporary folder beside the target, then rename).
* `gif_frames` reads all frames of a GIF as uint8 RGB.
* `mgif_to_clips` turns the processed MGIF gifs (`00000.gif ... 00999.gif`) into
  `out_root/{train,test}/<stem>/` PNG-folder clips with MTIA's split (test = 00000-00099).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageSequence

from animbench.data.video import write_clip
from animbench.errors import DataError

MGIF_TEST_BELOW = 100  # gifs 00000-00099 are the test split (MTIA test list)
_COPY_CHUNK = 1 << 20


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _unsafe(archive: Path, member: str, reason: str) -> DataError:
    return DataError(f"{archive}: unsafe archive member {member!r} ({reason})")


def _checked_relpath(archive: Path, name: str, root: Path) -> PurePosixPath | None:
    """The member's path relative to the extraction root, or None for the root itself.

    Rejects absolute paths (POSIX, Windows drive or UNC), `..` components and anything whose
    resolved location is not inside `root`.
    """
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) >= 2 and norm[1] == ":"):
        raise _unsafe(archive, name, "absolute path")
    parts = [p for p in PurePosixPath(norm).parts if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(archive, name, "'..' path component")
    if not parts:
        return None
    rel = PurePosixPath(*parts)
    resolved = (root / rel).resolve()
    if resolved != root and root not in resolved.parents:
        raise _unsafe(archive, name, "path escapes the target folder")
    return rel


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        return "tar"
    # share links (Yandex Disk) give files without a telling name: look at the content
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise DataError(f"{archive}: unsupported archive type (expected .zip or .tar[.gz/.bz2/.xz])")


def _plan_zip(
    archive: Path, zf: zipfile.ZipFile, root: Path
) -> list[tuple[object, PurePosixPath, bool]]:
    plan = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _unsafe(archive, info.filename, "symbolic link")
        if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise _unsafe(archive, info.filename, "special file")
        rel = _checked_relpath(archive, info.filename, root)
        if rel is not None:
            plan.append((info, rel, info.is_dir()))
    return plan


def _plan_tar(
    archive: Path, tf: tarfile.TarFile, root: Path
) -> list[tuple[object, PurePosixPath, bool]]:
    plan = []
    for info in tf.getmembers():
        if info.issym():
            raise _unsafe(archive, info.name, "symbolic link")
        if info.islnk():
            raise _unsafe(archive, info.name, "hard link")
        if info.isdev():
            raise _unsafe(archive, info.name, "device or fifo")
        if not (info.isfile() or info.isdir()):
            raise _unsafe(archive, info.name, "special member type")
        rel = _checked_relpath(archive, info.name, root)
        if rel is not None:
            plan.append((info, rel, info.isdir()))
    return plan


def _list_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def safe_extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract a .zip or .tar(.gz/.bz2/.xz) archive into `target`; return the extracted files.

    Every member is checked before anything is written: absolute paths, `..` components,
    paths resolving outside `target`, symlinks, hardlinks and device/fifo members raise
    `DataError` naming the archive and the member (nothing is extracted then). Extraction goes
    to a hidden temporary folder beside `target`, renamed into place only when complete, so an
    interrupted run never leaves a target that looks finished. An existing `target` is taken as
    complete and its files are returned as is. Permission bits and timestamps are not restored.
    """
    archive, target = Path(archive), Path(target)
    if target.is_dir():
        return _list_files(target)
    if target.exists():
        raise DataError(f"{target}: extraction target exists and is not a folder")
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    kind = _archive_kind(archive)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    root = tmp.resolve()
    try:
        try:
            if kind == "zip":
                with zipfile.ZipFile(archive) as zf:
                    plan = _plan_zip(archive, zf, root)
                    _write_members(plan, root, zf.open)
            else:
                with tarfile.open(archive, "r:*") as tf:
                    plan = _plan_tar(archive, tf, root)
                    _write_members(plan, root, tf.extractfile)
        except DataError:
            raise
        except Exception as exc:  # zipfile/tarfile/zlib/lzma raise many types for bad data
            raise DataError(
                f"{archive}: corrupt or truncated archive ({type(exc).__name__}: {_one_line(exc)})"
            ) from exc
        if target.exists():  # another process finished first; keep its result
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _list_files(target)


def _write_members(plan, root: Path, opener) -> None:
    for info, rel, is_dir in plan:
        dest = root / rel
        if is_dir:
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = opener(info)
        if src is None:
            raise ValueError(f"member {rel} has no data")
        with src, open(dest, "wb") as fh:
            shutil.copyfileobj(src, fh, _COPY_CHUNK)


def gif_frames(path: str | Path) -> np.ndarray:
    """Every frame of a GIF as uint8 [T, H, W, 3].

    Palette ("P"), grayscale ("L"/"LA") and alpha ("RGBA") frames are converted to RGB with
    Pillow's `convert("RGB")`: alpha is **dropped** (not composited), as the reference does
    (imageio frames with 4 channels keep the first 3), so transparent pixels keep the colour
    stored under them (for palette frames: the palette colour of the transparent index).
    A missing, corrupt or truncated file raises `DataError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: GIF not found")
    frames = []
    try:
        with Image.open(path) as image:
            for frame in ImageSequence.Iterator(image):
                frame.load()  # decode now so truncated data fails here
                frames.append(np.asarray(frame.convert("RGB"), dtype=np.uint8))
    except Exception as exc:  # Pillow raises OSError, IndexError, struct.error, ... on bad data
        raise DataError(
            f"{path}: corrupt or truncated GIF ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    if not frames:
        raise DataError(f"{path}: GIF holds no frames")
    if len({f.shape for f in frames}) != 1:
        raise DataError(f"{path}: GIF frames differ in size")
    return np.stack(frames)


def mgif_split(stem: str, gif: Path | None = None) -> str:
    """MTIA's MGIF split of a gif name: 00000-00099 test, everything else train."""
    try:
        number = int(stem)
    except ValueError:
        raise DataError(
            f"{gif or stem}: MGIF gif names must be numbers (00000.gif ...) to assign a split"
        ) from None
    return "test" if 0 <= number < MGIF_TEST_BELOW else "train"


def mgif_to_clips(
    gif_dir: str | Path, out_root: str | Path, train_format: str = "png"
) -> dict[str, int]:
    """Convert the gifs under `gif_dir` (searched recursively: archives nest them in
    ``moving-gif/{train,test}/``) into `out_root/{train,test}/<stem>/` frame-folder clips.

    Split as MTIA: gifs whose stem is a number below 100 (00000-00099) are test, the rest
    train. Test clips are PNG; training clips `train_format` (png or jpeg). Clips already
    written are skipped (write_clip is atomic, so an existing folder is complete), which makes
    the conversion resumable. Returns the number of clips per split (written now plus already
    present), e.g. ``{"train": 900, "test": 100}``.
    """
    gif_dir, out_root = Path(gif_dir), Path(out_root)
    if not gif_dir.is_dir():
        raise DataError(f"{gif_dir}: MGIF gif folder not found")
    gifs = sorted(
        (p for p in gif_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".gif"),
        key=lambda p: p.name,
    )
    if not gifs:
        raise DataError(f"{gif_dir}: no .gif files found")
    seen: dict[str, Path] = {}
    counts = {"train": 0, "test": 0}
    for gif in gifs:
        if gif.stem in seen:
            raise DataError(f"{gif}: gif name also used by {seen[gif.stem]}")
        seen[gif.stem] = gif
        split = mgif_split(gif.stem, gif)
        clip = out_root / split / gif.stem
        if not clip.is_dir():
            image_format = train_format if split == "train" else "png"
            write_clip(clip, gif_frames(gif), image_format=image_format)
        counts[split] += 1
    return counts
