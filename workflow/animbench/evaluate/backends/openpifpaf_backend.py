"""The ``openpifpaf`` keypoint detector: COCO-17 body keypoints for body AKD/MKR (TaiChi, TED;
DESIGN.md §4).

openpifpaf 0.13.11 cannot live in the main environment (its C++ extension must be compiled
against torch 2.5.1, see ``animbench.pose_env``), so this class runs a long-lived worker,
``openpifpaf_worker.py``, with the pose environment's Python and sends it frames over pipes.
The weights are resolved here, by ``animbench.weights.fetch`` (one cache, sha256 checked); the
worker only ever gets a local file, so openpifpaf never downloads anything by itself.

Protocol choices (reference-data-and-metrics.md §3.5): the papers ran OpenPose-18 (multi-scale,
flip, every person's peaks). Here: openpifpaf's default ``shufflenetv2k16`` checkpoint at the
frame's own resolution (no resize, no flip; openpifpaf pads to 16k+1 pixels and maps back), and
per frame the highest-scoring person only (TaiChi and TED clips show one person). A keypoint is
detected when its confidence reaches ``KEYPOINT_THRESHOLD`` = 0.15, openpifpaf's own CifCaf
``keypoint_threshold`` default (its decoder already returns weaker keypoints with confidence 0,
so this keeps exactly what openpifpaf reports). A frame without a person reports all 17
keypoints as missing. Coordinates are openpifpaf's pixels, unchanged (pixel centres at integer
coordinates, as in our convention). COCO-17 has no neck: AKD/MKR are protocol-compatible, not
paper-comparable.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import threading
import weakref
from pathlib import Path

import numpy as np

from animbench import pose_env
from animbench.data.synthetic import COCO_KEYPOINTS  # keypoint_names, declared once in data
from animbench.downloads import sha256_file
from animbench.errors import AnimbenchError, DataError
from animbench.evaluate.detectors import (
    KeypointDetector,
    Keypoints,
    _check_frames,
    register_keypoint_detector,
)
from animbench.weights import WEIGHTS, cache_dir, fetch

WEIGHTS_NAME = "openpifpaf_shufflenetv2k16"
NUM_KEYPOINTS = 17
KEYPOINT_THRESHOLD = 0.15
WORKER = Path(__file__).with_name("openpifpaf_worker.py")
_LENGTH = struct.Struct("<Q")


def weights_path() -> Path:
    """The cached shufflenetv2k16 checkpoint; a DataError names the file and its URL if absent."""
    path, reason = fetch(WEIGHTS_NAME)
    if path is None:
        raise DataError(
            f"openpifpaf weights missing: {WEIGHTS[WEIGHTS_NAME].filename}: {reason}; "
            f"put the file in {cache_dir()}"
        )
    return path


def pose_env_python(prefix: str | os.PathLike | None = None) -> Path:
    """The pose environment's Python; an AnimbenchError says how to build a missing one."""
    prefix = pose_env.pose_env_prefix(prefix)
    if not pose_env.is_ready(prefix):
        raise AnimbenchError(
            f"keypoint detector 'openpifpaf' needs the pose environment {prefix} (missing or "
            f"unfinished): run `animbench pose-env --prefix {prefix}` (or `snakemake "
            f"{prefix}/{pose_env.STAMP}`)"
        )
    return pose_env.pose_python(prefix)


# a worker still importing torch and openpifpaf reads the exit request only once it is up:
# seconds on an idle machine, more than 10 on a loaded one (a test saw it killed at 10)
STOP_TIMEOUT_S = 60


def _stop(process: subprocess.Popen) -> None:
    """Ask the worker to exit (length 0), then make sure it does."""
    if process.poll() is None:
        try:
            process.stdin.write(_LENGTH.pack(0))
            process.stdin.flush()
            process.stdin.close()
            process.wait(timeout=STOP_TIMEOUT_S)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None and not stream.closed:
            try:
                stream.close()
            except OSError:
                pass


@register_keypoint_detector("openpifpaf")
class OpenPifPafDetector(KeypointDetector):
    """openpifpaf shufflenetv2k16 (COCO-17), highest-scoring person per frame, in a worker.

    ``pose_env``: the pose environment (default $ANIMBENCH_POSE_ENV, else resources/envs/pose).
    ``checkpoint``: a local .pkl instead of the pinned weights (used unverified).
    ``random_weights``: the same network with random initialisation (tests; detects nobody).
    ``batch_size``: frames per request (memory only; results do not depend on it).
    ``device``: None picks CUDA when the pose environment's torch sees a GPU. ``threads``: the worker's torch
    threads (default: this process's).
    """

    version = "animbench-1"  # prefixed with the openpifpaf and torch versions in __init__
    num_keypoints = NUM_KEYPOINTS
    keypoint_names = COCO_KEYPOINTS

    def __init__(
        self,
        *,
        pose_env: str | os.PathLike | None = None,
        checkpoint: str | os.PathLike | None = None,
        random_weights: bool = False,
        seed: int = 0,
        batch_size: int = 16,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self._process: subprocess.Popen | None = None
        python = pose_env_python(pose_env)
        if random_weights:
            model_args = ["--random-base", "shufflenetv2k16", "--seed", str(seed)]
            self.weights_sha256 = None
        else:
            path = Path(checkpoint) if checkpoint is not None else weights_path()
            if not path.is_file():
                raise DataError(f"{path}: openpifpaf checkpoint not found")
            model_args = ["--checkpoint", str(path.resolve())]
            self.weights_sha256 = f"{path.name}:{sha256_file(path)}"
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        command = [str(python), "-I", str(WORKER), *model_args]
        # the worker's torch decides "auto": it, not this process's torch, drives the GPU
        command += ["--device", device or "auto", "--threads", str(threads)]
        # -I: the worker sees only the pose environment, not PYTHONPATH or this checkout
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._finalizer = weakref.finalize(self, _stop, self._process)
        self._lock = threading.Lock()
        kind, _, rest = self._read_line().partition(" ")
        if kind != "ready":
            self.close()
            raise AnimbenchError(f"openpifpaf worker failed to start: {rest}")
        self.versions = json.loads(rest)
        self.version = (
            f"openpifpaf {self.versions['openpifpaf']}/torch {self.versions['torch']}/"
            f"{type(self).version}"
        )

    def _read_line(self) -> str:
        line = self._process.stdout.readline().decode(errors="replace").strip()
        if not line:
            code = self._process.poll()
            raise AnimbenchError(
                f"openpifpaf worker exited (status {code}) without an answer; its error is "
                "on stderr above"
            )
        return line

    def _request(self, frames: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(frames), allow_pickle=False)
        data = buffer.getvalue()
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                raise AnimbenchError("openpifpaf worker is not running (closed or crashed)")
            try:
                self._process.stdin.write(_LENGTH.pack(len(data)) + data)
                self._process.stdin.flush()
            except BrokenPipeError as exc:
                raise AnimbenchError("openpifpaf worker exited; its error is on stderr") from exc
            kind, _, rest = self._read_line().partition(" ")
            if kind == "error":
                raise AnimbenchError(f"openpifpaf worker: {rest}")
            if kind != "ok":
                raise AnimbenchError(f"openpifpaf worker: unexpected reply {kind!r}")
            payload = self._process.stdout.read(int(rest))
        return np.load(io.BytesIO(payload), allow_pickle=False)

    def raw(self, frames: np.ndarray) -> np.ndarray:
        """openpifpaf's float32 [N, 17, 3] (x, y, confidence) of each frame's best person."""
        frames = _check_frames(frames)
        parts = [
            self._request(frames[start : start + self.batch_size])
            for start in range(0, len(frames), self.batch_size)
        ]
        if not parts:
            return np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def detect(self, frames: np.ndarray) -> Keypoints:
        data = self.raw(frames)
        detected = data[..., 2] >= KEYPOINT_THRESHOLD
        xy = np.where(detected[..., None], data[..., :2], 0.0).astype(np.float32)
        return Keypoints(xy=xy, detected=detected)

    def close(self) -> None:
        """Stop the worker (also done when the detector is garbage-collected or at exit)."""
        if self._process is not None:
            self._finalizer()
            self._process = None

    def __enter__(self) -> OpenPifPafDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
