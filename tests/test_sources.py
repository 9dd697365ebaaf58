"""The real-dataset steps end to end on data the test generates: a loopback HTTP server stands in
for YouTube and Yandex Disk; yt-dlp downloads from it, ffmpeg crops, and the clips are checked
against the known rendering."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animbench.data import sources
from animbench.data.video import list_clips, read_clip
from animbench.errors import DataError

FPS = 25
WIDTH, HEIGHT = 160, 96  # the served video
REF_W, REF_H = 320, 192  # the resolution the metadata's boxes refer to (2x)
FRAMES = 60


def render(index: int) -> np.ndarray:
    """Frame `index` of the served video: flat regions at known places and a grey block whose
    level encodes the frame number."""
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    frame[:, : WIDTH // 2] = (200, 40, 40)
    frame[:, WIDTH // 2 :] = (40, 40, 200)
    frame[16:48, 48:80] = (40, 200, 40)
    frame[56:80, 88:112] = 20 + 3 * index
    return frame


def write_video(path: Path, frames: int = FRAMES) -> Path:
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(
        str(path),
        (WIDTH, HEIGHT),
        fps=FPS,
        codec="libx264",
        pix_fmt_out="yuv444p",
        quality=None,
        output_params=["-qp", "0"],
        macro_block_size=1,
    )
    writer.send(None)
    for index in range(frames):
        writer.send(render(index))
    writer.close()
    return path


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        parsed = urllib.parse.urlparse(self.path)
        if parsed.path == "/yandex/download":  # the Yandex Disk public API
            key = urllib.parse.parse_qs(parsed.query)["public_key"][0]
            body = json.dumps(
                {"href": f"http://{self.headers['Host']}/files/mgif.zip?key={key}", "method": "GET"}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    # dataset downloads come from this loopback server: lift the session's offline switch
    # (conftest), which refuses every download as a compute node's job would
    monkeypatch.delenv("ANIMBENCH_OFFLINE", raising=False)
    root = tmp_path / "www"
    (root / "videos").mkdir(parents=True)
    (root / "files").mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def youtube_spec(base: str, tmp_path: Path, **crop) -> dict:
    return {
        "source": "youtube",
        "paper_name": "taichi",
        "resolution": 64,
        "cache": str(tmp_path / "cache"),
        "youtube": {
            "url_template": base + "/videos/{id}.mp4",
            "workers": 2,
            "retries": 1,
            "backoff_s": 0.01,
        },
        "crop": {"selection": "timestamps", "train_format": "png", "keep_aspect": False, **crop},
    }


def write_metadata(path: Path, rows: list[tuple]) -> Path:
    lines = ["video_id,start,end,bbox,fps,width,height,partition"]
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_crop(index: int, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    left, top, right, bottom = box
    return np.asarray(
        Image.fromarray(render(index)[top:bottom, left:right]).resize((size, size), Image.BOX)
    )


def test_download_and_crop_against_the_rendering(server, tmp_path):
    root, base = server
    write_video(root / "videos" / "goodvideo01.mp4")
    good = (root / "videos" / "goodvideo01.mp4").read_bytes()
    (root / "videos" / "-truncated1.mp4").write_bytes(good[: len(good) // 2])
    data = tmp_path / "results" / "data" / "taichi"
    data.mkdir(parents=True)
    # boxes in a 320x192 reference frame -> halved on the 160x96 download
    metadata = write_metadata(
        data / "metadata.csv",
        [
            ("goodvideo01", 10, 40, "64-16-192-144", FPS, REF_W, REF_H, "test"),
            ("goodvideo01", 0, 20, "0-0-320-192", FPS, REF_W, REF_H, "test"),
            ("goodvideo01", 200, 260, "0-0-320-192", FPS, REF_W, REF_H, "test"),  # past the end
            ("missingvid1", 0, 30, "0-0-320-192", FPS, REF_W, REF_H, "train"),
            ("-truncated1", 0, 30, "0-0-320-192", FPS, REF_W, REF_H, "train"),
        ],
    )
    spec = youtube_spec(base, tmp_path)

    availability = sources.download("taichi", spec, [str(metadata)], data / "availability.parquet")
    status = dict(zip(availability["youtube_id"], availability["status"]))
    assert status == {"goodvideo01": "ok", "missingvid1": "failed", "-truncated1": "failed"}
    errors = dict(zip(availability["youtube_id"], availability["error_class"]))
    assert errors["missingvid1"] == "http_404" and errors["-truncated1"] == "corrupt"
    assert sorted(p.name for p in (data / "raw").iterdir() if p.is_file()) == [
        "goodvideo01.mp4",
        "manifest.parquet",
    ]
    attempts = pd.read_parquet(data / "raw" / "manifest.parquet")
    assert (attempts["youtube_id"] == "-truncated1").sum() == 2  # retried once, then recorded

    index = sources.crop(
        "taichi",
        spec,
        [str(metadata), str(data / "availability.parquet")],
        data / "clips.parquet",
    )
    by_name = index.set_index("name")
    assert by_name.loc["goodvideo01#000010#000040", "status"] == "written"
    assert by_name.loc["goodvideo01#000010#000040", "frames"] == 30
    assert by_name.loc["goodvideo01#000200#000260", "status"] == "empty"
    assert by_name.loc["missingvid1#000000#000030", "status"] == "missing_video"
    assert by_name.loc["-truncated1#000000#000030", "status"] == "missing_video"

    clips = {clip.name: clip for clip in list_clips(data / "clips" / "test")}
    assert sorted(clips) == ["goodvideo01#000000#000020", "goodvideo01#000010#000040"]
    frames = read_clip(clips["goodvideo01#000010#000040"])
    assert frames.shape == (30, 64, 64, 3)
    for offset, frame in enumerate(frames):
        want = expected_crop(10 + offset, (32, 8, 96, 72), 64)
        # the crop is exact; only the resampling kernel differs at region edges
        assert np.abs(frame.astype(int) - want.astype(int)).mean() < 1.5
        # grey block (rows 56..80, cols 88..112) -> crop rows 48.., cols 56..
        assert abs(int(frame[56, 60, 0]) - (20 + 3 * (10 + offset))) <= 1

    # a second run downloads nothing and writes nothing new
    before = {p: p.stat().st_mtime_ns for p in (data / "clips").rglob("*.png")}
    sources.download("taichi", spec, [str(metadata)], data / "availability.parquet")
    sources.crop(
        "taichi", spec, [str(metadata), str(data / "availability.parquet")], data / "clips.parquet"
    )
    assert {p: p.stat().st_mtime_ns for p in (data / "clips").rglob("*.png")} == before
    rerun = pd.read_parquet(data / "raw" / "manifest.parquet")
    assert not (rerun.loc[len(attempts) :, "youtube_id"] == "goodvideo01").any()


def test_csv_fps_differs_from_the_download(server, tmp_path):
    """The timestamp rule: a clip defined at 50 fps keeps every other frame of a 25 fps video."""
    root, base = server
    write_video(root / "videos" / "fiftyfps001.mp4")
    data = tmp_path / "data"
    data.mkdir()
    metadata = write_metadata(
        data / "metadata.csv",
        [("fiftyfps001", 20, 80, "0-0-320-192", 50, REF_W, REF_H, "test")],
    )
    spec = youtube_spec(base, tmp_path)
    sources.download("taichi", spec, [str(metadata)], data / "availability.parquet")
    index = sources.crop(
        "taichi", spec, [str(metadata), str(data / "availability.parquet")], data / "clips.parquet"
    )
    assert index["frames"].tolist() == [30]  # times [0.4 s, 1.6 s) of a 25 fps video
    frames = read_clip(data / "clips" / "test" / "fiftyfps001#000020#000080")
    levels = [int(f[int(68 * 64 / 96), int(100 * 64 / 160), 0]) for f in frames]
    assert [round((v - 20) / 3) for v in levels] == list(range(10, 40))


def _gif_bytes(frames: int, grey: bool = False) -> bytes:
    images = [
        Image.fromarray(np.full((32, 32), 40 * k, np.uint8), "L")
        if grey
        else Image.fromarray(np.full((32, 32, 3), (40 * k, 0, 255 - 40 * k), np.uint8))
        for k in range(frames)
    ]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=50)
    return buffer.getvalue()


def test_mgif_archive_through_the_yandex_api(server, tmp_path, monkeypatch):
    root, base = server
    with zipfile.ZipFile(root / "files" / "mgif.zip", "w") as zf:
        zf.writestr("moving-gif/test/00003.gif", _gif_bytes(4))
        zf.writestr("moving-gif/train/00150.gif", _gif_bytes(3, grey=True))
    share = "https://yadi.sk/d/TESTLINK"
    monkeypatch.setattr(sources, "YANDEX_API", base + "/yandex/download")
    monkeypatch.setattr(
        sources, "resolve_yandex", functools.partial(sources.resolve_yandex, api=sources.YANDEX_API)
    )
    data = tmp_path / "data"
    spec = {
        "source": "archive",
        "resolution": 256,
        "cache": str(tmp_path / "cache"),
        "archive": {"url": share, "sha256": sources.sha256_file(root / "files" / "mgif.zip")},
        "crop": {"train_format": "jpeg"},
    }
    availability = sources.download("mgif", spec, [], data / "availability.parquet")
    assert availability["status"].tolist() == ["ok"]
    index = sources.crop("mgif", spec, [], data / "clips.parquet")
    assert sorted(zip(index["partition"], index["name"], index["frames"])) == [
        ("test", "00003", 4),
        ("train", "00150", 3),
    ]
    assert [p.suffix for p in (data / "clips" / "test" / "00003").iterdir()] == [".png"] * 4
    assert {p.suffix for p in (data / "clips" / "train" / "00150").iterdir()} == {".jpg"}
    train = read_clip(data / "clips" / "train" / "00150")
    assert train.shape == (3, 32, 32, 3)  # grayscale gif -> RGB


def test_archive_checksum_mismatch_names_the_url(server, tmp_path):
    root, base = server
    (root / "files" / "a.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    url = base + "/files/a.zip"
    with pytest.raises(
        DataError, match=r"sha256 mismatch for http://127\.0\.0\.1:\d+/files/a\.zip"
    ):
        sources.fetch(url, "0" * 64, tmp_path / "cache")
    assert not sources.cached_path(url, tmp_path / "cache").exists()


def test_archive_with_parent_entries_is_rejected(server, tmp_path):
    root, base = server
    with zipfile.ZipFile(root / "files" / "evil.zip", "w") as zf:
        zf.writestr("../evil.gif", _gif_bytes(2))
    spec = {
        "source": "archive",
        "cache": str(tmp_path / "cache"),
        "archive": {"url": base + "/files/evil.zip", "sha256": None},
    }
    data = tmp_path / "data"
    sources.download("mgif", spec, [], data / "availability.parquet")
    with pytest.raises(DataError, match=r"unsafe archive member '\.\./evil\.gif'"):
        sources.crop("mgif", spec, [], data / "clips.parquet")
    assert not (tmp_path / "evil.gif").exists() and not (data / "evil.gif").exists()


def test_workflow_downloads_and_crops_a_dataset(server, tmp_path):
    """The Snakemake rules end to end: pinned metadata, yt-dlp download, crop, from loopback."""
    import os
    import subprocess
    import sys

    import yaml

    root, base = server
    write_video(root / "videos" / "workflowvid.mp4")
    write_metadata(
        root / "files" / "meta.csv",
        [
            ("workflowvid", 0, 30, "0-0-320-192", FPS, REF_W, REF_H, "train"),
            ("workflowvid", 30, 60, "64-16-192-144", FPS, REF_W, REF_H, "test"),
            ("gonevideo01", 0, 30, "0-0-320-192", FPS, REF_W, REF_H, "test"),
        ],
    )
    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text((repo / "config.yaml").read_text())
    extra = {
        "cache": str(tmp_path / "cache"),
        "youtube": {"url_template": base + "/videos/{id}.mp4", "retries": 0, "workers": 2},
        "benchmark": {"datasets": ["toy"], "methods": []},
        "datasets": {
            "toy": {
                "source": "youtube",
                "paper_name": "taichi",
                "resolution": 64,
                "metadata": {
                    "url": base + "/files/meta.csv",
                    "sha256": sources.sha256_file(root / "files" / "meta.csv"),
                },
            }
        },
    }
    (work / "extra.yaml").write_text(yaml.safe_dump(extra))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(work)]
        + ["--configfile", "extra.yaml", "--cores", "2", "results/data/toy/clips.parquet"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = work / "results" / "data" / "toy"
    availability = pd.read_parquet(data / "availability.parquet").set_index("youtube_id")
    assert availability.loc["workflowvid", "status"] == "ok"
    assert availability.loc["gonevideo01", "error_class"] == "http_404"
    index = pd.read_parquet(data / "clips.parquet").set_index("name")
    # the partition of a video's first row applies to all its clips (load_videos.py)
    assert set(
        index.loc[["workflowvid#000000#000030", "workflowvid#000030#000060"], "partition"]
    ) == {"train"}
    assert index.loc["workflowvid#000030#000060", "frames"] == 30
    assert index.loc["gonevideo01#000000#000030", "status"] == "missing_video"
    assert read_clip(data / "clips" / "train" / "workflowvid#000030#000060").shape == (
        30,
        64,
        64,
        3,
    )
    assert (data / "metadata.csv").read_bytes() == (root / "files" / "meta.csv").read_bytes()
