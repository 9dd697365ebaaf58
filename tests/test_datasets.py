"""Training pairs: augmentation (reference order, one draw per pair) and clip storage formats."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from animbench.data import video
from animbench.data.datasets import Augmentation, FramePairs
from animbench.data.video import frame_paths, num_frames, read_clip, read_frames, write_clip
from animbench.errors import ConfigError, DataError
from animbench.models import registry

ALL_AUGMENTATIONS = {
    "flip_param": {"horizontal_flip": True, "time_flip": True},
    "rotation_param": {"degrees": 20},
    "resize_param": {"ratio": [0.9, 1.1]},
    "crop_param": {"size": [24, 24]},
    "jitter_param": {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.1},
}


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def _noise_clip(root, name: str, num_frames: int = 6, size: int = 24, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_clip(root / "train" / name, rng.integers(0, 256, (num_frames, size, size, 3), np.uint8))


def _asymmetric(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.random((h, w, 3)).astype(np.float32)


def _draw(pairs: FramePairs, seed: int, n: int = 4) -> list[torch.Tensor]:
    _seed(seed)
    return [torch.stack([pairs[0]["source"], pairs[0]["driving"]]) for _ in range(n)]


def test_same_seed_same_pairs_and_different_seed_differs(tmp_path):
    _noise_clip(tmp_path, "a#1")
    pairs = FramePairs(tmp_path, augmentation_params=ALL_AUGMENTATIONS)
    first, again, other = _draw(pairs, 3), _draw(pairs, 3), _draw(pairs, 4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert first[0].shape == (2, 3, 24, 24) and first[0].dtype == torch.float32


def test_presets_build_their_augmentation(tmp_path):
    _noise_clip(tmp_path, "a#1", size=32)
    for name in ("fomm-mgif256", "fomm-vox256"):
        params = registry.get_preset(name)["dataset_params"]["augmentation_params"]
        pairs = FramePairs(tmp_path, augmentation_params=params)
        _seed(0)
        item = pairs[0]
        side = 256 if "crop_param" in params else 32
        assert item["source"].shape == item["driving"].shape == (3, side, side)
        assert 0 <= float(item["source"].min()) and float(item["source"].max()) <= 1


def test_rotation_by_90_degrees_is_rot90():
    frame = _asymmetric(16, 16)
    augment = Augmentation(rotation_param={"degrees": [90, 90]})
    out = augment([frame, frame])
    expected = np.rot90(frame)  # skimage's rotate turns counter-clockwise, as rot90
    np.testing.assert_allclose(out[0][1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-5)
    assert out[0].shape == frame.shape


def test_small_rotation_fills_corners_with_black():
    frame = np.ones((20, 20, 3), np.float32)
    out = Augmentation(rotation_param={"degrees": [30, 30]})([frame])[0]
    assert out.shape == frame.shape
    assert out[0, 0].max() == 0 and out[10, 10].min() == pytest.approx(1)


def test_resize_ratio_range_is_respected():
    augment = Augmentation(resize_param={"ratio": [0.9, 1.1]})
    frame = np.zeros((100, 50, 3), np.float32)
    _seed(0)
    heights = set()
    for _ in range(200):
        out = augment([frame, frame])
        h, w = out[0].shape[:2]
        assert out[1].shape == out[0].shape
        assert 90 <= h <= 110 and 45 <= w <= 55
        assert abs(w / 50 - h / 100) < 0.03  # one factor for both axes (int() truncation)
        heights.add(h)
    assert min(heights) <= 92 and max(heights) >= 108


def test_resize_keeps_flat_colour():
    frame = np.full((40, 40, 3), 0.25, np.float32)
    out = Augmentation(resize_param={"ratio": [0.5, 0.5]})([frame])[0]
    assert out.shape == (20, 20, 3)
    np.testing.assert_allclose(out, 0.25, atol=1e-5)


def test_crop_size_and_edge_padding():
    # 4 x 6 frame, crop 8 x 6: rows are padded (2 above, 2 below) with the edge rows
    frame = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3) / 100
    out = Augmentation(crop_param={"size": [8, 6]})([frame])[0]
    assert out.shape == (8, 6, 3)
    np.testing.assert_array_equal(out[:2], np.stack([frame[0]] * 2))
    np.testing.assert_array_equal(out[2:6], frame)
    np.testing.assert_array_equal(out[6:], np.stack([frame[-1]] * 2))
    # odd padding puts the extra row below, as the reference's ((d)//2, (d+1)//2)
    out = Augmentation(crop_param={"size": [7, 6]})([frame])[0]
    np.testing.assert_array_equal(out[1:5], frame)
    np.testing.assert_array_equal(out[5:], np.stack([frame[-1]] * 2))


def test_crop_position_is_random_and_shared():
    frame = _asymmetric(30, 30)
    augment = Augmentation(crop_param={"size": [10, 10]})
    _seed(0)
    corners = set()
    for _ in range(50):
        a, b = augment([frame, frame + 0])
        assert a.shape == (10, 10, 3) and np.array_equal(a, b)
        hits = np.argwhere((frame[:-9, :-9] == a[0, 0]).all(-1))
        corners.add(tuple(hits[0]))
    assert len(corners) > 20


def test_both_frames_get_the_same_transform():
    frame = _asymmetric(24, 24)
    augment = Augmentation(**ALL_AUGMENTATIONS)
    _seed(0)
    for _ in range(20):
        a, b = augment([frame, frame.copy()])
        assert a.shape == (24, 24, 3) and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_colour_jitter_order_is_shuffled():
    augment = Augmentation(jitter_param={"brightness": 0.5, "contrast": 0.5, "saturation": 0.5})
    orders = set()
    original = random.shuffle

    def spy(ops):
        original(ops)
        orders.add(tuple(op.__name__ for op in ops))

    _seed(0)
    random.shuffle = spy
    try:
        for _ in range(40):
            augment([_asymmetric(4, 4)])
    finally:
        random.shuffle = original
    assert len(orders) == 6  # all permutations of three adjustments occur


@pytest.mark.parametrize(
    "params, key",
    [
        ({"rotate_param": {"degrees": 10}}, "augmentation_params.rotate_param"),
        ({"flip_param": {"vertical_flip": True}}, "augmentation_params.flip_param.vertical_flip"),
        ({"resize_param": {"ratio": [0.9, 1.0, 1.1]}}, "augmentation_params.resize_param.ratio"),
    ],
)
def test_bad_augmentation_keys_name_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        Augmentation(**params)


def test_id_sampling_draws_clips_of_the_same_id(tmp_path):
    # each clip is flat at its own level, so a frame tells which clip it came from
    levels = {"alice#x": 10, "alice#y": 20, "bob#z": 30}
    for name, level in levels.items():
        write_clip(tmp_path / "train" / name, np.full((3, 8, 8, 3), level, np.uint8))
    pairs = FramePairs(tmp_path, id_sampling=True)
    _seed(0)
    seen = {0: set(), 1: set()}
    for _ in range(40):
        for index in (0, 1):
            item = pairs[index]
            source, driving = (round(float(item[k].mean()) * 255) for k in ("source", "driving"))
            assert source == driving
            seen[index].add(source)
    assert seen == {0: {10, 20}, 1: {30}}


def test_folder_mixing_png_and_jpeg_is_an_error(tmp_path):
    clip = write_clip(tmp_path / "clip", np.zeros((2, 8, 8, 3), np.uint8))
    write_clip(tmp_path / "jpeg", np.zeros((1, 8, 8, 3), np.uint8), image_format="jpeg")
    (tmp_path / "jpeg" / "0000000.jpg").rename(clip / "0000002.jpg")
    for read in (frame_paths, num_frames, read_clip, lambda c: read_frames(c, [0])):
        with pytest.raises(DataError, match="clip.*mixes PNG and JPEG"):
            read(clip)


def test_jpeg_round_trip_is_close(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    frames = np.stack(
        [np.stack([xx * 8, yy * 8, (xx + yy + 4 * t) * 4], -1) for t in range(3)]
    ).astype(np.uint8)
    clip = write_clip(tmp_path / "clip", frames, image_format="jpeg", quality=95)
    assert [p.name for p in frame_paths(clip)] == ["0000000.jpg", "0000001.jpg", "0000002.jpg"]
    assert num_frames(clip) == 3
    back = read_clip(clip).astype(np.float32)
    assert back.shape == frames.shape
    assert np.abs(back - frames).mean() < 3
    np.testing.assert_array_equal(read_frames(clip, [2, 0]), read_clip(clip)[[2, 0]])
    with pytest.raises(ValueError, match="image_format"):
        write_clip(tmp_path / "x", frames, image_format="webp")


@pytest.fixture(scope="module")
def grey_mp4(tmp_path_factory):
    """30 flat grey frames at levels 8 * t, as an mp4 (lossy: compare with a tolerance)."""
    import imageio.v3 as iio

    path = tmp_path_factory.mktemp("video") / "grey.mp4"
    frames = np.stack([np.full((32, 32, 3), 8 * t, np.uint8) for t in range(30)])
    iio.imwrite(path, frames, fps=25, codec="libx264")
    return path


def test_read_frames_from_mp4_returns_the_right_frames(grey_mp4):
    frames = read_frames(grey_mp4, [25, 3, 3, 17])
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [200, 24, 24, 136], atol=3)
    np.testing.assert_array_equal(read_frames(grey_mp4, range(30)), read_clip(grey_mp4))
    assert num_frames(grey_mp4) == 30
    with pytest.raises(DataError, match="grey.mp4.*out of range"):
        read_frames(grey_mp4, [30])


def test_read_frames_from_mp4_stops_early(grey_mp4, monkeypatch):
    num_frames(grey_mp4)  # the length (and frame size) is known before sampling, as in training
    commands, read_sizes = [], []
    real_popen = video.subprocess.Popen

    class CountingPopen(real_popen):
        def __init__(self, command, **kwargs):
            commands.append(command)
            super().__init__(command, **kwargs)
            real_read = self.stdout.read
            self.stdout.read = lambda n: read_sizes.append(len(data := real_read(n))) or data

    monkeypatch.setattr(video.subprocess, "Popen", CountingPopen)
    frames = read_frames(grey_mp4, [4, 1])
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [32, 8], atol=3)
    assert len(commands) == 1
    assert commands[0][commands[0].index("-frames:v") + 1] == "5"  # ffmpeg stops at frame 4
    assert read_sizes == [32 * 32 * 3] * 5  # 5 of the 30 frames decoded


def test_video_length_is_cached_per_path_and_mtime(grey_mp4, monkeypatch):
    import os

    calls = []
    real = video._iter_video

    def counting(clip):
        calls.append(clip)
        return real(clip)

    monkeypatch.setattr(video, "_iter_video", counting)
    video._VIDEO_INFO.clear()
    assert num_frames(grey_mp4) == 30 and num_frames(grey_mp4) == 30
    read_frames(grey_mp4, [0, 29])
    assert len(calls) == 1
    stat = grey_mp4.stat()
    os.utime(grey_mp4, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "edited": recount
    assert num_frames(grey_mp4) == 30
    assert len(calls) == 2


def test_truncated_mp4_is_a_data_error(grey_mp4, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(grey_mp4.read_bytes()[: grey_mp4.stat().st_size // 3])
    with pytest.raises(DataError, match="broken.mp4"):
        read_frames(broken, [0, 1])


def test_read_frames_from_gif(tmp_path):
    import imageio.v3 as iio

    path = tmp_path / "clip.gif"
    iio.imwrite(path, np.stack([np.full((8, 8, 3), 20 * t, np.uint8) for t in range(6)]))
    np.testing.assert_array_equal(read_frames(path, [4, 1]), read_clip(path)[[4, 1]])
    assert num_frames(path) == 6


def test_frame_pairs_read_mp4_clips(tmp_path, grey_mp4):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a#1.mp4").write_bytes(grey_mp4.read_bytes())
    pairs = FramePairs(tmp_path)
    _seed(0)
    for _ in range(5):
        item = pairs[0]
        source, driving = (float(item[k].mean()) * 255 / 8 for k in ("source", "driving"))
        assert source <= driving + 0.5


def test_hue_shift_matches_colorsys():
    import colorsys

    from animbench.data.datasets import _shift_hue

    frame = np.random.default_rng(3).random((12, 12, 3)).astype(np.float32)
    frame[0] = 0.4  # greys stay grey
    for shift in (0.13, -0.4, 0.5):
        expected = [
            colorsys.hsv_to_rgb((h + shift) % 1, s, v)
            for h, s, v in (colorsys.rgb_to_hsv(*px) for px in frame.reshape(-1, 3).tolist())
        ]
        out = _shift_hue(frame, shift)
        np.testing.assert_allclose(out.reshape(-1, 3), expected, atol=1e-5)


def test_flips_follow_the_reference_never_both():
    """FOMM's RandomFlip returns after a time flip: never both flips, horizontal p = 0.25."""
    augment = Augmentation(flip_param={"horizontal_flip": True, "time_flip": True})
    first = np.zeros((4, 4, 3), np.float32)
    first[:, 0] = 1.0  # marks the left column of the earlier frame
    second = np.zeros((4, 4, 3), np.float32)
    random.seed(0)
    counts = {"time": 0, "horizontal": 0, "both": 0, "none": 0}
    for _ in range(4000):
        a, b = augment([first, second])
        reversed_ = a.max() == 0
        mirrored = (b if reversed_ else a)[:, -1].max() == 1.0
        key = (
            "both"
            if reversed_ and mirrored
            else "time"
            if reversed_
            else "horizontal"
            if mirrored
            else "none"
        )
        counts[key] += 1
    assert counts["both"] == 0
    assert abs(counts["time"] / 4000 - 0.5) < 0.03
    assert abs(counts["horizontal"] / 4000 - 0.25) < 0.03
