"""Safe archive extraction, GIF decoding and MGIF conversion (all data generated in tmp_path)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animbench.data.archives import gif_frames, mgif_to_clips, safe_extract
from animbench.data.video import read_clip
from animbench.errors import DataError

# ---------------------------------------------------------------- archives


def _add_tar_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_zip_extracts(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top.txt", b"top")
        zf.writestr("sub/dir/", b"")
        zf.writestr("sub/dir/inner.bin", b"\x00\x01\x02")
    target = tmp_path / "out" / "data"
    files = safe_extract(archive, target)
    assert files == sorted([target / "sub" / "dir" / "inner.bin", target / "top.txt"])
    assert (target / "top.txt").read_bytes() == b"top"
    assert (target / "sub" / "dir" / "inner.bin").read_bytes() == b"\x00\x01\x02"
    assert _leftovers(target.parent) == ["data"]  # no temporary folder left behind


def test_tar_gz_extracts_and_existing_target_is_kept(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        _add_tar_file(tf, "./moving-gif/00001.gif", b"gif")
        _add_tar_file(tf, "moving-gif/readme.txt", b"hello")
    target = tmp_path / "data"
    files = safe_extract(archive, target)
    assert [p.relative_to(target).as_posix() for p in files] == [
        "moving-gif/00001.gif",
        "moving-gif/readme.txt",
    ]
    assert (target / "moving-gif" / "readme.txt").read_bytes() == b"hello"
    # a complete target is returned as is, without reading the archive again
    (target / "moving-gif" / "readme.txt").write_bytes(b"kept")
    archive.unlink()
    assert safe_extract(archive, target) == files
    assert (target / "moving-gif" / "readme.txt").read_bytes() == b"kept"


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("bad", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil_abs.txt"])
def test_escaping_members_are_rejected(tmp_path, kind, bad):
    work = tmp_path / "work"
    work.mkdir()
    archive = tmp_path / ("bad.zip" if kind == "zip" else "bad.tar")
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("good.txt", b"fine")
            info = zipfile.ZipInfo("placeholder")
            info.filename = bad  # ZipInfo() strips leading '/', set the raw name afterwards
            zf.writestr(info, b"evil")
    else:
        with tarfile.open(archive, "w") as tf:
            _add_tar_file(tf, "good.txt", b"fine")
            _add_tar_file(tf, bad, b"evil")
    target = work / "target"
    with pytest.raises(DataError) as err:
        safe_extract(archive, target)
    message = str(err.value)
    assert str(archive) in message and bad in message and "\n" not in message
    assert not target.exists()
    assert _leftovers(work) == []  # no target, no temporary folder
    assert not (tmp_path / "evil.txt").exists()
    if bad.startswith("/"):
        assert not Path(bad).exists()


def test_absolute_member_writes_nothing_outside(tmp_path):
    outside = tmp_path / "outside" / "evil.txt"
    archive = tmp_path / "abs.tar"
    with tarfile.open(archive, "w") as tf:
        _add_tar_file(tf, str(outside), b"evil")
    with pytest.raises(DataError, match="absolute path"):
        safe_extract(archive, tmp_path / "target")
    assert not outside.exists()
    assert _leftovers(tmp_path) == ["abs.tar"]


@pytest.mark.parametrize("link", ["sym", "hard"])
def test_tar_link_members_are_rejected(tmp_path, link):
    archive = tmp_path / "links.tar.xz"
    with tarfile.open(archive, "w:xz") as tf:
        _add_tar_file(tf, "data.txt", b"x")
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE if link == "sym" else tarfile.LNKTYPE
        info.linkname = "/etc/passwd" if link == "sym" else "data.txt"
        tf.addfile(info)
    with pytest.raises(DataError, match=r"'link'.*link") as err:
        safe_extract(archive, tmp_path / "target")
    assert str(archive) in str(err.value)
    assert _leftovers(tmp_path) == ["links.tar.xz"]


def test_zip_symlink_member_is_rejected(tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16) | 0x20
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        safe_extract(archive, tmp_path / "target")
    assert _leftovers(tmp_path) == ["links.zip"]


def test_corrupt_archive_gives_data_error(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(DataError, match="broken.tar.gz"):
        safe_extract(archive, tmp_path / "target")
    assert _leftovers(tmp_path) == ["broken.tar.gz"]


# ---------------------------------------------------------------- GIFs

H, W, T = 8, 10, 3
MARK = (2, 3)  # pixel with a known colour in every frame


def _frames_rgb() -> list[np.ndarray]:
    frames = []
    for t in range(T):
        a = np.zeros((H, W, 3), np.uint8)
        a[..., 0] = 40 * t + 10
        a[MARK] = (200, 50, 100)
        frames.append(a)
    return frames


def _palette_image(rgb: np.ndarray) -> Image.Image:
    """An exact mode-P image: palette entry 0 = background, 1 = mark."""
    index = np.zeros(rgb.shape[:2], np.uint8)
    index[MARK] = 1
    image = Image.fromarray(index, "P")
    image.putpalette(list(rgb[0, 0]) + list(rgb[MARK]) + [0, 0, 0] * 254)
    return image


def _write_gif(path: Path, mode: str) -> list[np.ndarray]:
    """Write a T-frame GIF from images of `mode`; return the expected RGB frames."""
    images, expected = [], []
    for rgb in _frames_rgb():
        if mode == "P":
            images.append(_palette_image(rgb))
            expected.append(rgb)
        elif mode in ("L", "LA"):
            gray = rgb[..., 0].copy()
            gray[MARK] = 200
            if mode == "L":
                images.append(Image.fromarray(gray, "L"))
            else:
                alpha = np.full((H, W), 255, np.uint8)
                images.append(Image.fromarray(np.dstack([gray, alpha]), "LA"))
            expected.append(np.repeat(gray[..., None], 3, axis=-1))
        elif mode == "RGBA":
            alpha = np.full((H, W), 255, np.uint8)
            images.append(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
            expected.append(rgb)
        else:
            raise AssertionError(mode)
    assert images[0].mode == mode
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return expected


@pytest.mark.parametrize("mode", ["P", "L", "LA", "RGBA"])
def test_gif_frames_convert_to_rgb(tmp_path, mode):
    path = tmp_path / f"{mode}.gif"
    expected = _write_gif(path, mode)
    frames = gif_frames(path)
    assert frames.dtype == np.uint8
    assert frames.shape == (T, H, W, 3)
    expected_mark = (200, 200, 200) if mode in ("L", "LA") else (200, 50, 100)
    for t in range(T):
        assert tuple(frames[t][MARK]) == expected_mark
        assert tuple(frames[t][0, 0]) == tuple(expected[t][0, 0])
    if mode in ("P", "L", "LA"):  # exact palettes / gray levels: whole frames are lossless
        np.testing.assert_array_equal(frames, np.stack(expected))


def test_truncated_gif_names_the_file(tmp_path):
    path = tmp_path / "00042.gif"
    _write_gif(path, "P")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="00042.gif") as err:
        gif_frames(path)
    assert "\n" not in str(err.value)
    path.write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="00042.gif"):
        gif_frames(path)


# ---------------------------------------------------------------- MGIF


def test_mgif_to_clips_split_and_resume(tmp_path):
    gif_dir = tmp_path / "moving-gif"
    gif_dir.mkdir()
    expected = _write_gif(gif_dir / "00005.gif", "P")
    _write_gif(gif_dir / "00150.gif", "RGBA")
    out = tmp_path / "dataset"

    assert mgif_to_clips(gif_dir, out) == {"train": 1, "test": 1}
    test_clip, train_clip = out / "test" / "00005", out / "train" / "00150"
    assert test_clip.is_dir() and train_clip.is_dir()
    assert not (out / "train" / "00005").exists() and not (out / "test" / "00150").exists()
    np.testing.assert_array_equal(read_clip(test_clip), np.stack(expected))
    assert read_clip(train_clip).shape == (T, H, W, 3)

    # rerun: existing clips are skipped (not rewritten), a new gif is added
    stamp = {p: p.stat().st_mtime_ns for p in test_clip.iterdir()}
    (gif_dir / "00005.gif").write_bytes(b"corrupt now: would fail if read again")
    _write_gif(gif_dir / "00099.gif", "L")
    assert mgif_to_clips(gif_dir, out) == {"train": 1, "test": 2}
    assert {p: p.stat().st_mtime_ns for p in test_clip.iterdir()} == stamp
    assert (out / "test" / "00099").is_dir()


def test_mgif_to_clips_reports_bad_gif(tmp_path):
    gif_dir = tmp_path / "moving-gif"
    gif_dir.mkdir()
    (gif_dir / "00200.gif").write_bytes(b"GIF89a\x0a\x00")
    with pytest.raises(DataError, match="00200.gif"):
        mgif_to_clips(gif_dir, tmp_path / "dataset")
    assert not (tmp_path / "dataset" / "train" / "00200").exists()
