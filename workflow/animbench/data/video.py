"""Clip storage shared by every stage.

On-disk layout of a dataset (real or synthetic), as in the reference repositories:

    <root>/train/<clip>/0000000.png ...      one folder of lossless PNG frames per clip
    <root>/test/<clip>/0000000.png ...

Clip names keep the reference convention `[person_id#]ytid#start6#end6`; the part before the
first `#` is the id used by id sampling. Readers also accept `.mp4`, `.gif` and `.mkv` files in
place of a folder. Folders make drawing two random frames for training cheap (two PNG reads)
and keep test ground truth and reconstructions lossless.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from animbench.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".gif", ".mkv", ".mov", ".avi")
FRAME_NAME = "{:07d}.png"


def list_clips(split_dir: str | Path) -> list[Path]:
    """Clips of one split, sorted by name: PNG folders and video files."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: dataset split folder not found")
    clips = [
        p
        for p in split_dir.iterdir()
        if (p.is_dir() and not p.name.startswith(".")) or p.suffix.lower() in VIDEO_SUFFIXES
    ]
    return sorted(clips, key=lambda p: p.name)


def clip_name(path: str | Path) -> str:
    """The clip's name without a video suffix (folders have none)."""
    path = Path(path)
    return path.stem if path.suffix.lower() in VIDEO_SUFFIXES else path.name


def clip_id(name: str) -> str:
    """The id used by id sampling: the name's part before the first `#`."""
    return name.split("#")[0]


def frame_paths(clip: str | Path) -> list[Path]:
    """The PNG frames of a folder clip, in order."""
    clip = Path(clip)
    frames = sorted(p for p in clip.iterdir() if p.suffix.lower() == ".png")
    if not frames:
        raise DataError(f"{clip}: clip folder holds no PNG frames")
    return frames


def num_frames(clip: str | Path) -> int:
    clip = Path(clip)
    if clip.is_dir():
        return len(frame_paths(clip))
    return len(read_clip(clip))


def read_frame(path: str | Path) -> np.ndarray:
    """One PNG frame as uint8 [H, W, 3]; grayscale and alpha are converted to RGB."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now so a truncated file fails here, naming the file
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or truncated frame ({exc})") from exc


def read_frames(clip: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Selected frames of a clip as uint8 [N, H, W, 3]."""
    clip = Path(clip)
    if clip.is_dir():
        paths = frame_paths(clip)
        try:
            return np.stack([read_frame(paths[i]) for i in indices])
        except IndexError as exc:
            raise DataError(f"{clip}: frame index out of range ({len(paths)} frames)") from exc
    return read_clip(clip)[list(indices)]


def read_clip(clip: str | Path) -> np.ndarray:
    """A whole clip as uint8 [T, H, W, 3]."""
    clip = Path(clip)
    if clip.is_dir():
        return np.stack([read_frame(p) for p in frame_paths(clip)])
    if not clip.exists():
        raise DataError(f"{clip}: clip not found")
    import imageio.v3 as iio

    try:
        frames = iio.imread(clip, index=None)
    except Exception as exc:  # imageio raises many types for broken containers
        raise DataError(
            f"{clip}: corrupt or truncated video ({type(exc).__name__}: {exc})"
        ) from exc
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a single grayscale frame or a stack of grayscale frames
        frames = frames[..., None] if frames.shape[-1] not in (3, 4) else frames[None]
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if frames.shape[-1] == 4:
        frames = frames[..., :3]
    if len(frames) == 0:
        raise DataError(f"{clip}: video holds no frames")
    return frames.astype(np.uint8, copy=False)


def write_clip(clip: str | Path, frames: Iterable[np.ndarray]) -> Path:
    """Write frames (uint8 [H, W, 3]) as a lossless PNG folder, atomically.

    The folder appears under its final name only once every frame is written, so an
    interrupted run never leaves a clip that looks finished.
    """
    clip = Path(clip)
    clip.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{clip.name}.", dir=clip.parent))
    count = 0
    for index, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(
                f"frame {index} of {clip}: expected uint8 [H, W, 3], got {frame.dtype} {frame.shape}"
            )
        Image.fromarray(frame).save(tmp / FRAME_NAME.format(index), compress_level=1)
        count += 1
    if count == 0:
        os.rmdir(tmp)
        raise ValueError(f"{clip}: no frames to write")
    if clip.exists():
        import shutil

        shutil.rmtree(clip)
    os.replace(tmp, clip)
    return clip


def to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 frames to float32 in [0, 1]."""
    return frames.astype(np.float32) / 255.0


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] to uint8, rounding (the reference truncates; we round and say so)."""
    return np.clip(np.rint(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)
