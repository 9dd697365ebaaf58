"""One interface for the keypoint detectors and identity embedders behind AKD, MKR and AED.

Metrics only see two abstract classes:

* ``KeypointDetector.detect(frames) -> Keypoints``: frames are uint8 ``[N, H, W, 3]`` (a batch);
  the result holds pixel coordinates ``xy`` float32 ``[N, K, 2]`` (x, y) at the frame's own
  resolution, with pixel ``(row i, column j)`` centred at ``(x=j, y=i)``, and a per-keypoint
  ``detected`` flag bool ``[N, K]``. AKD averages over keypoints detected in both frames; MKR
  counts keypoints detected in the ground truth and missing in the prediction. A detector that
  finds no face at all reports every keypoint of that frame as not detected.
* ``IdentityEmbedder.embed(frames) -> float32 [N, D]``; AED is the squared Euclidean distance
  between the embeddings of a generated frame and its ground truth.

Each class carries ``name``, ``version`` and ``weights_sha256`` (None when there are no weights);
every metric row records them so readers know which numbers are comparable.

Backends register under a name with ``@register_keypoint_detector("name")`` or
``@register_identity_embedder("name")`` and are built with ``get_keypoint_detector(name, **kwargs)``.
Third-party backends (face-alignment 68 landmarks, openpifpaf COCO-17, face and re-id identity
networks) plug in the same way: a module defines a subclass that imports its library lazily in
``__init__`` (so the package imports without them), loads weights pinned by sha256, converts its
library's output to ``Keypoints`` and registers itself; importing that module is what makes the
name available. Constructors take keyword arguments only (device, batch size, weights path).

Backends of optional libraries live in their own modules, listed in ``_KEYPOINT_MODULES`` /
``_IDENTITY_MODULES`` and imported the first time their name is asked for: ``face-alignment``
(68 face landmarks, ``animbench.evaluate.backends.face_alignment_backend``, extra ``[detectors]``);
``face-identity`` (FaceNet VGGFace2, 512-d) and ``person-reid`` (ResNet-50 Market-1501 re-id,
2048-d) in ``animbench.evaluate.backends.identity_backends`` (networks written there, plain torch).
``openpifpaf`` (COCO-17 body keypoints, ``animbench.evaluate.backends.openpifpaf_backend``) runs
openpifpaf in a worker process in its own environment (``animbench pose-env``).

Built in here are the ``synthetic-face`` and ``synthetic-body`` backends for the synthetic
benchmark (``animbench.data.synthetic``). They work from pixels alone: a keypoint is the
centroid of the pixels close to its marker colour, and the identity embedding is a colour
histogram of the non-marker pixels. They never read the generator's ground truth.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from animbench.data.synthetic import BODY_KEYPOINTS, FACE_KEYPOINTS, MARKER_PALETTE, marker_radius
from animbench.errors import ConfigError


@dataclass
class Keypoints:
    """Keypoints of a batch of frames."""

    xy: np.ndarray  # float32 [N, K, 2], pixel coordinates (x, y) at the frame's resolution
    detected: np.ndarray  # bool [N, K], per-keypoint detected flag


class KeypointDetector(ABC):
    """A keypoint detector; subclasses set the class attributes and implement ``detect``."""

    name: str
    version: str
    weights_sha256: str | None = None
    num_keypoints: int
    keypoint_names: tuple[str, ...] = ()

    @abstractmethod
    def detect(self, frames: np.ndarray) -> Keypoints:
        """Keypoints of uint8 frames [N, H, W, 3]."""


class IdentityEmbedder(ABC):
    """An identity embedder; AED is the squared Euclidean distance between embeddings."""

    name: str
    version: str
    weights_sha256: str | None = None

    @abstractmethod
    def embed(self, frames: np.ndarray) -> np.ndarray:
        """float32 [N, D] embeddings of uint8 frames [N, H, W, 3]."""


_KEYPOINT_DETECTORS: dict[str, type[KeypointDetector]] = {}
_IDENTITY_EMBEDDERS: dict[str, type[IdentityEmbedder]] = {}
_Class = TypeVar("_Class", bound=type)
# name -> module that registers it, imported on first use (optional libraries load lazily)
_KEYPOINT_MODULES = {
    "face-alignment": "animbench.evaluate.backends.face_alignment_backend",
    "openpifpaf": "animbench.evaluate.backends.openpifpaf_backend",
}
_IDENTITY_MODULES = dict.fromkeys(
    ("face-identity", "person-reid"), "animbench.evaluate.backends.identity_backends"
)


# backend -> the animbench.weights entries it loads: what `animbench weights fetch` (the workflow's
# `weights` rule) gets into the cache before a metrics job, which may run without internet
BACKEND_WEIGHTS: dict[str, tuple[str, ...]] = {
    "face-alignment": ("s3fd", "2dfan4"),
    "openpifpaf": ("openpifpaf_shufflenetv2k16",),
    "face-identity": ("facenet_vggface2",),
    "person-reid": ("reid_resnet50_market1501",),
}


def weights_for(*backends: str) -> list[str]:
    """Weight names the given detector/embedder backends need (none for built-in ones)."""
    return [name for backend in backends for name in BACKEND_WEIGHTS.get(backend, ())]


def _register(registry: dict, name: str) -> Callable[[_Class], _Class]:
    def decorator(cls: _Class) -> _Class:
        if name in registry and registry[name] is not cls:
            raise ValueError(f"{name!r} is already registered to {registry[name].__qualname__}")
        cls.name = name
        registry[name] = cls
        return cls

    return decorator


def register_keypoint_detector(name: str) -> Callable[[_Class], _Class]:
    """Class decorator: make a KeypointDetector subclass available under ``name``."""
    return _register(_KEYPOINT_DETECTORS, name)


def register_identity_embedder(name: str) -> Callable[[_Class], _Class]:
    """Class decorator: make an IdentityEmbedder subclass available under ``name``."""
    return _register(_IDENTITY_EMBEDDERS, name)


def _build(registry: dict, modules: dict, what: str, name: str, kwargs: dict):
    if name not in registry and name in modules:
        importlib.import_module(modules[name])
    if name not in registry:
        known = ", ".join(sorted(set(registry) | set(modules))) or "none"
        raise ConfigError(f"{what} {name!r} is unknown; known: {known}")
    return registry[name](**kwargs)


def get_keypoint_detector(name: str, **kwargs) -> KeypointDetector:
    """Build the keypoint detector registered under ``name``."""
    return _build(_KEYPOINT_DETECTORS, _KEYPOINT_MODULES, "keypoint detector", name, kwargs)


def get_identity_embedder(name: str, **kwargs) -> IdentityEmbedder:
    """Build the identity embedder registered under ``name``."""
    return _build(_IDENTITY_EMBEDDERS, _IDENTITY_MODULES, "identity embedder", name, kwargs)


def available_keypoint_detectors() -> list[str]:
    """Registered names and the names of backend modules not imported yet."""
    return sorted(set(_KEYPOINT_DETECTORS) | set(_KEYPOINT_MODULES))


def available_identity_embedders() -> list[str]:
    return sorted(set(_IDENTITY_EMBEDDERS) | set(_IDENTITY_MODULES))


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames


def _marker_distance_squared(frames: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Squared RGB distance of every pixel to one colour, int32 [N, H, W]."""
    diff = frames.astype(np.int32) - colour.astype(np.int32)
    return np.einsum("nhwc,nhwc->nhw", diff, diff)


# ---------------------------------------------------------------------------------------------
# Synthetic backends.


class _MarkerDetector(KeypointDetector):
    """Finds each marker as the pixels within ``tolerance`` (RGB distance) of its colour.

    A keypoint is detected when at least ``min_fraction`` of a whole marker's area matches,
    so a marker mostly hidden by a limb or cut by the frame border counts as missing.
    """

    version = "1"
    keypoint_names: tuple[str, ...] = ()

    def __init__(self, tolerance: float = 90.0, min_fraction: float = 0.45) -> None:
        self.tolerance = float(tolerance)
        self.min_fraction = float(min_fraction)
        self.palette = MARKER_PALETTE[: self.num_keypoints]

    def min_pixels(self, height: int, width: int) -> float:
        """Matching pixels needed for a detection; the marker area grows with the frame area."""
        radius = marker_radius(min(height, width), self.kind)
        return max(2.0, self.min_fraction * np.pi * radius**2)

    def detect(self, frames: np.ndarray) -> Keypoints:
        frames = _check_frames(frames)
        n, height, width, _ = frames.shape
        xs = np.arange(width, dtype=np.float64)
        ys = np.arange(height, dtype=np.float64)
        xy = np.zeros((n, self.num_keypoints, 2), np.float32)
        detected = np.zeros((n, self.num_keypoints), bool)
        needed = self.min_pixels(height, width)
        for k, colour in enumerate(self.palette):
            mask = _marker_distance_squared(frames, colour) <= self.tolerance**2
            count = mask.sum(axis=(1, 2))
            safe = np.maximum(count, 1)
            xy[:, k, 0] = (mask.sum(axis=1) * xs).sum(axis=1) / safe
            xy[:, k, 1] = (mask.sum(axis=2) * ys).sum(axis=1) / safe
            detected[:, k] = count >= needed
        xy[~detected] = 0.0
        return Keypoints(xy=xy, detected=detected)


@register_keypoint_detector("synthetic-face")
class SyntheticFaceDetector(_MarkerDetector):
    keypoint_names = FACE_KEYPOINTS
    num_keypoints = len(FACE_KEYPOINTS)
    kind = "face"


@register_keypoint_detector("synthetic-body")
class SyntheticBodyDetector(_MarkerDetector):
    keypoint_names = BODY_KEYPOINTS
    num_keypoints = len(BODY_KEYPOINTS)
    kind = "body"


class _ColourHistogramEmbedder(IdentityEmbedder):
    """Colour histogram of the non-marker pixels in concentric rings around the frame centre.

    Identities differ in skin, hair, clothing and background colours, so the histogram changes
    little as a person moves and a lot between people. Each ring's histogram is normalised, the
    square root taken (so a few dominant bins do not swamp the rest) and the whole vector
    L2-normalised, so squared distances lie in [0, 4].
    """

    version = "1"

    def __init__(self, bins: int = 8, rings: int = 3, tolerance: float = 90.0) -> None:
        self.bins = int(bins)
        self.rings = int(rings)
        self.tolerance = float(tolerance)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames)
        n, height, width, _ = frames.shape
        colours = self.bins**3
        quantised = (frames.astype(np.int32) * self.bins) >> 8
        colour_bin = (quantised[..., 0] * self.bins + quantised[..., 1]) * self.bins + quantised[
            ..., 2
        ]
        ys, xs = np.mgrid[0:height, 0:width]
        radius = np.hypot((xs - (width - 1) / 2) / width, (ys - (height - 1) / 2) / height) * 2
        ring = np.minimum((radius / np.sqrt(2) * self.rings).astype(np.int64), self.rings - 1)
        keep = np.ones((n, height, width), bool)
        for colour in MARKER_PALETTE:  # markers are keypoints, not appearance
            keep &= _marker_distance_squared(frames, colour) > self.tolerance**2
        index = (np.arange(n)[:, None, None] * self.rings + ring[None]) * colours + colour_bin
        histogram = np.bincount(index[keep], minlength=n * self.rings * colours).astype(np.float64)
        histogram = histogram.reshape(n, self.rings, colours)
        histogram /= np.maximum(histogram.sum(axis=2, keepdims=True), 1.0)
        embedding = np.sqrt(histogram).reshape(n, -1)
        embedding /= np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
        return embedding.astype(np.float32)


@register_identity_embedder("synthetic-face")
class SyntheticFaceEmbedder(_ColourHistogramEmbedder):
    pass


@register_identity_embedder("synthetic-body")
class SyntheticBodyEmbedder(_ColourHistogramEmbedder):
    pass
