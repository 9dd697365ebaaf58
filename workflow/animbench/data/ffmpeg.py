"""The ffmpeg binary and video probing shared by download (validation) and crop.

The binary comes from the imageio-ffmpeg wheel, so `pip install` is enough; set
``ANIMBENCH_FFMPEG`` (or imageio-ffmpeg's ``IMAGEIO_FFMPEG_EXE``) to use another build.
Commands are argument lists run without a shell.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from animbench.errors import DataError


class CorruptVideo(DataError):
    """A video file ffmpeg cannot open or decode to the end."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # the container's frame rate as ffmpeg reports it (what imageio's meta['fps'] is)
    frames: int  # frames decoded (the count a reader iterating the file gets)
    duration: float  # seconds, from the container header (0.0 when unknown)
    codec: str


def executable() -> str:
    """Path of the ffmpeg binary."""
    override = os.environ.get("ANIMBENCH_FFMPEG")
    if override:
        return override
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# "Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, ...), 1280x720
#  [SAR 1:1 DAR 16:9], 2500 kb/s, 29.97 fps, 29.97 tbr, 30k tbn (default)"
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<codec>[\w-]+)(?P<rest>.*)")
_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS = re.compile(r"([\d.]+)(k?) (fps|tbr)\b")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")
_FRAME = re.compile(r"frame=\s*(\d+)")


def _fps_of(stream_line: str) -> float:
    """fps as imageio-ffmpeg reads it: the 'fps' token, else 'tbr'."""
    found = {
        unit: float(value) * (1000 if k else 1) for value, k, unit in _FPS.findall(stream_line)
    }
    return found.get("fps") or found.get("tbr") or 0.0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    interesting = [
        line for line in lines if "rror" in line or "nvalid" in line or "not found" in line
    ]
    return " ".join((interesting or lines or ["no output"])[-1].split())


def probe(path: str | Path, decode: bool = True) -> VideoInfo:
    """Size, fps, frame count and codec of the first video stream of `path`.

    With `decode` (default) every frame is decoded with ``-xerror``, so a truncated or corrupt
    file raises :class:`CorruptVideo` naming the file and ffmpeg's reason; without it only the
    container is read (fast; `frames` counts packets).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video not found")
    cmd = [executable(), "-hide_banner", "-nostdin", "-xerror", "-i", str(path), "-map", "0:v:0"]
    cmd += ["-f", "null", "-"] if decode else ["-c", "copy", "-f", "null", "-"]
    result = subprocess.run(cmd, capture_output=True, check=False)
    text = result.stderr.decode("utf-8", errors="replace")
    if result.returncode != 0:
        raise CorruptVideo(f"{path}: corrupt or truncated video ({_last_line(text)})")
    stream = _VIDEO_STREAM.search(text)
    if stream is None:
        raise CorruptVideo(f"{path}: no video stream")
    size = _SIZE.search(stream.group("rest"))
    if size is None:
        raise CorruptVideo(f"{path}: video stream without a frame size")
    duration = _DURATION.search(text)
    seconds = (
        int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3))
        if duration
        else 0.0
    )
    frames = _FRAME.findall(text)
    return VideoInfo(
        width=int(size.group(1)),
        height=int(size.group(2)),
        fps=_fps_of(stream.group(0)),
        frames=int(frames[-1]) if frames else 0,
        duration=seconds,
        codec=stream.group("codec"),
    )
