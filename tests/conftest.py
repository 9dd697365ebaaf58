"""Shared fixtures: a tiny moving-square dataset and an offline weight cache."""

from __future__ import annotations

import os

# BLAS threads likewise: scipy's SVD of the CPAB constraint matrices is 20× slower with two
# threads on a busy 2-core machine. Set before numpy loads its BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# No downloads from tests or the workflows they start (VGG19, AlexNet for LPIPS, datasets, ...):
# results must not depend on what the machine can reach. Tests of fetching use their own files
# (loopback servers) and lift the switch.
os.environ.setdefault("ANIMBENCH_OFFLINE", "1")

import contextlib
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from animbench.data.video import write_clip

# Tiny tensors: a second intra-op thread only adds contention (20× slower VGG19 on a busy
# 2-core machine), never speed.
torch.set_num_threads(1)

# the sibling `shared/` folder of the checkout (reference manifests); absent on some machines
SHARED = Path(__file__).resolve().parents[2] / "shared"

# The authors' state_dict layouts per (model, dataset): {network: {params, state_dict: key →
# shape}}, computed by instantiating the reference code (shared/reference/state_dicts), kept
# here gzipped so the exact-layout tests run in every clone.
MANIFESTS = Path(__file__).resolve().parent / "reference" / "state_dicts"
MANIFEST_NAMES = sorted(p.name.removesuffix(".json.gz") for p in MANIFESTS.glob("*.json.gz"))


def reference_manifest(name: str) -> dict:
    """The manifest `<model>_<dataset>` (e.g. fomm_vox256); a missing one fails the test."""
    import gzip
    import json

    path = MANIFESTS / f"{name}.json.gz"
    if not path.is_file():
        pytest.fail(f"{path} is missing (tests/reference ships every manifest)")
    return json.loads(gzip.decompress(path.read_bytes()))


TINY_SIZE = 32
TINY_FRAMES = 8


def moving_square(size: int, num_frames: int, offset: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: a coloured square moving diagonally on a grey background."""
    frames = np.full((num_frames, size, size, 3), 60, dtype=np.uint8)
    side = size // 4
    for t in range(num_frames):
        x = (offset + 2 * t) % (size - side)
        y = (offset + t) % (size - side)
        frames[t, y : y + side, x : x + side] = (230, 40 + 10 * offset % 200, 90)
    return frames


def make_tiny_dataset(root: Path, size: int = TINY_SIZE, num_frames: int = TINY_FRAMES) -> Path:
    """6 train clips and 2 test clips named in the `id#...` convention."""
    for i in range(6):
        write_clip(root / "train" / f"id{i % 3}#clip{i}", moving_square(size, num_frames, i))
    for i in range(2):
        write_clip(root / "test" / f"test{i}#clip{i}", moving_square(size, num_frames, 3 + 2 * i))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny-data"))


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network disabled in tests")


@contextlib.contextmanager
def serve_folder(root: Path, requested: list[str] | None = None):
    """A quiet loopback HTTP server of `root` for the duration: yields its base URL. With
    `requested`, the path of every GET is appended to it."""
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            if requested is not None:
                requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@contextlib.contextmanager
def offline_weights(cache: Path):
    """No weight file in any cache and no network (only while the block runs, so other tests'
    loopback servers are untouched): VGG19 falls back to its random initialisation."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANIMBENCH_CACHE", str(cache / "animbench"))
        mp.setenv("TORCH_HOME", str(cache / "torch"))
        mp.setattr(urllib.request, "urlopen", _no_network)
        yield


# fomm-synthetic made tiny: 32×32 frames, 4 steps of batch 2 over 2 epochs of 3 batches
TINY_OVERRIDES = {
    "train_params": {
        "max_steps": 4,
        "batch_size": 2,
        "num_epochs": 2,
        "num_repeats": 1,
        "checkpoint_freq": 1,
        "scales": [1, 0.5],
    },
    "dataset_params": {"frame_shape": [TINY_SIZE, TINY_SIZE, 3]},
}


def train_tiny(
    data: Path, out: Path, cache: Path, seed: int = 0, overrides=None, options=None
) -> Path:
    from animbench.train.trainer import TrainOptions, train

    with offline_weights(cache), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "VGG19 ImageNet weights unavailable")
        return train(
            data,
            "fomm",
            "fomm-synthetic",
            overrides=overrides or TINY_OVERRIDES,
            out=out,
            device="cpu",
            seed=seed,
            options=options or TrainOptions(image_every=2),
            allow_random_weights=True,  # offline: random VGG19, recorded as a deviation
        )


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an animbench checkpoint's networks, keyed `<network>.<key>`."""
    from animbench import checkpoint

    payload = checkpoint.load(path)
    return {
        f"{net}.{key}": value
        for net, state in payload["networks"].items()
        for key, value in state.items()
    }


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory) -> Path:
    """Run folder of one tiny fomm-synthetic training (seed 0)."""
    out = tmp_path_factory.mktemp("run")
    train_tiny(tiny_dataset, out, tmp_path_factory.mktemp("cache"))
    return out
