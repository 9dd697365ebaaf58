"""The yt-dlp downloader against a loopback HTTP server serving generated mp4s."""

from __future__ import annotations

import collections
import http.server
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yt_dlp
from yt_dlp.networking.exceptions import HTTPError
from yt_dlp.utils import DownloadError, ExtractorError

from animbench.data import youtube
from animbench.data.youtube import (
    MANIFEST_COLUMNS,
    DownloadOptions,
    availability,
    classify_error,
    download_videos,
    is_transient,
    read_manifest,
)
from animbench.errors import ConfigError, DataError

WIDTH, HEIGHT, FRAMES, FPS = 64, 48, 20, 10


def _make_mp4(path: Path, seed: int) -> bytes:
    import imageio.v2 as imageio

    rng = np.random.default_rng(seed)
    writer = imageio.get_writer(
        path, fps=FPS, codec="libx264", macro_block_size=16, ffmpeg_log_level="error"
    )
    for _ in range(FRAMES):
        writer.append_data(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    writer.close()
    return path.read_bytes()


class Server:
    """Serves /videos/<id>.mp4 by the id's prefix: good*, trunc* (a valid response carrying
    half the file), short* (Content-Length of the whole file, half the body, then close),
    anything else 404. Counts requests per id."""

    def __init__(self, data: dict[str, bytes]):
        self.data = data
        self.requests: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output quiet
                pass

            def _serve(self, body: bool) -> None:
                vid = self.path.rsplit("/", 1)[-1].removesuffix(".mp4")
                with server.lock:
                    server.requests[vid] += 1
                kind = next((k for k in ("good", "trunc", "short", "-") if vid.startswith(k)), "")
                if not kind:
                    self.send_error(404)
                    return
                content = server.data["trunc" if kind == "trunc" else "good"]
                sent = content[: len(content) // 2] if kind == "short" else content
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if body:
                    try:
                        self.wfile.write(sent)
                    except OSError:  # the extractor closes after reading the headers
                        pass
                if kind == "short":
                    self.close_connection = True

            def do_GET(self):
                self._serve(True)

            def do_HEAD(self):
                self._serve(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/videos/{{id}}.mp4"

    def count(self, vid: str) -> int:
        with self.lock:
            return self.requests[vid]


@pytest.fixture(scope="module")
def videos_data(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("src")
    good = _make_mp4(root / "good.mp4", 0)
    return {"good": good, "trunc": good[: len(good) // 2]}


@pytest.fixture
def server(videos_data):
    srv = Server(videos_data)
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _options(server: Server, **kw) -> DownloadOptions:
    kw.setdefault("retries", 2)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("socket_timeout", 5.0)
    return DownloadOptions(url_template=server.url, **kw)


def _videos(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"youtube_id": list(ids), "height": [HEIGHT] * len(ids)})


def _run(ids, out, server, **kw) -> pd.DataFrame:
    return download_videos(_videos(*ids), out, _options(server, **kw), progress=False)


def test_good_video_lands_with_ok_row(tmp_path, server, videos_data):
    result = _run(["good1"], tmp_path, server)
    assert (tmp_path / "good1.mp4").read_bytes() == videos_data["good"]
    assert not list((tmp_path / ".staging").glob("*/*"))
    manifest = read_manifest(tmp_path / "manifest.parquet")
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert {c: str(t) for c, t in manifest.dtypes.items()}["time"] == "datetime64[ns, UTC]"
    row = manifest.iloc[0]
    assert len(manifest) == 1 and row.status == "ok" and row.error_class == ""
    assert (row.width, row.height, row.frames, row.fps) == (WIDTH, HEIGHT, FRAMES, FPS)
    assert row.bytes == len(videos_data["good"]) and row.path == "good1.mp4"
    assert row.attempt == 1 and row.format_id == "mp4" and row.seconds > 0
    assert result.loc[0, "status"] == "ok" and list(result.columns) == list(MANIFEST_COLUMNS)


def test_404_is_permanent_and_the_run_goes_on(tmp_path, server):
    result = _run(["nope1", "good1"], tmp_path, server)
    assert result["status"].tolist() == ["failed", "ok"]
    assert result.loc[0, "error_class"] == "http_404"
    assert "404" in result.loc[0, "message"] and "\n" not in result.loc[0, "message"]
    assert server.count("nope1") == 1  # no retry
    manifest = read_manifest(tmp_path / "manifest.parquet")
    assert (manifest["youtube_id"] == "nope1").sum() == 1
    assert not list(tmp_path.glob("nope1*"))


def test_truncated_video_is_corrupt_after_all_attempts(tmp_path, server):
    result = _run(["trunc1"], tmp_path, server, retries=2)
    manifest = read_manifest(tmp_path / "manifest.parquet")
    assert manifest["attempt"].tolist() == [1, 2, 3]
    assert set(manifest["error_class"]) == {"corrupt"} and set(manifest["status"]) == {"failed"}
    assert (manifest["bytes"] > 0).all() and (manifest["path"] == "").all()
    assert result.loc[0, "status"] == "failed" and result.loc[0, "error_class"] == "corrupt"
    assert not list(tmp_path.glob("trunc1*"))
    assert not [p for p in (tmp_path / ".staging").rglob("*") if p.is_file()]


def test_short_body_is_a_transient_network_error_retried_to_the_bound(tmp_path, server):
    _run(["short1"], tmp_path, server, retries=1)
    manifest = read_manifest(tmp_path / "manifest.parquet")
    assert manifest["attempt"].tolist() == [1, 2]
    assert set(manifest["error_class"]) == {"network"}
    assert server.count("short1") == 4  # per attempt: the extractor's GET and the download's
    assert not list(tmp_path.glob("short1*"))


def test_second_run_skips_finished_and_appends(tmp_path, server):
    _run(["good1", "nope1"], tmp_path, server)
    first = read_manifest(tmp_path / "manifest.parquet")
    assert server.count("good1") == 2
    result = _run(["good1", "nope1", "-dash1"], tmp_path, server)
    assert server.count("good1") == 2  # not requested again
    manifest = read_manifest(tmp_path / "manifest.parquet")
    assert len(manifest) == len(first) + 2  # nope1 tried again, -dash1 new; good1 silent
    pd.testing.assert_frame_equal(manifest.iloc[: len(first)], first)
    assert result["status"].tolist() == ["ok", "failed", "ok"]
    assert (tmp_path / "-dash1.mp4").is_file()

    # a lost manifest: the files in out_dir are recorded as present, still without requests
    (tmp_path / "manifest.parquet").unlink()
    result = _run(["good1", "-dash1"], tmp_path, server)
    assert result["status"].tolist() == ["present", "present"]
    assert result["width"].tolist() == [WIDTH, WIDTH]
    assert server.count("good1") == 2 and server.count("-dash1") == 2


def test_two_workers_give_the_same_result(tmp_path, server):
    ids = ["good1", "-dash1", "nope1", "good2", "good3"]
    one = _run(ids, tmp_path / "one", server, workers=1)
    two = _run(ids, tmp_path / "two", server, workers=2)
    cols = ["youtube_id", "status", "error_class", "width", "height", "frames", "bytes", "path"]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    assert one["status"].tolist() == ["ok", "ok", "failed", "ok", "ok"]


def test_missing_cookies_file_is_a_clear_error(tmp_path, server):
    cookies = tmp_path / "nothere.txt"
    with pytest.raises(ConfigError, match="nothere.txt"):
        _run(["good1"], tmp_path / "out", server, cookies=str(cookies))
    assert server.count("good1") == 0


def test_options_from_config():
    options = DownloadOptions.from_config({"workers": 2, "retries": 0, "rate_limit": 1000})
    assert (options.workers, options.retries, options.rate_limit) == (2, 0, 1000)
    assert options.url_template == "https://www.youtube.com/watch?v={id}"
    with pytest.raises(ConfigError, match="retry"):
        DownloadOptions.from_config({"retry": 1})
    with pytest.raises(ConfigError, match="workers"):
        DownloadOptions.from_config({"workers": 0})


def _download_error(exc: BaseException) -> DownloadError:
    try:
        raise exc
    except BaseException as inner:
        import sys

        return DownloadError(f"ERROR: {inner}", sys.exc_info())


def test_error_classification():
    def extractor(msg: str) -> DownloadError:
        return _download_error(ExtractorError(msg, expected=True))

    assert classify_error(extractor("[youtube] abc: Private video. Sign in if...")) == "private"
    assert classify_error(extractor("[youtube] abc: Video unavailable")) == "unavailable"
    assert classify_error(DownloadError("ERROR: [youtube] x: Video unavailable")) == "unavailable"
    age = "Sign in to confirm your age. This video may be inappropriate. Use --cookies"
    assert classify_error(extractor(age)) == "unavailable"
    bot = "Sign in to confirm you're not a bot. Use --cookies-from-browser or --cookies"
    assert classify_error(extractor(bot)) == "cookies"
    short = DownloadError("ERROR: \r[download] Got error: 1082 bytes read, 1082 more expected")
    assert classify_error(short) == "network"
    assert classify_error(DownloadError("ERROR: HTTP Error 503: Service Unavailable")) == "http_503"
    assert classify_error(_download_error(TimeoutError("read timed out"))) == "network"
    assert classify_error(DownloadError("ERROR: something odd")) == "other"
    from yt_dlp.networking import Response

    response = Response(fp=None, url="http://x", headers={}, status=410, reason="Gone")
    assert classify_error(_download_error(HTTPError(response))) == "http_410"
    from animbench.data.ffmpeg import CorruptVideo

    assert classify_error(CorruptVideo("x.mp4: corrupt")) == "corrupt"
    assert [is_transient(c) for c in ("network", "corrupt", "http_503", "http_429")] == [True] * 4
    assert not any(is_transient(c) for c in ("http_404", "http_403", "private", "other"))


def test_format_sort_prefers_nearest_height_then_h264(tmp_path):
    def fmt(fid, height, vcodec):
        return {"format_id": fid, "url": f"http://x/{fid}", "ext": "mp4", "height": height,
                "width": height * 16 // 9, "vcodec": vcodec, "acodec": "none"}  # fmt: skip

    formats = [fmt("a", 360, "avc1"), fmt("b", 480, "vp9"), fmt("c", 480, "avc1.4d401e"),
               fmt("d", 720, "avc1"), fmt("e", 1080, "vp9")]  # fmt: skip
    for height, expected in ((480, "c"), (500, "c"), (300, "a"), (2000, "e")):
        params = youtube.ytdlp_params("x", height, tmp_path, DownloadOptions())
        params["simulate"] = True
        info = {"id": "x", "title": "x", "formats": [dict(f) for f in formats],
                "extractor": "t", "extractor_key": "T", "webpage_url": "http://x"}  # fmt: skip
        with yt_dlp.YoutubeDL(params) as ydl:
            result = ydl.process_ie_result(info, download=False)
        assert result["format_id"] == expected, height


def test_manifest_io_and_availability(tmp_path):
    bad = tmp_path / "manifest.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="manifest.parquet"):
        read_manifest(bad)
    empty = read_manifest(tmp_path / "absent.parquet")
    assert empty.empty and list(empty.columns) == list(MANIFEST_COLUMNS)
    rows = pd.DataFrame(
        {
            "youtube_id": ["a", "a", "b"],
            "attempt": [1, 2, 1],
            "status": ["failed", "ok", "failed"],
            "time": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-01"], utc=True),
        }
    )
    result = availability(rows, ["b", "c", "a", "a"])
    assert result["youtube_id"].tolist() == ["b", "c", "a"]
    assert result["status"].tolist() == ["failed", "missing", "ok"]
    assert result.loc[1, "error_class"] == "not_attempted" and result.loc[1, "attempt"] == 0
    assert pd.isna(result.loc[1, "time"]) and result.loc[1, "width"] == 0


def test_interrupt_propagates_after_saving_the_manifest(tmp_path, server, monkeypatch):
    real = youtube._download_one

    def interrupted(vid, *args):
        if vid == "boom":
            raise KeyboardInterrupt
        return real(vid, *args)

    monkeypatch.setattr(youtube, "_download_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(["good1", "boom"], tmp_path, server, workers=1)
    manifest = read_manifest(tmp_path / "manifest.parquet")
    assert manifest["youtube_id"].tolist() == ["good1"] and manifest.loc[0, "status"] == "ok"
