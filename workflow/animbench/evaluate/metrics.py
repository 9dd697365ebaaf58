"""Per-video metrics of a video reconstruction (DESIGN.md §4).

Protocol (reference-data-and-metrics.md §3): every metric is a frame-weighted mean over all
frames of all test videos, so each video is stored as sums and counts (one Parquet row per
video) and `aggregate` divides the totals. A mean of per-video means would weight a 30-frame
clip like a 3000-frame one and would not match the papers' numbers.

PSNR, SSIM and LPIPS (extras beside the papers' metrics, evaluate/image_metrics.py) are computed
per frame by the reconstruction, where prediction and ground truth are in memory, and read here
from frames.parquet like L1; a frames.parquet without them (older runs) leaves them not computed.

Detectors are duck-typed: a keypoint detector has `.name, .version, .weights_sha256` and
`.detect(frames) -> Keypoints(xy [N, K, 2] pixels, detected [N, K] bool)`; an identity embedder
has the same provenance attributes and `.embed(frames) -> [N, D]`. The name "none" means the
metric is not computed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from animbench.data.video import clip_name, list_clips, num_frames, read_clip, read_frames
from animbench.errors import ConfigError, DataError
from animbench.files import write_parquet_atomic  # noqa: F401  (re-exported: tables, stats, tests)

BATCH_FRAMES = 64

# each detector's name, version and weights sha256 (the tables copy them as provenance)
DETECTOR_COLUMNS = (
    "keypoint_detector",
    "keypoint_detector_version",
    "keypoint_weights_sha256",
    "identity_embedder",
    "identity_embedder_version",
    "identity_weights_sha256",
)
COLUMNS = [
    "dataset",
    "method",
    "video",
    "n_frames",
    "l1_sum",
    "akd_sum",
    "akd_frames",
    "akd_skipped",
    "mkr_sum",
    "mkr_frames",
    "aed_sum",
    "aed_frames",
    "psnr_sum",
    "psnr_frames",
    "ssim_sum",
    "ssim_frames",
    "lpips_sum",
    "lpips_frames",
    *DETECTOR_COLUMNS,
    "checkpoint_sha256",
    "predictions_sha256",
    "warnings",
    "deviations",  # how the checkpoint's training left its preset (random weights): "deviates"
    "training_precision",  # fp32 or bf16 (autocast): the tables note bf16
]
# per-frame columns of frames.parquet beside l1 (image_metrics.FRAME_METRICS), optional
FRAME_COLUMNS = ("psnr", "ssim", "lpips")
COUNT_COLUMNS = ["n_frames", "akd_frames", "akd_skipped", "mkr_frames", "aed_frames"] + [
    f"{c}_frames" for c in FRAME_COLUMNS
]
SUM_COLUMNS = ["l1_sum", "akd_sum", "mkr_sum", "aed_sum"] + [f"{c}_sum" for c in FRAME_COLUMNS]

# metric -> (sum column, count column); L1 counts every frame.
METRIC_COLUMNS = {
    "L1": ("l1_sum", "n_frames"),
    "AKD": ("akd_sum", "akd_frames"),
    "MKR": ("mkr_sum", "mkr_frames"),
    "AED": ("aed_sum", "aed_frames"),
    "PSNR": ("psnr_sum", "psnr_frames"),
    "SSIM": ("ssim_sum", "ssim_frames"),
    "LPIPS": ("lpips_sum", "lpips_frames"),
}


class KeypointsLike(Protocol):
    xy: np.ndarray  # float [N, K, 2], pixels
    detected: np.ndarray  # bool [N, K]


def _check_pair(gt: KeypointsLike, pred: KeypointsLike) -> tuple[np.ndarray, ...]:
    gxy, pxy = np.asarray(gt.xy, dtype=np.float64), np.asarray(pred.xy, dtype=np.float64)
    gdet, pdet = np.asarray(gt.detected, dtype=bool), np.asarray(pred.detected, dtype=bool)
    if gxy.shape != pxy.shape or gxy.ndim != 3 or gxy.shape[-1] != 2:
        raise ValueError(f"keypoint shapes differ or are not [N, K, 2]: {gxy.shape} vs {pxy.shape}")
    if gdet.shape != gxy.shape[:2] or pdet.shape != pxy.shape[:2]:
        raise ValueError(f"detected flags must be [N, K]: {gdet.shape}, {pdet.shape}")
    return gxy, pxy, gdet, pdet


def keypoint_distance(gt: KeypointsLike, pred: KeypointsLike) -> np.ndarray:
    """AKD per frame (DESIGN.md §4): mean |gt − pred| over both coordinates of the keypoints
    detected in BOTH frames (per-coordinate L1, pixels), as in pose-evaluation's cmp_kp.py and
    cmp_with_missing.py.

    Returns float64 [N]; NaN marks a frame that does not contribute because no keypoint is
    detected in both (e.g. the generated face is not found). One rule covers the face protocol
    (face-alignment is all-or-nothing per frame) and the body protocol (per-keypoint flags).
    """
    gxy, pxy, gdet, pdet = _check_pair(gt, pred)
    both = gdet & pdet  # [N, K]
    diff = np.abs(gxy - pxy).sum(axis=-1)  # [N, K], |dx| + |dy|
    count = both.sum(axis=1)
    total = np.where(both, diff, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / (2.0 * count), np.nan)


def missing_keypoint_rate(gt: KeypointsLike, pred: KeypointsLike) -> np.ndarray:
    """MKR per frame (DESIGN.md §4): #(detected in gt and missing in pred) / #(detected in gt).

    Returns float64 [N]; NaN where gt has no detected keypoint (the frame does not contribute,
    as in cmp_with_missing.py).
    """
    _, _, gdet, pdet = _check_pair(gt, pred)
    denom = gdet.sum(axis=1)
    missing = (gdet & ~pdet).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, missing / np.maximum(denom, 1), np.nan)


def embedding_distance(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """AED per frame (DESIGN.md §4): squared Euclidean distance between identity embeddings,
    `sum((a − b)**2)` as in pose-evaluation's cmp.py (not the distance itself)."""
    a, b = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings must both be [N, D]: {a.shape} vs {b.shape}")
    return ((a - b) ** 2).sum(axis=1)


def aggregate(df: pd.DataFrame) -> dict[str, tuple[float, int, int]]:
    """Frame-weighted metrics from per-video rows: metric -> (value, n_videos, n_frames).

    value = sum of per-frame values / number of contributing frames over all videos (DESIGN.md
    §4). n_videos counts the videos where the metric was computed, n_frames the contributing
    frames. Metrics not computed for any video are left out; a metric computed but with no
    contributing frame (e.g. no face ever found) has value NaN.
    """
    out: dict[str, tuple[float, int, int]] = {}
    for metric, (sum_col, count_col) in METRIC_COLUMNS.items():
        if sum_col not in df.columns or count_col not in df.columns:
            continue
        sums = pd.to_numeric(df[sum_col], errors="coerce").astype(float)
        counts = pd.to_numeric(df[count_col], errors="coerce").astype(float)
        computed = sums.notna() & counts.notna()
        if not computed.any():
            continue
        total, frames = float(sums[computed].sum()), int(counts[computed].sum())
        value = total / frames if frames > 0 else float("nan")
        out[metric] = (value, int(computed.sum()), frames)
    return out


def typed_frame(
    rows: list[dict], columns: list[str], ints: list[str], floats: list[str]
) -> pd.DataFrame:
    """Rows as a DataFrame with stable dtypes (nullable Int64, float64, the rest strings), so
    Parquet schemas do not depend on which values happen to be missing."""
    df = pd.DataFrame(rows, columns=columns)
    for col in columns:
        df[col] = df[col].astype(
            "Int64" if col in ints else "float64" if col in floats else "string"
        )
    return df


def _read_reconstruct_json(pred: Path) -> dict[str, Any]:
    path = pred / "reconstruct.json"
    if not path.is_file():
        raise DataError(f"{path}: reconstruction record not found")
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable reconstruction record ({exc})") from exc
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object")
    return info


def _read_l1(pred: Path) -> pd.DataFrame:
    path = pred / "frames.parquet"
    if not path.is_file():
        raise DataError(f"{path}: per-frame L1 table not found")
    try:
        frames = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for broken files
        raise DataError(f"{path}: corrupt Parquet ({type(exc).__name__}: {exc})") from exc
    missing = {"video", "frame", "l1"} - set(frames.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}")
    return frames


def _frame_sums(frames: pd.DataFrame, video: str, n: int, path: Path) -> dict[str, Any]:
    """l1_sum and the sums/counts of the optional per-frame columns of one clip.

    L1 must be finite for every frame. In the optional columns NaN marks a frame where the
    metric was not computed (LPIPS without its weights); a column absent or NaN throughout
    the clip is not computed (None).
    """
    rows = frames[frames["video"] == video]
    got = sorted(int(f) for f in rows["frame"])
    if got != list(range(n)):
        raise DataError(
            f"{path}: clip {video} has L1 for {len(got)} frames, expected frames 0..{n - 1}"
        )
    l1 = rows["l1"].to_numpy(dtype=np.float64)
    if not np.isfinite(l1).all():
        raise DataError(f"{path}: clip {video} has non-finite L1 values")
    out: dict[str, Any] = {"l1_sum": float(l1.sum())}
    for col in FRAME_COLUMNS:
        values = rows[col].to_numpy(dtype=np.float64) if col in rows.columns else np.full(n, np.nan)
        if np.isinf(values).any():
            raise DataError(f"{path}: clip {video} has infinite {col} values")
        keep = ~np.isnan(values)
        out[f"{col}_sum"] = float(values[keep].sum()) if keep.any() else None
        out[f"{col}_frames"] = int(keep.sum()) if keep.any() else None
    return out


def _batches(clip: Path, n: int, batch: int) -> Iterator[np.ndarray]:
    """Frames of a clip in batches; PNG folders are read lazily, video files once."""
    if clip.is_dir():
        for start in range(0, n, batch):
            yield read_frames(clip, range(start, min(start + batch, n)))
    else:
        frames = read_clip(clip)
        for start in range(0, n, batch):
            yield frames[start : start + batch]


def _provenance(obj: Any) -> tuple[str | None, str | None, str | None]:
    if obj is None:
        return None, None, None
    return (
        str(getattr(obj, "name", type(obj).__name__)),
        None if getattr(obj, "version", None) is None else str(obj.version),
        None if getattr(obj, "weights_sha256", None) is None else str(obj.weights_sha256),
    )


def _backend(name: str, given: Any, build: Any, owned: contextlib.ExitStack) -> Any:
    """None for 'none'; else the caller's object when given (theirs to close); else the one
    registered under ``name``, closed when ``owned`` closes."""
    if name == "none":
        return None
    if given is not None:
        return given
    built = build(name)
    if hasattr(built, "close"):
        owned.callback(built.close)
    return built


def video_metrics(
    gt: str | Path,
    pred: str | Path,
    keypoints: str,
    identity: str,
    with_mkr: bool,
    out: str | Path,
    dataset: str,
    method: str,
    detector: Any = None,
    embedder: Any = None,
    batch_frames: int = BATCH_FRAMES,
) -> pd.DataFrame:
    """Per-video sums and counts of L1, AKD, MKR and AED for one reconstruction (DESIGN.md §4),
    and of PSNR, SSIM and LPIPS when frames.parquet has them.

    `gt` is the ground-truth test split, `pred` the reconstruction folder (PNG clips,
    frames.parquet with the float L1 per frame and optionally psnr/ssim/lpips,
    reconstruct.json). `keypoints`/`identity` name the backends ("none": not computed);
    `detector`/`embedder` inject objects instead of the registry (tests). Writes one row per
    video to `out` atomically and returns the frame; `akd_skipped` = frames without a keypoint
    detected in both (n_frames − akd_frames). Frames are only decoded when a detector or
    embedder runs: L1, PSNR, SSIM and LPIPS come from frames.parquet.
    Any missing, mismatched or corrupt input raises a one-line DataError naming the file.
    """
    from tqdm import tqdm

    gt, pred = Path(gt), Path(pred)
    if not pred.is_dir():
        raise DataError(f"{pred}: reconstruction folder not found")
    clips = list_clips(gt)
    if not clips:
        raise DataError(f"{gt}: no test clips")
    if with_mkr and keypoints == "none":
        raise ConfigError("metrics.mkr: MKR needs a keypoint detector, got keypoints='none'")

    # what this call builds by name it also closes (openpifpaf's worker process)
    from animbench.evaluate import detectors as backends

    with contextlib.ExitStack() as owned:
        detector = _backend(keypoints, detector, backends.get_keypoint_detector, owned)
        embedder = _backend(identity, embedder, backends.get_identity_embedder, owned)

        info = _read_reconstruct_json(pred)
        l1_frames = _read_l1(pred)
        names = [clip_name(c) for c in clips]
        extra = sorted(set(clip_name(c) for c in list_clips(pred)) - set(names))
        if extra:
            raise DataError(f"{pred / extra[0]}: prediction for a clip not in {gt}")
        kp_prov, id_prov = _provenance(detector), _provenance(embedder)
        warnings = info.get("warnings") or []
        if isinstance(warnings, str):
            warnings = [warnings]
        checkpoint = info.get("checkpoint_sha256")
        deviations = info.get("deviations") or []
        predictions = info.get("predictions_sha256")  # a submission's folder digest

        rows = []
        for gt_clip, name in tqdm(
            list(zip(clips, names)), desc=f"metrics {dataset}/{method}", unit="video"
        ):
            pred_clip = pred / name
            if not pred_clip.is_dir():
                raise DataError(f"{pred_clip}: prediction for clip {name} not found")
            n = num_frames(gt_clip)
            n_pred = num_frames(pred_clip)
            if n_pred != n:
                raise DataError(
                    f"{pred_clip}: {n_pred} predicted frames, ground truth {gt_clip} has {n}"
                )
            row: dict[str, Any] = {
                "dataset": dataset,
                "method": method,
                "video": name,
                "n_frames": n,
            }
            row.update(_frame_sums(l1_frames, name, n, pred / "frames.parquet"))
            akd, mkr, aed = [], [], []
            if detector is not None or embedder is not None:
                for g, p in zip(
                    _batches(gt_clip, n, batch_frames), _batches(pred_clip, n, batch_frames)
                ):
                    if g.shape != p.shape:
                        raise DataError(
                            f"{pred_clip}: frame shape {p.shape[1:]} differs from ground truth {g.shape[1:]}"
                        )
                    if detector is not None:
                        kg, kp = detector.detect(g), detector.detect(p)
                        akd.append(keypoint_distance(kg, kp))
                        if with_mkr:
                            mkr.append(missing_keypoint_rate(kg, kp))
                    if embedder is not None:
                        aed.append(embedding_distance(embedder.embed(g), embedder.embed(p)))
            row.update(_sum_count("akd", akd, n))
            row["akd_skipped"] = n - row["akd_frames"] if akd else None
            row.update(_sum_count("mkr", mkr, n))
            row.update(_sum_count("aed", aed, n))
            row.update(
                keypoint_detector=kp_prov[0],
                keypoint_detector_version=kp_prov[1],
                keypoint_weights_sha256=kp_prov[2],
                identity_embedder=id_prov[0],
                identity_embedder_version=id_prov[1],
                identity_weights_sha256=id_prov[2],
                checkpoint_sha256=None if checkpoint is None else str(checkpoint),
                predictions_sha256=None if predictions is None else str(predictions),
                warnings="; ".join(str(w) for w in warnings) or None,
                deviations="; ".join(str(d) for d in deviations) or None,
                training_precision=info.get("training_precision"),
            )
            rows.append(row)

        df = typed_frame(rows, COLUMNS, ints=COUNT_COLUMNS, floats=SUM_COLUMNS)
        write_parquet_atomic(df, out)
        return df


def _sum_count(prefix: str, parts: list[np.ndarray], n: int) -> dict[str, Any]:
    """Sum and count of the contributing (non-NaN) frames; None when not computed."""
    if not parts:
        return {f"{prefix}_sum": None, f"{prefix}_frames": None}
    values = np.concatenate(parts)
    if len(values) != n:
        raise ValueError(f"{prefix}: detector returned {len(values)} results for {n} frames")
    keep = ~np.isnan(values)
    return {f"{prefix}_sum": float(values[keep].sum()), f"{prefix}_frames": int(keep.sum())}


def read_metrics(paths: Sequence[str | Path]) -> pd.DataFrame:
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: metrics file not found")
        try:
            frames.append(pd.read_parquet(path))
        except Exception as exc:  # pyarrow raises several types for broken files
            raise DataError(f"{path}: corrupt Parquet ({type(exc).__name__}: {exc})") from exc
        missing = {"dataset", "method", "video", "n_frames", "l1_sum"} - set(frames[-1].columns)
        if missing:
            raise DataError(f"{path}: not a metrics file (missing columns {sorted(missing)})")
    if not frames:
        return pd.DataFrame(columns=["dataset", "method", "video"])
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(["dataset", "method", "video"])
    if dup.any():
        r = df[dup].iloc[0]
        raise DataError(
            f"metrics files hold video {r['video']} of {r['dataset']}/{r['method']} twice"
        )
    return df
