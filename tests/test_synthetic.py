"""The built-in synthetic benchmark: determinism, layout, resumability and motion content."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from animbench.data.synthetic import (
    BODY_KEYPOINTS,
    FACE_KEYPOINTS,
    MARKER_PALETTE,
    make_dataset,
    render_clip,
)
from animbench.data.video import clip_id, list_clips, read_clip
from animbench.errors import ConfigError

NAME = re.compile(r"^id\d{5}#(train|test)\d{4}#\d{6}#\d{6}$")


@pytest.fixture(scope="module")
def face_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("face")
    return make_dataset("face", out, seed=3, num_train=6, num_test=3, frames=12, progress=False)


@pytest.fixture(scope="module")
def body_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("body")
    return make_dataset("body", out, seed=5, num_train=12, num_test=3, frames=24, progress=False)


def test_layout(face_dataset: Path) -> None:
    train = list_clips(face_dataset / "train")
    test = list_clips(face_dataset / "test")
    assert len(train) == 6 and len(test) == 3
    assert all(NAME.match(p.name) for p in train + test)
    train_ids = {clip_id(p.name) for p in train}
    test_ids = {clip_id(p.name) for p in test}
    assert train_ids.isdisjoint(test_ids)
    assert len(train_ids) < len(train)  # identities are shared by several clips
    frames = read_clip(train[0])
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8
    info = json.loads((face_dataset / "dataset.json").read_text())
    assert info["kind"] == "face" and info["seed"] == 3 and info["size"] == 64
    assert info["num_train"] == 6 and info["num_test"] == 3 and info["format_version"] >= 1
    assert info["keypoints"] == list(FACE_KEYPOINTS)
    truth = pd.read_parquet(face_dataset / "ground_truth.parquet")
    assert set(truth.columns) == {"split", "video", "frame", "keypoint", "x", "y", "visible"}
    assert len(truth) == 9 * 12 * len(FACE_KEYPOINTS)
    assert truth["visible"].dtype == bool


def test_same_seed_same_frames_other_seed_differs() -> None:
    a, pa, va = render_clip("face", 0, "train", 2, 0, frames=6)
    b, pb, vb = render_clip("face", 0, "train", 2, 0, frames=6)
    c, _, _ = render_clip("face", 1, "train", 2, 0, frames=6)
    assert np.array_equal(a, b) and np.array_equal(pa, pb) and np.array_equal(va, vb)
    assert not np.array_equal(a, c)


def test_clips_do_not_depend_on_dataset_size(face_dataset: Path, tmp_path: Path) -> None:
    small = make_dataset(
        "face", tmp_path, seed=3, num_train=2, num_test=1, frames=12, progress=False
    )
    for split in ("train", "test"):
        for clip in list_clips(small / split):
            assert np.array_equal(read_clip(clip), read_clip(face_dataset / split / clip.name))


def _mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_resume_restores_a_deleted_clip_and_keeps_the_rest(tmp_path: Path) -> None:
    kwargs = dict(seed=1, num_train=3, num_test=1, frames=4, progress=False)
    make_dataset("body", tmp_path, **kwargs)
    before = _mtimes(tmp_path)
    make_dataset("body", tmp_path, **kwargs)
    assert _mtimes(tmp_path) == before  # a finished dataset is not rewritten

    victim = list_clips(tmp_path / "train")[1]
    original = read_clip(victim)
    shutil.rmtree(victim)
    make_dataset("body", tmp_path, **kwargs)
    assert np.array_equal(read_clip(victim), original)
    after = _mtimes(tmp_path)
    untouched = [p for p in before if victim not in p.parents and p.parent != tmp_path]
    assert untouched and all(after[p] == before[p] for p in untouched)


def test_other_settings_in_an_existing_dataset_are_refused(tmp_path: Path) -> None:
    make_dataset("face", tmp_path, seed=1, num_train=1, num_test=1, frames=2, progress=False)
    with pytest.raises(ConfigError, match="different synthetic dataset"):
        make_dataset("face", tmp_path, seed=2, num_train=1, num_test=1, frames=2, progress=False)


def test_unknown_kind_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hands"):
        make_dataset("hands", tmp_path)


@pytest.mark.parametrize("size", [128, 256])
def test_larger_sizes(size: int) -> None:
    for kind in ("face", "body"):
        frames, points, visible = render_clip(kind, 0, "test", 0, 0, frames=2, size=size)
        assert frames.shape == (2, size, size, 3)
        assert points.shape[:2] == visible.shape
        assert visible.any()


def test_face_head_moves_a_lot_and_parts_move(face_dataset: Path) -> None:
    truth = pd.read_parquet(face_dataset / "ground_truth.parquet")
    nose = FACE_KEYPOINTS.index("nose")
    changes, shifts = [], []
    for clip in list_clips(face_dataset / "train"):
        frames = read_clip(clip).astype(np.float32)
        changes.append(np.abs(frames[1:] - frames[0]).mean())
        rows = truth[(truth.video == clip.name) & (truth.keypoint == nose)].sort_values("frame")
        xy = rows[["x", "y"]].to_numpy()
        shifts.append(np.linalg.norm(xy - xy[0], axis=1).max())
    assert np.mean(changes) > 8.0  # grey levels: copying frame 0 is clearly wrong
    assert np.median(shifts) > 0.1 * 64

    def distance(clip: str, a: str, b: str) -> np.ndarray:
        rows = truth[truth.video == clip]
        pa = rows[rows.keypoint == FACE_KEYPOINTS.index(a)].sort_values("frame")
        pb = rows[rows.keypoint == FACE_KEYPOINTS.index(b)].sort_values("frame")
        return np.hypot(pa.x.to_numpy() - pb.x.to_numpy(), pa.y.to_numpy() - pb.y.to_numpy())

    name = list_clips(face_dataset / "train")[0].name
    mouth = distance(name, "upper_lip", "lower_lip")
    brow = distance(name, "left_brow", "left_eye")
    assert mouth.max() - mouth.min() > 1.5  # the mouth opens and closes
    assert brow.max() - brow.min() > 1.0  # the brows raise


def test_body_keypoints_hidden_by_occlusion_and_by_leaving_the_frame(body_dataset: Path) -> None:
    truth = pd.read_parquet(body_dataset / "ground_truth.parquet")
    inside = truth.x.between(-0.5, 63.5, inclusive="left") & truth.y.between(
        -0.5, 63.5, inclusive="left"
    )
    occluded = inside & ~truth.visible
    outside = ~inside
    assert truth.visible.mean() > 0.6
    assert occluded.sum() > 50
    assert outside.sum() > 5
    assert not truth.visible[outside].any()
    assert truth.keypoint.max() == len(BODY_KEYPOINTS) - 1


def test_marker_colours_are_unique_in_the_palette() -> None:
    palette = MARKER_PALETTE.astype(np.int32)
    distance = np.sqrt(((palette[:, None] - palette[None]) ** 2).sum(-1))
    np.fill_diagonal(distance, np.inf)
    assert distance.min() >= 120
    assert len(MARKER_PALETTE) >= len(BODY_KEYPOINTS)
