"""The ``face-alignment`` keypoint detector: 68 face landmarks for face AKD (DESIGN.md §4).

The papers' protocol (pose-evaluation's ``face_pose``, reference-data-and-metrics.md §3.3):
face-alignment's 2D FAN-4 on each frame at dataset resolution, SFD face detector (boxes scoring
over 0.5 after NMS 0.3), the *first* detection (the highest-scoring box, not the largest), and
``flip_input=False``. A frame without a face reports all 68 landmarks as not detected, so AKD
skips it.

The package's own networks and post-processing run here (``SFDDetector`` on a batch of frames,
then ``FAN`` on the crops of every frame's first face, cropped and decoded with
``face_alignment.utils``), but weights never come from the package's loaders, which download
to torch hub on their own: both files are resolved by ``animbench.weights.fetch`` (one cache,
sha256 checked) and a missing file stops with a DataError naming it. No ``torch.compile``.

Landmarks are the library's pixel coordinates at the frame's resolution, unchanged
(integer-valued: face-alignment truncates them); the papers' AKD compared exactly these.
Needs the optional extra: ``pip install 'animbench[detectors]'`` (face-alignment==1.5.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from animbench.downloads import sha256_file
from animbench.errors import AnimbenchError, DataError
from animbench.evaluate.detectors import KeypointDetector, Keypoints, register_keypoint_detector
from animbench.weights import WEIGHTS, cache_dir, fetch

NUM_LANDMARKS = 68
SFD_WEIGHTS = "s3fd"
FAN_WEIGHTS = "2dfan4"
FAN_MODULES = 4  # "2DFAN-4": four stacked hourglasses (NetworkSize.LARGE)


def _import_face_alignment():
    try:
        import face_alignment
    except ImportError as exc:
        raise AnimbenchError(
            "keypoint detector 'face-alignment' needs the face-alignment package: "
            "pip install 'animbench[detectors]'"
        ) from exc
    return face_alignment


def weight_paths() -> dict[str, Path]:
    """Cached paths of the SFD and FAN weights; a DataError names every file not available."""
    paths, missing = {}, []
    for name in (SFD_WEIGHTS, FAN_WEIGHTS):
        path, reason = fetch(name)
        if path is None:
            missing.append(f"{WEIGHTS[name].filename}: {reason}")  # the reason names the URL
        else:
            paths[name] = path
    if missing:
        raise DataError(
            f"face-alignment weights missing: {'; '.join(missing)}; put them in {cache_dir()}"
        )
    return paths


def _as_uint8(frames: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3]; float frames must lie in [0, 1] and are rounded to 8 bits."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [N, H, W, 3], got {frames.shape}")
    if np.issubdtype(frames.dtype, np.floating):
        if frames.size and (frames.min() < 0.0 or frames.max() > 1.0):
            raise ValueError("float frames must lie in [0, 1]")
        return np.rint(frames * 255.0).astype(np.uint8)
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 or float frames, got {frames.dtype}")
    return frames


@register_keypoint_detector("face-alignment")
class FaceAlignmentDetector(KeypointDetector):
    """face-alignment 2D FAN-4 (68 landmarks) on the first SFD face of each frame.

    ``device``: None picks CUDA when available. ``batch_size``: frames per SFD pass and crops
    per FAN pass (memory only; results do not depend on it).
    """

    version = "animbench-1"  # prefixed with the face-alignment version in __init__
    num_keypoints = NUM_LANDMARKS

    def __init__(self, *, device: str | None = None, batch_size: int = 16) -> None:
        fa = _import_face_alignment()
        from face_alignment.detection.sfd.sfd_detector import SFDDetector
        from face_alignment.models import FAN

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = int(batch_size)
        paths = weight_paths()
        # the package's own detector class (its weights loader takes a path: no download)
        self.face_detector = SFDDetector(
            device=self.device, path_to_detector=str(paths[SFD_WEIGHTS])
        )
        self.fan = FAN(FAN_MODULES)
        state = torch.load(paths[FAN_WEIGHTS], map_location="cpu", weights_only=True)
        self.fan.load_state_dict(state)
        self.fan.to(self.device, dtype=torch.float32).eval()
        self.version = f"face-alignment {fa.__version__}/{type(self).version}"
        self.weights_sha256 = ",".join(
            f"{WEIGHTS[name].filename}:{sha256_file(paths[name])}"
            for name in (SFD_WEIGHTS, FAN_WEIGHTS)
        )

    @torch.no_grad()
    def first_faces(self, frames: np.ndarray) -> list[np.ndarray | None]:
        """The first SFD box [x1, y1, x2, y2, score] of each uint8 frame, None without a face."""
        boxes: list[np.ndarray | None] = []
        for start in range(0, len(frames), self.batch_size):
            batch = torch.from_numpy(frames[start : start + self.batch_size]).permute(0, 3, 1, 2)
            for found in self.face_detector.detect_from_batch(batch):
                boxes.append(np.asarray(found[0]) if len(found) else None)
        return boxes

    @torch.no_grad()
    def detect(self, frames: np.ndarray) -> Keypoints:
        from face_alignment.utils import CENTER_Y_OFFSET, crop, get_preds_fromhm

        frames = _as_uint8(frames)
        xy = np.zeros((len(frames), NUM_LANDMARKS, 2), np.float32)
        detected = np.zeros((len(frames), NUM_LANDMARKS), bool)
        # frames with a face, and the centre and scale of their FAN crop (as upstream's
        # FaceAlignment.get_landmarks_from_image computes them)
        found, centres, scales = [], [], []
        for i, box in enumerate(self.first_faces(frames)):
            if box is not None:
                x1, y1, x2, y2 = box[:4]
                centre = np.array([x2 - (x2 - x1) / 2.0, y2 - (y2 - y1) / 2.0])
                centre[1] = centre[1] - (y2 - y1) * CENTER_Y_OFFSET
                found.append(i)
                centres.append(centre)
                scales.append((x2 - x1 + y2 - y1) / self.face_detector.reference_scale)
        for start in range(0, len(found), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(found)))
            crops = [
                crop(frames[found[j]], centres[j], scales[j]).transpose(2, 0, 1) for j in chunk
            ]
            inputs = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0)
            heatmaps = self.fan(inputs.to(self.device))[-1].to("cpu", torch.float32).numpy()
            for k, j in enumerate(chunk):
                _, points, _ = get_preds_fromhm(heatmaps[k : k + 1], centres[j], scales[j])
                xy[found[j]] = points.reshape(NUM_LANDMARKS, 2)
                detected[found[j]] = True
        return Keypoints(xy=xy, detected=detected)
