"""Sample reconstructions as animated GIFs: ground truth | prediction side by side, within
the size budget of the package docstring, shown as `data:` URI figures."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from animbench.data.video import clip_name, list_clips, num_frames, read_frames
from animbench.report.markup import data_uri, esc

GIF_MAX_FRAMES = 32  # frames of a sample GIF, evenly spaced over the clip
GIF_PANEL = 96  # longer side of each panel (ground truth, prediction) in pixels


GIF_COLORS = 64  # palette size, one palette per GIF
GIF_MAX_BYTES = 200_000  # a larger GIF is made again from every other frame


GIF_DISPLAY_HEIGHT = 128  # smaller GIFs are shown enlarged (2x or 3x, pixelated)
GIF_FRAME_MS = 80  # display time of one frame of a clip shown in full


def _panel(frame: np.ndarray, size: tuple[int, int]) -> Image.Image:
    image = Image.fromarray(frame)
    return image if image.size == size else image.resize(size, Image.Resampling.BOX)


def gif_strip(
    gt: np.ndarray,
    pred: np.ndarray,
    frame_ms: int = GIF_FRAME_MS,
    panel: int = GIF_PANEL,
    colors: int = GIF_COLORS,
) -> bytes:
    """An animated GIF: ground truth | prediction side by side, frame by frame.

    `gt`, `pred`: uint8 [T, H, W, 3] (the shorter one sets the length; prediction panels are
    resized to the ground truth's panel size). Panels are downscaled so the longer side is at
    most `panel` pixels. One `colors`-colour palette for the whole animation (from a mosaic of
    four frames), no dithering: a shared palette lets the encoder store only what changed.
    """
    count = min(len(gt), len(pred))
    if count == 0:
        raise ValueError("no frames to animate")
    h, w = gt.shape[1:3]
    scale = min(1.0, panel / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    sep = 2
    canvases = []
    for t in range(count):
        canvas = Image.new("RGB", (2 * size[0] + sep, size[1]), (255, 255, 255))
        canvas.paste(_panel(gt[t], size), (0, 0))
        canvas.paste(_panel(pred[t], size), (size[0] + sep, 0))
        canvases.append(canvas)
    picks = sorted({0, count // 3, 2 * count // 3, count - 1})
    mosaic = Image.new("RGB", (canvases[0].width, canvases[0].height * len(picks)))
    for i, t in enumerate(picks):
        mosaic.paste(canvases[t], (0, i * canvases[0].height))
    palette = mosaic.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    frames = [c.quantize(palette=palette, dither=Image.Dither.NONE) for c in canvases]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=frame_ms,
        loop=0,
        optimize=True,
    )
    return buffer.getvalue()


def sample_indices(length: int, limit: int = GIF_MAX_FRAMES) -> list[int]:
    """At most `limit` frame indices spread evenly over a clip (every frame of a short one)."""
    stride = max(1, math.ceil(length / limit))
    return list(range(0, length, stride))[:limit]


def sample_gif(gt_split: Path, pred_dir: Path) -> tuple[str, bytes]:
    """(clip name, GIF) of the first test clip that has a prediction; a GIF over GIF_MAX_BYTES
    is made again from every other frame (down to 8 frames)."""
    predicted = {clip_name(p): p for p in list_clips(pred_dir)}
    clips = [c for c in list_clips(gt_split) if clip_name(c) in predicted]
    if not clips:
        raise ValueError(f"no test clip of {gt_split} has a prediction in {pred_dir}")
    clip, prediction = clips[0], predicted[clip_name(clips[0])]
    indices = sample_indices(min(num_frames(clip), num_frames(prediction)))
    gt, pred = read_frames(clip, indices), read_frames(prediction, indices)
    stride = indices[1] - indices[0] if len(indices) > 1 else 1
    while True:
        gif = gif_strip(gt, pred, frame_ms=min(GIF_FRAME_MS * stride, 250))
        if len(gif) <= GIF_MAX_BYTES or len(gt) <= 8:
            return clip_name(clip), gif
        gt, pred, stride = gt[::2], pred[::2], stride * 2


def gif_figure(gif: bytes, caption: str, clip: str) -> str:
    """A sample GIF as a data: URI figure; small clips are shown enlarged."""
    with Image.open(io.BytesIO(gif)) as image:
        width, height = image.size
    zoom = max(1, min(3, math.ceil(GIF_DISPLAY_HEIGHT / height)))
    return (
        f'<figure><img src="{data_uri("image/gif", gif)}" width="{width * zoom}" '
        f'height="{height * zoom}" alt="{esc(caption)}: ground truth and prediction"/>'
        f"<figcaption><b>{esc(caption)}</b><br>ground truth | prediction<br>"
        f"<code>{esc(clip)}</code></figcaption></figure>"
    )
