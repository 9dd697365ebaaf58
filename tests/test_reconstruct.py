"""Video reconstruction (the papers' protocol) on the tiny dataset: source copy and FOMM."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_FRAMES, TINY_SIZE

from animbench.data.video import list_clips, read_clip
from animbench.errors import ConfigError
from animbench.evaluate.reconstruct import drive_clip, load_animator, reconstruct


def _ground_truth(data) -> dict[str, np.ndarray]:
    return {clip.name: read_clip(clip) for clip in list_clips(data / "test")}


def test_source_copy(tiny_dataset, tmp_path):
    out = tmp_path / "copy"
    frames_path = reconstruct(tiny_dataset, "source-copy", out=out, device="cpu")
    gt = _ground_truth(tiny_dataset)
    assert len(gt) == 2
    frames = pd.read_parquet(frames_path)
    assert len(frames) == 2 * TINY_FRAMES
    assert list(frames.columns[:3]) == ["video", "frame", "l1"]
    for name, truth in gt.items():
        predicted = read_clip(out / name)
        assert predicted.shape == truth.shape
        assert (predicted == truth[:1]).all()  # every frame is frame 0
        rows = frames[frames["video"] == name].sort_values("frame")
        assert list(rows["frame"]) == list(range(TINY_FRAMES))
        as_float = truth.astype(np.float64) / 255
        expected = [np.abs(as_float[t] - as_float[0]).mean() for t in range(TINY_FRAMES)]
        assert rows["l1"].iloc[0] == 0
        np.testing.assert_allclose(rows["l1"], expected, atol=1e-6, rtol=0)
        assert (rows["l1"].iloc[1:] > 0).all()  # the square moves
    summary = json.loads((out / "reconstruct.json").read_text())
    assert summary["method"] == "source-copy"
    assert summary["checkpoint"] is None and summary["checkpoint_sha256"] is None
    assert summary["n_videos"] == 2
    assert summary["n_frames"] == 2 * TINY_FRAMES
    assert summary["l1"] == pytest.approx(frames["l1"].mean())
    assert summary["warnings"] == []


def test_rerun_skips_finished_clips(tiny_dataset, tmp_path):
    out = tmp_path / "copy"
    first = pd.read_parquet(reconstruct(tiny_dataset, "source-copy", out=out, device="cpu"))
    name = sorted(_ground_truth(tiny_dataset))[0]
    png = out / name / "0000003.png"
    mtime = png.stat().st_mtime_ns
    png_bytes = png.read_bytes()
    second = pd.read_parquet(reconstruct(tiny_dataset, "source-copy", out=out, device="cpu"))
    assert png.stat().st_mtime_ns == mtime
    assert png.read_bytes() == png_bytes
    pd.testing.assert_frame_equal(first, second)
    # a clip whose per-clip table is missing (interrupted) is redone, the others are not
    other = sorted(_ground_truth(tiny_dataset))[1]
    (out / ".frames" / f"{other}.parquet").unlink()
    other_mtime = (out / other / "0000000.png").stat().st_mtime_ns
    third = pd.read_parquet(reconstruct(tiny_dataset, "source-copy", out=out, device="cpu"))
    pd.testing.assert_frame_equal(first, third)
    assert png.stat().st_mtime_ns == mtime
    assert (out / ".frames" / f"{other}.parquet").is_file()
    assert (out / other / "0000000.png").stat().st_mtime_ns >= other_mtime


def test_model_needs_a_checkpoint(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="checkpoint"):
        reconstruct(tiny_dataset, "fomm", out=tmp_path / "r", device="cpu")


def test_fomm_reconstruction(tiny_dataset, trained_run, tmp_path):
    out = tmp_path / "fomm"
    model_path = trained_run / "model.pt"
    frames = pd.read_parquet(
        reconstruct(tiny_dataset, "fomm", checkpoint=model_path, out=out, device="cpu")
    )
    gt = _ground_truth(tiny_dataset)
    assert len(frames) == sum(len(v) for v in gt.values())
    assert not frames.duplicated(["video", "frame"]).any()
    model, _ = load_animator(model_path, torch.device("cpu"))
    assert not model.training
    for name, truth in gt.items():
        predicted = read_clip(out / name)
        assert predicted.shape == truth.shape == (TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3)
        # frame 0 is driven through the model, not copied from the source
        assert not (predicted[0] == truth[0]).all()
        rows = frames[frames["video"] == name].sort_values("frame")
        assert rows["l1"].iloc[0] > 0
        # the stored frames and L1 are the model's output, recomputed here independently
        clip = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 255
        expected = drive_clip(model, clip, batch_frames=3)  # chunking must not matter
        stored = torch.from_numpy(predicted).permute(0, 3, 1, 2).float() / 255
        assert (stored - expected).abs().max() <= 0.5 / 255 + 1e-6
        l1 = (expected - clip).abs().flatten(1).mean(1)
        np.testing.assert_allclose(rows["l1"], l1.numpy(), atol=1e-5, rtol=0)
    summary = json.loads((out / "reconstruct.json").read_text())
    assert summary["method"] == "fomm"
    assert summary["checkpoint_sha256"] is not None and len(summary["checkpoint_sha256"]) == 64
    assert any("VGG19" in w for w in summary["warnings"])
    assert summary["n_frames"] == len(frames)
    assert summary["l1"] == pytest.approx(frames["l1"].mean())


def test_drive_clip_uses_absolute_motion_from_frame_0(trained_run, tiny_dataset):
    """Driving with frame t gives the same output as animating frame 0 with kp(t) directly."""
    model, _ = load_animator(trained_run / "model.pt", torch.device("cpu"))
    truth = read_clip(list_clips(tiny_dataset / "test")[0])
    clip = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 255
    predicted = drive_clip(model, clip)
    with torch.no_grad():
        direct = model(clip[:1].expand(3, -1, -1, -1), clip[[0, 4, 7]])["prediction"]
    torch.testing.assert_close(predicted[[0, 4, 7]], direct, atol=1e-5, rtol=0)
