"""Built-in synthetic benchmark: procedurally rendered face and body videos.

The synthetic datasets let the whole workflow (training, reconstruction, AKD/MKR/AED) run
offline in minutes with no third-party data or detector weights. Two kinds:

* ``face``: a rigid head (per-identity skin, hair and textured background) that translates,
  rotates and scales over the clip while the eyes blink, the mouth opens and the brows raise.
* ``body``: an articulated figure of capsules drawn in depth order, so joint markers are hidden
  behind the torso or other limbs, and some clips drift so a hand leaves the frame.

Every keypoint is rendered as a small disc of a distinct saturated colour (``MARKER_PALETTE``).
All other colours are desaturated mid-tones (channels in [30, 220], channel spread at most 70),
so a pixel-based detector (``animbench.evaluate.detectors``) can find markers from colour alone.

Coordinates are in pixels of the output frame with pixel ``(row i, column j)`` centred at
``(x=j, y=i)``; a pixel covers ``[j - 0.5, j + 0.5)``. Rendering supersamples 2x per axis and
box-filters down, so edges are anti-aliased.

``ground_truth.parquet`` (split, video, frame, keypoint, x, y, visible) exists for tests only:
detectors must never read it. A marker is visible when its centre is inside the frame and at
least half of its disc is unoccluded and inside the frame.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animbench.data.video import write_clip
from animbench.errors import ConfigError
from animbench.files import write_atomic

FORMAT_VERSION = 1
SUPERSAMPLE = 2
CLIPS_PER_IDENTITY = 3
# Test identities get ids far from train ids so the two splits never share a person.
TEST_IDENTITY_OFFSET = 50000

# Saturated marker colours: every channel is 0, 128 or 255, with one channel 0 and one 255, so
# any two are >= 127 apart (RGB distance) and each is >= 130 from every desaturated colour the
# renderer uses (channels in [30, 220], spread <= 70, or those darkened).
MARKER_PALETTE = np.array(
    # primaries and secondaries, then the half-tone mixes
    [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
    + [(255, 128, 0), (128, 0, 255), (0, 255, 128), (255, 0, 128), (128, 255, 0), (0, 128, 255)],
    dtype=np.uint8,
)

FACE_KEYPOINTS = (
    "left_brow",
    "right_brow",
    "left_eye",
    "right_eye",
    "nose",
    "mouth_left",
    "mouth_right",
    "upper_lip",
    "lower_lip",
    "chin",
)
# The COCO-17 person keypoints in COCO's order: openpifpaf's (evaluate/backends/
# openpifpaf_backend.py). The synthetic body's limb joints are COCO's shoulders to knees.
COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
BODY_KEYPOINTS = ("head", "neck", *COCO_KEYPOINTS[5:15])
KEYPOINT_NAMES = {"face": FACE_KEYPOINTS, "body": BODY_KEYPOINTS}
KINDS = tuple(KEYPOINT_NAMES)


def marker_radius(size: int, kind: str = "face") -> float:
    """Marker disc radius in pixels for frames of the given side length.

    Large enough to survive the blur of a briefly trained generator at 64 px: 2.3 px for face
    landmarks (they sit close together), 3.2 px for body joints.
    """
    return max(1.5, size / (20.0 if kind == "body" else 28.0))


def clip_seed(seed: int, kind: str, split: str, index: int) -> np.random.SeedSequence:
    """The seed of one clip; independent of how many clips the dataset holds."""
    return np.random.SeedSequence(
        [seed, zlib.crc32(kind.encode()), zlib.crc32(split.encode()), index]
    )


def identity_seed(seed: int, kind: str, identity: int) -> np.random.SeedSequence:
    """The seed of one identity's appearance, shared by all its clips."""
    return np.random.SeedSequence(
        [seed, zlib.crc32(kind.encode()), zlib.crc32(b"identity"), identity]
    )


def clip_names(split: str, count: int, frames: int) -> list[tuple[str, int]]:
    """(clip name, identity) for each clip of a split, in index order."""
    offset = TEST_IDENTITY_OFFSET if split == "test" else 0
    out = []
    for index in range(count):
        identity = offset + index // CLIPS_PER_IDENTITY
        out.append((f"id{identity:05d}#{split}{index:04d}#{0:06d}#{frames:06d}", identity))
    return out


# ---------------------------------------------------------------------------------------------
# Drawing on a supersampled canvas, vectorised over the frames of a clip.


def _muted(rng: np.random.Generator, low: float, high: float, spread: float = 60.0) -> np.ndarray:
    """A desaturated colour: a grey level plus small per-channel offsets."""
    grey = rng.uniform(low, high)
    colour = grey + rng.uniform(-spread / 2, spread / 2, size=3)
    return np.clip(colour, 30, 220).astype(np.float32)


# (low, high, spread) of a skin colour, the face's and the body's alike
_SKIN = (120, 200, 50)


def _muted_colours(
    rng: np.random.Generator, *ranges: tuple[float, float, float]
) -> list[np.ndarray]:
    """One ``_muted`` colour per (low, high, spread), drawn from ``rng`` in that order."""
    return [_muted(rng, low, high, spread=spread) for low, high, spread in ranges]


def _smooth(rng: np.random.Generator, frames: int, low: float, high: float) -> np.ndarray:
    """A smooth random trajectory over the clip spanning roughly [low, high]."""
    t = np.arange(frames, dtype=np.float64) / max(frames, 1)
    value = np.zeros(frames)
    for _ in range(3):
        frequency = rng.uniform(0.3, 1.6)
        value += rng.uniform(0.3, 1.0) * np.sin(
            2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)
        )
    value = value / (np.abs(value).max() + 1e-9)  # in [-1, 1], touching one end
    return (low + (value + 1) / 2 * (high - low)).astype(np.float32)


@dataclass
class _Canvas:
    """Supersampled canvas [T, Hs, Ws, 3] plus a label map of which marker owns each sample."""

    size: int
    frames: int
    kind: str = "face"

    def __post_init__(self) -> None:
        side = self.size * SUPERSAMPLE
        # Sample positions in output-pixel coordinates (pixel centres at integers).
        axis = (np.arange(side, dtype=np.float32) + 0.5) / SUPERSAMPLE - 0.5
        self.x = axis[None, None, :]
        self.y = axis[None, :, None]
        self.image = np.zeros((self.frames, side, side, 3), np.float32)
        self.label = np.full((self.frames, side, side), -1, np.int8)

    def paint(self, mask: np.ndarray, colour: np.ndarray, label: int = -1) -> None:
        mask = np.broadcast_to(mask, self.label.shape)
        self.image[mask] = colour
        self.label[mask] = label

    def ellipse(self, cx, cy, a, b, theta) -> np.ndarray:
        cx, cy, a, b, theta = (
            np.asarray(v, np.float32).reshape(-1, 1, 1) for v in (cx, cy, a, b, theta)
        )
        dx, dy = self.x - cx, self.y - cy
        cos, sin = np.cos(theta), np.sin(theta)
        u = dx * cos + dy * sin
        v = -dx * sin + dy * cos
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0

    def disc(self, cx, cy, r) -> np.ndarray:
        cx, cy = (np.asarray(v, np.float32).reshape(-1, 1, 1) for v in (cx, cy))
        return (self.x - cx) ** 2 + (self.y - cy) ** 2 <= r * r

    def capsule(self, p0: np.ndarray, p1: np.ndarray, r) -> np.ndarray:
        """Samples within r of the segment p0-p1 (points [T, 2])."""
        x0, y0 = p0[:, 0, None, None], p0[:, 1, None, None]
        ex, ey = (p1[:, 0] - p0[:, 0])[:, None, None], (p1[:, 1] - p0[:, 1])[:, None, None]
        dx, dy = self.x - x0, self.y - y0
        t = np.clip((dx * ex + dy * ey) / (ex * ex + ey * ey + 1e-9), 0.0, 1.0)
        r = np.asarray(r, np.float32).reshape(-1, 1, 1)
        return (dx - t * ex) ** 2 + (dy - t * ey) ** 2 <= r * r

    def background(self, rng: np.random.Generator, base: np.ndarray, amplitude: float) -> None:
        """Base colour plus a smooth luminance texture (luminance keeps the colour desaturated)."""
        grid = rng.uniform(-amplitude, amplitude, size=(7, 7))
        side = self.size * SUPERSAMPLE
        coords = np.linspace(0, 6, side)
        rows = np.array([np.interp(coords, np.arange(7), row) for row in grid])  # [7, side]
        texture = np.array(
            [np.interp(coords, np.arange(7), col) for col in rows.T]
        ).T  # [side, side]
        self.image[:] = np.clip(base[None, None, :] + texture[:, :, None], 30, 220)

    def markers(self, points: np.ndarray, indices: list[int]) -> None:
        """Draw markers (points [T, len(indices), 2]) on top of what is drawn so far."""
        r = marker_radius(self.size, self.kind)
        for column, k in enumerate(indices):
            mask = self.disc(points[:, column, 0], points[:, column, 1], r)
            self.paint(mask, MARKER_PALETTE[k].astype(np.float32), label=k)

    def finish(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Downsampled uint8 frames and per-marker visibility [T, K]."""
        t, side = self.frames, self.size
        frames = self.image.reshape(t, side, SUPERSAMPLE, side, SUPERSAMPLE, 3).mean(axis=(2, 4))
        frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
        full_area = math.pi * (marker_radius(self.size, self.kind) * SUPERSAMPLE) ** 2
        counts = np.stack([(self.label == k).sum(axis=(1, 2)) for k in range(points.shape[1])], 1)
        inside = (points >= -0.5).all(-1) & (points < side - 0.5).all(-1)
        visible = inside & (counts >= 0.5 * full_area)
        return frames, visible


def _rotate(points: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate local points [T, K, 2] by per-frame angles [T]."""
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x, y = points[..., 0], points[..., 1]
    return np.stack([x * cos - y * sin, x * sin + y * cos], -1)


# ---------------------------------------------------------------------------------------------
# Face.


def _render_face(
    clip_rng: np.random.Generator, identity_rng: np.random.Generator, frames: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = float(size)
    background, skin, hair = _muted_colours(identity_rng, (70, 190, 70), _SKIN, (35, 110, 40))
    half_width = identity_rng.uniform(0.21, 0.25) * s
    half_height = identity_rng.uniform(0.28, 0.31) * s
    background_rng = np.random.default_rng(identity_rng.integers(2**63))

    cx = _smooth(clip_rng, frames, 0.5 - 0.14, 0.5 + 0.14) * s - 0.5
    cy = _smooth(clip_rng, frames, 0.5 - 0.09, 0.5 + 0.09) * s - 0.5
    theta = _smooth(clip_rng, frames, -0.35, 0.35)
    scale = _smooth(clip_rng, frames, 0.85, 1.12)
    blink = np.clip(_smooth(clip_rng, frames, -0.6, 1.6), 0.1, 1.0)  # eye openness
    mouth = _smooth(clip_rng, frames, 0.0, 1.0)
    brow = _smooth(clip_rng, frames, 0.0, 1.0)

    a, b = half_width * scale, half_height * scale
    canvas = _Canvas(size, frames, "face")
    canvas.background(background_rng, background, amplitude=25)

    def place(u, v) -> np.ndarray:
        """Head-local (u, v) in units of the head's half axes -> image points [T, K, 2]."""
        u = np.broadcast_to(np.asarray(u, np.float32).T, (frames, np.shape(u)[0]))
        v = np.broadcast_to(np.asarray(v, np.float32).T, (frames, np.shape(v)[0]))
        local = np.stack([u * a[:, None], v * b[:, None]], -1)
        return _rotate(local, theta) + np.stack([cx, cy], -1)[:, None, :]

    def part(u, v, pa, pb) -> np.ndarray:
        centre = place([u], [v])[:, 0]
        return canvas.ellipse(centre[:, 0], centre[:, 1], pa * a, pb * b, theta)

    hair_centre = place([0.0], [-0.22])[:, 0]
    canvas.paint(
        canvas.ellipse(hair_centre[:, 0], hair_centre[:, 1], 1.08 * a, 0.88 * b, theta), hair
    )
    canvas.paint(canvas.ellipse(cx, cy, a, b, theta), skin)
    eye_white = np.array([205, 205, 195], np.float32)
    pupil = np.array([45, 40, 40], np.float32)
    for side in (-1, 1):
        canvas.paint(part(side * 0.4, -0.1, 0.2, 0.12 * blink), eye_white)
        canvas.paint(part(side * 0.4, -0.1, 0.08, 0.09 * blink), pupil)
        brow_v = -0.3 - 0.12 * brow
        canvas.paint(part(side * 0.4, brow_v, 0.24, 0.05), hair * 0.7)
    canvas.paint(part(0.0, 0.12, 0.09, 0.16), skin * 0.8)
    lip_low = 0.5 + 0.16 * mouth
    mouth_centre_v = (0.34 + lip_low) / 2
    canvas.paint(
        part(0.0, mouth_centre_v, 0.36, (lip_low - 0.34) / 2 + 0.06),
        np.array([125, 70, 70], np.float32),
    )

    u = np.array([-0.4, 0.4, -0.4, 0.4, 0.0, -0.38, 0.38, 0.0, 0.0, 0.0], np.float32)
    zeros = np.zeros(frames, np.float32)
    brow_v = -0.3 - 0.12 * brow
    v = np.stack(
        [brow_v, brow_v, zeros - 0.1, zeros - 0.1, zeros + 0.2, zeros + mouth_centre_v]
        + [zeros + mouth_centre_v, zeros + 0.3, lip_low + 0.04, zeros + 0.93],
        -1,
    )
    local = np.stack([np.broadcast_to(u, v.shape) * a[:, None], v * b[:, None]], -1)
    points = _rotate(local, theta) + np.stack([cx, cy], -1)[:, None, :]
    canvas.markers(points, list(range(len(FACE_KEYPOINTS))))
    images, visible = canvas.finish(points)
    return images, points.astype(np.float32), visible


# ---------------------------------------------------------------------------------------------
# Body.


def _render_body(
    clip_rng: np.random.Generator, identity_rng: np.random.Generator, frames: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = float(size)
    background, shirt, trousers, skin = _muted_colours(
        identity_rng, (80, 200, 70), (50, 190, 70), (40, 150, 50), _SKIN
    )
    build = identity_rng.uniform(0.93, 1.07)
    background_rng = np.random.default_rng(identity_rng.integers(2**63))

    # About 40% of clips drift far to one side so a hand or knee leaves the frame.
    leaves_frame = clip_rng.uniform() < 0.4
    if leaves_frame:
        direction = clip_rng.choice([-1.0, 1.0])
        px = 0.5 + direction * _smooth(clip_rng, frames, 0.05, 0.45)
    else:
        px = _smooth(clip_rng, frames, 0.5 - 0.1, 0.5 + 0.1)
    px = px * s - 0.5
    py = _smooth(clip_rng, frames, 0.52, 0.57) * s - 0.5
    near = clip_rng.choice([-1.0, 1.0])  # which side (left = -1 in image x) faces the camera
    yaw = _smooth(clip_rng, frames, 0.0, 1.3)
    lean = _smooth(clip_rng, frames, -0.2, 0.2)

    # the figure fills most of the frame height, as a person does in a TaiChi-HD crop
    unit = 1.2 * s * build
    torso_radius, limb_radius, leg_radius = 0.085 * unit, 0.045 * unit, 0.055 * unit
    pelvis = np.stack([px, py], -1)
    up = np.stack([np.sin(lean), -np.cos(lean)], -1)
    across = np.stack([np.cos(lean), np.sin(lean)], -1)  # image-right, perpendicular to the spine
    neck = pelvis + 0.22 * unit * up
    head = neck + 0.11 * unit * up
    shoulder_offset = (0.115 * unit * np.abs(np.cos(yaw)))[:, None]
    hip_offset = (0.1 * unit * np.abs(np.cos(yaw)))[:, None]

    def chain(root: np.ndarray, angle0: np.ndarray, angle1: np.ndarray, l0: float, l1: float):
        """Two-segment limb hanging from root; angles measured from straight down."""
        mid = root + l0 * np.stack([np.sin(angle0), np.cos(angle0)], -1)
        total = angle0 + angle1
        return mid, mid + l1 * np.stack([np.sin(total), np.cos(total)], -1)

    joints: dict[str, np.ndarray] = {"head": head, "neck": neck}
    for name, sign in (("left", -1.0), ("right", 1.0)):
        shoulder = neck + sign * shoulder_offset * across
        hip = pelvis + sign * hip_offset * across
        arm = sign * _smooth(clip_rng, frames, -1.2, 2.6)  # positive swings outward
        elbow_flex = sign * _smooth(clip_rng, frames, -0.3, 2.0)
        leg = sign * _smooth(clip_rng, frames, -0.45, 0.6)
        knee_flex = -sign * _smooth(clip_rng, frames, 0.0, 1.2)
        elbow, wrist = chain(shoulder, -arm, -elbow_flex, 0.14 * unit, 0.13 * unit)
        knee, ankle = chain(hip, -leg, -knee_flex, 0.16 * unit, 0.16 * unit)
        joints.update(
            {
                f"{name}_shoulder": shoulder,
                f"{name}_elbow": elbow,
                f"{name}_wrist": wrist,
                f"{name}_hip": hip,
                f"{name}_knee": knee,
                f"{name}_ankle": ankle,
            }
        )
    index = {name: k for k, name in enumerate(BODY_KEYPOINTS)}
    points = np.stack([joints[name] for name in BODY_KEYPOINTS], 1)

    canvas = _Canvas(size, frames, "body")
    canvas.background(background_rng, background, amplitude=20)

    def draw_side(name: str, shade: float) -> None:
        """One side's leg then arm, each followed by its markers (markers live on their limb)."""
        j = {
            k: joints[f"{name}_{k}"] for k in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
        }
        canvas.paint(canvas.capsule(j["hip"], j["knee"], leg_radius), trousers * shade)
        canvas.paint(canvas.capsule(j["knee"], j["ankle"], leg_radius), trousers * shade)
        canvas.markers(
            np.stack([j["hip"], j["knee"]], 1), [index[f"{name}_hip"], index[f"{name}_knee"]]
        )
        canvas.paint(canvas.capsule(j["shoulder"], j["elbow"], limb_radius), shirt * shade)
        canvas.paint(canvas.capsule(j["elbow"], j["wrist"], limb_radius), skin * shade)
        names = [f"{name}_shoulder", f"{name}_elbow", f"{name}_wrist"]
        canvas.markers(
            np.stack([j["shoulder"], j["elbow"], j["wrist"]], 1), [index[n] for n in names]
        )

    far_name, near_name = ("right", "left") if near < 0 else ("left", "right")
    draw_side(far_name, 0.8)  # the far side is drawn first so the torso can hide it
    canvas.paint(canvas.capsule(pelvis, neck, torso_radius), shirt)
    canvas.markers(neck[:, None], [index["neck"]])
    canvas.paint(canvas.disc(head[:, 0], head[:, 1], 0.075 * unit), skin)
    canvas.markers(head[:, None], [index["head"]])
    draw_side(near_name, 1.0)
    images, visible = canvas.finish(points)
    return images, points.astype(np.float32), visible


_RENDERERS = {"face": _render_face, "body": _render_body}


def render_clip(
    kind: str, seed: int, split: str, index: int, identity: int, frames: int = 32, size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one clip: uint8 frames [T, S, S, 3], keypoints [T, K, 2] and visibility [T, K]."""
    if kind not in _RENDERERS:
        raise ConfigError(f"synthetic kind {kind!r} is unknown; known kinds: {', '.join(KINDS)}")
    clip_rng = np.random.default_rng(clip_seed(seed, kind, split, index))
    identity_rng = np.random.default_rng(identity_seed(seed, kind, identity))
    return _RENDERERS[kind](clip_rng, identity_rng, frames, size)


def _dataset_info(
    kind: str, seed: int, num_train: int, num_test: int, frames: int, size: int
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "generator": "animbench.data.synthetic",
        "kind": kind,
        "seed": seed,
        "size": size,
        "frames": frames,
        "num_train": num_train,
        "num_test": num_test,
        "clips_per_identity": CLIPS_PER_IDENTITY,
        "keypoints": list(KEYPOINT_NAMES[kind]),
        "marker_palette": MARKER_PALETTE[: len(KEYPOINT_NAMES[kind])].tolist(),
        "marker_radius": marker_radius(size, kind),
    }


def make_dataset(
    kind: str,
    out: str | Path,
    seed: int = 0,
    num_train: int = 24,
    num_test: int = 6,
    frames: int = 32,
    size: int = 64,
    progress: bool = True,
) -> Path:
    """Generate (or finish generating) a synthetic dataset under ``out`` and return ``out``.

    Clip folders that already exist are kept as they are (``write_clip`` is atomic, so an
    existing folder is complete). A finished dataset (``dataset.json`` present and matching)
    is returned untouched. ``dataset.json`` is written last.
    """
    import pandas as pd
    from tqdm import tqdm

    if kind not in _RENDERERS:
        raise ConfigError(f"synthetic kind {kind!r} is unknown; known kinds: {', '.join(KINDS)}")
    for key, value, minimum in (
        ("num_train", num_train, 1),
        ("num_test", num_test, 1),
        ("frames", frames, 2),
        ("size", size, 16),
    ):
        if int(value) < minimum:
            raise ConfigError(f"synthetic.{key} must be at least {minimum}, got {value}")
    out = Path(out)
    info = _dataset_info(kind, seed, num_train, num_test, frames, size)
    info_path = out / "dataset.json"
    truth_path = out / "ground_truth.parquet"
    if info_path.exists():
        existing = json.loads(info_path.read_text())
        if existing != info:
            raise ConfigError(
                f"{out} already holds a different synthetic dataset ({info_path}); "
                "choose another folder or delete it"
            )
    jobs = [
        ("train", i, name, ident)
        for i, (name, ident) in enumerate(clip_names("train", num_train, frames))
    ]
    jobs += [
        ("test", i, name, ident)
        for i, (name, ident) in enumerate(clip_names("test", num_test, frames))
    ]
    finished = info_path.exists() and truth_path.exists()
    if finished and all((out / split / name).is_dir() for split, _, name, _ in jobs):
        return out
    tables = []
    bar = tqdm(jobs, desc=f"synthetic {kind}", unit="clip", file=sys.stderr, disable=not progress)
    for split, index, name, identity in bar:
        # Rendered even when the folder exists, because the ground truth covers every clip.
        images, points, visible = render_clip(kind, seed, split, index, identity, frames, size)
        clip_dir = out / split / name
        if not clip_dir.exists():
            write_clip(clip_dir, images)
        t, k = visible.shape
        tables.append(
            pd.DataFrame(
                {
                    "split": split,
                    "video": name,
                    "frame": np.repeat(np.arange(t), k).astype(np.int32),
                    "keypoint": np.tile(np.arange(k), t).astype(np.int32),
                    "x": points[..., 0].reshape(-1),
                    "y": points[..., 1].reshape(-1),
                    "visible": visible.reshape(-1),
                }
            )
        )
    truth = pd.concat(tables, ignore_index=True)
    write_atomic(truth_path, lambda p: truth.to_parquet(p, index=False))
    write_atomic(info_path, lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))
    return out
