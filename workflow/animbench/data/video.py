"""Clip storage shared by every stage.

On-disk layout of a dataset (real or synthetic), as in the reference repositories:

    <root>/train/<clip>/0000000.png ...      one folder of lossless PNG frames per clip
    <root>/test/<clip>/0000000.png ...

Clip names keep the reference convention `[person_id#]ytid#start6#end6`; the part before the
first `#` is the id used by id sampling. A training folder may hold JPEG frames
(`0000000.jpg`) instead, the smaller optional format; test clips and reconstructions stay PNG
so that metrics are computed on lossless frames. Readers also accept `.mp4`, `.gif` and `.mkv`
files in place of a folder. Folders make drawing two random frames for training cheap (two
image reads); from a video file only the frames up to the last one asked for are decoded.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from animbench.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".gif", ".mkv", ".mov", ".avi")
FFMPEG_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")  # piped through ffmpeg; GIFs via Pillow
FRAME_NAME = "{:07d}.png"
FRAME_NAMES = {"png": "{:07d}.png", "jpeg": "{:07d}.jpg"}
FRAME_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}

# (frames, height, width) of video files, keyed by (path, mtime_ns, size): counting decodes
# the whole file, and FramePairs asks for the length of every clip it samples from.
_VIDEO_INFO: dict[tuple[str, int, int], tuple[int, int, int]] = {}


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
    """The PNG or JPEG frames of a folder clip, in order."""
    clip = Path(clip)
    frames = sorted(p for p in clip.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise DataError(f"{clip}: clip folder holds no PNG or JPEG frames")
    formats = {FRAME_SUFFIXES[p.suffix.lower()] for p in frames}
    if len(formats) > 1:
        # sorted names would interleave two encodings of the clip: refuse rather than guess
        raise DataError(f"{clip}: clip folder mixes PNG and JPEG frames")
    return frames


def num_frames(clip: str | Path) -> int:
    """Number of frames of a clip; for video files decoded once and cached per path+mtime."""
    clip = Path(clip)
    if clip.is_dir():
        return len(frame_paths(clip))
    return _video_info(clip)[0]


def _video_info(clip: Path) -> tuple[int, int, int]:
    """(frames, height, width) of a video file, from one full decode, cached per path+mtime."""
    try:
        stat = clip.stat()
    except FileNotFoundError as exc:
        raise DataError(f"{clip}: clip not found") from exc
    key = (str(clip.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _VIDEO_INFO:
        count, shape = 0, (0, 0)
        for frame in _iter_video(clip):
            count, shape = count + 1, frame.shape[:2]
        if count == 0:
            raise DataError(f"{clip}: video holds no frames")
        _VIDEO_INFO[key] = (count, *shape)
    return _VIDEO_INFO[key]


def read_frame(path: str | Path) -> np.ndarray:
    """One PNG or JPEG frame as uint8 [H, W, 3]; grayscale and alpha are converted to RGB."""
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
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError(f"{clip}: no frame indices given")
    count, height, width = _video_info(clip)  # cached after the clip's first use
    indices = [i + count if i < 0 else i for i in indices]
    if min(indices) < 0 or max(indices) >= count:
        raise DataError(f"{clip}: frame index out of range ({count} frames)")
    # Decode in order and stop after the last index asked for: two random training frames
    # cost on average two thirds of the clip instead of all of it, the early ones far less.
    wanted = set(indices)
    last = max(indices)
    if clip.suffix.lower() in FFMPEG_SUFFIXES:
        found = _ffmpeg_frames(clip, wanted, last + 1, height, width)
    else:
        found = {}
        stream = _iter_video(clip)
        try:
            for t, frame in enumerate(stream):
                if t in wanted:
                    found[t] = frame
                if t >= last:
                    break
        finally:
            stream.close()
    if last not in found:
        raise DataError(f"{clip}: frame {last} could not be decoded (corrupt or truncated video)")
    return np.stack([found[i] for i in indices])


def _ffmpeg_frames(
    clip: Path, wanted: set[int], count: int, height: int, width: int
) -> dict[int, np.ndarray]:
    """The first `count` frames of a video file through an ffmpeg pipe, keeping `wanted`.

    A direct ffmpeg call told to stop after `count` frames (`-frames:v`) and given the frame
    size (known from `_video_info`) starts in ~25 ms; imageio-ffmpeg's reader waits for the
    header log and for ffmpeg to quit and costs ~90 ms even for the first frame. The output
    options are imageio-ffmpeg's, so the frames equal those of read_clip.
    """
    import imageio_ffmpeg

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(clip),
        "-pix_fmt",
        "rgb24",
        "-vcodec",
        "rawvideo",
        "-f",
        "image2pipe",
        "-frames:v",
        str(count),
        "-",
    ]
    size = height * width * 3
    found: dict[int, np.ndarray] = {}
    # stderr goes to a file: a pipe nobody reads could fill up and stall ffmpeg
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        try:
            for t in range(count):
                raw = process.stdout.read(size)
                if len(raw) < size:
                    break
                if t in wanted:
                    found[t] = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
        finally:
            process.stdout.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if len(found) < len(wanted):
            log.seek(0)
            message = log.read().decode(errors="replace").strip().splitlines()
            detail = f": {message[-1]}" if message else ""
            raise DataError(f"{clip}: corrupt or truncated video{detail}")
    return found


def _iter_video(clip: Path) -> Iterator[np.ndarray]:
    """Frames of a video file one at a time, as uint8 [H, W, 3]; errors name the file."""
    if not clip.exists():
        raise DataError(f"{clip}: clip not found")
    try:
        if clip.suffix.lower() in FFMPEG_SUFFIXES:
            import imageio_ffmpeg

            # the same ffmpeg call (rgb24 rawvideo pipe) that imageio's reader makes for
            # read_clip, so both paths see identical frames
            reader = imageio_ffmpeg.read_frames(str(clip), pix_fmt="rgb24")
            try:
                meta = next(reader)
                width, height = meta["size"]
                for raw in reader:
                    yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
            finally:
                reader.close()
        else:
            import imageio.v3 as iio

            for frame in iio.imiter(clip):
                yield _rgb(np.asarray(frame))
    except DataError:
        raise
    except Exception as exc:  # decoders raise many types for broken containers
        raise DataError(
            f"{clip}: corrupt or truncated video ({type(exc).__name__}: {exc})"
        ) from exc


def _rgb(frame: np.ndarray) -> np.ndarray:
    """One decoded frame as uint8 [H, W, 3] (grayscale repeated, alpha dropped)."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    if frame.shape[-1] == 4:
        frame = frame[..., :3]
    return frame.astype(np.uint8, copy=False)


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


def write_clip(
    clip: str | Path,
    frames: Iterable[np.ndarray],
    image_format: str = "png",
    quality: int = 95,
) -> Path:
    """Write frames (uint8 [H, W, 3]) as a folder of PNG (lossless) or JPEG frames, atomically.

    The folder appears under its final name only once every frame is written, so an
    interrupted run never leaves a clip that looks finished. `quality` applies to JPEG only;
    JPEG keeps Pillow's default 4:2:0 chroma subsampling, as in the yuv420p mp4 files the
    reference trains on.
    """
    if image_format not in FRAME_NAMES:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    name = FRAME_NAMES[image_format]
    options = {"compress_level": 1} if image_format == "png" else {"quality": quality}
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
        Image.fromarray(frame).save(tmp / name.format(index), **options)
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


QUANTISATIONS = ("truncate", "round")


def to_uint8(frames: np.ndarray, quantisation: str = "round") -> np.ndarray:
    """Float frames in [0, 1] to uint8. "round" to the nearest level; "truncate" as the
    authors' reconstruction saves its predictions, `(255 * prediction).astype(np.uint8)` (the
    floor, on average half a level darker than rounding)."""
    scaled = np.asarray(frames) * 255.0
    if quantisation == "round":
        scaled = np.rint(scaled)
    elif quantisation == "truncate":
        scaled = np.floor(scaled)  # = astype's truncation for the non-negative values kept
    else:
        raise ValueError(f"quantisation {quantisation!r}: expected one of {QUANTISATIONS}")
    return np.clip(scaled, 0, 255).astype(np.uint8)
