"""Training pairs and test videos in the reference sampling (notes/reference-models.md §0).

Training: two frame indices drawn uniformly with replacement and sorted (source = earlier,
driving = later); with id sampling one item per id, a random clip of that id per draw; the
dataset is repeated `num_repeats` times per epoch. The same augmentation (flips, rotation,
resize, crop, colour jitter) goes to both frames.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from animbench.data.video import clip_id, list_clips, num_frames, read_frames, to_float
from animbench.errors import ConfigError, DataError


class FramePairs(Dataset):
    """(source, driving) frame pairs of the training split as float tensors [3, H, W]."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        id_sampling: bool = False,
        num_repeats: int = 1,
        augmentation_params: dict | None = None,
        seed: int | None = None,
    ):
        self.seed = seed
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

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """An int index draws from the global numpy/random state; an (epoch, index) key with a
        dataset seed draws from (seed, epoch, index) alone (the trainer's keys), so an item does
        not depend on the process or worker that loads it, nor on where a run resumed."""
        if isinstance(index, tuple):
            epoch, index = index
            if self.seed is not None:
                key = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
                np.random.seed(int(key))
                random.seed(int(key))
        choices = self.items[index % len(self.items)]
        clip = choices[np.random.randint(len(choices))]
        frame_indices = np.sort(np.random.choice(self._length(clip), size=2, replace=True))
        frames = to_float(read_frames(clip, frame_indices))
        source, driving = self.augment(list(frames))
        return {
            "source": torch.from_numpy(np.ascontiguousarray(source.transpose(2, 0, 1))),
            "driving": torch.from_numpy(np.ascontiguousarray(driving.transpose(2, 0, 1))),
        }


_KNOWN_PARAMS = {
    "flip_param": {"horizontal_flip", "time_flip"},
    "rotation_param": {"degrees"},
    "resize_param": {"ratio"},
    "crop_param": {"size"},
    "jitter_param": {"brightness", "contrast", "saturation", "hue"},
}


class Augmentation:
    """The reference's augmentation of a frame pair, with one set of random draws per pair.

    Order as in the reference (FOMM `AllAugmentationTransform`): flips → rotation → resize →
    crop → colour jitter. Frames are float32 [H, W, 3] in [0, 1]. Randomness comes from
    python's `random` (the trainer seeds it per worker), so a seed reproduces the pairs.
    """

    def __init__(
        self,
        flip_param: dict | None = None,
        rotation_param: dict | None = None,
        resize_param: dict | None = None,
        crop_param: dict | None = None,
        jitter_param: dict | None = None,
        **unknown: object,
    ):
        if unknown:
            raise ConfigError(
                "augmentation_params: unknown key(s) "
                + ", ".join(f"augmentation_params.{k}" for k in sorted(unknown))
                + f" (known: {', '.join(_KNOWN_PARAMS)})"
            )
        given = {
            "flip_param": flip_param,
            "rotation_param": rotation_param,
            "resize_param": resize_param,
            "crop_param": crop_param,
            "jitter_param": jitter_param,
        }
        for group, params in given.items():
            bad = sorted(set(params or {}) - _KNOWN_PARAMS[group])
            if bad:
                raise ConfigError(
                    f"augmentation_params.{group}.{bad[0]}: unknown key "
                    f"(known: {', '.join(sorted(_KNOWN_PARAMS[group]))})"
                )
        self.flip = flip_param or {}
        self.jitter = jitter_param or {}
        self.degrees = _degree_range(rotation_param)
        self.ratio = _pair(resize_param, "resize_param", "ratio", float)
        self.crop_size = _pair(crop_param, "crop_param", "size", int)

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if self.flip:
            # FOMM's RandomFlip: a time flip returns early, so a pair is never flipped both
            # ways and, with both switches on, the horizontal flip happens with p = 0.25
            if random.random() < 0.5 and self.flip.get("time_flip"):
                frames = frames[::-1]
            elif random.random() < 0.5 and self.flip.get("horizontal_flip"):
                frames = [f[:, ::-1] for f in frames]
        if self.degrees is not None:
            angle = random.uniform(*self.degrees)
            frames = [_rotate(f, angle) for f in frames]
        if self.ratio is not None:
            factor = random.uniform(*self.ratio)
            h, w = frames[0].shape[:2]
            frames = [_resize(f, int(h * factor), int(w * factor)) for f in frames]
        if self.crop_size is not None:
            frames = self._crop(frames)
        if self.jitter:
            frames = self._colour_jitter(frames)
        return [np.ascontiguousarray(f, dtype=np.float32) for f in frames]

    def _crop(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Pad with edge values up to the crop size (centred), then crop at one random spot."""
        h, w = self.crop_size
        height, width = frames[0].shape[:2]
        pad_h = ((h - height) // 2, (h - height + 1) // 2) if h > height else (0, 0)
        pad_w = ((w - width) // 2, (w - width + 1) // 2) if w > width else (0, 0)
        if pad_h != (0, 0) or pad_w != (0, 0):
            frames = [np.pad(f, (pad_h, pad_w, (0, 0)), mode="edge") for f in frames]
            height, width = frames[0].shape[:2]
        # the reference decides whether to draw the x offset by comparing heights (and y by
        # widths); we test each axis itself, which is the same for the square crops in use
        top = random.randint(0, height - h)
        left = random.randint(0, width - w)
        return [f[top : top + h, left : left + w] for f in frames]

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
        luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)

        def adjust_brightness(frame: np.ndarray) -> np.ndarray:
            return frame * brightness

        def adjust_contrast(frame: np.ndarray) -> np.ndarray:
            mean = frame.mean()
            return (frame - mean) * contrast + mean

        def adjust_saturation(frame: np.ndarray) -> np.ndarray:
            gray = (frame @ luma)[..., None]
            return (frame - gray) * saturation + gray

        def adjust_hue(frame: np.ndarray) -> np.ndarray:
            return _shift_hue(frame, hue)

        # as torchvision's ColorJitter in the reference: the four adjustments in a random
        # order per pair (the same order for both frames), each result clipped to [0, 1]
        # as the reference's uint8 PIL images are after every step
        ops = [adjust_brightness, adjust_contrast, adjust_saturation]
        if hue:
            ops.append(adjust_hue)
        random.shuffle(ops)
        out = []
        for frame in frames:
            for op in ops:
                frame = np.clip(op(frame), 0, 1)
            out.append(frame.astype(np.float32))
        return out


def _pair(params: dict | None, group: str, key: str, kind: type) -> tuple | None:
    """A two-number setting such as resize ratio [lo, hi] or crop size [h, w]; a scalar doubles."""
    if not params or key not in params:
        return None
    value = params[key]
    values = [value, value] if isinstance(value, (int, float)) else list(value)
    if len(values) != 2:
        raise ConfigError(f"augmentation_params.{group}.{key}: expected two numbers, got {value}")
    return kind(values[0]), kind(values[1])


def _degree_range(params: dict | None) -> tuple[float, float] | None:
    """Rotation range: `degrees: d` means U(-d, d) as in the reference; [lo, hi] is taken as is."""
    if not params or "degrees" not in params:
        return None
    degrees = params["degrees"]
    if isinstance(degrees, (int, float)):
        if degrees < 0:
            raise ConfigError(f"augmentation_params.rotation_param.degrees: {degrees} < 0")
        return -float(degrees), float(degrees)
    return _pair(params, "rotation_param", "degrees", float)


def _rotate(frame: np.ndarray, angle: float) -> np.ndarray:
    """Rotate counter-clockwise by `angle` degrees about the centre, as skimage's `rotate`
    defaults in the reference: same size, bilinear, black outside the frame."""
    theta = np.deg2rad(angle)
    cos, sin = np.cos(theta), np.sin(theta)
    # maps an output (row, col) to the input position it samples (skimage centre: (n - 1) / 2)
    matrix = np.array([[cos, sin], [-sin, cos]])
    centre = (np.array(frame.shape[:2], dtype=np.float64) - 1) / 2
    offset = centre - matrix @ centre
    out = np.empty_like(frame)
    for c in range(frame.shape[2]):
        ndimage.affine_transform(
            frame[..., c], matrix, offset, output=out[..., c], order=1, mode="constant", cval=0.0
        )
    return out


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize per channel; Pillow widens the filter when shrinking (anti-aliasing)."""
    if (height, width) == frame.shape[:2]:
        return frame
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(frame[..., c])).resize(
                (width, height), Image.BILINEAR
            )
        )
        for c in range(frame.shape[2])
    ]
    return np.stack(channels, axis=-1)


def _shift_hue(frame: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue of an RGB frame in [0, 1] by `shift` turns (vectorised HSV round trip).

    Written for speed (it was the costliest augmentation step): hue is kept in sixths of a
    turn and HSV → RGB uses v - c·clip(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6, which equals
    the six-sector table; results match the table form to ~1e-6.
    """
    frame = np.asarray(frame, dtype=np.float32)
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    maxc = frame.max(-1)
    delta = maxc - frame.min(-1)  # chroma; 0 for greys, whose hue then does not matter
    inv = np.float32(1) / np.where(delta > 0, delta, np.float32(1))
    h = np.where(
        maxc == r, (g - b) * inv, np.where(maxc == g, (b - r) * inv + 2, (r - g) * inv + 4)
    )
    h = h + np.float32(6 * (shift % 1.0))
    h -= 6 * np.floor(h / 6)  # wrap to [0, 6)
    out = np.empty_like(frame)
    for channel, n in enumerate((5, 3, 1)):
        k = h + n
        k -= 6 * (k >= 6)
        out[..., channel] = maxc - delta * np.clip(np.minimum(k, 4 - k), 0, 1)
    return out
