"""The detector/embedder interface and the pixel-based synthetic backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from animbench.data.synthetic import BODY_KEYPOINTS, FACE_KEYPOINTS, render_clip
from animbench.errors import ConfigError
from animbench.evaluate import detectors
from animbench.evaluate.detectors import (
    IdentityEmbedder,
    KeypointDetector,
    Keypoints,
    available_identity_embedders,
    available_keypoint_detectors,
    get_identity_embedder,
    get_keypoint_detector,
    register_keypoint_detector,
)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("kind", ["face", "body"])
def test_detections_match_ground_truth(kind: str, size: int) -> None:
    detector = get_keypoint_detector(f"synthetic-{kind}")
    true_positive = false_positive = false_negative = 0
    errors = []
    for index in range(4):
        frames, points, visible = render_clip(kind, 11, "test", index, index, frames=16, size=size)
        found = detector.detect(frames)
        assert found.xy.shape == points.shape and found.xy.dtype == np.float32
        assert found.detected.shape == visible.shape and found.detected.dtype == bool
        both = found.detected & visible
        true_positive += both.sum()
        false_positive += (found.detected & ~visible).sum()
        false_negative += (~found.detected & visible).sum()
        errors.append(np.abs(found.xy - points)[both].mean(-1))
    assert true_positive / (true_positive + false_negative) >= 0.95  # recall
    assert true_positive / (true_positive + false_positive) >= 0.95  # precision
    assert np.concatenate(errors).mean() < 1.0  # pixels


def test_body_detector_reports_hidden_keypoints_missing() -> None:
    frames, _, visible = render_clip("body", 2, "train", 0, 0, frames=16)
    assert not visible.all()
    found = get_keypoint_detector("synthetic-body").detect(frames)
    assert (~found.detected[~visible]).mean() >= 0.9


@pytest.mark.parametrize("kind", ["face", "body"])
def test_blank_frame_has_no_keypoints(kind: str) -> None:
    blank = np.full((2, 64, 64, 3), 128, np.uint8)
    found = get_keypoint_detector(f"synthetic-{kind}").detect(blank)
    assert not found.detected.any()


def test_batch_equals_one_frame_at_a_time() -> None:
    frames, _, _ = render_clip("body", 4, "train", 1, 0, frames=6)
    detector = get_keypoint_detector("synthetic-body")
    embedder = get_identity_embedder("synthetic-body")
    batch = detector.detect(frames)
    single = [detector.detect(frame[None]) for frame in frames]
    assert np.array_equal(batch.detected, np.concatenate([s.detected for s in single]))
    assert np.allclose(batch.xy, np.concatenate([s.xy for s in single]))
    embedded = embedder.embed(frames)
    assert np.allclose(embedded, np.concatenate([embedder.embed(frame[None]) for frame in frames]))


@pytest.mark.parametrize("kind", ["face", "body"])
def test_same_identity_embeddings_are_much_closer(kind: str) -> None:
    embedder = get_identity_embedder(f"synthetic-{kind}")
    embeddings, identities = [], []
    for index in range(9):  # three clips of each of three identities
        frames, _, _ = render_clip(kind, 0, "train", index, index // 3, frames=16)
        embeddings.append(embedder.embed(frames[::5]))
        identities += [index // 3] * len(frames[::5])
    e = np.concatenate(embeddings)
    assert e.dtype == np.float32 and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    squared = ((e[:, None] - e[None]) ** 2).sum(-1)
    same = np.equal.outer(identities, identities)
    np.fill_diagonal(same, False)
    different = ~np.equal.outer(identities, identities)
    assert squared[same].mean() < 0.25 * squared[different].mean()
    assert np.quantile(squared[same], 0.9) < np.quantile(squared[different], 0.1)


def test_registry_lists_and_builds_backends() -> None:
    assert {"synthetic-face", "synthetic-body"} <= set(available_keypoint_detectors())
    assert {"synthetic-face", "synthetic-body"} <= set(available_identity_embedders())
    face = get_keypoint_detector("synthetic-face")
    assert isinstance(face, KeypointDetector) and face.name == "synthetic-face"
    assert face.num_keypoints == len(FACE_KEYPOINTS) and face.version
    assert get_keypoint_detector("synthetic-body").num_keypoints == len(BODY_KEYPOINTS)
    assert isinstance(get_identity_embedder("synthetic-face"), IdentityEmbedder)


def test_unknown_name_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="openpose-18.*synthetic-body"):
        get_keypoint_detector("openpose-18")
    with pytest.raises(ConfigError, match="openface"):
        get_identity_embedder("openface")


def test_a_new_backend_plugs_in_through_the_registry(monkeypatch) -> None:
    monkeypatch.setattr(detectors, "_KEYPOINT_DETECTORS", dict(detectors._KEYPOINT_DETECTORS))

    @register_keypoint_detector("centre-only")
    class CentreOnly(KeypointDetector):
        version = "0"
        num_keypoints = 1

        def __init__(self, offset: float = 0.0) -> None:
            self.offset = offset

        def detect(self, frames: np.ndarray) -> Keypoints:
            n, height, width, _ = frames.shape
            xy = np.tile(np.float32([width / 2 + self.offset, height / 2]), (n, 1, 1))
            return Keypoints(xy=xy, detected=np.ones((n, 1), bool))

    detector = get_keypoint_detector("centre-only", offset=1.0)
    assert detector.name == "centre-only"
    assert detector.detect(np.zeros((1, 8, 8, 3), np.uint8)).xy[0, 0, 0] == 5.0


def test_backend_modules_exist_and_load_only_when_asked_for() -> None:
    """The registry names its backends' modules (evaluate/backends/) by string: each must be
    found, and importing the protocol (evaluate, its registry, metrics, reconstruct) must not
    import any of them; the openpifpaf worker is started by the file path beside its backend."""
    import importlib.util
    import subprocess
    import sys

    modules = {*detectors._KEYPOINT_MODULES.values(), *detectors._IDENTITY_MODULES.values()}
    for module in modules:
        assert module.startswith("animbench.evaluate.backends."), module
        assert importlib.util.find_spec(module) is not None, module
    script = (
        "import sys\n"
        "import animbench.evaluate, animbench.evaluate.detectors\n"
        "import animbench.evaluate.metrics, animbench.evaluate.reconstruct\n"
        "print(sorted(m for m in sys.modules if m.startswith('animbench.evaluate.backends')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    assert loaded.strip() == "[]"

    from animbench.evaluate.backends import openpifpaf_backend

    assert openpifpaf_backend.WORKER.is_file()
    assert openpifpaf_backend.WORKER.parent == Path(openpifpaf_backend.__file__).parent
