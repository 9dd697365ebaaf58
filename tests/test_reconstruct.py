"""Video reconstruction (the papers' protocol) on the tiny dataset: source copy and FOMM, and
batching over frames and clips against driving one frame at a time."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_FRAMES, TINY_SIZE, moving_square

from animbench import checkpoint as ckpt
from animbench.data.video import list_clips, read_clip, to_uint8, write_clip
from animbench.errors import ConfigError
from animbench.evaluate import reconstruct as rec
from animbench.evaluate.reconstruct import (
    CPU_BATCH_FRAMES,
    MAX_BATCH_FRAMES,
    cuda_batch_frames,
    drive_clip,
    drive_clips,
    inference_plan,
    load_animator,
    reconstruct,
    to_inference_layout,
)
from animbench.models.import_checkpoint import save_untrained
from animbench.models.registry import build, get_preset


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
    assert summary["warnings"] == [] and summary["training_precision"] is None


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
        # truncated to 8 bits, as the authors' code stores frames: never above, < 1 level below
        below = expected - stored
        assert below.min() >= -1e-6 and below.max() < 1 / 255 + 1e-6
        l1 = (expected - clip).abs().flatten(1).mean(1)
        np.testing.assert_allclose(rows["l1"], l1.numpy(), atol=1e-5, rtol=0)
    summary = json.loads((out / "reconstruct.json").read_text())
    assert summary["method"] == "fomm"
    assert summary["checkpoint_sha256"] is not None and len(summary["checkpoint_sha256"]) == 64
    assert any("VGG19" in w for w in summary["warnings"])
    assert summary["training_precision"] == "fp32"  # the checkpoint's, for the tables' notes
    assert summary["n_frames"] == len(frames)
    assert summary["l1"] == pytest.approx(frames["l1"].mean())
    # the plan it ran with: FOMM on a CPU, 4 frames a pass, channels_last
    assert summary["batch_frames"] == CPU_BATCH_FRAMES
    assert summary["channels_last"] is True
    assert summary["batch_reason"].startswith("cpu:")


def test_inference_plan_on_cpu():
    """On a CPU: 4 frames a pass; channels_last for FOMM, NCHW for the models with instance
    norms (TPSMM, CPABMM), whose NHWC passes are slower. The discriminator's instance norms
    (FOMM) do not count: reconstruction does not run it."""
    for preset, nhwc in [("fomm-synthetic", True), ("mraa-synthetic", True),
                         ("tpsmm-synthetic", False), ("cpabmm-synthetic", False)]:  # fmt: skip
        plan = inference_plan(build(preset).eval(), "cpu")
        assert (plan.batch_frames, plan.channels_last) == (CPU_BATCH_FRAMES, nhwc), preset
        assert ("channels_last" if nhwc else "NCHW") in plan.reason
    fomm = build("fomm-synthetic").eval()
    override = inference_plan(fomm, "cpu", batch_frames=7)
    assert override.batch_frames == 7 and override.channels_last
    assert "--batch-frames 7" in override.reason
    with pytest.raises(ConfigError, match="batch-frames"):
        inference_plan(fomm, "cpu", batch_frames=0)
    to_inference_layout(fomm, channels_last=False)  # no conversion: weights stay NCHW
    assert all(p.is_contiguous() for p in fomm.parameters())


def test_inference_plan_on_cuda_from_free_memory(monkeypatch):
    """On a GPU: half the free memory (driver free plus torch's cached blocks) over a frame's
    probed peak, 1 to 64 frames, NCHW; no GPU needed (the probe and the memory are faked)."""
    gib = 2**30
    monkeypatch.setattr(rec, "_probe_frame_bytes", lambda model, device, size: 0.25 * gib)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (3 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 2 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * gib)
    plan = inference_plan(build("fomm-synthetic").eval(), torch.device("cuda"))
    assert plan == (8, False, plan.reason)  # (3 + 2 - 1) GiB / 2 / 0.25 GiB
    assert plan.reason.startswith("cuda:") and "NCHW" in plan.reason
    assert cuda_batch_frames(100 * gib, 2**20) == MAX_BATCH_FRAMES
    assert cuda_batch_frames(gib, 4 * gib) == 1  # never below one frame
    assert inference_plan(build("fomm-synthetic"), "cuda", batch_frames=3).batch_frames == 3


def test_drive_clip_uses_absolute_motion_from_frame_0(trained_run, tiny_dataset):
    """Driving with frame t gives the same output as animating frame 0 with kp(t) directly."""
    model, _ = load_animator(trained_run / "model.pt", torch.device("cpu"))
    truth = read_clip(list_clips(tiny_dataset / "test")[0])
    clip = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 255
    predicted = drive_clip(model, clip)
    with torch.no_grad():
        direct = model(clip[:1].expand(3, -1, -1, -1), clip[[0, 4, 7]])["prediction"]
    torch.testing.assert_close(predicted[[0, 4, 7]], direct, atol=1e-5, rtol=0)


def _clip(size: int, num_frames: int, offset: int) -> torch.Tensor:
    return torch.from_numpy(moving_square(size, num_frames, offset)).permute(0, 3, 1, 2) / 255


@pytest.mark.parametrize(
    "preset",
    ["fomm-synthetic", "mraa-synthetic", "mtia-synthetic", "tpsmm-synthetic", "cpabmm-synthetic"],
)
def test_batched_equals_frame_at_a_time(preset, tmp_path):
    """Batches spanning clips (and splitting them), in reconstruct's memory layout, give each
    frame the output of driving it alone: batch of 1, NCHW, the source re-fed and re-detected
    every frame.

    Float rounding differs with the batch and layout; transforms fitted to the keypoints
    amplify it a little (MRAA's regions, TPSMM's TPS solve: up to 1.3e-5 seen on synthetic
    faces). CPABMM's frames are coupled through its batch-wide CPAB fit (batched, frames differ
    by up to 0.47), so they are animated one at a time; its fit's Adam steps still turn the
    keypoints' rounding (~1e-7) into ~1e-3, so it is held to the stored frames' 8-bit step."""
    path = save_untrained(preset, tmp_path / "model.pt", "test")
    model, _ = load_animator(path, torch.device("cpu"))
    ours = load_animator(path, torch.device("cpu"))[0]
    plan = inference_plan(ours, "cpu")
    ours = to_inference_layout(ours, plan.channels_last)  # as reconstruct
    size = get_preset(preset)["dataset_params"]["frame_shape"][0]
    atol = {"mraa": 3e-5, "tpsmm": 3e-5, "cpabmm": 1 / 255}.get(preset.split("-")[0], 1e-5)
    clips = {"a": _clip(size, 3, 0), "b": _clip(size, 2, 3), "c": _clip(size, 4, 7)}
    # batches: a0 a1 a2 b0 | b1 c0 c1 c2 | c3 (b's and c's later frames use kp_source kept)
    assert plan.batch_frames == 4  # the plan's batch on a CPU
    batched = dict(drive_clips(ours, clips.items(), batch_frames=plan.batch_frames))
    assert list(batched) == list(clips)
    with torch.no_grad():
        for name, frames in clips.items():
            assert batched[name].shape == frames.shape
            for t in range(len(frames)):
                alone = model(frames[:1], frames[t : t + 1])["prediction"]
                torch.testing.assert_close(batched[name][t : t + 1], alone, atol=atol, rtol=0)


def test_drive_clips_reads_clips_as_batches_need_them(trained_run):
    model, _ = load_animator(trained_run / "model.pt", torch.device("cpu"))
    clips = [_clip(TINY_SIZE, n, i) for i, n in enumerate([3, 3, 3, 1])]
    pulled = []

    def lazily():
        for index, frames in enumerate(clips):
            pulled.append(index)
            yield index, frames

    driven = drive_clips(model, lazily(), batch_frames=4)
    assert next(driven)[0] == 0  # the first batch: clip 0 and one frame of clip 1
    assert pulled == [0, 1]
    rest = list(driven)
    assert [key for key, _ in rest] == [1, 2, 3] and pulled == [0, 1, 2, 3]
    for key, prediction in rest:
        torch.testing.assert_close(prediction, drive_clip(model, clips[key]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="batch_frames"):
        list(drive_clips(model, [(0, clips[0])], batch_frames=0))
    with pytest.raises(ValueError, match="no frames"):
        list(drive_clips(model, [(0, clips[0][:0])]))


def test_model_rerun_redoes_only_unfinished_clips(tiny_dataset, trained_run, tmp_path):
    """Resuming a model run: a finished clip is left alone, an unfinished one is driven again
    (now in a batch of its own) to the same result."""
    out = tmp_path / "fomm"
    model_path = trained_run / "model.pt"
    run = dict(checkpoint=model_path, out=out, device="cpu", batch_frames=5)
    first = pd.read_parquet(reconstruct(tiny_dataset, "fomm", **run))
    kept, redone = sorted(_ground_truth(tiny_dataset))
    kept_mtime = (out / kept / "0000000.png").stat().st_mtime_ns
    (out / ".frames" / f"{redone}.parquet").unlink()
    second = pd.read_parquet(reconstruct(tiny_dataset, "fomm", **run))
    assert (out / kept / "0000000.png").stat().st_mtime_ns == kept_mtime
    assert (out / ".frames" / f"{redone}.parquet").is_file()
    pd.testing.assert_frame_equal(first, second, atol=1e-6, rtol=0)
    summary = json.loads((out / "reconstruct.json").read_text())
    assert summary["batch_frames"] == 5 and "--batch-frames 5" in summary["batch_reason"]


def test_model_run_finishes_clips_before_a_corrupt_one(tiny_dataset, trained_run, tmp_path):
    """Clips batched together with a clip that cannot be read are still finished first."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    clips = list_clips(data / "test")
    (clips[1] / "0000002.png").write_bytes(b"not a png")
    out = tmp_path / "fomm"
    with pytest.raises(Exception, match="0000002.png"):
        reconstruct(data, "fomm", checkpoint=trained_run / "model.pt", out=out, device="cpu")
    assert (out / clips[0].name).is_dir() and (
        out / ".frames" / f"{clips[0].name}.parquet"
    ).is_file()
    assert not (out / clips[1].name).exists()
    assert not (out / "frames.parquet").exists()


def test_rerun_with_another_checkpoint_redoes_every_clip(tiny_dataset, trained_run, tmp_path):
    """Finished clips are reused only from the same checkpoint (sha256): a reconstruction
    folder never mixes clips of two models."""
    out = tmp_path / "fomm"
    first = pd.read_parquet(
        reconstruct(
            tiny_dataset, "fomm", checkpoint=trained_run / "model.pt", out=out, device="cpu"
        )
    )
    payload = ckpt.load(trained_run / "model.pt")
    for value in payload["networks"]["generator"].values():
        if value.is_floating_point():
            value.mul_(0.9)
    other = ckpt.save(payload, tmp_path / "other.pt")
    second = pd.read_parquet(
        reconstruct(tiny_dataset, "fomm", checkpoint=other, out=out, device="cpu")
    )
    fresh_out = tmp_path / "fresh"
    fresh = pd.read_parquet(
        reconstruct(tiny_dataset, "fomm", checkpoint=other, out=fresh_out, device="cpu")
    )
    pd.testing.assert_frame_equal(second, fresh, atol=1e-6, rtol=0)
    assert not np.allclose(first["l1"], second["l1"])
    for name in _ground_truth(tiny_dataset):
        assert (read_clip(out / name) == read_clip(fresh_out / name)).all(), name
    record = json.loads((out / ".frames" / "record.json").read_text())
    assert record == {
        "method": "fomm",
        "checkpoint_sha256": ckpt.sha256(other),
        "quantisation": "truncate",
    }


def test_clips_without_a_record_are_redone(tiny_dataset, tmp_path):
    """Finished clips of a folder with no record of their checkpoint (an older run) are not
    trusted."""
    out = tmp_path / "copy"
    reconstruct(tiny_dataset, "source-copy", out=out, device="cpu")
    name = sorted(_ground_truth(tiny_dataset))[0]
    png = out / name / "0000003.png"
    good = png.read_bytes()
    black = np.zeros_like(read_clip(out / name)[:1])
    write_clip(out / name, np.repeat(black, TINY_FRAMES, axis=0))  # a stale, different clip
    assert png.read_bytes() != good
    (out / ".frames" / "record.json").unlink()
    reconstruct(tiny_dataset, "source-copy", out=out, device="cpu")
    assert png.read_bytes() == good


def test_to_uint8_truncates_as_the_authors_or_rounds():
    levels = np.array([0.0, 0.4, 0.6, 127.5, 254.7, 255.0, 300.0, -20.0]) / 255
    np.testing.assert_array_equal(to_uint8(levels, "truncate"), [0, 0, 0, 127, 254, 255, 255, 0])
    np.testing.assert_array_equal(to_uint8(levels, "round"), [0, 0, 1, 128, 255, 255, 255, 0])
    with pytest.raises(ValueError, match="quantisation"):
        to_uint8(levels, "nearest")


def test_reconstruction_truncates_by_default_and_records_it(tiny_dataset, tmp_path):
    """The stored frames are the authors' `(255 * prediction).astype(np.uint8)` unless
    `--quantisation round`; reconstruct.json says which."""
    from animbench import cli

    path = save_untrained("mraa-synthetic", tmp_path / "model.pt", "test")
    default = tmp_path / "default"
    reconstruct(tiny_dataset, "mraa", checkpoint=path, out=default, device="cpu")
    rounded = tmp_path / "round"
    argv = ["reconstruct", "--data", str(tiny_dataset), "--method", "mraa"]
    argv += ["--checkpoint", str(path), "--out", str(rounded), "--device", "cpu"]
    assert cli.main([*argv, "--quantisation", "round"]) == 0
    summary = json.loads((default / "reconstruct.json").read_text())
    assert summary["quantisation"] == "truncate"
    assert summary["align_corners"] is False  # MRAA's convention, from the checkpoint's spec
    assert json.loads((rounded / "reconstruct.json").read_text())["quantisation"] == "round"
    # the same float predictions as reconstruct's (same batches and layout)
    model = to_inference_layout(load_animator(path, torch.device("cpu"))[0])
    gt = {
        clip.name: torch.from_numpy(read_clip(clip)).permute(0, 3, 1, 2).float().div(255.0)
        for clip in list_clips(tiny_dataset / "test")
    }
    predictions = dict(drive_clips(model, gt.items()))
    differ = 0
    for name, prediction in predictions.items():
        floats = prediction.permute(0, 2, 3, 1).numpy()
        truncated, nearest = read_clip(default / name), read_clip(rounded / name)
        np.testing.assert_array_equal(truncated, (255 * floats).astype(np.uint8))
        np.testing.assert_array_equal(nearest, np.rint(255 * floats).astype(np.uint8))
        differ += int((truncated != nearest).sum())
    assert differ > 0  # an untrained model's output is not on the 8-bit levels
