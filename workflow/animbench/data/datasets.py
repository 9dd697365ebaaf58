"""Training pairs and test videos in the reference sampling (notes/reference-models.md §0).

Training: two frame indices drawn uniformly with replacement and sorted (source = earlier,
driving = later); with id sampling one item per id, a random clip of that id per draw; the
dataset is repeated `num_repeats` times per epoch. The same augmentation goes to both frames.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from animbench.data.video import clip_id, list_clips, num_frames, read_frames, to_float
from animbench.errors import DataError


class FramePairs(Dataset):
    """(source, driving) frame pairs of the training split as float tensors [3, H, W]."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        id_sampling: bool = False,
        num_repeats: int = 1,
        augmentation_params: dict | None = None,
    ):
        self.clips = list_clips(Path(root) / split)
        if not self.clips:
            raise DataError(f"{Path(root) / split}: no clips found")
        self.id_sampling = id_sampling
        if id_sampling:
            by_id: dict[str, list[Path]] = {}
            for clip in self.clips:
                by_id.setdefault(clip_id(clip.name), []).append(clip)
            self.items = [by_id[k] for k in sorted(by_id)]
        else:
            self.items = [[clip] for clip in self.clips]
        self.num_repeats = num_repeats
        self.augment = Augmentation(**(augmentation_params or {}))
        self._lengths: dict[Path, int] = {}

    def __len__(self) -> int:
        return len(self.items) * self.num_repeats

    def _length(self, clip: Path) -> int:
        if clip not in self._lengths:
            self._lengths[clip] = num_frames(clip)
        return self._lengths[clip]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # numpy/random are seeded per worker by the DataLoader's generator (see trainer)
        choices = self.items[index % len(self.items)]
        clip = choices[np.random.randint(len(choices))]
        frame_indices = np.sort(np.random.choice(self._length(clip), size=2, replace=True))
        frames = to_float(read_frames(clip, frame_indices))
        source, driving = self.augment(list(frames))
        return {
            "source": torch.from_numpy(np.ascontiguousarray(source.transpose(2, 0, 1))),
            "driving": torch.from_numpy(np.ascontiguousarray(driving.transpose(2, 0, 1))),
        }


class Augmentation:
    """Flips (horizontal, time) and colour jitter applied identically to the frames of a pair.

    Rotation, crop and resize (TaiChi/TED/MGIF presets) are not implemented yet (issue 3): a
    preset asking for them stops with an error rather than silently training without them.
    """

    def __init__(self, flip_param=None, jitter_param=None, **unsupported):
        if unsupported:
            from animbench.errors import NotImplementedYet

            raise NotImplementedYet(
                f"augmentation {sorted(unsupported)} is not implemented yet (issue 3)"
            )
        self.flip = flip_param or {}
        self.jitter = jitter_param or {}

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if self.flip.get("time_flip") and random.random() < 0.5:
            frames = frames[::-1]
        if self.flip.get("horizontal_flip") and random.random() < 0.5:
            frames = [f[:, ::-1] for f in frames]
        if self.jitter:
            frames = self._colour_jitter(frames)
        return frames

    def _colour_jitter(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        def factor(key: str) -> float:
            amount = self.jitter.get(key, 0)
            return random.uniform(max(0.0, 1 - amount), 1 + amount)

        brightness, contrast, saturation = (
            factor("brightness"),
            factor("contrast"),
            factor("saturation"),
        )
        hue_amount = self.jitter.get("hue", 0)
        hue = random.uniform(-hue_amount, hue_amount)
        out = []
        for frame in frames:
            frame = frame * brightness
            mean = frame.mean()
            frame = (frame - mean) * contrast + mean
            gray = frame @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            frame = (frame - gray[..., None]) * saturation + gray[..., None]
            frame = np.clip(frame, 0, 1)
            if hue:
                frame = _shift_hue(frame, hue)
            out.append(frame.astype(np.float32))
        return out


def _shift_hue(frame: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue of an RGB frame in [0, 1] by `shift` turns (vectorised HSV round trip)."""
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    maxc, minc = frame.max(-1), frame.min(-1)
    delta = maxc - minc
    safe = np.where(delta > 0, delta, 1.0)
    h = np.where(
        maxc == r, (g - b) / safe, np.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
    h = (h + shift) % 1.0
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = maxc * (1 - s), maxc * (1 - s * f), maxc * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    v = maxc
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    out = np.stack(
        [np.choose(i, choices_r), np.choose(i, choices_g), np.choose(i, choices_b)], axis=-1
    )
    return out.astype(np.float32)
