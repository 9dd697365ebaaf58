"""Per-video metrics: hand-computed protocol examples and the end-to-end Parquet writer."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from animbench.data.video import write_clip
from animbench.errors import ConfigError, DataError
from animbench.evaluate.metrics import (
    COLUMNS,
    aggregate,
    embedding_distance,
    keypoint_distance,
    missing_keypoint_rate,
    video_metrics,
)


def kps(xy, detected):
    return SimpleNamespace(
        xy=np.asarray(xy, dtype=np.float32), detected=np.asarray(detected, dtype=bool)
    )


# Five frames, three keypoints each.
GT = kps(
    [
        [[0, 0], [10, 10], [5, 5]],
        [[0, 0], [10, 10], [5, 5]],
        [[0, 0], [10, 10], [5, 5]],
        [[0, 0], [0, 0], [0, 0]],
        [[0, 0], [10, 10], [5, 5]],
    ],
    [
        [1, 1, 1],
        [1, 1, 1],
        [1, 0, 1],  # gt keypoint 1 missing
        [0, 0, 0],  # nothing in gt
        [0, 1, 1],  # gt keypoint 0 missing
    ],
)
PRED = kps(
    [
        [[1, 2], [13, 14], [99, 99]],
        [[0, 0], [0, 0], [0, 0]],
        [[2, 0], [50, 50], [5, 7]],
        [[0, 0], [0, 0], [0, 0]],
        [[7, 7], [10, 10], [6, 5]],
    ],
    [
        [1, 1, 0],  # keypoint 2 missing in pred
        [0, 0, 0],  # generated face/body not found
        [1, 1, 1],
        [0, 0, 0],
        [0, 0, 1],  # keypoint 1 missing in pred
    ],
)


def test_keypoint_distance_hand_values():
    akd = keypoint_distance(GT, PRED)
    # frame 0: (|1|+|2| + |3|+|4|) / 4 coordinates of keypoints 0 and 1
    assert akd[0] == pytest.approx(2.5)
    # frame 1: the generated face is missing -> skipped (NaN)
    assert np.isnan(akd[1])
    # frame 2: gt keypoint 1 is excluded even though pred has it: (2+0 + 0+2) / 4
    assert akd[2] == pytest.approx(1.0)
    # frame 3: nothing detected anywhere -> excluded
    assert np.isnan(akd[3])
    # frame 4: only keypoint 2 is in both: (1 + 0) / 2
    assert akd[4] == pytest.approx(0.5)


def test_missing_keypoint_rate_hand_values():
    mkr = missing_keypoint_rate(GT, PRED)
    assert mkr[0] == pytest.approx(1 / 3)
    assert mkr[1] == pytest.approx(1.0)
    # gt keypoint 1 missing: denominator 2, nothing missing in pred among them
    assert mkr[2] == pytest.approx(0.0)
    assert np.isnan(mkr[3])  # gt has no keypoint: frame does not contribute
    # gt has keypoints 1, 2; pred misses 1
    assert mkr[4] == pytest.approx(0.5)


def test_keypoint_shapes_must_match():
    with pytest.raises(ValueError):
        keypoint_distance(
            kps(np.zeros((2, 3, 2)), np.ones((2, 3))), kps(np.zeros((2, 4, 2)), np.ones((2, 4)))
        )


def test_embedding_distance_is_squared_euclidean():
    a = np.array([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(embedding_distance(a, b), [2.0, 25.0])


def test_aggregate_is_frame_weighted():
    df = pd.DataFrame(
        {
            "video": ["short", "long"],
            "n_frames": [1, 3],
            "l1_sum": [0.1, 0.9],  # per-video means 0.1 and 0.3
            "akd_sum": [2.0, 3.0],  # per-video means 2.0 and 1.0
            "akd_frames": [1, 3],
            "mkr_sum": [np.nan, np.nan],
            "mkr_frames": [np.nan, np.nan],
            "aed_sum": [0.5, 0.0],
            "aed_frames": [1, 0],
        }
    )
    result = aggregate(df)
    value, n_videos, n_frames = result["L1"]
    assert value == pytest.approx(0.25) and (n_videos, n_frames) == (2, 4)
    assert value != pytest.approx((0.1 + 0.3) / 2)  # not video-weighted
    assert result["AKD"] == pytest.approx((1.25, 2, 4))
    assert "MKR" not in result  # not computed
    assert result["AED"] == pytest.approx((0.5, 2, 1))


class FakeDetector:
    """Reads keypoints from pixels: pixel (0, k) = (x, y, detected) for keypoint k."""

    name, version, weights_sha256 = "fake-kp", "1.0", "ab" * 32

    def __init__(self):
        self.batches = []

    def detect(self, frames):
        self.batches.append(len(frames))
        px = frames[:, 0, :2, :].astype(np.float32)
        return SimpleNamespace(xy=px[..., :2], detected=px[..., 2] > 0)


class FakeEmbedder:
    name, version, weights_sha256 = "fake-id", "2.0", None

    def embed(self, frames):
        return frames[:, 0, 2, :2].astype(np.float32)


def frame(kp0=(10, 20, 1), kp1=(30, 40, 1), emb=(0, 0)):
    f = np.zeros((8, 8, 3), np.uint8)
    f[0, 0], f[0, 1], f[0, 2, :2] = kp0, kp1, emb
    return f


def make_run(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_clip(gt / "a", [frame(), frame(), frame()])
    write_clip(gt / "b", [frame(), frame()])
    write_clip(
        pred / "a",
        [
            frame(kp0=(12, 20, 1), kp1=(30, 44, 1), emb=(3, 4)),  # AKD 1.5, AED 25
            frame(kp0=(10, 21, 1), kp1=(0, 0, 0)),  # AKD 0.5, MKR 1/2
            frame(kp0=(0, 0, 0), kp1=(0, 0, 0)),  # body not found: skipped, MKR 1
        ],
    )
    write_clip(pred / "b", [frame(), frame()])
    pd.DataFrame(
        {"video": ["a"] * 3 + ["b"] * 2, "frame": [0, 1, 2, 0, 1], "l1": [0.1, 0.2, 0.3, 0.4, 0.4]}
    ).to_parquet(pred / "frames.parquet")
    (pred / "reconstruct.json").write_text(
        json.dumps(
            {
                "method": "fomm",
                "checkpoint": "ckpt.pt",
                "checkpoint_sha256": "cd" * 32,
                "warnings": ["VGG19 randomly initialised", "second"],
                "n_videos": 2,
            }
        )
    )
    return gt, pred


def run_metrics(gt, pred, out, **kw):
    args = dict(
        keypoints="fake",
        identity="fake",
        with_mkr=True,
        out=out,
        dataset="synth",
        method="fomm",
        detector=FakeDetector(),
        embedder=FakeEmbedder(),
        batch_frames=2,
    )
    args.update(kw)
    return video_metrics(gt, pred, **args)


def test_video_metrics_end_to_end(tmp_path):
    gt, pred = make_run(tmp_path)
    out = tmp_path / "m" / "fomm.parquet"
    detector = FakeDetector()
    df = run_metrics(gt, pred, out, detector=detector)
    assert list(df.columns) == COLUMNS
    assert detector.batches == [2, 2, 1, 1, 2, 2]  # gt and pred in batches of 2
    back = pd.read_parquet(out)
    assert list(back["video"]) == ["a", "b"]
    a, b = back.iloc[0], back.iloc[1]
    assert (a["n_frames"], b["n_frames"]) == (3, 2)
    assert a["l1_sum"] == pytest.approx(0.6) and b["l1_sum"] == pytest.approx(0.8)
    assert (a["akd_sum"], a["akd_frames"], a["akd_skipped"]) == (pytest.approx(2.0), 2, 1)
    assert (b["akd_sum"], b["akd_frames"], b["akd_skipped"]) == (0.0, 2, 0)
    assert (a["mkr_sum"], a["mkr_frames"]) == (pytest.approx(1.5), 3)
    assert (a["aed_sum"], a["aed_frames"]) == (pytest.approx(25.0), 3)
    assert a["keypoint_detector"] == "fake-kp" and a["keypoint_detector_version"] == "1.0"
    assert a["keypoint_weights_sha256"] == "ab" * 32
    assert a["identity_embedder"] == "fake-id" and pd.isna(a["identity_weights_sha256"])
    assert a["checkpoint_sha256"] == "cd" * 32
    assert a["warnings"] == "VGG19 randomly initialised; second"
    agg = aggregate(back)
    assert agg["L1"] == pytest.approx((0.28, 2, 5))
    assert agg["AKD"] == pytest.approx((0.5, 2, 4))
    assert agg["MKR"] == pytest.approx((0.3, 2, 5))
    assert agg["AED"] == pytest.approx((5.0, 2, 5))
    assert not list(out.parent.glob(".*"))  # no temporary file left behind


def test_video_metrics_none_backends(tmp_path):
    gt, pred = make_run(tmp_path)
    df = run_metrics(
        gt, pred, tmp_path / "m.parquet", keypoints="none", identity="none", with_mkr=False
    )
    assert df[["akd_sum", "akd_frames", "akd_skipped", "mkr_sum", "aed_sum"]].isna().all().all()
    assert df["keypoint_detector"].isna().all()
    assert set(aggregate(df)) == {"L1"}
    with pytest.raises(ConfigError):
        run_metrics(gt, pred, tmp_path / "m.parquet", keypoints="none", with_mkr=True)


class ClosingDetector(FakeDetector):
    def __init__(self):
        super().__init__()
        self.closed = 0

    def close(self):
        self.closed += 1


def test_backends_built_by_name_are_closed(tmp_path, monkeypatch):
    """A detector the metrics call builds itself (openpifpaf's worker process) is closed when the
    call ends, also when it fails; one passed in belongs to the caller and stays open."""
    from animbench.evaluate import detectors

    built: list[ClosingDetector] = []

    def build(name):
        built.append(ClosingDetector())
        return built[-1]

    monkeypatch.setattr(detectors, "get_keypoint_detector", build)
    gt, pred = make_run(tmp_path)
    run_metrics(gt, pred, tmp_path / "m.parquet", detector=None)
    assert len(built) == 1 and built[0].closed == 1 and built[0].batches
    (pred / "b" / "0000001.png").unlink()  # the second clip now has a frame too few
    with pytest.raises(DataError, match="1 predicted frames"):
        run_metrics(gt, pred, tmp_path / "m2.parquet", detector=None)
    assert len(built) == 2 and built[1].closed == 1
    mine = ClosingDetector()
    with pytest.raises(DataError):
        run_metrics(gt, pred, tmp_path / "m3.parquet", detector=mine)
    assert mine.closed == 0


def test_corrupt_png_names_the_file(tmp_path):
    gt, pred = make_run(tmp_path)
    bad = pred / "a" / "0000001.png"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError, match="0000001.png") as info:
        run_metrics(gt, pred, tmp_path / "m.parquet")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.parquet").exists()


def test_frame_count_mismatch_names_the_clip(tmp_path):
    gt, pred = make_run(tmp_path)
    (pred / "b" / "0000001.png").unlink()
    with pytest.raises(DataError, match=r"pred/b: 1 predicted frames.*gt/b has 2"):
        run_metrics(gt, pred, tmp_path / "m.parquet")


@pytest.mark.parametrize(
    "breakage, match",
    [
        (lambda gt, pred: __import__("shutil").rmtree(pred / "a"), "pred/a"),
        (lambda gt, pred: __import__("shutil").rmtree(pred), "pred"),
        (lambda gt, pred: __import__("shutil").rmtree(gt), "gt"),
        (lambda gt, pred: (pred / "frames.parquet").unlink(), "frames.parquet"),
        (lambda gt, pred: (pred / "reconstruct.json").unlink(), "reconstruct.json"),
        (
            lambda gt, pred: pd.DataFrame({"video": ["a"], "frame": [0], "l1": [0.1]}).to_parquet(
                pred / "frames.parquet"
            ),
            "frames.parquet: clip a",
        ),
        (lambda gt, pred: write_clip(pred / "zzz", [frame()]), "pred/zzz"),
    ],
)
def test_missing_inputs_name_the_file(tmp_path, breakage, match):
    gt, pred = make_run(tmp_path)
    breakage(gt, pred)
    with pytest.raises(DataError, match=match):
        run_metrics(gt, pred, tmp_path / "m.parquet")
