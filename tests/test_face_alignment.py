"""The face-alignment backend: face-alignment's real SFD and FAN classes on random weights.

The weight files are written into a temporary cache under their real names and pinned (in a
patched registry) to their own digests, so ``animbench.weights.fetch`` finds and verifies them.
The SFD heads are set so that detection depends on the pixels: every conv bias is zero, so a
frame of exactly SFD's mean colour gives all-zero features and only the background bias wins
(no face), while a textured frame lights up the face logits of one head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

# face_alignment.utils decorates its heatmap decoding with numba.jit; compiling it takes ~15 s on
# a busy CPU, so the package is imported with the JIT off (plain Python, same results)
numba = pytest.importorskip("numba")
_jit, numba.config.DISABLE_JIT = numba.config.DISABLE_JIT, True
try:
    pytest.importorskip("face_alignment")
finally:
    numba.config.DISABLE_JIT = _jit

from face_alignment.detection.sfd.net_s3fd import s3fd  # noqa: E402
from face_alignment.models import FAN  # noqa: E402

from animbench import weights  # noqa: E402
from animbench.downloads import sha256_file  # noqa: E402
from animbench.errors import DataError  # noqa: E402
from animbench.evaluate.backends.face_alignment_backend import (  # noqa: E402
    FAN_MODULES,
    FAN_WEIGHTS,
    SFD_WEIGHTS,
    FaceAlignmentDetector,
)
from animbench.evaluate.detectors import (  # noqa: E402
    Keypoints,
    available_keypoint_detectors,
    get_keypoint_detector,
)

SIZE = 128
BLANK = (123, 117, 104)  # RGB of SFD's BGR mean (104, 117, 123): a zero input after centring


def _random_sfd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = s3fd()
    with torch.no_grad():
        for name, module in net.named_modules():
            if not isinstance(module, torch.nn.Conv2d):
                continue
            module.bias.zero_()
            if "mbox_loc" in name:
                module.weight.zero_()  # boxes are the priors
            elif "mbox_conf" in name:
                module.bias[0] = 4.0  # background, alone on a blank frame
                if name.startswith("conv5_3"):  # stride 16, 64 px boxes: faces on texture
                    module.weight[1] = 2 * module.weight[1].abs()
                    module.weight[0] = 0.0
                else:
                    module.weight.zero_()
    return net.state_dict()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> dict[str, Path]:
    """s3fd and 2DFAN4 files of randomly initialised networks, under their real names."""
    folder = tmp_path_factory.mktemp("fa-weights")
    torch.manual_seed(1)
    states = {SFD_WEIGHTS: _random_sfd(), FAN_WEIGHTS: FAN(FAN_MODULES).state_dict()}
    paths = {}
    for name, state in states.items():
        paths[name] = folder / weights.WEIGHTS[name].filename
        torch.save(state, paths[name])
    return paths


@pytest.fixture(scope="module")
def cache(random_weights, tmp_path_factory) -> Iterator[Path]:
    """An offline animbench cache holding the random files, pinned to their digests."""
    root = tmp_path_factory.mktemp("fa-cache")
    (root / "weights").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANIMBENCH_CACHE", str(root))
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("ANIMBENCH_OFFLINE", "1")
        for name, path in random_weights.items():
            entry = weights.WEIGHTS[name]
            (root / "weights" / entry.filename).symlink_to(path)
            pinned = dataclasses.replace(entry, sha256_prefix=sha256_file(path))
            mp.setitem(weights.WEIGHTS, name, pinned)
        yield root


@pytest.fixture(scope="module")
def detector(cache) -> FaceAlignmentDetector:
    # batch_size 2: the three test frames go through SFD in two chunks
    return get_keypoint_detector("face-alignment", device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Two textured frames around one blank frame, uint8 [3, 128, 128, 3]."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    frames[1] = BLANK
    return frames


@pytest.fixture(scope="module")
def found(detector, frames) -> Keypoints:
    return detector.detect(frames)


def test_registered_by_name_and_records_provenance(detector) -> None:
    assert "face-alignment" in available_keypoint_detectors()
    assert isinstance(detector, FaceAlignmentDetector)
    assert detector.name == "face-alignment" and detector.num_keypoints == 68
    assert detector.version.startswith("face-alignment 1.5.0/")
    for name in (SFD_WEIGHTS, FAN_WEIGHTS):
        entry = weights.WEIGHTS[name]
        assert f"{entry.filename}:{entry.sha256_prefix}" in detector.weights_sha256


def test_landmarks_per_frame_and_blank_frame_missing(detector, frames, found) -> None:
    assert found.xy.shape == (3, 68, 2) and found.xy.dtype == np.float32
    assert found.detected.shape == (3, 68) and found.detected.dtype == bool
    assert found.detected[[0, 2]].all() and not found.detected[1].any()
    assert not found.xy[1].any()
    # landmarks lie in the FAN crop around the first face box, in pixels of the frame
    for i in (0, 2):
        x1, y1, x2, y2, _ = detector.first_faces(frames[i : i + 1])[0]
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2 - 0.12 * (y2 - y1)])
        half = 100 * (x2 - x1 + y2 - y1) / 195  # the crop is 200 * scale pixels wide
        assert (np.abs(found.xy[i] - centre) <= half + 1).all()


def test_batch_equals_one_frame_at_a_time(detector, frames, found) -> None:
    single = [detector.detect(frame) for frame in frames]  # [H, W, 3] is a batch of one
    assert np.array_equal(found.detected, np.concatenate([s.detected for s in single]))
    assert np.array_equal(found.xy, np.concatenate([s.xy for s in single]))


def test_matches_face_alignment_pipeline(cache, detector, frames, found, monkeypatch) -> None:
    """Same faces and landmarks as FaceAlignment(TWO_D, flip_input=False, compile=False)."""
    import face_alignment
    import face_alignment.api

    fan_file = weights.cache_dir() / weights.WEIGHTS[FAN_WEIGHTS].filename
    monkeypatch.setattr(face_alignment.api, "load_file_from_url", lambda url: str(fan_file))
    reference = face_alignment.FaceAlignment(
        face_alignment.LandmarksType.TWO_D,
        device="cpu",
        flip_input=False,
        compile=False,
        face_detector_kwargs={
            "path_to_detector": str(weights.cache_dir() / weights.WEIGHTS[SFD_WEIGHTS].filename)
        },
    )
    batch_boxes = detector.first_faces(frames)
    for i, frame in enumerate(frames):
        # SFD alone on the frame (upstream's single-image path), then FAN on its first face
        # only: upstream runs FAN on every face, which here would be ~10 crops a frame
        faces = reference.face_detector.detect_from_image(frame.copy())
        if not len(faces):
            assert not found.detected[i].any()
            continue
        assert found.detected[i].all()
        np.testing.assert_allclose(batch_boxes[i], faces[0], rtol=1e-5)
        expected = reference.get_landmarks_from_image(frame, detected_faces=faces[:1])
        assert np.array_equal(found.xy[i], expected[0])


def test_float_frames_in_unit_range(detector, frames, found) -> None:
    as_float = detector.detect(frames[:1].astype(np.float32) / 255.0)
    assert np.array_equal(as_float.xy, found.xy[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector.detect(frames[:1].astype(np.float32))
    with pytest.raises(ValueError, match="N, H, W, 3"):
        detector.detect(frames[:, :, :, :2])


def test_missing_weights_name_the_files_and_urls(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ANIMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    with pytest.raises(DataError) as error:
        get_keypoint_detector("face-alignment", device="cpu")
    message = str(error.value)
    assert "\n" not in message
    for name in (SFD_WEIGHTS, FAN_WEIGHTS):
        entry = weights.WEIGHTS[name]
        assert entry.filename in message and entry.url in message
    assert not (tmp_path / "torch").exists()  # nothing fetched behind our back
