"""Cut downloaded videos into clips per the published protocol (``load_videos.py``), with ffmpeg.

Protocol (video-preprocessing / MRAA ``load_videos.py``), reproduced exactly:

- Frames are numbered ``i = 0, 1, ...`` in decode order over the downloaded file; with the
  file's container fps ``F`` (what imageio reports, :func:`animbench.data.ffmpeg.probe`) and
  the CSV's reference fps ``fps``, frame ``i`` belongs to clip ``[start, end)`` iff
  ``i*fps >= start*F and i*fps < end*F`` in float arithmetic (:func:`frame_range`). TED's
  ranges are frame indices of the downloaded video (``selection="indices"``).
- The bbox, given in a ``width x height`` reference frame, is scaled to the downloaded size
  with ``int(left / (width / W))`` etc. and clipped to the frame like numpy slicing
  (:func:`scale_bbox`).
- The crop is resized to ``size x size``; non-square boxes are stretched anisotropically.
- A clip shorter than its range (video ended early) is kept; a clip selecting no frame is not
  written (the reference would try and fail).
- Output: ``<out>/<partition>/<name>/0000000.png ...`` (7-digit, from 0).

Deviations (geometry and frame selection are exact; pixel values differ slightly):

- Resize kernel: ffmpeg ``scale`` with ``flags=area`` (area averaging when shrinking, bilinear
  when enlarging) instead of ``skimage.transform.resize(anti_aliasing=True)`` (Gaussian
  pre-blur + bilinear) followed by ``img_as_ubyte``.
- ``keep_aspect=True`` (off by default) pads the crop to a square with black before resizing
  instead of stretching it.
- ``train_format="jpeg"`` writes train clips as JPEG (``-q:v 2``); test clips are always PNG.
- Frames pass through without fps conversion (``-fps_mode passthrough``); the reference read
  through imageio's ``image2pipe`` (constant-frame-rate sync), which only differs on
  variable-frame-rate files.

Each clip is written to ``<out>/<partition>/.<name>.tmp-*`` and renamed when complete, so an
existing clip folder is always finished; existing clips are skipped when ``<out>/crop.json``
records the same crop parameters (size, selection, train format, aspect), and cut again
otherwise.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import ffmpeg as ffmpeg_python
import pandas as pd

from animbench.data.ffmpeg import VideoInfo, executable, probe
from animbench.errors import DataError
from animbench.files import write_text_atomic

SELECTIONS = ("timestamps", "indices")
TRAIN_FORMATS = ("png", "jpeg")
STATUSES = ("written", "present", "empty", "failed", "missing_video")
MAX_BRANCHES = 32  # clips per ffmpeg run (bounds memory and open files)
ASPECT_TOLERANCE = 0.01
PNG_COMPRESSION = 1  # zlib level: ~4x faster than ffmpeg's default for ~10% more disk
JPEG_QUALITY = 2  # ffmpeg -q:v (2 = best practical)

INDEX_COLUMNS: dict[str, str] = {
    "name": "object",
    "partition": "object",
    "youtube_id": "object",
    "status": "object",
    "frames": "int64",
    "expected_frames": "int64",
    "video_width": "int64",
    "video_height": "int64",
    "video_fps": "float64",
    "crop_x0": "int64",
    "crop_y0": "int64",
    "crop_x1": "int64",
    "crop_y1": "int64",
    "message": "object",
}


def _first_at_least(threshold: float, ref_fps: float) -> int:
    """Smallest i >= 0 with ``i*ref_fps >= threshold`` (float arithmetic, as the reference)."""
    if threshold <= 0:
        return 0
    i = max(0, math.ceil(threshold / ref_fps))
    while i > 0 and (i - 1) * ref_fps >= threshold:
        i -= 1
    while i * ref_fps < threshold:
        i += 1
    return i


def frame_range(
    start: int,
    end: int,
    ref_fps: float,
    video_fps: float,
    selection: str = "timestamps",
) -> tuple[int, int]:
    """Half-open range ``[first, stop)`` of decoded frame indices that a clip selects.

    ``timestamps``: frame i is selected iff ``i*ref_fps >= start*video_fps`` and
    ``i*ref_fps < end*video_fps``, evaluated in Python floats exactly like load_videos.py.
    ``indices``: ``[start, end)`` (TED, whose range is in frames of the downloaded video).
    """
    if selection == "indices":
        return int(start), max(int(start), int(end))
    if selection != "timestamps":
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    ref_fps, video_fps = float(ref_fps), float(video_fps)
    if not ref_fps > 0 or not video_fps > 0:
        raise ValueError(f"fps must be > 0, got ref_fps={ref_fps} video_fps={video_fps}")
    first = _first_at_least(int(start) * video_fps, ref_fps)
    stop = _first_at_least(int(end) * video_fps, ref_fps)
    return first, max(first, stop)


def scale_bbox(
    left: int,
    top: int,
    right: int,
    bottom: int,
    ref_width: int,
    ref_height: int,
    width: int,
    height: int,
    *,
    clip: str = "clip",
) -> tuple[int, int, int, int]:
    """The reference bbox scaled to a ``width x height`` frame: ``(x0, y0, x1, y1)``, half-open.

    ``int(left / (ref_width / width))`` etc. (load_videos.py's float expression and
    truncation), then clipped to the frame
    like numpy slicing ``frame[y0:y1, x0:x1]``. An empty result raises :class:`DataError`
    naming `clip`.
    """
    # the reference's expression, not left*width/ref_width: int() truncation makes them differ
    # by a pixel whenever the float ratio rounds across an integer
    x0 = int(left / (ref_width / width))
    y0 = int(top / (ref_height / height))
    x1 = int(right / (ref_width / width))
    y1 = int(bottom / (ref_height / height))
    x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
    y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
    if x1 <= x0 or y1 <= y0:
        raise DataError(
            f"{clip}: empty crop box {left}-{top}-{right}-{bottom} "
            f"({ref_width}x{ref_height}) in a {width}x{height} frame"
        )
    return x0, y0, x1, y1


class _EmptyOutput(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _last_error(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return " ".join(lines[-1].split()) if lines else "no error output"


def _count_frames(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix in (".png", ".jpg"))


def _run_pass(
    video: Path, jobs: list[dict], size: int, keep_aspect: bool, threads: int | None
) -> None:
    """Decode `video` once and write every job's frames into its ``tmp`` folder."""
    input_args = {"threads": threads} if threads else {}
    source = ffmpeg_python.input(str(video), **input_args).video.filter("format", "rgb24")
    if len(jobs) == 1:
        branches = [source]
    else:
        split = source.filter_multi_output("split", len(jobs))
        branches = [split[k] for k in range(len(jobs))]
    outputs = []
    targets: list[str] = []
    for job, stream in zip(jobs, branches):
        x0, y0, x1, y1 = job["box"]
        w, h = x1 - x0, y1 - y0
        stream = stream.trim(start_frame=job["first"], end_frame=job["stop"])
        stream = stream.filter("crop", w=w, h=h, x=x0, y=y0, exact=1)
        if keep_aspect and w != h:
            side = max(w, h)
            stream = stream.filter(
                "pad", w=side, h=side, x=(side - w) // 2, y=(side - h) // 2, color="black"
            )
        stream = stream.filter("scale", size, size, flags="area")
        options: dict = {"start_number": 0, "fps_mode": "passthrough"}
        if threads:
            options["threads"] = threads
        if job["ext"] == "jpg":
            options["q:v"] = JPEG_QUALITY
        else:
            options["compression_level"] = PNG_COMPRESSION
        target = str(job["tmp"] / f"%07d.{job['ext']}")
        targets.append(target)
        outputs.append(ffmpeg_python.output(stream, target, **options))
    args = ffmpeg_python.merge_outputs(*outputs).compile(cmd=executable())
    globals_ = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y"]
    if threads:
        globals_ += ["-filter_threads", str(threads), "-filter_complex_threads", str(threads)]
    args[1:1] = globals_
    result = subprocess.run(args, capture_output=True, check=False)
    if result.returncode != 0:
        text = result.stderr.decode("utf-8", errors="replace")
        empty = _EMPTY_OUTPUT.search(text)
        # ffmpeg numbers outputs in command-line order; map that back to the job
        order = [arg for arg in args if arg in targets]
        if empty and int(empty.group(1)) < len(order):
            raise _EmptyOutput(targets.index(order[int(empty.group(1))]))
        raise DataError(f"{video}: ffmpeg failed ({_last_error(result.stderr)})")


_EMPTY_OUTPUT = re.compile(r"\[out#(\d+)/[^\]]*\].*received no packets")


def _crop_batch(
    video: Path,
    batch: list[dict],
    out_root: Path,
    size: int,
    keep_aspect: bool,
    threads: int | None,
) -> None:
    """Run one ffmpeg pass for `batch` and move finished clips into place.

    ffmpeg refuses to finish when an output receives no frame (the container's frame count was
    too high or unknown): that clip is marked ``empty`` and the pass is run again without it.
    """
    jobs = list(batch)
    while batch:
        try:
            for job in batch:
                final = out_root / job["rec"]["partition"] / job["rec"]["name"]
                final.parent.mkdir(parents=True, exist_ok=True)
                job["tmp"] = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
            try:
                _run_pass(video, batch, size, keep_aspect, threads)
            except _EmptyOutput as exc:
                batch[exc.index]["rec"]["status"] = "empty"
                batch = batch[: exc.index] + batch[exc.index + 1 :]
                continue
            for job in batch:
                rec = job["rec"]
                count = _count_frames(job["tmp"])
                if count == 0:
                    rec["status"] = "empty"
                    continue
                os.replace(job["tmp"], out_root / rec["partition"] / rec["name"])
                rec["status"] = "written"
                rec["frames"] = count
            return
        finally:
            for job in jobs:
                if "tmp" in job and job["tmp"].exists():
                    shutil.rmtree(job["tmp"], ignore_errors=True)


def _aspect_warning(info: VideoInfo, ref_width: int, ref_height: int) -> str:
    ours = info.width / info.height
    ref = ref_width / ref_height
    if abs(ours / ref - 1.0) > ASPECT_TOLERANCE:
        return (
            f"warning: video aspect {info.width}x{info.height} differs from the CSV's "
            f"{ref_width}x{ref_height} (bbox scaling distorts geometry)"
        )
    return ""


def crop_video(
    video: str | Path,
    clips: pd.DataFrame,
    out_root: str | Path,
    size: int,
    *,
    selection: str = "timestamps",
    train_format: str = "png",
    keep_aspect: bool = False,
    info: VideoInfo | None = None,
    threads: int | None = None,
    max_branches: int = MAX_BRANCHES,
) -> list[dict]:
    """Cut all `clips` (clip-table rows of one video) out of `video`, decoding it once.

    Writes ``out_root/<partition>/<name>/%07d.png`` (train clips ``.jpg`` with
    ``train_format="jpeg"``). Existing clip folders are skipped (status ``present``); a clip
    selecting no frame is not written (``empty``); a clip with an empty box is ``failed``.
    Returns one dict per clip (keys :data:`INDEX_COLUMNS`). `info` defaults to a container
    probe of `video`, skipped when every clip exists (ffmpeg is not run at all; the video
    columns are then 0). `threads` sets ffmpeg's thread counts (None: ffmpeg's default); at most
    `max_branches` clips share one decode. Raises :class:`DataError` naming the video when
    ffmpeg fails.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if train_format not in TRAIN_FORMATS:
        raise ValueError(f"train_format must be one of {TRAIN_FORMATS}, got {train_format!r}")
    video = Path(video).resolve()
    out_root = Path(out_root).resolve()
    if info is None:
        todo = [
            not (out_root / str(p) / str(n)).is_dir()
            for p, n in zip(clips["partition"], clips["name"])
        ]
        if not any(todo):  # all finished: no ffmpeg at all
            return _blank_records(clips, "present", "", out_root)
        info = probe(video, decode=False)
    records: list[dict] = []
    jobs: list[dict] = []
    for row in clips.itertuples(index=False):
        name, partition = str(row.name), str(row.partition)
        rec = {
            "name": name,
            "partition": partition,
            "youtube_id": str(row.youtube_id),
            "status": "",
            "frames": 0,
            "expected_frames": 0,
            "video_width": info.width,
            "video_height": info.height,
            "video_fps": float(info.fps),
            "crop_x0": 0,
            "crop_y0": 0,
            "crop_x1": 0,
            "crop_y1": 0,
            "message": _aspect_warning(info, int(row.width), int(row.height)),
        }
        records.append(rec)
        first, stop = frame_range(row.start, row.end, row.fps, info.fps, selection)
        rec["expected_frames"] = stop - first
        final = out_root / partition / name
        if final.is_dir():
            rec["status"] = "present"
            rec["frames"] = _count_frames(final)
            continue
        try:
            box = scale_bbox(
                row.left,
                row.top,
                row.right,
                row.bottom,
                row.width,
                row.height,
                info.width,
                info.height,
                clip=name,
            )
        except DataError as exc:
            rec["status"] = "failed"
            rec["message"] = "; ".join(m for m in (rec["message"], str(exc)) if m)
            continue
        rec["crop_x0"], rec["crop_y0"], rec["crop_x1"], rec["crop_y1"] = box
        if stop <= first or (info.frames and first >= info.frames):
            rec["status"] = "empty"
            continue
        ext = "jpg" if partition == "train" and train_format == "jpeg" else "png"
        jobs.append({"rec": rec, "first": first, "stop": stop, "box": box, "ext": ext})

    step = max(1, max_branches)
    for begin in range(0, len(jobs), step):
        _crop_batch(video, jobs[begin : begin + step], out_root, size, keep_aspect, threads)
    return records


PARAMS_FILE = "crop.json"


def claim_clips(
    out_root: str | Path, params: Mapping, partitions: tuple[str, ...] = ("train", "test")
) -> bool:
    """Keep the clip folders under `out_root` only if ``crop.json`` there records `params`;
    otherwise delete the `partitions` folders (clips of other parameters, or of a run that
    recorded none) and record `params`. Returns whether the existing clips were kept. The
    folders go before the record is written, so an interruption leaves nothing stale."""
    out_root = Path(out_root)
    path = out_root / PARAMS_FILE
    params = json.loads(json.dumps(dict(params)))
    try:
        kept = json.loads(path.read_text()) == params
    except (OSError, ValueError):
        kept = False
    if not kept:
        for partition in partitions:
            shutil.rmtree(out_root / partition, ignore_errors=True)
        out_root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(params, indent=2, sort_keys=True))
    return kept


def _index_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(INDEX_COLUMNS))
    return frame.astype(INDEX_COLUMNS)


def _blank_records(clips: pd.DataFrame, status: str, message: str, out_root: Path) -> list[dict]:
    records = []
    for row in clips.itertuples(index=False):
        final = out_root / str(row.partition) / str(row.name)
        present = final.is_dir()
        records.append(
            {
                "name": str(row.name),
                "partition": str(row.partition),
                "youtube_id": str(row.youtube_id),
                "status": "present" if present else status,
                "frames": _count_frames(final) if present else 0,
                "expected_frames": 0,
                "video_width": 0,
                "video_height": 0,
                "video_fps": 0.0,
                "crop_x0": 0,
                "crop_y0": 0,
                "crop_x1": 0,
                "crop_y1": 0,
                "message": message,
            }
        )
    return records


def crop_dataset(
    table: pd.DataFrame,
    videos: Mapping[str, str | Path],
    out_root: str | Path,
    size: int,
    *,
    workers: int = 1,
    selection: str = "timestamps",
    train_format: str = "png",
    keep_aspect: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Crop every clip of a clip table from its downloaded video; the clip index as a DataFrame.

    `videos` maps YouTube id to file. Clips of videos not in it get ``missing_video``; a video
    ffmpeg cannot read marks its clips ``failed`` (message says why; clips already on disk stay
    ``present``) and the run goes on. `workers` videos are cropped at once (one ffmpeg each,
    single-threaded when workers > 1). Rows follow the table's order; columns
    :data:`INDEX_COLUMNS`. Clips already under `out_root` are reused only when its crop.json
    records the same parameters (:func:`claim_clips`).
    """
    from tqdm import tqdm

    out_root = Path(out_root)
    params = {
        "size": int(size),
        "selection": selection,
        "train_format": train_format,
        "keep_aspect": bool(keep_aspect),
    }
    partitions = tuple(sorted({"train", "test", *map(str, table["partition"])}))
    claim_clips(out_root, params, partitions)
    threads = 1 if workers > 1 else None
    by_name: dict[str, dict] = {}
    groups = list(table.groupby("youtube_id", sort=False))

    def work(ytid: str, clips: pd.DataFrame) -> list[dict]:
        path = videos.get(ytid)
        if path is None:
            return _blank_records(clips, "missing_video", "", out_root)
        try:
            return crop_video(
                path,
                clips,
                out_root,
                size,
                selection=selection,
                train_format=train_format,
                keep_aspect=keep_aspect,
                threads=threads,
            )
        except DataError as exc:
            return _blank_records(clips, "failed", str(exc), out_root)

    bar = tqdm(total=len(groups), desc="crop", unit="video", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(work, ytid, clips) for ytid, clips in groups]
        for future in as_completed(futures):
            for rec in future.result():
                by_name[rec["name"]] = rec
            bar.update(1)
    bar.close()
    return _index_frame([by_name[str(name)] for name in table["name"]])
