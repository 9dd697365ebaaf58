"""Score predictions made elsewhere (issue 17): a folder with one prediction per test clip.

A submission folder holds, for every clip of the ground-truth test split, either a folder of
frames (`<clip>/0000000.png ...`) or one video file (`<clip>.mp4`), named as the test clip.
It is validated before anything is computed: missing and extra clips (all of them listed), then
each clip's frame count and frame size against the ground truth (a one-line error naming the
clip). Lossy formats (JPEG frames, mp4/GIF video) are accepted with a warning, which reaches
the table row's note: the protocol expects lossless frames.

`import_submission` then writes the folder in the layout `reconstruct` writes (PNG clips,
frames.parquet with per-frame L1/PSNR/SSIM/LPIPS, reconstruct.json), so the metrics code
scores it unchanged. reconstruct.json records the source folder, its content digest
(`predictions_sha256`), the formats and the lossy flag; the digest becomes the metrics' and
tables' provenance in place of a checkpoint's sha256.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from animbench.data.video import (
    FRAME_SUFFIXES,
    VIDEO_SUFFIXES,
    _video_info,
    clip_name,
    frame_paths,
    list_clips,
    read_clip,
    write_clip,
)
from animbench.errors import DataError

# video codecs (ffmpeg names) that store frames without loss; any other video is lossy
LOSSLESS_CODECS = {"ffv1", "png", "rawvideo", "huffyuv", "ffvhuff", "utvideo", "qtrle", "apng"}
LOSSY_NOTE = "the protocol expects lossless frames (PNG folders)"
LISTED = 10  # clip names shown in a missing/extra message before "and N more"


@dataclass
class Submission:
    """A validated submission: the prediction of each test clip, in test-split order."""

    folder: Path
    clips: dict[str, Path]  # clip name -> prediction (frame folder or video file)
    truth: dict[str, Path]  # clip name -> its ground truth
    formats: dict[str, str]  # clip name -> "png", "jpeg" or "video/<codec>"

    @property
    def lossy(self) -> list[str]:
        """Clips stored in a lossy format."""
        return [name for name, fmt in self.formats.items() if not _is_lossless(fmt)]

    def warnings(self) -> list[str]:
        """One warning naming the lossy formats, or none."""
        lossy = self.lossy
        if not lossy:
            return []
        kinds = ", ".join(sorted({self.formats[name] for name in lossy}))
        return [
            f"{len(lossy)} of {len(self.formats)} predicted clips in a lossy format ({kinds}): "
            + LOSSY_NOTE
        ]


def _is_lossless(fmt: str) -> bool:
    return fmt == "png" or (fmt.startswith("video/") and fmt[6:] in LOSSLESS_CODECS)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def _video_codec(path: Path) -> str:
    """ffmpeg's name of a video file's codec ("gif" for GIFs, which Pillow decodes)."""
    if path.suffix.lower() == ".gif":
        return "gif"
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    except Exception as exc:  # ffmpeg's errors come as several types
        raise DataError(f"{path}: unreadable video ({type(exc).__name__}: {exc})") from exc
    finally:
        reader.close()
    return str(meta.get("codec") or "unknown").rstrip(",")  # ffmpeg's "ffv1, bgr0, ..."


def clip_shape(clip: Path) -> tuple[int, int, int]:
    """(frames, height, width) of a frame folder (headers only) or a video file."""
    if clip.is_dir():
        paths = frame_paths(clip)
        try:
            with Image.open(paths[0]) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{paths[0]}: corrupt or truncated frame ({exc})") from exc
        return len(paths), height, width
    return _video_info(clip)


def _clip_format(clip: Path) -> str:
    if clip.is_dir():
        return FRAME_SUFFIXES[frame_paths(clip)[0].suffix.lower()]
    return f"video/{_video_codec(clip)}"


def validate_submission(gt: str | Path, pred: str | Path) -> Submission:
    """Check a submission folder against the ground-truth test split, before any metric.

    Raises a one-line DataError: for missing and extra clips (every one listed), for two
    predictions of one clip (a folder and a video), and for the first clip whose frame count
    or frame size differs from its ground truth (naming the clip)."""
    gt, pred = Path(gt), Path(pred)
    if not pred.is_dir():
        raise DataError(f"{pred}: predictions folder not found")
    truth = {clip_name(c): c for c in list_clips(gt)}
    if not truth:
        raise DataError(f"{gt}: no test clips")
    found: dict[str, Path] = {}
    for path in list_clips(pred):
        name = clip_name(path)
        if name in found:
            raise DataError(
                f"{pred}: clip {name} has two predictions ({found[name].name}, {path.name})"
            )
        found[name] = path
    stray = sorted(
        p.name
        for p in pred.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in VIDEO_SUFFIXES
    )
    missing = sorted(set(truth) - set(found))
    extra = sorted(set(found) - set(truth))
    problems = []
    if missing:
        problems.append(f"{len(missing)} test clips have no prediction: {_listing(missing)}")
    if extra:
        problems.append(f"{len(extra)} predictions match no test clip: {_listing(extra)}")
    if stray:
        problems.append(f"files that are neither a clip folder nor a video: {_listing(stray)}")
    if problems:
        raise DataError(f"{pred}: " + "; ".join(problems) + f" (test split {gt})")
    clips = {name: found[name] for name in truth}
    formats = {}
    for name, path in clips.items():
        n, height, width = clip_shape(truth[name])
        n_pred, h_pred, w_pred = clip_shape(path)
        if n_pred != n:
            raise DataError(
                f"{path}: clip {name} has {n_pred} predicted frames, the ground truth has {n}"
            )
        if (h_pred, w_pred) != (height, width):
            raise DataError(
                f"{path}: clip {name} has {w_pred}x{h_pred} frames, the ground truth "
                f"{width}x{height}"
            )
        formats[name] = _clip_format(path)
    return Submission(pred, clips, truth, formats)


def folder_digest(folder: str | Path) -> str:
    """sha256 of a folder's content: every file's relative path and bytes, in sorted order
    (hidden files included, so the digest covers exactly what was on disk)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(str(path.stat().st_size).encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _prepare_out(out: Path) -> None:
    """An empty output folder; an earlier import's folder is replaced, anything else refused."""
    if out.exists() and any(out.iterdir()):
        record = out / "reconstruct.json"
        try:
            ours = "predictions_sha256" in json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            ours = False
        if not ours:
            raise DataError(f"{out}: exists and is not an earlier import of predictions")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def import_submission(
    gt: str | Path, pred: str | Path, method: str, out: str | Path, device: str = "cpu"
) -> Path:
    """Validate `pred` against the test split `gt` and write it to `out` in reconstruct's
    layout (PNG clips, frames.parquet, reconstruct.json); returns frames.parquet's path.

    L1 is computed on the stored 8-bit frames (a submission has no float predictions)."""
    from animbench.device import resolve_device
    from animbench.evaluate.image_metrics import FRAME_METRICS, frame_metrics, lpips_note
    from animbench.evaluate.reconstruct import _mean
    from animbench.files import write_parquet_atomic

    gt, pred, out = Path(gt), Path(pred), Path(out)
    submission = validate_submission(gt, pred)
    digest = folder_digest(pred)
    _prepare_out(out)
    torch_device = resolve_device(device)
    parts = []
    for name, path in submission.clips.items():
        truth = read_clip(submission.truth[name])
        frames = read_clip(path)
        if frames.shape != truth.shape:  # a video decoding to other frames than it reported
            raise DataError(f"{path}: clip {name} decodes to {frames.shape}, not {truth.shape}")
        p = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0)
        g = torch.from_numpy(truth).permute(0, 3, 1, 2).float().div(255.0)
        extra = frame_metrics(p.to(torch_device), g)
        l1 = (p - g).abs().flatten(1).mean(1).numpy()
        write_clip(out / name, frames)
        parts.append(pd.DataFrame({"video": name, "frame": np.arange(len(l1)), "l1": l1, **extra}))
    frames = pd.concat(parts, ignore_index=True)
    summary = {
        "method": method,
        "checkpoint": None,
        "checkpoint_sha256": None,
        "predictions": str(pred),
        "predictions_sha256": digest,
        "formats": sorted(set(submission.formats.values())),
        "lossy": bool(submission.lossy),
        "lossy_clips": submission.lossy,
        "warnings": submission.warnings(),
        "n_videos": len(submission.clips),
        "n_frames": len(frames),
        "l1": float(frames["l1"].mean()),
        **{m: _mean(frames, m) for m in FRAME_METRICS},
        "lpips_weights": lpips_note(),
    }
    (out / "reconstruct.json").write_text(json.dumps(summary, indent=2))
    return write_parquet_atomic(frames, out / "frames.parquet")


def evaluate_submission(
    gt: str | Path,
    pred: str | Path,
    out: str | Path,
    method: str,
    dataset: str,
    keypoints: str = "none",
    identity: str = "none",
    with_mkr: bool = False,
    reconstruction: str | Path | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """`animbench evaluate`: import a submission (into `reconstruction`, else a temporary
    folder) and write its per-video metrics to `out`; returns them."""
    import tempfile

    from animbench.evaluate.metrics import video_metrics

    with tempfile.TemporaryDirectory(prefix="animbench-submission-") as tmp:
        folder = Path(reconstruction) if reconstruction else Path(tmp) / method
        import_submission(gt, pred, method, folder, device)
        return video_metrics(
            gt=gt,
            pred=folder,
            keypoints=keypoints,
            identity=identity,
            with_mkr=with_mkr,
            out=out,
            dataset=dataset,
            method=method,
        )


def summary_lines(df: pd.DataFrame) -> list[str]:
    """The aggregated metrics of a metrics frame as printable lines, then provenance."""
    from animbench.evaluate.metrics import aggregate

    lines = [
        f"{metric} {value:.6g} ({videos} videos, {frames} frames)"
        for metric, (value, videos, frames) in aggregate(df).items()
    ]
    digests = sorted({str(v) for v in df["predictions_sha256"].dropna()})
    lines += [f"predictions sha256 {d}" for d in digests]
    lines += [f"warning: {w}" for w in sorted({str(v) for v in df["warnings"].dropna()})]
    return lines
