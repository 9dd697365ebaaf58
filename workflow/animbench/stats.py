"""Uncertainty of the results tables and paired comparisons of methods (issue 17).

Everything here starts from the per-video metrics files (evaluate/metrics.py: one row per
test video with a metric's sum over its frames and the count of contributing frames) and uses
scipy.stats for the resampling, with a fixed random state so the same metrics files always
give the same tables.

- `bootstrap_ci`: a percentile bootstrap 95% interval over test videos of a table's
  frame-weighted value (sum of the resampled videos' sums / sum of their frame counts), so
  the interval is around exactly the number the table reports.
- `paired_comparison`: two methods on the videos both were measured on. Per video, each
  method's mean over the video's frames; `mean_diff` = mean over videos of (a − b), each video
  weighted once; its bootstrap interval; and the p-value of an exact (≤ 13 videos) or Monte
  Carlo sign-flip permutation test of that mean difference (H0: a and b exchangeable per
  video). Identical methods give a difference of 0 and p = 1.
- `write_pairs`: `pairs.parquet`, every pair of methods per (dataset, metric).
- `seed_aggregate`: with several training seeds (config `seeds`), a table's value is the mean
  over seeds of each seed's value, with `n_seeds` and the std across seeds (`seed_std`); the
  interval and the paired comparisons pool each video's frames over the seeds.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from animbench.evaluate.metrics import (
    METRIC_COLUMNS,
    aggregate,
    read_metrics,
    typed_frame,
    write_parquet_atomic,
)
from animbench.models.names import display_name

CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 0  # the fixed random state of every resampling: tables are reproducible
BATCH = 1000  # resamples held in memory at once (a test set of thousands of videos stays small)

PAIR_COLUMNS = [
    "dataset",
    "metric",
    "method_a",
    "method_b",
    "key_a",
    "key_b",
    "n_videos",
    "value_a",
    "value_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_value",
    "test",
    "note",
    "config_hash",
]
PAIR_FLOATS = ["value_a", "value_b", "mean_diff", "ci_low", "ci_high", "p_value"]
PAIR_INTS = ["n_videos"]
PAIR_TEST = "paired sign-flip permutation test of the mean difference (scipy.stats)"
LOWER_IS_BETTER = frozenset({"L1", "AKD", "MKR", "AED", "LPIPS"})


def _rng_kwarg(function: Callable) -> dict[str, Any]:
    """A fresh generator seeded with SEED, under the keyword this scipy takes (rng since 1.15,
    random_state before)."""
    name = "rng" if "rng" in inspect.signature(function).parameters else "random_state"
    return {name: np.random.default_rng(SEED)}


def _per_video(group: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Columns sum, count of one metric per video (indexed by video), the seeds of a video
    pooled (summed); only videos with a contributing frame."""
    sum_col, count_col = METRIC_COLUMNS[metric]
    if sum_col not in group.columns or count_col not in group.columns:
        return pd.DataFrame({"sum": [], "count": []}, dtype=float)
    frame = pd.DataFrame(
        {
            "video": group["video"].astype(str).to_numpy(),
            "sum": pd.to_numeric(group[sum_col], errors="coerce").astype(float).to_numpy(),
            "count": pd.to_numeric(group[count_col], errors="coerce").astype(float).to_numpy(),
        }
    )
    frame = frame[np.isfinite(frame["sum"]) & np.isfinite(frame["count"])]
    pooled = frame.groupby("video", sort=False)[["sum", "count"]].sum()
    return pooled[pooled["count"] > 0]


def video_sums(group: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(sums, frame counts) of one metric over the videos of a (dataset, method) that have a
    contributing frame (several seeds of a video pooled); empty when not computed."""
    pooled = _per_video(group, metric)
    return pooled["sum"].to_numpy(dtype=float), pooled["count"].to_numpy(dtype=float)


def video_means(group: pd.DataFrame, metric: str) -> pd.Series:
    """Per-video mean of one metric over the video's contributing frames (of every seed),
    indexed by video."""
    pooled = _per_video(group, metric)
    return pooled["sum"] / pooled["count"]


def seed_aggregate(
    group: pd.DataFrame,
) -> tuple[dict[str, tuple[float, int, int]], dict[str, tuple[int, float, dict[str, float]]]]:
    """Table values of a (dataset, method) over its training seeds (the `seed` column; rows
    without one are a single seed).

    Returns (agg, seeds): agg as metrics.aggregate, the value the mean over seeds of each
    seed's frame-weighted value, n_videos and n_frames those of the first seed; seeds: metric ->
    (n_seeds, std across seeds (ddof 1; NaN for one seed), {seed: value}).
    """
    if "seed" not in group.columns or group["seed"].nunique(dropna=False) <= 1:
        agg = aggregate(group)
        return agg, {m: (1, float("nan"), {}) for m in agg}
    per_seed = {str(s): aggregate(g) for s, g in group.groupby("seed", sort=False)}
    first = next(iter(per_seed.values()))
    agg, seeds = {}, {}
    for metric in first:
        values = {s: a[metric][0] for s, a in per_seed.items() if metric in a}
        array = np.array(list(values.values()), dtype=float)
        agg[metric] = (float(array.mean()), first[metric][1], first[metric][2])
        std = float(array.std(ddof=1)) if len(array) > 1 else float("nan")
        seeds[metric] = (len(array), std, values)
    return agg, seeds


def read_seed_metrics(
    metrics: Sequence[str | Path],
    seed_metrics: Mapping[str, Sequence[str | Path]] | None = None,
    seed: int | str | None = None,
) -> pd.DataFrame:
    """Per-video metrics rows of several training seeds, with a `seed` column: `metrics` are
    the first seed's files (seed `seed`), `seed_metrics` maps each further seed to its files.
    Without further seeds the rows are returned as read (no seed column)."""
    df = read_metrics(metrics)
    if not seed_metrics:
        return df
    frames = [df.assign(seed=str(seed if seed is not None else "first"))]
    for name, paths in seed_metrics.items():
        frames.append(read_metrics(paths).assign(seed=str(name)))
    return pd.concat(frames, ignore_index=True)


def _ratio(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)


def bootstrap_ci(
    sums: Sequence[float],
    counts: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> tuple[float, float]:
    """Percentile bootstrap interval over videos of the frame-weighted mean sum(sums) /
    sum(counts); videos are resampled with their sums and counts together. (NaN, NaN) with
    fewer than two videos: one video says nothing about the spread between videos."""
    sums, counts = np.asarray(sums, dtype=float), np.asarray(counts, dtype=float)
    if len(sums) != len(counts):
        raise ValueError(f"{len(sums)} sums but {len(counts)} counts")
    if len(sums) < 2:
        return float("nan"), float("nan")
    result = scipy_stats.bootstrap(
        (sums, counts),
        _ratio,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        batch=BATCH,
        **_rng_kwarg(scipy_stats.bootstrap),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def metric_ci(group: pd.DataFrame | None, metric: str) -> tuple[float, float]:
    """bootstrap_ci of one (dataset, method)'s metric from its per-video rows."""
    if group is None or metric not in METRIC_COLUMNS:
        return float("nan"), float("nan")
    return bootstrap_ci(*video_sums(group, metric))


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def paired_comparison(
    a: pd.Series,
    b: pd.Series,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> dict[str, float | int]:
    """Compare two methods' per-video values (Series indexed by video) on the videos both have.

    Returns n_videos, value_a, value_b (means over those videos), mean_diff (mean of a − b),
    ci_low/ci_high (percentile bootstrap of mean_diff) and p_value (two-sided sign-flip
    permutation test; exact when 2**n_videos ≤ n_resamples); the three are NaN under two videos.
    """
    common = a.index.intersection(b.index)
    x = a.loc[common].to_numpy(dtype=float)
    y = b.loc[common].to_numpy(dtype=float)
    n = len(common)
    out: dict[str, float | int] = {"n_videos": n}
    if n == 0:
        return {**out, **dict.fromkeys(PAIR_FLOATS, float("nan"))}
    out.update(value_a=float(x.mean()), value_b=float(y.mean()), mean_diff=float((x - y).mean()))
    if n < 2:  # one video: no spread to resample
        return {**out, "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan")}
    ci = scipy_stats.bootstrap(
        (x - y,),
        np.mean,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        batch=BATCH,
        **_rng_kwarg(scipy_stats.bootstrap),
    ).confidence_interval
    test = scipy_stats.permutation_test(
        (x, y),
        _mean_diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        batch=BATCH,
        **_rng_kwarg(scipy_stats.permutation_test),
    )
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(min(1.0, test.pvalue)))
    return out


def _display(method: str, entries: Mapping[str, Any]) -> str:
    return display_name(method, entries.get(method))


def pairs_table(df: pd.DataFrame, spec: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every pair of methods per (dataset, metric) of per-video metrics rows (the metrics
    files concatenated). Methods in order of appearance; `method_a`/`method_b` are table2's
    row labels (spec `entries` give variants theirs), `key_a`/`key_b` the config keys."""
    spec = dict(spec or {})
    entries = dict(spec.get("entries") or {})
    rows: list[dict[str, Any]] = []
    if len(df):
        for dataset, ddf in df.groupby("dataset", sort=False):
            groups = dict(tuple(ddf.groupby("method", sort=False)))
            for metric in METRIC_COLUMNS:
                means = {m: video_means(g, metric) for m, g in groups.items()}
                measured = [m for m, v in means.items() if len(v)]
                for key_a, key_b in itertools.combinations(measured, 2):
                    result = paired_comparison(means[key_a], means[key_b])
                    better = "lower" if metric in LOWER_IS_BETTER else "higher"
                    rows.append(
                        {
                            "dataset": dataset,
                            "metric": metric,
                            "method_a": _display(key_a, entries),
                            "method_b": _display(key_b, entries),
                            "key_a": key_a,
                            "key_b": key_b,
                            **result,
                            "test": PAIR_TEST,
                            "note": (
                                f"mean_diff = a − b over the {result['n_videos']} videos both "
                                f"were measured on, each video weighted once ({better} "
                                f"{metric} is better); {CONFIDENCE:.0%} percentile bootstrap, "
                                f"{N_RESAMPLES} resamples, seed {SEED}"
                            ),
                            "config_hash": spec.get("config_hash"),
                        }
                    )
    return typed_frame(rows, PAIR_COLUMNS, ints=PAIR_INTS, floats=PAIR_FLOATS)


def write_pairs(
    metrics: Sequence[str | Path],
    spec: Mapping[str, Any] | None,
    out: str | Path,
    seed_metrics: Mapping[str, Sequence[str | Path]] | None = None,
) -> pd.DataFrame:
    """`pairs.parquet` from per-video metrics files (see pairs_table), written atomically;
    `seed_metrics`: further training seeds' files, pooled per video with the first seed's."""
    table = pairs_table(read_seed_metrics(metrics, seed_metrics), spec)
    write_parquet_atomic(table, out)
    return table
