"""Clip cropping (animbench.data.crop) on lossless videos generated here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animbench.data import crop as crop_mod
from animbench.data.crop import INDEX_COLUMNS, crop_dataset, crop_video, frame_range, scale_bbox
from animbench.data.ffmpeg import executable
from animbench.data.metadata import COLUMNS
from animbench.data.video import read_clip
from animbench.errors import DataError

REF_W, REF_H = 640, 360  # the CSV's reference frame
VID_W, VID_H = 320, 180  # the "downloaded" video: half the CSV's resolution
NUM_FRAMES = 50
SIZE = 64
BACKGROUND = (20, 30, 80)
# Flat rectangles in reference coordinates (x0, y0, x1, y1): all even, so exact at half size.
RED = (80, 40, 240, 200)
GREEN = (320, 200, 480, 320)
GREY = (480, 40, 600, 160)  # grey level encodes the frame index


def level(i: int) -> int:
    return 8 + 4 * i


def render(i: int, width: int = VID_W, height: int = VID_H) -> np.ndarray:
    """The ideal frame i at `width x height`."""
    sx, sy = width / REF_W, height / REF_H
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = BACKGROUND
    for (x0, y0, x1, y1), colour in ((RED, (200, 30, 30)), (GREEN, (40, 190, 60)), (GREY, None)):
        colour = colour or (level(i),) * 3
        frame[int(y0 * sy) : int(y1 * sy), int(x0 * sx) : int(x1 * sx)] = colour
    return frame


def encode(path: Path, frames: np.ndarray, fps: str) -> Path:
    """Lossless RGB video (ffv1 in mkv)."""
    _, h, w, _ = frames.shape
    cmd = [executable(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    cmd += ["-s", f"{w}x{h}", "-r", fps, "-i", "-", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    frames = np.stack([render(i) for i in range(NUM_FRAMES)])
    return encode(tmp_path_factory.mktemp("videos") / "vid.mkv", frames, "25")


def clip_row(name, start, end, box, partition="test", fps=25.0, ytid="vid", ref=(REF_W, REF_H)):
    left, top, right, bottom = box
    return {
        "name": name,
        "youtube_id": ytid,
        "partition": partition,
        "start": start,
        "end": end,
        "fps": fps,
        "width": ref[0],
        "height": ref[1],
        "left": left,
        "top": top,
        "right": right,
        "bottom": bottom,
        "person_id": None,
    }


def table(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=COLUMNS)


def expected_crop(i: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    crop = Image.fromarray(render(i)[y0:y1, x0:x1])
    return np.asarray(crop.resize((SIZE, SIZE), Image.Resampling.BOX)).astype(np.float64)


def grey_levels(clip: np.ndarray, yx: tuple[int, int]) -> list[int]:
    return [int(v) for v in clip[:, yx[0], yx[1], 0]]


# --------------------------------------------------------------------------- frame_range


def brute_force(start, end, ref_fps, video_fps):
    n = int(end * video_fps / ref_fps) + 3
    i = np.arange(n + 1)
    ok = [
        k for k in i.tolist() if k * ref_fps >= start * video_fps and k * ref_fps < end * video_fps
    ]
    return (ok[0], ok[-1] + 1) if ok else None


FPS = (25.0, 29.97, 30.0, 59.94, 50.0, 24.0, 23.976, 10.0, 60.0, 23.98)


@pytest.mark.parametrize("ref_fps", FPS)
def test_frame_range_matches_bruteforce(ref_fps):
    rng = np.random.default_rng(int(ref_fps * 100))
    for video_fps in FPS:
        starts = [0, 1, 2, 3, 5, 10, 100, 1001, 3000] + rng.integers(0, 4000, 15).tolist()
        for start in starts:
            for length in (1, 2, 3, 7, 64, int(rng.integers(1, 600))):
                end = start + length
                first, stop = frame_range(start, end, ref_fps, video_fps)
                want = brute_force(start, end, ref_fps, video_fps)
                if want is None:
                    assert stop == first, (start, end, ref_fps, video_fps)
                else:
                    assert (first, stop) == want, (start, end, ref_fps, video_fps)


def test_frame_range_examples():
    assert frame_range(10, 20, 25, 25) == (10, 20)
    assert frame_range(20, 60, 50.0, 25.0) == (10, 30)
    assert frame_range(0, 128, 30.0, 59.94) == (0, 256)  # i*30 < 128*59.94 = 7672.32
    assert frame_range(7, 9, 25, 25, selection="indices") == (7, 9)
    with pytest.raises(ValueError):
        frame_range(0, 1, 25, 25, selection="seconds")


# --------------------------------------------------------------------------- scale_bbox


def test_scale_bbox_truncates_and_clips():
    assert scale_bbox(101, 51, 301, 251, 640, 360, 320, 180) == (50, 25, 150, 125)
    assert scale_bbox(333, 333, 999, 999, 1920, 1080, 854, 480) == (148, 148, 444, 444)
    # load_videos.py divides by the ratio: 1280 / (1280 / 854) = 853.999... -> 853, not 854
    assert scale_bbox(640, 0, 1280, 720, 1280, 720, 854, 480) == (426, 0, 853, 480)
    # out-of-frame bottom/right are clipped like numpy slicing
    assert scale_bbox(500, 200, 700, 400, 640, 360, 320, 180) == (250, 100, 320, 180)
    with pytest.raises(DataError, match="clipX"):
        scale_bbox(700, 10, 800, 100, 640, 360, 320, 180, clip="clipX")
    with pytest.raises(DataError, match="empty crop box"):
        scale_bbox(10, 10, 11, 11, 640, 360, 320, 180)  # 5..5 after truncation


# --------------------------------------------------------------------------- crop_video


def test_crop_video_geometry_selection_and_formats(video, tmp_path):
    square = (440, 0, 640, 200)  # holds the grey block; CSV fps 50 vs video 25
    wide = (40, 20, 280, 140)  # non-square (240x120 ref): stretched to SIZE x SIZE
    clips = table(
        clip_row("vid#000020#000060", 20, 60, square, fps=50.0),
        clip_row("vid#000003#000011", 3, 11, wide, partition="train"),
    )
    out = tmp_path / "out"
    recs = crop_video(video, clips, out, SIZE, train_format="jpeg")
    by = {r["name"]: r for r in recs}
    assert set(by) == set(clips["name"])
    assert all(set(r) == set(INDEX_COLUMNS) for r in recs)

    r = by["vid#000020#000060"]
    assert (r["status"], r["frames"], r["expected_frames"]) == ("written", 20, 20)
    assert (r["video_width"], r["video_height"], r["video_fps"]) == (VID_W, VID_H, 25.0)
    box = (r["crop_x0"], r["crop_y0"], r["crop_x1"], r["crop_y1"])
    assert box == (220, 0, 320, 100)
    folder = out / "test" / "vid#000020#000060"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{k:07d}.png" for k in range(20)]  # test clips: lossless PNG
    frames = read_clip(folder).astype(np.float64)
    assert frames.shape == (20, SIZE, SIZE, 3)
    # the grey block (video x 240..300, y 20..80) sits at the crop's centre
    assert grey_levels(frames, (32, 32)) == [level(i) for i in range(10, 30)]
    for k, i in enumerate(range(10, 30)):
        assert np.abs(frames[k] - expected_crop(i, box)).mean() < 1.5

    r = by["vid#000003#000011"]
    assert (r["status"], r["frames"], r["expected_frames"]) == ("written", 8, 8)
    box = (r["crop_x0"], r["crop_y0"], r["crop_x1"], r["crop_y1"])
    assert box == (20, 10, 140, 70)
    folder = out / "train" / "vid#000003#000011"
    jpgs = sorted(folder.iterdir())
    assert [p.name for p in jpgs] == [f"{k:07d}.jpg" for k in range(8)]
    first = np.asarray(Image.open(jpgs[0]).convert("RGB")).astype(np.float64)
    assert first.shape == (SIZE, SIZE, 3)
    assert np.abs(first - expected_crop(3, box)).mean() < 4.0  # JPEG q2
    # the red rect (video x 40..120, y 20..100) fills x 20..100 of 120 → stretched horizontally
    assert first[40, 30, 0] > 150 and first[40, 5, 0] < 60
    assert not any(p.name.startswith(".") for p in (out / "train").iterdir())


def test_crop_video_keep_aspect_pads(video, tmp_path):
    wide = (40, 20, 280, 140)  # 120x60 in the video → padded to 120x120 then resized
    recs = crop_video(video, table(clip_row("w", 0, 2, wide)), tmp_path, SIZE, keep_aspect=True)
    assert recs[0]["status"] == "written"
    frame = read_clip(tmp_path / "test" / "w")[0].astype(int)
    assert frame[:10].max() < 5 and frame[-10:].max() < 5  # black pad bands
    assert np.abs(frame[32, 32] - np.array((200, 30, 30))).max() < 5  # red rect (box centre)


def test_rerun_skips_without_ffmpeg_and_empty_clips(video, tmp_path, monkeypatch):
    box = (0, 0, 640, 360)
    clips = table(
        clip_row("a", 0, 5, box),
        clip_row("late", 100, 140, box),  # video has 50 frames: selects nothing
        clip_row("tail", 45, 60, box, partition="train"),  # video ends early: 5 of 15 kept
    )
    recs = {r["name"]: r for r in crop_video(video, clips, tmp_path, SIZE)}
    assert recs["a"]["status"] == "written"
    assert (recs["late"]["status"], recs["late"]["frames"]) == ("empty", 0)
    assert not (tmp_path / "test" / "late").exists()
    assert (recs["tail"]["status"], recs["tail"]["frames"]) == ("written", 5)
    assert recs["tail"]["expected_frames"] == 15

    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("ffmpeg must not run when every clip exists")

    monkeypatch.setattr(crop_mod.subprocess, "run", no_ffmpeg)
    again = {r["name"]: r for r in crop_video(video, clips.iloc[[0, 2]], tmp_path, SIZE)}
    assert again["a"]["status"] == again["tail"]["status"] == "present"
    assert again["tail"]["frames"] == 5


def test_empty_output_unknown_length_is_retried(video, tmp_path):
    """With no frame count known, an output receiving no frame is dropped and the pass rerun."""
    from animbench.data.ffmpeg import probe

    info = probe(video, decode=False)
    info = type(info)(info.width, info.height, info.fps, 0, info.duration, info.codec)
    box = (0, 0, 640, 360)
    clips = table(
        clip_row("ok1", 1, 3, box), clip_row("late", 100, 140, box), clip_row("ok2", 10, 12, box)
    )
    recs = {r["name"]: r for r in crop_video(video, clips, tmp_path, SIZE, info=info)}
    assert recs["late"]["status"] == "empty"
    assert recs["ok1"]["status"] == recs["ok2"]["status"] == "written"
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["ok1", "ok2"]
    clip = read_clip(tmp_path / "test" / "ok2")
    assert grey_levels(clip, (SIZE * 50 // 180, SIZE * 270 // 320)) == [level(10), level(11)]


def test_ntsc_video_against_pal_csv(tmp_path):
    """A 29.97 fps download of a clip annotated at 25 fps: the timestamp rule picks the frames."""
    frames = np.stack([render(i) for i in range(40)])
    ntsc = encode(tmp_path / "ntsc.mkv", frames, "30000/1001")
    recs = crop_video(ntsc, table(clip_row("n", 5, 25, (440, 0, 640, 200))), tmp_path, SIZE)
    first, stop = brute_force(5, 25, 25.0, 29.97)
    assert (recs[0]["video_fps"], recs[0]["expected_frames"]) == (29.97, stop - first)
    clip = read_clip(tmp_path / "test" / "n")
    assert grey_levels(clip, (32, 32)) == [level(i) for i in range(first, stop)]


def test_empty_box_fails_clip_and_corrupt_video_raises(video, tmp_path):
    clips = table(clip_row("off", 0, 2, (700, 0, 800, 100)), clip_row("on", 0, 2, (0, 0, 64, 64)))
    recs = {r["name"]: r for r in crop_video(video, clips, tmp_path, SIZE)}
    assert recs["off"]["status"] == "failed" and "off" in recs["off"]["message"]
    assert recs["on"]["status"] == "written"
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(3000))
    with pytest.raises(DataError, match="broken.mp4"):
        crop_video(bad, clips.iloc[[1]].assign(name="on2"), tmp_path, SIZE)


def test_many_clips_in_several_passes(video, tmp_path):
    box = (440, 0, 640, 200)
    rows = [clip_row(f"c{k:02d}", k, k + 2, box) for k in range(5)]
    recs = crop_video(video, table(*rows), tmp_path, 32, max_branches=2)
    assert [r["status"] for r in recs] == ["written"] * 5
    for k in range(5):
        clip = read_clip(tmp_path / "test" / f"c{k:02d}")
        assert grey_levels(clip, (16, 16)) == [level(k), level(k + 1)]


def test_aspect_mismatch_warns(video, tmp_path):
    row = clip_row("x", 0, 1, (0, 0, 400, 300), ref=(400, 300))
    recs = crop_video(video, table(row), tmp_path, SIZE)
    assert recs[0]["status"] == "written" and "aspect" in recs[0]["message"]


# --------------------------------------------------------------------------- crop_dataset


def test_crop_dataset_missing_corrupt_and_good(video, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    box = (0, 0, 640, 360)
    clips = table(
        clip_row("bad#1", 0, 5, box, ytid="bad"),
        clip_row("vid#1", 0, 5, box, ytid="vid"),
        clip_row("gone#1", 0, 5, box, ytid="gone"),
        clip_row("bad#2", 5, 9, box, ytid="bad", partition="train"),
        clip_row("vid#2", 1, 3, box, ytid="vid", partition="train"),
    )
    index = crop_dataset(
        clips, {"vid": video, "bad": bad}, tmp_path / "out", SIZE, workers=2, progress=False
    )
    assert list(index.columns) == list(INDEX_COLUMNS)
    assert {c: str(t) for c, t in index.dtypes.items()} == INDEX_COLUMNS
    assert list(index["name"]) == list(clips["name"])
    status = dict(zip(index["name"], index["status"]))
    assert status == {
        "bad#1": "failed",
        "vid#1": "written",
        "gone#1": "missing_video",
        "bad#2": "failed",
        "vid#2": "written",
    }
    failed = index[index["status"] == "failed"]
    assert failed["message"].str.contains("bad.mp4").all()
    assert list(index.loc[index["status"] == "written", "frames"]) == [5, 2]


def test_crop_dataset_reuses_clips_only_under_the_same_parameters(video, tmp_path):
    """crop.json records the crop parameters; clips cut with others (or with no record) are
    cut again, never served under the new parameters."""
    box = (0, 0, 640, 360)
    clips = table(clip_row("vid#1", 0, 5, box), clip_row("vid#2", 1, 3, box, partition="train"))
    out = tmp_path / "clips"

    def run(**options) -> pd.DataFrame:
        return crop_dataset(clips, {"vid": video}, out, SIZE, progress=False, **options)

    assert set(run()["status"]) == {"written"}
    assert json.loads((out / "crop.json").read_text()) == {
        "size": SIZE, "selection": "timestamps", "train_format": "png", "keep_aspect": False
    }  # fmt: skip
    assert set(run()["status"]) == {"present"}  # the same parameters: reused
    index = run(train_format="jpeg")
    assert set(index["status"]) == {"written"}
    assert sorted(p.suffix for p in (out / "train" / "vid#2").iterdir()) == [".jpg", ".jpg"]
    assert json.loads((out / "crop.json").read_text())["train_format"] == "jpeg"
    # another size: the clips are cut again at that size
    index = crop_dataset(clips, {"vid": video}, out, SIZE // 2, progress=False,
                         train_format="jpeg")  # fmt: skip
    assert set(index["status"]) == {"written"}
    assert read_clip(out / "test" / "vid#1").shape[1:3] == (SIZE // 2, SIZE // 2)
    # clips of a run that recorded no parameters are not trusted
    (out / "crop.json").unlink()
    assert set(run()["status"]) == {"written"}
