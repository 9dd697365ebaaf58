"""Animate a source image by a driving video (the papers' demo), with any registered model.

Modes (FOMM/MRAA `animate.py`):
- ``standard``: the driving frames' motion as is (absolute keypoints).
- ``relative``: the motion of each driving frame relative to the first one, moved onto the
  source: kp = (kp_d − kp_d0)·s + kp_s, J = J_d J_d0⁻¹ J_s, where the adapt-scale factor
  s = √area(hull(kp_s)) / √area(hull(kp_d0)) (1 with ``adapt_scale=False``). Models may
  override this with a ``relative_motion(kp_s, kp_d, kp_d0, adapt_scale)`` method.
- ``avd``: MRAA/TPSMM's animation-via-disentanglement; needs an ``avd_network`` and a
  ``model.avd(kp_source, kp_driving)`` method.

The output mp4 (H.264, yuv420p) has the driving video's frame count and fps, at the model's
frame size, and the driving video's audio track when it has one.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from animbench.data import ffmpeg
from animbench.errors import ConfigError, DataError, NotImplementedYet
from animbench.models.keypoints import POSITION_KEYS, movement_scale

MODES = ("standard", "relative", "avd")
# motion-representation keys: positions (FOMM/MTIA `value`, MRAA `shift`) and the local
# linear maps (FOMM/MTIA `jacobian`, MRAA `affine`)
MATRIX_KEYS = ("jacobian", "affine")


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] resized (anti-aliased bicubic) to `size` = (height, width)."""
    if image.shape[:2] == tuple(size):
        return image
    resized = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def read_image(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """An image as float [1, 3, H, W] in [0, 1] at `size` = (height, width)."""
    from animbench.data.video import read_frame

    if not Path(path).is_file():
        raise DataError(f"{path}: source image not found")
    image = _resize(read_frame(path), size)
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255.0)


def has_audio(path: str | Path) -> bool:
    """Whether a media file has an audio stream (from ffmpeg's stream listing)."""
    result = subprocess.run(
        [ffmpeg.executable(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        check=False,
    )
    text = result.stderr.decode("utf-8", errors="replace")
    return re.search(r"Stream #\d+:\d+.*?: Audio:", text) is not None


def iter_frames(path: str | Path, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Frames of a video as uint8 [H, W, 3] at `size`, decoded one at a time."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
    except Exception as exc:  # imageio-ffmpeg raises several types for broken files
        raise DataError(f"{path}: cannot decode the driving video ({type(exc).__name__})") from exc
    width, height = meta["size"]
    try:
        for raw in reader:
            frame = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
            yield _resize(frame, size)
    finally:
        reader.close()


def relative_motion(
    kp_source: dict, kp_driving: dict, kp_driving_initial: dict, scale: float = 1.0
) -> dict:
    """FOMM's normalize_kp with relative movement and relative Jacobians (batched over the
    driving frames; source and initial driving entries have batch 1)."""
    new = dict(kp_driving)
    for key in POSITION_KEYS:
        if key in kp_driving:
            diff = (kp_driving[key] - kp_driving_initial[key]) * scale
            new[key] = diff + kp_source[key]
    for key in MATRIX_KEYS:
        if key in kp_driving:
            change = kp_driving[key] @ torch.inverse(kp_driving_initial[key])
            new[key] = change @ kp_source[key]
    if "covar" in kp_driving and "affine" in kp_driving:
        # MRAA: regions are rendered with their covariance, A·Aᵀ for the PCA affine A = U·√S
        new["covar"] = new["affine"] @ new["affine"].transpose(-1, -2)
    return new


def _check_mode(model, mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode: unknown animation mode '{mode}' (known: {', '.join(MODES)})")
    if mode == "avd":
        name = getattr(model, "method", type(model).__name__)
        if "avd_network" not in model.networks:
            raise ConfigError(
                f"mode avd: {name} has no avd_network (AVD exists for MRAA and TPSMM); "
                "use --mode standard or relative"
            )
        if not hasattr(model, "avd"):
            raise NotImplementedYet(
                f"mode avd: {name} has an avd_network but no model.avd(kp_source, kp_driving)"
            )


def _expand(kp: dict, n: int) -> dict:
    return {k: v.expand(n, *v.shape[1:]) for k, v in kp.items()}


class _Encoder:
    """An ffmpeg process encoding raw RGB frames from stdin to H.264 mp4."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, log) -> None:
        command = [
            ffmpeg.executable(),
            "-nostdin",
            "-y",
            "-v",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{size[1]}x{size[0]}",
            "-framerate",
            f"{fps:.6g}",
            "-i",
            "-",
            "-an",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-crf",
            "18",
            "-f",
            "mp4",
            str(path),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=log)
        self.log = log
        self.path = path

    def write(self, frames: np.ndarray) -> None:
        try:
            self.process.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError:
            self.close()

    def close(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        if self.process.wait() != 0:
            raise DataError(f"{self.path}: ffmpeg failed to encode ({_log_tail(self.log)})")


def _log_tail(log) -> str:
    log.seek(0)
    lines = [x for x in log.read().decode(errors="replace").splitlines() if x.strip()]
    return lines[-1].strip() if lines else "no output"


def _mux_audio(video: Path, driving: Path, out: Path) -> None:
    """Copy the video stream of `video` and the first audio stream of `driving` into `out`
    (audio copied as is; re-encoded to AAC only if mp4 cannot hold its codec)."""
    for audio in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"]):
        command = [ffmpeg.executable(), "-nostdin", "-y", "-v", "error", "-i", str(video)]
        command += ["-i", str(driving), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"]
        command += [*audio, "-f", "mp4", str(out)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode == 0:
            return
    message = result.stderr.decode(errors="replace").strip().splitlines()
    raise DataError(f"{driving}: could not copy the audio track ({message[-1] if message else ''})")


@torch.no_grad()
def animate(
    source_image: str | Path,
    driving_video: str | Path,
    out: str | Path,
    checkpoint: str | Path,
    mode: str = "relative",
    adapt_scale: bool = True,
    device: str = "auto",
    batch_frames: int = 8,
) -> Path:
    """Animate `source_image` by `driving_video` with an animbench checkpoint; writes `out`."""
    from animbench.device import resolve_device
    from animbench.evaluate.reconstruct import load_animator

    driving_video, out = Path(driving_video), Path(out)
    info = ffmpeg.probe(driving_video, decode=False)
    if info.fps <= 0:
        raise DataError(f"{driving_video}: the video's frame rate is unknown")
    torch_device = resolve_device(device)
    model, payload = load_animator(checkpoint, torch_device)
    _check_mode(model, mode)
    height, width = (int(x) for x in payload["preset"]["dataset_params"]["frame_shape"][:2])
    size = (height, width)
    source = read_image(source_image, size).to(torch_device)
    kp_source = model.detect(source)
    kp_initial, scale = None, 1.0

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".animate-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        video_only = tmp / "video.mp4"
        count = 0
        with open(tmp / "ffmpeg.log", "w+b") as log:
            encoder = _Encoder(video_only, size, info.fps, log)
            frames = iter_frames(driving_video, size)
            progress = tqdm(total=info.frames or None, desc="animate", unit="frame")
            try:
                while True:
                    chunk = [f for _, f in zip(range(batch_frames), frames)]
                    if not chunk:
                        break
                    driving = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)
                    driving = driving.float().div(255.0).to(torch_device)
                    n = len(driving)
                    kp_driving = model.detect(driving)
                    if kp_initial is None:
                        kp_initial = {k: v[:1] for k, v in kp_driving.items()}
                        if mode == "relative" and adapt_scale:
                            scale = movement_scale(kp_source, kp_initial)
                    if mode == "relative":
                        if hasattr(model, "relative_motion"):
                            kp_new = model.relative_motion(
                                kp_source, kp_driving, kp_initial, adapt_scale
                            )
                        else:
                            kp_new = relative_motion(kp_source, kp_driving, kp_initial, scale)
                    elif mode == "avd":
                        kp_new = model.avd(_expand(kp_source, n), kp_driving)
                    else:
                        kp_new = kp_driving
                    prediction = model.animate(
                        source.expand(n, *source.shape[1:]), _expand(kp_source, n), kp_new
                    )["prediction"]
                    pixels = prediction.clamp(0, 1).mul(255).round().byte()
                    encoder.write(pixels.permute(0, 2, 3, 1).cpu().numpy())
                    count += n
                    progress.update(n)
            finally:
                frames.close()
                progress.close()
                encoder.close()
        if count == 0:
            raise DataError(f"{driving_video}: video holds no frames")
        if has_audio(driving_video):
            _mux_audio(video_only, driving_video, tmp / "muxed.mp4")
            video_only = tmp / "muxed.mp4"
        video_only.replace(out)
    return out
