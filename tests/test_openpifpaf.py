"""The openpifpaf backend: a worker in the pose environment, driven from the main one.

Tests that need the pose environment (``animbench pose-env``) skip without it, unless
ANIMBENCH_REQUIRE_POSE_ENV=1 (CI), where they fail. They run openpifpaf's real shufflenetv2k16
network with cif/caf heads on random weights: it finds nobody, so they check shapes, dtypes
and the handling of missing people, not accuracy; the batching test rigs those weights so that
people are found (`_RIG`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from animbench import pose_env, weights
from animbench.cli import main
from animbench.downloads import sha256_file
from animbench.errors import AnimbenchError, DataError
from animbench.evaluate.backends import openpifpaf_backend
from animbench.evaluate.backends.openpifpaf_backend import (
    KEYPOINT_THRESHOLD,
    NUM_KEYPOINTS,
    WEIGHTS_NAME,
    OpenPifPafDetector,
)
from animbench.evaluate.detectors import available_keypoint_detectors, get_keypoint_detector

REPO = Path(__file__).resolve().parents[1]


def _pose_prefix() -> Path:
    return Path(os.environ.get(pose_env.ENV_VARIABLE) or REPO / pose_env.DEFAULT_PREFIX)


@pytest.fixture(scope="module")
def prefix() -> Path:
    """The pose environment; skips (fails under ANIMBENCH_REQUIRE_POSE_ENV=1) without it."""
    found = _pose_prefix()
    if not pose_env.is_ready(found):
        message = f"pose environment {found} not built: run `animbench pose-env --prefix {found}`"
        if os.environ.get("ANIMBENCH_REQUIRE_POSE_ENV") == "1":
            pytest.fail(f"{message} (required: ANIMBENCH_REQUIRE_POSE_ENV=1)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def detector(prefix: Path):
    with OpenPifPafDetector(pose_env=prefix, random_weights=True, batch_size=3, threads=1) as det:
        yield det


# openpifpaf's network on random weights, rigged so that its decoder finds people in random
# frames (random weights alone find nobody, and zero detections compared with zero detections
# test nothing). The random backbone's features are tiny (~1e-6) but depend on the pixels, so
# each head's confidence weights are scaled up by 1e6 (confidences then range over ~0.01–1
# with the image) on a +3 logit bias; vectors are shrunk so the fields vote near their own cell,
# and scales raised (softplus(+4) ≈ 4 cells) so neighbouring votes add up in openpifpaf's
# high-resolution confidence map past its seed threshold. Which person wins then depends on
# the pixels by clear margins, not float noise, so batched and per-frame requests must agree.
_RIG = """
import sys, torch, openpifpaf
torch.manual_seed(0)
metas = openpifpaf.plugins.coco.CocoKp().head_metas
net, _ = openpifpaf.network.Factory(base_name="shufflenetv2k16").factory(head_metas=metas)
with torch.no_grad():
    for head in net.head_nets:
        # conv channels: (field, component, sub-pixel) before the pixel shuffle; components
        # are (width, confidences, vectors x/y, scales)
        shape = (head.n_fields, head.n_components, head.upsample_stride**2)
        weight = head.conv.weight.view(*shape, -1)
        bias = head.conv.bias.view(shape)
        confidences = slice(1, 1 + head.n_confidences)
        weight[:, confidences] *= 1e6
        bias[:, confidences] += 3.0
        regressions = slice(1 + head.n_confidences, None)
        weight[:, regressions] *= 0.05
        bias[:, regressions] *= 0.05
        bias[:, 1 + head.n_confidences + 2 * head.n_vectors :] += 4.0
torch.save({"model": net, "epoch": 0}, sys.argv[1])
"""


@pytest.fixture(scope="module")
def rigged(prefix: Path, tmp_path_factory) -> OpenPifPafDetector:
    """A detector that finds people (see _RIG), batch size 3."""
    path = tmp_path_factory.mktemp("openpifpaf") / "rigged.pkl"
    python = pose_env.pose_python(prefix)
    subprocess.run([str(python), "-I", "-c", _RIG, str(path)], check=True, timeout=300)
    with OpenPifPafDetector(pose_env=prefix, checkpoint=path, batch_size=3, threads=1) as det:
        yield det


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- without the env


def test_registered() -> None:
    assert "openpifpaf" in available_keypoint_detectors()


def test_missing_pose_env_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(AnimbenchError) as info:
        get_keypoint_detector("openpifpaf", pose_env=tmp_path / "pose", random_weights=True)
    message = str(info.value)
    assert "\n" not in message
    assert "animbench pose-env" in message and str(tmp_path / "pose") in message


def test_unfinished_pose_env_counts_as_missing(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    assert not pose_env.is_ready(tmp_path)  # no stamp: an interrupted build
    (tmp_path / pose_env.STAMP).write_text(json.dumps({"versions": {"openpifpaf": "0.12.14"}}))
    assert not pose_env.is_ready(tmp_path)
    stamp = {"versions": {"openpifpaf": pose_env.OPENPIFPAF_VERSION}}
    (tmp_path / pose_env.STAMP).write_text(json.dumps(stamp))
    assert pose_env.is_ready(tmp_path)


def test_missing_weights_name_file_and_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ANIMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    entry = weights.WEIGHTS[WEIGHTS_NAME]
    with pytest.raises(DataError) as info:
        openpifpaf_backend.weights_path()
    message = str(info.value)
    assert entry.filename in message and entry.url in message and "\n" not in message


def test_weights_pin_is_the_names_hash_suffix() -> None:
    entry = weights.WEIGHTS[WEIGHTS_NAME]
    assert entry.filename.endswith(f"-{entry.sha256_prefix}.pkl")


def test_detected_flag_follows_the_threshold(monkeypatch) -> None:
    """detect() keeps keypoints at or above openpifpaf's 0.15 and zeroes the others."""
    raw = np.zeros((2, NUM_KEYPOINTS, 3), np.float32)
    raw[0, :, :2] = 10.0
    raw[0, 0, 2] = KEYPOINT_THRESHOLD
    raw[0, 1, 2] = 0.9
    raw[0, 2, 2] = 0.1  # below the threshold: missing even though it has coordinates
    det = object.__new__(OpenPifPafDetector)
    det._process = None
    monkeypatch.setattr(det, "raw", lambda frames: raw, raising=False)
    keypoints = det.detect(np.zeros((2, 8, 8, 3), np.uint8))
    assert keypoints.xy.dtype == np.float32 and keypoints.detected.dtype == bool
    assert keypoints.detected[0].tolist() == [True, True] + [False] * (NUM_KEYPOINTS - 2)
    assert not keypoints.detected[1].any()  # a frame without a person: all 17 missing
    assert (keypoints.xy[~keypoints.detected] == 0).all()
    assert (keypoints.xy[0, :2] == 10.0).all()


def test_cli_refuses_to_delete_a_foreign_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "data.txt").write_text("mine")
    assert main(["pose-env", "--prefix", str(tmp_path)]) == 2
    assert "not a virtual environment" in capsys.readouterr().err
    assert (tmp_path / "data.txt").exists()


# --------------------------------------------------------------------------- with the env


def test_shapes_and_missing_people(detector: OpenPifPafDetector) -> None:
    for size in (256, 384):  # TaiChi and TED resolutions
        keypoints = detector.detect(_frames(4, size))
        assert keypoints.xy.shape == (4, NUM_KEYPOINTS, 2) and keypoints.xy.dtype == np.float32
        assert keypoints.detected.shape == (4, NUM_KEYPOINTS)
        assert keypoints.detected.dtype == bool
        assert (keypoints.xy[~keypoints.detected] == 0).all()
    assert detector.version.startswith("openpifpaf 0.13.11/torch 2.5.1")
    assert detector.weights_sha256 is None


def test_batch_equals_frame_by_frame(rigged: OpenPifPafDetector) -> None:
    frames = _frames(5, 256, seed=1)
    batched = rigged.raw(frames)  # batch_size 3: requests of 3 and 2 frames
    single = np.concatenate([rigged.raw(frame) for frame in frames])
    assert batched.shape == (5, NUM_KEYPOINTS, 3)
    # people found in every frame, at different places: the comparison compares detections
    found = batched[..., 2] >= KEYPOINT_THRESHOLD
    assert found.any(axis=1).all(), found.sum(axis=1)
    assert len({batched[i, :, :2].tobytes() for i in range(5)}) == 5
    np.testing.assert_allclose(batched, single, atol=1e-3)
    detected = rigged.detect(frames).detected
    assert detected.sum() > 0 and np.array_equal(detected, found)


def test_empty_batch_and_single_frame(detector: OpenPifPafDetector) -> None:
    assert detector.detect(np.zeros((0, 256, 256, 3), np.uint8)).xy.shape == (0, 17, 2)
    assert detector.detect(_frames(1, 256)[0]).xy.shape == (1, 17, 2)


def test_worker_error_is_reported_and_worker_survives(detector: OpenPifPafDetector) -> None:
    with pytest.raises(AnimbenchError, match="openpifpaf worker: ValueError"):
        detector._request(np.zeros((2, 16, 16), np.uint8))  # no colour axis
    assert detector.raw(_frames(1, 256)).shape == (1, NUM_KEYPOINTS, 3)


def test_worker_stops_when_closed_or_collected(prefix: Path) -> None:
    """close() stops the worker and a closed detector says so; a detector dropped without
    close() stops its worker when garbage-collected (weakref.finalize)."""
    det = OpenPifPafDetector(pose_env=prefix, random_weights=True, threads=1)
    process = det._process
    det.close()
    assert process.poll() is not None
    with pytest.raises(AnimbenchError, match="not running"):
        det.detect(_frames(1, 64))
    det.close()  # twice is harmless
    det = OpenPifPafDetector(pose_env=prefix, random_weights=True, threads=1)
    process = det._process
    del det
    gc.collect()
    assert process.wait(timeout=openpifpaf_backend.STOP_TIMEOUT_S + 10) == 0


def test_checkpoint_through_the_weights_cache(prefix: Path, tmp_path: Path, monkeypatch) -> None:
    """A random model saved in openpifpaf's checkpoint format, found by weights.fetch under the
    real file name and pinned to its own digest: the path the real weights take."""
    entry = weights.WEIGHTS[WEIGHTS_NAME]
    cache = tmp_path / "cache"
    target = cache / "weights" / entry.filename
    target.parent.mkdir(parents=True)
    script = (
        "import sys, torch, openpifpaf; "
        "metas = openpifpaf.plugins.coco.CocoKp().head_metas; "
        "net, _ = openpifpaf.network.Factory(base_name='shufflenetv2k16').factory("
        "head_metas=metas); "
        "torch.save({'model': net, 'epoch': 0}, sys.argv[1])"
    )
    python = pose_env.pose_python(prefix)
    subprocess.run([str(python), "-c", script, str(target)], check=True, timeout=300)
    digest = sha256_file(target)
    monkeypatch.setitem(
        weights.WEIGHTS, WEIGHTS_NAME, dataclasses.replace(entry, sha256_prefix=digest)
    )
    monkeypatch.setenv("ANIMBENCH_CACHE", str(cache))
    with OpenPifPafDetector(pose_env=prefix, threads=1) as det:
        assert det.weights_sha256 == f"{entry.filename}:{digest}"
        keypoints = det.detect(_frames(2, 256))
        assert keypoints.xy.shape == (2, NUM_KEYPOINTS, 2)
        process = det._process
    assert process.poll() is not None  # the context manager stopped the worker
    with pytest.raises(AnimbenchError, match="not running"):
        det.raw(_frames(1, 256))


_FAKE_DECODER = """
import importlib.util, json, sys
import numpy as np, torch
from openpifpaf import Annotation
from openpifpaf.plugins.coco.constants import COCO_KEYPOINTS, COCO_PERSON_SKELETON

spec = importlib.util.spec_from_file_location("worker", sys.argv[1])
worker_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker_module)


def person(xyc, score):
    ann = Annotation(COCO_KEYPOINTS, COCO_PERSON_SKELETON)
    ann.data[:] = xyc
    ann.fixed_score = score
    return ann


class Decoder:  # two people in frame 0 (the stronger one listed last), nobody in frame 1
    def batch(self, model, batch, device):
        assert tuple(batch.shape) == (2, 3, 257, 257), batch.shape  # padded to 16k + 1
        strong = person([100.0, 50.0, 0.9], 0.8)
        strong.data[3, 2] = 0.0
        return [[person([10.0, 20.0, 0.3], 0.2), strong], []]


worker = worker_module.Worker(torch.nn.Identity(), Decoder(), torch.device("cpu"))
print(json.dumps(worker.detect(np.zeros((2, 250, 250, 3), np.uint8)).tolist()))
"""


def test_worker_keeps_the_best_person_in_input_pixels(prefix: Path) -> None:
    """The worker's own post-processing, on a stub decoder: the highest-scoring person, mapped
    back from openpifpaf's padded image (250 px frame: 3 px padding on the left and top)."""
    python = pose_env.pose_python(prefix)
    worker = str(openpifpaf_backend.WORKER)
    proc = subprocess.run(
        [str(python), "-I", "-c", _FAKE_DECODER, worker],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = np.array(json.loads(proc.stdout.strip().splitlines()[-1]), np.float32)
    assert out.shape == (2, NUM_KEYPOINTS, 3)
    assert (out[0, :, 0] == 97.0).all() and (out[0, :, 1] == 47.0).all()
    assert out[0, 3, 2] == 0.0 and (np.delete(out[0, :, 2], 3) == np.float32(0.9)).all()
    assert (out[1] == 0).all()


def test_pose_env_build_is_resumable(tmp_path: Path, monkeypatch, capsys) -> None:
    """A ready environment is kept; an unfinished one (no stamp) is removed and built again; a
    failing step leaves no stamp behind."""
    prefix = tmp_path / "pose"
    steps: list[str] = []

    def failing_run(step, command, log, attempts=1):
        steps.append(step)
        if step == "create venv":
            Path(command[-1]).mkdir()
            (Path(command[-1]) / "pyvenv.cfg").touch()
            return
        raise AnimbenchError(f"pose environment: {step} failed")

    monkeypatch.setattr(pose_env, "_run", failing_run)
    monkeypatch.setattr(pose_env, "NEEDED_BYTES", 0)  # whatever this machine's disk holds
    (prefix / "lib").mkdir(parents=True)
    (prefix / "pyvenv.cfg").touch()
    (prefix / "lib" / "half-built").touch()
    with pytest.raises(AnimbenchError, match="install torch failed"):
        pose_env.create_pose_env(prefix)
    assert steps == ["create venv", "install torch"]
    assert not (prefix / "lib" / "half-built").exists()  # the unfinished env was removed
    assert not (prefix / pose_env.STAMP).exists() and not pose_env.is_ready(prefix)

    (prefix / "bin").mkdir()
    pose_env.pose_python(prefix).touch()
    stamp = {"spec": pose_env._spec(), "versions": {"openpifpaf": pose_env.OPENPIFPAF_VERSION}}
    (prefix / pose_env.STAMP).write_text(json.dumps(stamp))
    steps.clear()
    assert pose_env.create_pose_env(prefix) == prefix
    assert steps == [] and "is ready" in capsys.readouterr().out


def _flaky_pip(counter: Path, output: str, failures: int) -> list[str]:
    """A command that prints `output` and fails `failures` times, then succeeds."""
    script = (
        "import pathlib, sys; c = pathlib.Path(sys.argv[1]); n = int(c.read_text() or 0) + 1 "
        "if c.exists() else 1; c.write_text(str(n)); "
        f"print({output!r}); sys.exit(1 if n <= {failures} else 0)"
    )
    return [sys.executable, "-c", script, str(counter)]


def test_pose_env_retries_a_corrupted_download(tmp_path: Path, capsys) -> None:
    """A wheel that fails pip's hash check (a truncated download) is fetched again; a failure
    that is not transient stops at once, naming pip's ERROR line rather than its last line."""
    hash_error = (
        "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.\n"
        "    torch==2.5.1:\n        Expected sha256 de5b\n             Got        0515"
    )
    with open(tmp_path / "build.log", "w") as log:
        pose_env._run("install torch", _flaky_pip(tmp_path / "calls-a", hash_error, 2), log, 3)
    out = capsys.readouterr().out
    assert out.count("retrying") == 2 and "DO NOT MATCH THE HASHES" in out
    assert "install torch done" in out
    assert (tmp_path / "build.log").read_text().count("Got        0515\n") == 3

    missing = "ERROR: No matching distribution found for torch==9.9\nsomething after"
    with open(tmp_path / "build2.log", "w") as log, pytest.raises(AnimbenchError) as error:
        pose_env._run("install torch", _flaky_pip(tmp_path / "calls-b", missing, 5), log, 3)
    assert "attempt 1" in str(error.value) and "No matching distribution" in str(error.value)
    assert "\n" not in str(error.value)

    with open(tmp_path / "build3.log", "w") as log, pytest.raises(AnimbenchError) as error:
        pose_env._run("install torch", _flaky_pip(tmp_path / "calls-c", hash_error, 5), log, 3)
    assert "attempt 3" in str(error.value) and "DO NOT MATCH THE HASHES" in str(error.value)


def test_pose_env_refuses_to_start_on_a_full_disk(tmp_path: Path, monkeypatch, capsys) -> None:
    """Too little free space is a one-line error before anything is created or downloaded."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        pose_env.shutil, "disk_usage", lambda path: usage._replace(free=2 * 1024**3)
    )
    monkeypatch.setattr(pose_env, "_run", lambda *a: pytest.fail("the build started"))
    prefix = tmp_path / "envs" / "pose"
    with pytest.raises(AnimbenchError, match=r"needs about 9 GB free .* has 2\.0 GB") as error:
        pose_env.create_pose_env(prefix)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "envs").exists()
    # the command line says the same on one line and exits 2
    assert main(["pose-env", "--prefix", str(prefix)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs about 9 GB free" in err
