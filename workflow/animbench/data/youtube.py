"""Download the YouTube videos of the published metadata CSVs, with an availability manifest.

:func:`download_videos` fetches each ``youtube_id`` through yt-dlp's Python API (never a
subprocess) into ``out_dir/<youtube_id>.<ext>``: video only (audio is never used), at the
resolution nearest the CSV's reference height, preferring h264. yt-dlp writes into
``out_dir/.staging/<youtube_id>/`` (its ``.part`` files resume across runs); a file is moved
into ``out_dir`` only after a full ffmpeg decode succeeded, so a file in ``out_dir`` is
always finished and is never downloaded again. Transient failures (network, HTTP 5xx/429,
corrupt download) are retried with exponential backoff; permanent ones (unavailable, private,
HTTP 403/404/410, ...) are recorded once. No single video's failure raises.

Every attempt is a row of ``out_dir/manifest.parquet`` (:data:`MANIFEST_COLUMNS`), which
accumulates across runs; :func:`availability` reduces it to one row per video.

YouTube nowadays needs more than Python: yt-dlp solves YouTube's JavaScript challenges with
an external JavaScript runtime (deno by default; node, bun or quickjs can be enabled) plus the
``yt-dlp-ejs`` scripts (see https://github.com/yt-dlp/yt-dlp/wiki/EJS). Without one yt-dlp
warns and some formats may be missing. When YouTube asks to "sign in to confirm you're not a
bot", set ``cookies`` in the download config to a Netscape-format cookies file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from animbench.data import ffmpeg
from animbench.errors import ConfigError, DataError
from animbench.files import write_parquet_atomic

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".flv", ".3gp")
MANIFEST_NAME = "manifest.parquet"
STAGING_NAME = ".staging"
SAVE_EVERY = 10  # rewrite the manifest after this many finished videos

# One row per attempt. Unknown numbers: integer columns are 0, `fps` is NaN; `time` is NaT only
# in `availability` rows of never-attempted ids. Strings are "" when empty.
MANIFEST_COLUMNS: dict[str, str] = {
    "youtube_id": "str",
    "attempt": "int64",  # 1-based within one run
    "status": "str",  # ok | present | failed  (availability adds: missing)
    "error_class": "str",  # "" for ok/present; see classify_error
    "message": "str",  # one line, at most 300 characters
    "width": "int64",
    "height": "int64",
    "fps": "float64",
    "frames": "int64",
    "bytes": "int64",  # size of the downloaded file (also of a corrupt one), else 0
    "seconds": "float64",  # duration of the attempt
    "time": "datetime64[ns, UTC]",  # end of the attempt
    "path": "str",  # relative to out_dir, "" when no file was kept
    "format_id": "str",  # yt-dlp's format id of the downloaded format
}

ERROR_CLASSES = ("unavailable", "private", "network", "corrupt", "cookies", "other")  # + http_<n>
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


@dataclass
class DownloadOptions:
    url_template: str = "https://www.youtube.com/watch?v={id}"
    workers: int = 4
    retries: int = 3  # extra attempts for transient errors
    backoff_s: float = 10.0  # sleep backoff_s * 2**k before extra attempt k+1
    cookies: str | None = None  # Netscape cookies file
    socket_timeout: float = 30.0
    rate_limit: int | None = None  # bytes/s

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any]) -> DownloadOptions:
        """Options from a config mapping with (a subset of) exactly the field names."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in mapping:
            if key not in names:
                raise ConfigError(f"{key}: unknown download option (known: {sorted(names)})")
        options = cls(**dict(mapping))
        options.validate()
        return options

    def validate(self) -> None:
        if "{id}" not in str(self.url_template):
            raise ConfigError(f"url_template: {self.url_template!r} lacks the '{{id}}' field")
        for key, low in (("workers", 1), ("retries", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{key}: must be an integer >= {low}, got {value!r}")
        for key in ("backoff_s", "socket_timeout"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{key}: must be a number >= 0, got {value!r}")
        if self.rate_limit is not None and (
            not isinstance(self.rate_limit, int) or self.rate_limit <= 0
        ):
            raise ConfigError(
                f"rate_limit: must be a positive integer (bytes/s), got {self.rate_limit!r}"
            )


# --------------------------------------------------------------------------- manifest


def _empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in MANIFEST_COLUMNS.items()})


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with exactly MANIFEST_COLUMNS (missing ones filled) in their dtypes."""
    out = {}
    for col, dtype in MANIFEST_COLUMNS.items():
        series = frame[col] if col in frame else pd.Series(None, index=frame.index, dtype=object)
        if dtype == "str":
            series = series.fillna("").astype(str)
        elif dtype == "int64":
            series = pd.to_numeric(series, errors="coerce").fillna(0).astype("int64")
        elif dtype == "float64":
            series = pd.to_numeric(series, errors="coerce").astype("float64")
        else:
            series = pd.to_datetime(series, utc=True).astype(dtype)
        out[col] = series
    return pd.DataFrame(out).reset_index(drop=True)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest at `path` (typed, see MANIFEST_COLUMNS); an empty one if it doesn't exist."""
    path = Path(path)
    if not path.exists():
        return _empty_manifest()
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: unreadable download manifest ({_one_line(exc)})") from exc
    missing = {"youtube_id", "status"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: not a download manifest (no column {sorted(missing)[0]})")
    return _typed(frame)


def write_manifest(frame: pd.DataFrame, path: str | Path) -> None:
    """Write atomically: a temporary file in the same folder, then os.replace."""
    write_parquet_atomic(_typed(frame), path)


def availability(manifest: pd.DataFrame, youtube_ids: Iterable[str]) -> pd.DataFrame:
    """One row per requested id (in order, duplicates dropped): its latest attempt.

    Ids never attempted get status ``missing``, error_class ``not_attempted``, attempt 0,
    zero numbers, NaN fps/seconds and NaT time.
    """
    ids = list(dict.fromkeys(str(i) for i in youtube_ids))
    manifest = _typed(manifest)
    latest = (
        manifest.sort_values("time", kind="stable")
        .drop_duplicates("youtube_id", keep="last")
        .set_index("youtube_id")
    )
    known = [i for i in ids if i in latest.index]
    missing = pd.DataFrame({"youtube_id": [i for i in ids if i not in latest.index]})
    missing["status"] = "missing"
    missing["error_class"] = "not_attempted"
    missing["seconds"] = float("nan")
    missing["time"] = pd.NaT
    frame = pd.concat([latest.loc[known].reset_index(), _typed(missing)], ignore_index=True)
    frame = _typed(frame).set_index("youtube_id").loc[ids].reset_index()
    return frame[list(MANIFEST_COLUMNS)]


# --------------------------------------------------------------------------- errors


def _one_line(exc: BaseException | str, limit: int = 300) -> str:
    text = str(exc)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # ANSI colours
    text = " ".join(text.split())
    text = re.sub(r"^ERROR:\s*", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it wraps (yt-dlp's exc_info/cause, __cause__, __context__)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        cur = todo.pop(0)
        if cur is None or any(cur is s for s in seen):
            continue
        seen.append(cur)
        exc_info = getattr(cur, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            todo.append(exc_info[1])
        todo += [getattr(cur, "cause", None), cur.__cause__, cur.__context__]
    return [e for e in seen if isinstance(e, BaseException)]


_PRIVATE = re.compile(r"private video|members[- ]only|join this channel|video is private")
_UNAVAILABLE = re.compile(
    r"video unavailable|is unavailable|not available|no longer available|has been removed|"
    r"been terminated|does not exist|confirm your age|age[- ]restricted|inappropriate|"
    r"copyright|geo[- ]?restrict|in your country|blocked it|video has been deleted"
)
_HTTP = re.compile(r"http error (\d{3})")
_NETWORK = re.compile(
    r"bytes read|more expected|timed out|timeout|connection (?:reset|refused|aborted)|"
    r"remote end closed|incomplete ?read|unable to connect|name resolution|"
    r"network is unreachable|eof occurred|broken pipe|getaddrinfo|temporarily unavailable"
)
_COOKIES = re.compile(r"cookie|sign in to confirm|not a bot|login required")


def classify_error(exc: BaseException) -> str:
    """``unavailable``, ``private``, ``http_<code>``, ``network``, ``corrupt``, ``cookies``
    or ``other``: by exception type along the wrapped chain, else by message."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import ContentTooShortError, GeoRestrictedError

    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ffmpeg.CorruptVideo):
            return "corrupt"
        if isinstance(e, HTTPError):
            return f"http_{e.status}"
        if isinstance(e, urllib.error.HTTPError):
            return f"http_{e.code}"
        if isinstance(e, GeoRestrictedError):
            return "unavailable"
    text = " ".join(_one_line(e, 10_000) for e in chain).lower()
    if _PRIVATE.search(text):
        return "private"
    if _UNAVAILABLE.search(text):
        return "unavailable"
    match = _HTTP.search(text)
    if match:
        return f"http_{match.group(1)}"
    network_types = (ContentTooShortError, TransportError, socket.timeout, ConnectionError)
    if any(isinstance(e, network_types) for e in chain) or _NETWORK.search(text):
        return "network"
    if _COOKIES.search(text):
        return "cookies"
    return "other"


def is_transient(error_class: str) -> bool:
    """Whether an attempt that failed with `error_class` is worth retrying."""
    if error_class in ("network", "corrupt"):
        return True
    if error_class.startswith("http_") and error_class[5:].isdigit():
        return int(error_class[5:]) in _TRANSIENT_HTTP
    return False


# --------------------------------------------------------------------------- yt-dlp


class _YtdlpLogger:
    """Routes yt-dlp's messages into our log (its own progress output is off)."""

    def __init__(self, youtube_id: str):
        self.prefix = f"yt-dlp {youtube_id}: "

    def debug(self, msg: str) -> None:
        log.debug(self.prefix + _one_line(msg, 1000))

    def info(self, msg: str) -> None:
        log.debug(self.prefix + _one_line(msg, 1000))

    def warning(self, msg: str) -> None:
        log.warning(self.prefix + _one_line(msg, 1000))

    def error(self, msg: str) -> None:
        # the same error reaches us as a DownloadError and is recorded in the manifest
        log.info(self.prefix + _one_line(msg, 1000))


def ytdlp_params(youtube_id: str, height: int, staging: Path, options: DownloadOptions) -> dict:
    """YoutubeDL params: best video-only/combined format nearest `height`, h264 preferred."""
    sort = ([f"res:{int(height)}"] if height and height > 0 else []) + ["vcodec:h264"]
    params: dict[str, Any] = {
        "format": "bv*/b",
        "format_sort": sort,
        "outtmpl": {"default": youtube_id.replace("%", "%%") + ".%(ext)s"},
        "paths": {"home": str(staging)},
        "ffmpeg_location": ffmpeg.executable(),
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "noplaylist": True,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "logger": _YtdlpLogger(youtube_id),
        "socket_timeout": options.socket_timeout,
        "continuedl": True,
        "nopart": False,
        # our attempts are the retries: one bound, and each attempt is a manifest row
        "retries": 0,
        "fragment_retries": 0,
        "overwrites": False,
        "writeinfojson": False,
        "cachedir": False,
    }
    if options.cookies:
        params["cookiefile"] = str(options.cookies)
    if options.rate_limit:
        params["ratelimit"] = int(options.rate_limit)
    return params


def _downloaded_file(info: dict | None, staging: Path) -> Path:
    """The finished file yt-dlp wrote into `staging`."""
    for item in (info or {}).get("requested_downloads") or []:
        path = item.get("filepath")
        if path and Path(path).is_file():
            return Path(path)
    found = sorted(p for p in staging.glob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    if not found:
        raise DataError(f"{staging}: yt-dlp reported success but wrote no video file")
    return found[0]


def _row(youtube_id: str, attempt: int, status: str, **fields: Any) -> dict:
    row = {"youtube_id": youtube_id, "attempt": attempt, "status": status, "error_class": ""}
    row.update(fields)
    row.setdefault("time", pd.Timestamp.now(tz="UTC"))
    return row


def _info_fields(info: ffmpeg.VideoInfo) -> dict:
    return {"width": info.width, "height": info.height, "fps": info.fps, "frames": info.frames}


def _present_row(youtube_id: str, path: Path, out_dir: Path) -> dict:
    """A row for a file already in out_dir that the manifest doesn't know (e.g. lost)."""
    start = time.monotonic()
    fields: dict[str, Any] = {"bytes": path.stat().st_size, "path": path.name}
    try:
        fields.update(_info_fields(ffmpeg.probe(path, decode=False)))
        fields["message"] = "already in the output folder"
    except DataError as exc:
        fields["message"] = _one_line(exc)
    return _row(youtube_id, 1, "present", seconds=time.monotonic() - start, **fields)


def _download_one(
    youtube_id: str,
    height: int,
    out_dir: Path,
    options: DownloadOptions,
    record: Any,
    stop: threading.Event,
) -> str:
    """All attempts for one video; each attempt's row goes to `record`. Returns the status."""
    import yt_dlp

    staging = out_dir / STAGING_NAME / youtube_id
    staging.mkdir(parents=True, exist_ok=True)
    url = options.url_template.format(id=youtube_id)
    params = ytdlp_params(youtube_id, height, staging, options)
    with yt_dlp.YoutubeDL(params) as ydl:
        for attempt in range(1, options.retries + 2):
            start = time.monotonic()
            fields: dict[str, Any] = {}
            try:
                info = ydl.extract_info(url, download=True)
                path = _downloaded_file(info, staging)
                fields["format_id"] = str((info or {}).get("format_id") or "")
                fields["bytes"] = path.stat().st_size
                try:
                    video = ffmpeg.probe(path)
                except DataError:
                    path.unlink(missing_ok=True)  # never resume from a corrupt file
                    raise
                final = out_dir / f"{youtube_id}{path.suffix.lower()}"
                os.replace(path, final)
                shutil.rmtree(staging, ignore_errors=True)
                record(
                    _row(
                        youtube_id,
                        attempt,
                        "ok",
                        path=final.name,
                        seconds=time.monotonic() - start,
                        **fields,
                        **_info_fields(video),
                    )
                )
                return "ok"
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # any single-video failure is recorded, never raised
                error_class = classify_error(exc)
                record(
                    _row(
                        youtube_id,
                        attempt,
                        "failed",
                        error_class=error_class,
                        message=_one_line(exc),
                        seconds=time.monotonic() - start,
                        **fields,
                    )
                )
                last = attempt > options.retries or not is_transient(error_class)
                if last or stop.is_set():
                    log.warning(
                        "%s: failed (%s) after %d attempt(s): %s",
                        youtube_id,
                        error_class,
                        attempt,
                        _one_line(exc, 200),
                    )
                    if not is_transient(error_class):
                        shutil.rmtree(staging, ignore_errors=True)  # keep .part only to resume
                    return "failed"
                if stop.wait(options.backoff_s * 2 ** (attempt - 1)):
                    return "failed"
    return "failed"  # pragma: no cover


# --------------------------------------------------------------------------- driver


def download_videos(
    videos: pd.DataFrame,
    out_dir: str | Path,
    options: DownloadOptions | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Download `videos` (columns youtube_id, height) into `out_dir`; returns their availability.

    Attempts are appended to ``out_dir/manifest.parquet`` (rewritten every few videos, at the
    end and on interruption). Files already in `out_dir` are never downloaded again; one the
    manifest has no ok/present row for gets a ``present`` row (container probe only).
    Raises only for unusable arguments (ConfigError, DataError) or an unreadable manifest;
    KeyboardInterrupt/SystemExit propagate after the manifest is saved.
    """
    from tqdm.auto import tqdm

    options = options or DownloadOptions()
    options.validate()
    if options.cookies and not Path(options.cookies).is_file():
        raise ConfigError(f"cookies: cookies file {options.cookies} does not exist")
    for col in ("youtube_id", "height"):
        if col not in videos:
            raise DataError(f"video list lacks the column {col!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    previous = read_manifest(manifest_path)

    heights: dict[str, int] = {}
    for vid, height in zip(videos["youtube_id"].astype(str), videos["height"]):
        if not vid or vid.startswith(".") or "/" in vid or "\\" in vid:
            raise DataError(f"video list: {vid!r} is not a usable youtube_id")
        heights.setdefault(vid, int(height) if pd.notna(height) else 0)
    finished = {
        p.stem: p for p in out_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS
    }
    known_ok = set(previous.loc[previous["status"].isin(["ok", "present"]), "youtube_id"])

    rows: list[dict] = []
    lock = threading.Lock()

    def record(row: dict) -> None:
        with lock:
            rows.append(row)

    def save() -> None:
        with lock:
            new = pd.DataFrame(rows)
        if len(new):
            write_manifest(pd.concat([previous, _typed(new)], ignore_index=True), manifest_path)

    todo = [vid for vid in heights if vid not in finished]
    for vid in heights:
        if vid in finished and vid not in known_ok:
            record(_present_row(vid, finished[vid], out_dir))

    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    bar = tqdm(total=len(todo), disable=not progress, unit="video", desc="download")
    pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="youtube")
    try:
        pending: dict[Future, str] = {
            pool.submit(_download_one, vid, heights[vid], out_dir, options, record, stop): vid
            for vid in todo
        }
        done_count = 0
        while pending:
            done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                vid = pending.pop(future)
                try:
                    status = future.result()  # attempts record their own failures
                except Exception as exc:  # a failure outside an attempt (e.g. yt-dlp setup)
                    status = "failed"
                    record(
                        _row(
                            vid,
                            1,
                            "failed",
                            error_class=classify_error(exc),
                            message=_one_line(exc),
                            seconds=0.0,
                        )
                    )
                counts["ok" if status == "ok" else "failed"] += 1
                done_count += 1
                bar.update(1)
                bar.set_postfix(counts, refresh=False)
                if done_count % SAVE_EVERY == 0:
                    save()
    except BaseException:
        stop.set()  # no new attempts; running ones finish on their own
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
        save()
    pool.shutdown(wait=True)
    return availability(read_manifest(manifest_path), heights)
