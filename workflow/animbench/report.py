"""`results/report.html`: one self-contained page of a benchmark's results.

Everything is inline, so the file can be mailed or archived alone and opened offline: CSS in a
`<style>` element, charts as inline SVG drawn here (no JavaScript at all), animations as GIF
`data:` URIs. No element refers to anything outside the file.

Sections, each built from what `results/` holds now; an input that is absent is a visible
"not produced yet" note, one that cannot be read a "could not read" note, never a crash:

- tables: `table1.parquet`, `table2.parquet` and every other `*table*.parquet`, each first in
  the paper's own shape (methods as rows, dataset × metric as columns; in each cell our `value`
  with its interval, the paper's `paper_value` and `delta`; the best per column in bold), its
  notes and provenance once per table as footnotes; then bar charts of measured vs paper values
  per (dataset, metric), measured bars with their 95% bootstrap interval (`ci_low`, `ci_high`)
  as error bars; then the long format (one row per value, `status`, `note`, provenance);
- paired comparisons: `pairs.parquet`, each pair of methods' mean difference on the same
  videos, its interval and p-value;
- sample reconstructions: per (dataset, method), one test clip as an animated GIF, ground truth
  | prediction side by side;
- training curves: per run, each `log*.csv` stage as a line chart of the total loss and its
  terms per step;
- datasets: download availability and crop status counts of real datasets, clip counts of
  synthetic ones.

Size budget: the GIFs dominate. Each is at most GIF_MAX_FRAMES frames of two panels whose
longer side is at most GIF_PANEL pixels, in one palette of GIF_COLORS colours, and at most
GIF_MAX_BYTES (about 60 KB for a 64x64 synthetic clip of 32 frames): the full benchmark's 16
(dataset, method) pairs stay under about 4 MB of base64. Each training curve keeps at most
CURVE_POINTS points per line (bin means), a few tens of KB per chart.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

import animbench
from animbench.data.video import clip_name, list_clips, num_frames, read_frames
from animbench.errors import AnimbenchError

GIF_MAX_FRAMES = 32  # frames of a sample GIF, evenly spaced over the clip
GIF_PANEL = 96  # longer side of each panel (ground truth, prediction) in pixels
GIF_COLORS = 64  # palette size, one palette per GIF
GIF_MAX_BYTES = 200_000  # a larger GIF is made again from every other frame
GIF_DISPLAY_HEIGHT = 128  # smaller GIFs are shown enlarged (2x or 3x, pixelated)
GIF_FRAME_MS = 80  # display time of one frame of a clip shown in full
CURVE_POINTS = 300  # points per training curve line at most (bin means beyond)

# the order tables appear in; any other results/*table*.parquet follows, by name
MAIN_TABLES = ("table2.parquet", "table1.parquet")
# log.csv columns that index or describe a step rather than measure a loss term
NOT_LOSS_COLUMNS = frozenset({"step", "epoch", "seconds", "lr", "samples_per_s"})
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MEASURED_COLOR, PAPER_COLOR = "#1f77b4", "#bbbbbb"
# what a report cannot read is a note, not a crash: parquet, CSV, image and clip errors
READ_ERRORS = (OSError, ValueError, KeyError, IndexError, AnimbenchError)

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.key { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.note { max-width: 40em; }
td.prov { font-size: 0.85em; color: #555; max-width: 22em; word-break: break-all; }
caption { caption-side: top; text-align: left; padding: 2px 0; }
tr.measured td.status { color: #176c17; }
/* a number, but not the preset's (e.g. trained on random VGG19): must not pass for measured */
tr.deviates td.status { color: #b00020; font-weight: bold; }
tr.deviates td.note { background: #fdecee; }
tr.significant td { font-weight: bold; }
tr.missing td.status, tr.not-run td.status { color: #a15c00; }
tr.not-implemented td.status, tr.not-available td.status, tr.not-computed td.status {
  color: #888; }
.missing-note { color: #a15c00; background: #fff6e5; border-left: 3px solid #e0a040;
                padding: 4px 8px; margin: 0.4em 0; }
.meta { color: #666; font-size: 0.85em; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; border: 1px solid #eee; padding: 6px; }
figcaption { font-size: 0.8em; color: #444; max-width: 32em; }
figure img { image-rendering: pixelated; display: block; }
svg text { font-family: system-ui, sans-serif; }
/* the paper-shaped table: methods as rows, dataset x metric as columns */
div.scroll { overflow-x: auto; max-width: 100%; }
table.paper-shape { font-size: 0.88em; }
table.paper-shape th { position: static; }
table.paper-shape th.dataset { text-align: center; }
table.paper-shape th.method { text-align: left; white-space: nowrap; background: #fafafa; }
table.paper-shape td.cell { text-align: right; font-variant-numeric: tabular-nums;
                            white-space: nowrap; padding: 3px 8px; }
td.cell .ci, td.cell .paper-line { color: #666; font-size: 0.82em; }
td.cell .dagger { color: #b00020; font-weight: bold; }
td.cell .status { color: #a15c00; font-size: 0.8em; }
td.cell.best { background: #eef7ee; }
td.cell.deviates { background: #fdecee; }
td.cell.deviates .ours, td.cell.deviates .status { color: #b00020; }
td.cell.not-implemented .status, td.cell.not-available .status { color: #888; }
sup a { text-decoration: none; } sup.prov-ref a { color: #777; }
.footnotes { font-size: 0.82em; color: #444; margin: 0.3em 0 0.8em; max-width: 90em; }
ul.footnotes { list-style: none; padding-left: 1.5em; columns: 2 28em; }
ul.footnotes li { word-break: break-all; break-inside: avoid; }
.legend { max-width: 90em; }
"""


# ----------------------------------------------------------------------------- helpers


def esc(value: Any) -> str:
    """Text (any value) escaped for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def missing_note(what: str, path: str | Path | None = None) -> str:
    """The visible note for an input that is not there (yet)."""
    where = f" (<code>{esc(path)}</code>)" if path is not None else ""
    return f'<p class="missing-note">{esc(what)}: not produced yet{where}</p>'


def error_note(path: str | Path, exc: BaseException) -> str:
    """The visible note for an input that is there but cannot be read."""
    message = f"could not read {path}: {type(exc).__name__}: {exc}"
    return f'<p class="missing-note">{esc(message)}</p>'


def data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def fmt(value: Any) -> str:
    """A table cell: numbers to 4 significant digits (integers whole), NaN/None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value.is_integer() and abs(value) >= 1e4:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [math.floor(low / step) * step]
    while len(ticks) < 2 or ticks[-1] < high - step * 1e-9:
        ticks.append(ticks[0] + step * len(ticks))
    return [round(t, 12) for t in ticks]


def _tick_label(value: float) -> str:
    return f"{value:.3g}" if value != 0 else "0"


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename: never a half-written page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- charts


def svg_bar_chart(
    title: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    colors: Sequence[str] = (MEASURED_COLOR, PAPER_COLOR),
    intervals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> str:
    """Grouped bars: one group per category, one bar per series (NaN: no bar, 'n/a').

    `intervals`: per series, a (low, high) per category drawn as an error bar (whisker with
    caps) over the bar; a pair with a NaN draws none. Inline SVG, no script; each bar has a
    <title> with its exact value (and interval).
    """
    names = list(series)
    values = [[float(v) if _finite(v) else math.nan for v in series[n]] for n in names]
    bounds = [
        [
            (float(lo), float(hi)) if _finite(lo) and _finite(hi) else None
            for lo, hi in (intervals or {}).get(n, [(math.nan, math.nan)] * len(categories))
        ]
        for n in names
    ]
    finite = [v for row in values for v in row if math.isfinite(v)]
    finite += [v for row in bounds for pair in row if pair for v in pair]
    ticks = nice_ticks(min(0.0, *finite) if finite else 0.0, max([0.0, *finite]) or 1.0)
    lo, hi = ticks[0], ticks[-1]
    left, right, top, bottom = 52, 10, 34, 58
    bar_w, gap = 14, 14
    group_w = bar_w * len(names) + gap
    width = max(left + right + group_w * len(categories), 220)
    height = 230
    plot_h = height - top - bottom

    def y(v: float) -> float:
        return top + plot_h * (hi - v) / (hi - lo)

    parts = [
        f'<svg class="bar-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
        f'<text x="{width / 2:.1f}" y="14" text-anchor="middle" font-size="12" '
        f'font-weight="bold">{esc(title)}</text>',
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="#e5e5e5"/><text x="{left - 4}" y="{y(tick) + 3:.1f}" '
            f'text-anchor="end" font-size="9">{esc(_tick_label(tick))}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#888"/>'
    )
    for i, category in enumerate(categories):
        x0 = left + gap / 2 + i * group_w
        for j, name in enumerate(names):
            v = values[j][i]
            x = x0 + j * bar_w
            label = f"{category} {name}: {fmt(v)}"
            interval = bounds[j][i] if i < len(bounds[j]) else None
            if interval:
                label += f" (95% CI {fmt(interval[0])} to {fmt(interval[1])})"
            if math.isfinite(v):
                top_y, bottom_y = sorted((y(v), y(0)))
                parts.append(
                    f'<rect class="bar" x="{x:.1f}" y="{top_y:.1f}" width="{bar_w - 2}" '
                    f'height="{max(bottom_y - top_y, 0.5):.1f}" '
                    f'fill="{colors[j % len(colors)]}"><title>{esc(label)}</title></rect>'
                )
                if interval:
                    parts.append(error_bar(x + (bar_w - 2) / 2, y(interval[0]), y(interval[1])))
            else:
                parts.append(
                    f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y(0) - 3:.1f}" font-size="7" '
                    f'text-anchor="middle" fill="#999"><title>{esc(label)}</title>n/a</text>'
                )
        cx = x0 + (group_w - gap) / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{height - bottom + 12}" font-size="9" text-anchor="end" '
            f'transform="rotate(-30 {cx:.1f} {height - bottom + 12})">{esc(category)}</text>'
        )
    for j, name in enumerate(names):  # legend
        x = left + j * 90
        parts.append(
            f'<rect x="{x}" y="20" width="9" height="9" fill="{colors[j % len(colors)]}"/>'
            f'<text x="{x + 12}" y="28" font-size="9">{esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def error_bar(x: float, y_low: float, y_high: float, cap: float = 3.0) -> str:
    """An SVG whisker from y_low to y_high at x, with caps at both ends."""
    return (
        f'<path class="error-bar" d="M{x - cap:.1f},{y_low:.1f}H{x + cap:.1f}'
        f'M{x:.1f},{y_low:.1f}V{y_high:.1f}M{x - cap:.1f},{y_high:.1f}H{x + cap:.1f}" '
        'stroke="#222" stroke-width="1" fill="none"/>'
    )


def downsample(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> tuple:
    """At most `points` (x, y) pairs: means over consecutive bins (NaNs ignored)."""
    if len(x) <= points:
        return x, y
    bins = np.array_split(np.arange(len(x)), points)
    with np.errstate(all="ignore"):
        xs = np.array([x[b].mean() for b in bins])
        ys = np.array([np.nanmean(y[b]) if np.isfinite(y[b]).any() else np.nan for b in bins])
    return xs, ys


def svg_line_chart(
    title: str,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    x_label: str = "step",
    width: int = 520,
    height: int = 260,
) -> str:
    """Lines sharing one x axis (NaN points break a line), with a legend on the right."""
    xs = np.asarray(x, dtype=float)
    lines = {name: downsample(xs, np.asarray(v, dtype=float)) for name, v in series.items()}
    finite_y = [v for _, ys in lines.values() for v in ys if math.isfinite(v)]
    finite_x = [v for v in xs if math.isfinite(v)]
    y_ticks = nice_ticks(min([0.0, *finite_y]), max([0.0, *finite_y]) or 1.0)
    x_ticks = nice_ticks(min(finite_x, default=0.0), max(finite_x, default=1.0))
    legend_w = 150
    left, right, top, bottom = 48, legend_w + 10, 24, 34
    height = max(height, top + 13 * len(lines) + 10)  # room for every legend entry
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + plot_w * (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])

    def py(v: float) -> float:
        return top + plot_h * (y_ticks[-1] - v) / (y_ticks[-1] - y_ticks[0])

    parts = [
        f'<svg class="line-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
        f'<text x="{left + plot_w / 2:.1f}" y="14" text-anchor="middle" font-size="12" '
        f'font-weight="bold">{esc(title)}</text>',
    ]
    for tick in y_ticks:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
            f'stroke="#e5e5e5"/><text x="{left - 4}" y="{py(tick) + 3:.1f}" '
            f'text-anchor="end" font-size="9">{esc(_tick_label(tick))}</text>'
        )
    for tick in x_ticks:
        parts.append(
            f'<text x="{px(tick):.1f}" y="{top + plot_h + 12}" text-anchor="middle" '
            f'font-size="9">{esc(_tick_label(tick))}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        f'stroke="#888"/><text x="{left + plot_w / 2:.1f}" y="{height - 4}" '
        f'text-anchor="middle" font-size="10">{esc(x_label)}</text>'
    )
    for k, (name, (lx, ly)) in enumerate(lines.items()):
        color = PALETTE[k % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for a, b in zip(lx, ly):
            if math.isfinite(a) and math.isfinite(b):
                segments[-1].append(f"{px(a):.1f},{py(b):.1f}")
            elif segments[-1]:
                segments.append([])
        for points in segments:
            if points:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.3" '
                    f'points="{" ".join(points)}"><title>{esc(name)}</title></polyline>'
                )
        ly_pos = top + 10 + 13 * k
        parts.append(
            f'<line x1="{width - legend_w}" x2="{width - legend_w + 14}" y1="{ly_pos - 3}" '
            f'y2="{ly_pos - 3}" stroke="{color}" stroke-width="2"/>'
            f'<text x="{width - legend_w + 18}" y="{ly_pos}" font-size="9">{esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------- GIFs


def _panel(frame: np.ndarray, size: tuple[int, int]) -> Image.Image:
    image = Image.fromarray(frame)
    return image if image.size == size else image.resize(size, Image.Resampling.BOX)


def gif_strip(
    gt: np.ndarray,
    pred: np.ndarray,
    frame_ms: int = GIF_FRAME_MS,
    panel: int = GIF_PANEL,
    colors: int = GIF_COLORS,
) -> bytes:
    """An animated GIF: ground truth | prediction side by side, frame by frame.

    `gt`, `pred`: uint8 [T, H, W, 3] (the shorter one sets the length; prediction panels are
    resized to the ground truth's panel size). Panels are downscaled so the longer side is at
    most `panel` pixels. One `colors`-colour palette for the whole animation (from a mosaic of
    four frames), no dithering: a shared palette lets the encoder store only what changed.
    """
    count = min(len(gt), len(pred))
    if count == 0:
        raise ValueError("no frames to animate")
    h, w = gt.shape[1:3]
    scale = min(1.0, panel / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    sep = 2
    canvases = []
    for t in range(count):
        canvas = Image.new("RGB", (2 * size[0] + sep, size[1]), (255, 255, 255))
        canvas.paste(_panel(gt[t], size), (0, 0))
        canvas.paste(_panel(pred[t], size), (size[0] + sep, 0))
        canvases.append(canvas)
    picks = sorted({0, count // 3, 2 * count // 3, count - 1})
    mosaic = Image.new("RGB", (canvases[0].width, canvases[0].height * len(picks)))
    for i, t in enumerate(picks):
        mosaic.paste(canvases[t], (0, i * canvases[0].height))
    palette = mosaic.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    frames = [c.quantize(palette=palette, dither=Image.Dither.NONE) for c in canvases]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=frame_ms,
        loop=0,
        optimize=True,
    )
    return buffer.getvalue()


def sample_indices(length: int, limit: int = GIF_MAX_FRAMES) -> list[int]:
    """At most `limit` frame indices spread evenly over a clip (every frame of a short one)."""
    stride = max(1, math.ceil(length / limit))
    return list(range(0, length, stride))[:limit]


def sample_gif(gt_split: Path, pred_dir: Path) -> tuple[str, bytes]:
    """(clip name, GIF) of the first test clip that has a prediction; a GIF over GIF_MAX_BYTES
    is made again from every other frame (down to 8 frames)."""
    predicted = {clip_name(p): p for p in list_clips(pred_dir)}
    clips = [c for c in list_clips(gt_split) if clip_name(c) in predicted]
    if not clips:
        raise ValueError(f"no test clip of {gt_split} has a prediction in {pred_dir}")
    clip, prediction = clips[0], predicted[clip_name(clips[0])]
    indices = sample_indices(min(num_frames(clip), num_frames(prediction)))
    gt, pred = read_frames(clip, indices), read_frames(prediction, indices)
    stride = indices[1] - indices[0] if len(indices) > 1 else 1
    while True:
        gif = gif_strip(gt, pred, frame_ms=min(GIF_FRAME_MS * stride, 250))
        if len(gif) <= GIF_MAX_BYTES or len(gt) <= 8:
            return clip_name(clip), gif
        gt, pred, stride = gt[::2], pred[::2], stride * 2


# ----------------------------------------------------------------------------- tables


# table columns of provenance: (label, column, characters shown in a cell; None: all)
PROVENANCE = (
    ("commit", "git_commit", 10),
    ("config", "config_hash", 10),
    ("checkpoint", "checkpoint_sha256", 12),
    ("detectors", "detector_versions", None),
    ("animbench", "animbench_version", None),
    ("created", "created", None),
)
TABLE_COLUMNS = (
    "dataset",
    "method",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "paper_value",
    "delta",
)
SEED_COLUMNS = ("n_seeds", "seed_std")  # shown when a row rests on more than one seed
KEY_COLUMNS = frozenset({"dataset", "method", "metric", "status"})
NUMBER_COLUMNS = frozenset(
    {"value", "ci_low", "ci_high", "paper_value", "delta", "n_videos", "n_frames", *SEED_COLUMNS}
)


def _present(value: Any) -> bool:
    return not (value is None or value is pd.NA or value == "" or value != value)


def shared_provenance(table: pd.DataFrame) -> dict[str, str]:
    """Provenance columns with one value on every row (commit, config hash, ...)."""
    shared = {}
    for _, column, _ in PROVENANCE:
        if column in table.columns and len(table):
            values = table[column].tolist()
            if all(_present(v) for v in values) and len({str(v) for v in values}) == 1:
                shared[column] = str(values[0])
    return shared


def provenance(row: Mapping[str, Any], skip: Iterable[str] = ()) -> tuple[str, str]:
    """(short text, full text) of a row's provenance columns, less those in `skip`."""
    skip = set(skip)
    short, full = [], []
    for label, column, cut in PROVENANCE:
        value = row.get(column)
        if column in skip or not _present(value):
            continue
        text = str(value)
        full.append(f"{label}: {text}")
        if column != "created":
            short.append(f"{label} {text[:cut] if cut else text}")
    return "; ".join(short), "; ".join(full)


def table_html(table: pd.DataFrame) -> str:
    """The long-format table: our value beside the paper's, delta, videos, status, note and
    provenance; provenance shared by every row is the caption, the rest is per row (short in
    the cell, in full on hover)."""
    columns = [c for c in TABLE_COLUMNS if c in table.columns]
    if "n_seeds" in table.columns and (pd.to_numeric(table["n_seeds"]) > 1).any():
        columns += [c for c in SEED_COLUMNS if c in table.columns]
    columns += [c for c in ("n_videos", "status", "note") if c in table.columns]
    shared = shared_provenance(table)
    caption = "; ".join(
        f"{label}: {shared[column]}" for label, column, _ in PROVENANCE if column in shared
    )
    head = "".join(f"<th>{esc(c)}</th>" for c in columns) + "<th>provenance</th>"
    rows = []
    for record in table.to_dict("records"):
        cells = []
        for column in columns:
            value = record.get(column)
            if column in NUMBER_COLUMNS:
                cells.append(f'<td class="num">{esc(fmt(value))}</td>')
            else:
                css = "key" if column in KEY_COLUMNS else column
                css += " status" if column == "status" else ""
                text = fmt(value) if _present(value) else ""
                cells.append(f'<td class="{css}">{esc(text)}</td>')
        short, full = provenance(record, skip=shared)
        cells.append(f'<td class="prov" title="{esc(full)}">{esc(short)}</td>')
        status = str(record.get("status") or "").replace(" ", "-")
        rows.append(f'<tr class="{esc(status)}">{"".join(cells)}</tr>')
    caption_html = f'<caption class="meta">{esc(caption)}</caption>' if caption else ""
    return (
        f'<table class="results">{caption_html}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# ----------------------------------------------------------------------------- paper shape

# which way is better per metric (the papers' arrows); a metric not here has no "best" marked
# (parameter and FLOP counts, unknown columns)
LOWER_IS_BETTER = frozenset({"L1", "AKD", "MKR", "AED", "LPIPS"})
HIGHER_IS_BETTER = frozenset({"PSNR", "SSIM", "pref_pct"})
RANKED = frozenset({"measured", "deviates"})  # statuses whose value can be the best
WIDE_KEYS = ("dataset", "method", "metric", "value")
NO_DATASET = frozenset({"", "-", "None", "nan"})


def better(metric: str) -> str | None:
    """'lower', 'higher' or None (not ranked) for a metric name."""
    if metric in LOWER_IS_BETTER:
        return "lower"
    if metric in HIGHER_IS_BETTER:
        return "higher"
    return None


def _signed(value: Any) -> str:
    text = fmt(value)
    return f"+{text}" if _finite(value) and float(value) > 0 else text


def _best_keys(cells: Mapping[tuple, Mapping[str, Any]], column: str, ranked: bool) -> set:
    """(row, column) keys of the best finite `column` value per table column (ties: all).

    `cells`: (row, (dataset, metric)) -> record. `ranked`: only measured / deviates rows."""
    by_column: dict[tuple, list[tuple[tuple, float]]] = {}
    for key, record in cells.items():
        direction = better(str(key[1][1]))
        value = record.get(column)
        if direction is None or not _finite(value):
            continue
        if ranked and record.get("status") not in RANKED:
            continue
        by_column.setdefault(key[1], []).append((key, float(value)))
    best = set()
    for entries in by_column.values():
        pick = min if better(str(entries[0][0][1][1])) == "lower" else max
        target = pick(v for _, v in entries)
        best.update(k for k, v in entries if v == target)
    return best


class Footnotes:
    """Numbered once per table: the same text gets the same number (first come, first
    numbered); `marks` are the references' labels (1, 2, ... or a, b, ...)."""

    def __init__(self, letters: bool = False) -> None:
        self.texts: dict[str, int] = {}
        self.letters = letters

    def label(self, number: int) -> str:
        if not self.letters:
            return str(number)
        out = ""
        while number:
            number, rest = divmod(number - 1, 26)
            out = chr(ord("a") + rest) + out
        return out

    def ref(self, text: str) -> str:
        """The number's label of `text` (numbering it when new); '' for no text."""
        if not _present(text) or not str(text).strip():
            return ""
        number = self.texts.setdefault(str(text).strip(), len(self.texts) + 1)
        return self.label(number)

    def items(self) -> list[tuple[str, str]]:
        return [(self.label(n), t) for t, n in self.texts.items()]


def _sup(anchor: str, kind: str, label: str) -> str:
    """A superscript reference to footnote `label` of kind 'note' or 'prov' ('' for none)."""
    if not label:
        return ""
    target = f"{anchor}-{kind}-{label}"
    return f'<sup class="{kind}-ref"><a href="#{esc(target)}">{esc(label)}</a></sup>'


def wide_table_html(table: pd.DataFrame, name: str = "table") -> str:
    """The table in the paper's shape: methods as rows, dataset × metric as columns.

    Each cell: our value (bold: the best of its column among measured / deviates rows, by the
    metric's direction; red: deviates) with its 95% interval, then the paper's value (underlined:
    the paper's best of the column) and delta. Notes and the provenance not shared by every row
    are footnotes, each distinct text once per table, referenced by a superscript number
    (notes) or letter (provenance); provenance shared by every row is one line. '' when the
    table lacks dataset, method, metric or value.
    """
    if not set(WIDE_KEYS) <= set(table.columns) or table.empty:
        return ""
    anchor = "".join(c if c.isalnum() else "-" for c in name)
    records = table.to_dict("records")
    columns: list[tuple[str, str]] = []  # (dataset, metric) in first-seen order
    datasets: list[str] = []
    rows: list[str] = []  # method labels in first-seen order ("method (2)" for duplicates)
    cells: dict[tuple[str, tuple[str, str]], dict[str, Any]] = {}
    for record in records:
        dataset, metric = str(record["dataset"]), str(record["metric"])
        column = (dataset, metric)
        if dataset not in datasets:
            datasets.append(dataset)
        if column not in columns:
            columns.append(column)
        method, copy = str(record["method"]), 1
        row = method
        while (row, column) in cells:  # a second row of the same cell: a row of its own
            copy += 1
            row = f"{method} ({copy})"
        if row not in rows:
            rows.append(row)
        cells[(row, column)] = record
    # columns grouped by dataset (in first-seen order), metrics in first-seen order within
    columns = [c for d in datasets for c in columns if c[0] == d]
    best = _best_keys(cells, "value", ranked=True)
    paper_best = _best_keys(cells, "paper_value", ranked=False)
    shared = shared_provenance(table)
    notes, origins = Footnotes(), Footnotes(letters=True)
    shown: dict[str, str] = {}  # a provenance footnote's full text -> its short text

    show_datasets = not all(d in NO_DATASET for d in datasets)
    head = '<th rowspan="2">method</th>' if show_datasets else "<th>method</th>"
    if show_datasets:
        for dataset in datasets:
            span = sum(1 for c in columns if c[0] == dataset)
            label = "" if dataset in NO_DATASET else dataset
            head += f'<th colspan="{span}" class="dataset">{esc(label)}</th>'
        head += "</tr><tr>"
    for _, metric in columns:
        arrow = {"lower": " ↓", "higher": " ↑"}.get(better(metric) or "", "")
        head += f'<th class="metric">{esc(metric + arrow)}</th>'

    body = []
    for row in rows:
        tds = [f'<th class="method" scope="row">{esc(row)}</th>']
        for column in columns:
            record = cells.get((row, column))
            if record is None:
                tds.append('<td class="cell empty"></td>')
                continue
            status = str(record.get("status") or "")
            css = ["cell", status.replace(" ", "-")] if status else ["cell"]
            value, low, high = (record.get(k) for k in ("value", "ci_low", "ci_high"))
            if _finite(value):
                ours = f'<span class="ours">{esc(fmt(value))}</span>'
                if (row, column) in best:
                    css.append("best")
                    ours = f"<b>{ours}</b>"
                if status == "deviates":  # not the preset's setup: never read as measured
                    ours += '<span class="dagger" title="deviates">†</span>'
            else:
                ours = '<span class="ours">–</span>'
            if status and status not in RANKED:
                ours += f' <span class="status">{esc(status)}</span>'
            ours += _sup(anchor, "note", notes.ref(record.get("note")))
            short, full = provenance(record, skip=shared)
            ours += _sup(anchor, "prov", origins.ref(full))
            shown.setdefault(full.strip(), short)
            lines = [f'<div class="ours-line">{ours}</div>']
            if _finite(value) and _finite(low) and _finite(high):
                lines.append(f'<div class="ci">[{esc(fmt(low))}, {esc(fmt(high))}]</div>')
            paper = record.get("paper_value")
            if _finite(paper):
                paper_text = esc(fmt(paper))
                if (row, column) in paper_best:
                    paper_text = f'<u class="paper-best">{paper_text}</u>'
                delta = record.get("delta")
                delta_html = (
                    f' <span class="delta">Δ {esc(_signed(delta))}</span>' if _finite(delta) else ""
                )
                lines.append(f'<div class="paper-line">paper {paper_text}{delta_html}</div>')
            title = [f"{row}, {column[0]} {column[1]}"]
            for key in ("n_videos", "n_frames", "n_seeds", "seed_std"):
                if _finite(record.get(key)):
                    title.append(f"{key} {fmt(record.get(key))}")
            tds.append(
                f'<td class="{esc(" ".join(css))}" title="{esc("; ".join(title))}">'
                f"{''.join(lines)}</td>"
            )
        body.append(f"<tr>{''.join(tds)}</tr>")

    statuses = {str(r.get("status")) for r in records}
    has_ci = any(_finite(r.get("ci_low")) and _finite(r.get("ci_high")) for r in records)
    legend = [
        "methods as rows, " + ("dataset × metric" if show_datasets else "metrics") + " as columns",
        "ours"
        + (" with its 95% bootstrap interval [low, high] over test videos" if has_ci else "")
        + (
            ", then the paper's value and Δ = ours − paper"
            if any(_finite(r.get("paper_value")) for r in records)
            else ""
        ),
    ]
    if best:
        legend.append(
            "bold: the best of a column among measured rows (↓ lower, ↑ higher is better)"
        )
    if paper_best:
        legend.append("underlined: the paper's best")
    if "deviates" in statuses:
        legend.append("† and red: deviates (a number, but not from the preset's setup)")
    if notes.texts or origins.texts:
        legend.append("superscripts: footnotes below")
    foot = [f'<p class="meta legend">{esc("; ".join(legend))}</p>']
    if notes.texts:
        foot.append('<ol class="footnotes notes">')
        foot += [
            f'<li id="{anchor}-note-{esc(label)}" value="{esc(label)}">{esc(text)}</li>'
            for label, text in notes.items()
        ]
        foot.append("</ol>")
    origin_lines = [f"{label}: {shared[col]}" for label, col, _ in PROVENANCE if col in shared]
    if origin_lines:
        foot.append(
            f'<p class="meta provenance">provenance of every row: {esc("; ".join(origin_lines))}</p>'
        )
    if origins.texts:
        foot.append('<ul class="footnotes provenance">')
        foot += [
            f'<li id="{anchor}-prov-{esc(label)}" title="{esc(text)}"><sup>{esc(label)}</sup> '
            f"{esc(shown.get(text) or text)}</li>"
            for label, text in origins.items()
        ]
        foot.append("</ul>")
    return (
        f'<div class="scroll"><table class="paper-shape"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{''.join(foot)}"
    )


def table_charts(table: pd.DataFrame) -> list[str]:
    """Bar charts of measured vs paper values, one per (dataset, metric) with any number."""
    needed = {"dataset", "method", "metric", "value", "paper_value"}
    if not needed <= set(table.columns):
        return []
    charts = []
    for (dataset, metric), group in table.groupby(["dataset", "metric"], sort=False):
        if not (group["value"].map(_finite).any() or group["paper_value"].map(_finite).any()):
            continue
        title = f"{metric}" if str(dataset) in ("-", "") else f"{dataset}: {metric}"
        statuses = group["status"] if "status" in group else [None] * len(group)
        # a deviating bar must not read as the method's number
        labels = [
            f"{m} (deviates)" if status == "deviates" else str(m)
            for m, status in zip(group["method"], statuses)
        ]
        intervals = None
        if {"ci_low", "ci_high"} <= set(group.columns):  # tables from before issue 17 lack them
            intervals = {"measured": list(zip(group["ci_low"], group["ci_high"]))}
        charts.append(
            svg_bar_chart(
                title,
                labels,
                {"measured": list(group["value"]), "paper": list(group["paper_value"])},
                intervals=intervals,
            )
        )
    return charts


def table_files(results: Path) -> list[Path]:
    """The main tables (present or not) and every other *table*.parquet present."""
    others = sorted(p for p in results.glob("*table*.parquet") if p.name not in MAIN_TABLES)
    return [results / name for name in MAIN_TABLES] + others


def table_section(path: Path) -> str:
    title = f"<h3>{esc(path.stem)}</h3>"
    if not path.is_file():
        return title + missing_note(path.stem, path)
    try:
        table = pd.read_parquet(path)
    except READ_ERRORS as exc:
        return title + error_note(path, exc)
    meta = [f"{len(table)} rows"]
    if "status" in table.columns:
        counts = table["status"].value_counts()
        meta.append(", ".join(f"{count} {status}" for status, count in counts.items()))
    if "paper" in table.columns and len(table):
        meta.insert(0, "paper " + ", ".join(sorted(map(str, table["paper"].dropna().unique()))))
    charts = table_charts(table)
    chart_html = f'<div class="grid">{"".join(charts)}</div>' if charts else ""
    wide = wide_table_html(table, path.stem)
    long_html = table_html(table)
    if wide:  # the long format below, for those who want it
        long_html = (
            '<details class="long-format"><summary>long format: one row per (dataset, method, '
            f"metric), with each row's note and provenance</summary>{long_html}</details>"
        )
    return (
        f'{title}<p class="meta">{esc("; ".join(meta))}</p>{wide}'
        f"<details open><summary>charts: measured vs paper</summary>{chart_html or '–'}"
        f"</details>{long_html}"
    )


PAIR_COLUMNS = (
    "dataset",
    "metric",
    "method_a",
    "method_b",
    "n_videos",
    "value_a",
    "value_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_value",
)
SIGNIFICANCE = 0.05  # pairs below this p-value are shown in bold


def pairs_section(results: Path) -> str:
    """pairs.parquet as a table: each pair's mean difference a − b over shared test videos,
    its 95% interval and p-value; pairs with p < SIGNIFICANCE in bold."""
    path = results / "pairs.parquet"
    if not path.is_file():
        return missing_note("pairs", path)
    try:
        table = pd.read_parquet(path)
    except READ_ERRORS as exc:
        return error_note(path, exc)
    columns = [c for c in PAIR_COLUMNS if c in table.columns]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    rows = []
    for record in table.to_dict("records"):
        cells = "".join(
            f'<td class="num">{esc(fmt(record.get(c)))}</td>'
            if c in PAIR_COLUMNS[4:]  # n_videos onwards are numbers
            else f'<td class="key">{esc(fmt(record.get(c)))}</td>'
            for c in columns
        )
        p_value = record.get("p_value")
        css = ' class="significant"' if _finite(p_value) and p_value < SIGNIFICANCE else ""
        rows.append(f"<tr{css}>{cells}</tr>")
    test = _unique_text(table, "test")
    meta = (
        f"{len(table)} pairs; mean_diff = a − b per video, then averaged over the videos both "
        f"methods have; 95% bootstrap interval; p-value: {test or 'paired test'}; "
        f"bold: p < {SIGNIFICANCE}"
    )
    return (
        f'<p class="meta">{esc(meta)}</p><table class="pairs"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _unique_text(table: pd.DataFrame, column: str) -> str | None:
    if column not in table.columns:
        return None
    values = sorted({str(v) for v in table[column].dropna()})
    return ", ".join(values) or None


# ----------------------------------------------------------------------------- report


def _names(configured: Iterable[str], folder: Path) -> list[str]:
    """Configured names first (in order), then any other sub-folder present."""
    names = list(dict.fromkeys(configured))
    if folder.is_dir():
        names += sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in names)
    return names


def _config_lists(config: Mapping[str, Any] | None) -> tuple[list[str], list[str], list[str]]:
    """(datasets, trained methods, baselines) of the config's benchmark."""
    benchmark = dict((config or {}).get("benchmark") or {})
    return (
        list(benchmark.get("datasets") or []),
        list(benchmark.get("methods") or []),
        list(benchmark.get("baselines") or []),
    )


def _figures_and_notes(figures: list[str], notes: list[str]) -> str:
    """A grid of figures, then the notes on what is missing (so notes never break the grid)."""
    grid = f'<div class="grid">{"".join(figures)}</div>' if figures else ""
    return grid + "".join(notes)


def gif_figure(gif: bytes, caption: str, clip: str) -> str:
    """A sample GIF as a data: URI figure; small clips are shown enlarged."""
    with Image.open(io.BytesIO(gif)) as image:
        width, height = image.size
    zoom = max(1, min(3, math.ceil(GIF_DISPLAY_HEIGHT / height)))
    return (
        f'<figure><img src="{data_uri("image/gif", gif)}" width="{width * zoom}" '
        f'height="{height * zoom}" alt="{esc(caption)}: ground truth and prediction"/>'
        f"<figcaption><b>{esc(caption)}</b><br>ground truth | prediction<br>"
        f"<code>{esc(clip)}</code></figcaption></figure>"
    )


def reconstructions_section(results: Path, datasets: list[str], methods: list[str]) -> str:
    """Per dataset, one GIF per method (ground truth | prediction of the first test clip)."""
    parts = []
    for dataset in _names(datasets, results / "reconstruction"):
        gt_split = results / "data" / dataset / "clips" / "test"
        figures: list[str] = []
        notes: list[str] = []
        if not gt_split.is_dir():
            notes.append(missing_note(f"test clips of {dataset}", gt_split))
        for method in _names(methods, results / "reconstruction" / dataset):
            pred = results / "reconstruction" / dataset / method
            caption = f"{dataset} / {method}"
            if not pred.is_dir():
                notes.append(missing_note(f"reconstruction {caption}", pred))
            elif gt_split.is_dir():
                try:
                    clip, gif = sample_gif(gt_split, pred)
                    figures.append(gif_figure(gif, caption, clip))
                except READ_ERRORS as exc:
                    notes.append(error_note(pred, exc))
        if figures or notes:
            parts.append(f"<h3>{esc(dataset)}</h3>{_figures_and_notes(figures, notes)}")
    return "".join(parts) or missing_note("reconstructions", results / "reconstruction")


def loss_curves(log: Path) -> str:
    """A line chart of one log*.csv: total loss (sum of the terms) and each term per step."""
    frame = pd.read_csv(log)
    if frame.empty or "step" not in frame.columns:
        raise ValueError("no rows with a step column")
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    terms = [
        c
        for c in numeric.columns
        if c not in NOT_LOSS_COLUMNS and not c.startswith("grad_norm") and numeric[c].notna().any()
    ]
    if not terms:
        raise ValueError("no loss columns")
    series = {"total": numeric[terms].sum(axis=1, min_count=1)} if len(terms) > 1 else {}
    series.update({c: numeric[c] for c in terms})
    return svg_line_chart(f"{log.parent.name}: {log.name}", numeric["step"], series)


def training_section(results: Path, datasets: list[str], methods: list[str]) -> str:
    """Per dataset, the loss curves of every run (each log*.csv stage)."""
    parts = []
    for dataset in _names(datasets, results / "runs"):
        charts: list[str] = []
        notes: list[str] = []
        for method in _names(methods, results / "runs" / dataset):
            run = results / "runs" / dataset / method
            logs = sorted(run.glob("log*.csv")) if run.is_dir() else []
            if not logs and (run / "imported.pt").is_file():
                notes.append(
                    f'<p class="meta">{esc(dataset)} / {esc(method)}: a released checkpoint '
                    "(imported.pt), no training log</p>"
                )
            elif not logs:
                notes.append(missing_note(f"training log {dataset}/{method}", run / "log.csv"))
            for log in logs:
                try:
                    chart = loss_curves(log)
                except READ_ERRORS as exc:
                    notes.append(error_note(log, exc))
                    continue
                caption = f"{dataset} / {method} ({log.name})"
                charts.append(f"<figure>{chart}<figcaption>{esc(caption)}</figcaption></figure>")
        if charts or notes:
            parts.append(f"<h3>{esc(dataset)}</h3>{_figures_and_notes(charts, notes)}")
    return "".join(parts) or missing_note("training runs", results / "runs")


def counts_table(counts: pd.Series, index_name: str) -> str:
    rows = "".join(
        f"<tr><td>{esc(k if not isinstance(k, tuple) else ' / '.join(map(str, k)))}</td>"
        f'<td class="num">{esc(fmt(int(v)))}</td></tr>'
        for k, v in counts.items()
    )
    return f"<table><tr><th>{esc(index_name)}</th><th>count</th></tr>{rows}</table>"


def real_dataset_summary(root: Path) -> str:
    parts = []
    availability = root / "availability.parquet"
    if availability.is_file():
        try:
            table = pd.read_parquet(availability)
            parts.append(f"<h4>downloads: {len(table)} sources</h4>")
            parts.append(counts_table(table["status"].value_counts(), "status"))
            if "error_class" in table.columns:
                failed = table.loc[table["status"] != "ok", "error_class"].replace("", pd.NA)
                if failed.notna().any():
                    parts.append(counts_table(failed.value_counts().head(10), "error class"))
        except READ_ERRORS as exc:
            parts.append(error_note(availability, exc))
    else:
        parts.append(missing_note("availability.parquet", availability))
    clips = root / "clips.parquet"
    if clips.is_file():
        try:
            table = pd.read_parquet(clips)
            keys = [c for c in ("partition", "status") if c in table.columns]
            parts.append(f"<h4>clips: {len(table)} expected</h4>")
            parts.append(counts_table(table.groupby(keys).size(), " / ".join(keys)))
        except READ_ERRORS as exc:
            parts.append(error_note(clips, exc))
    else:
        parts.append(missing_note("clips.parquet", clips))
    return "".join(parts)


def synthetic_dataset_summary(root: Path) -> str:
    clips = root / "clips"
    if not clips.is_dir():
        return missing_note("synthetic clips", clips)
    counts = {}
    for split in ("train", "test"):
        try:
            counts[split] = len(list_clips(clips / split))
        except READ_ERRORS:
            counts[split] = 0
    return counts_table(pd.Series(counts), "split")


def datasets_section(results: Path, config: Mapping[str, Any] | None, datasets: list[str]) -> str:
    specs = dict((config or {}).get("datasets") or {})
    parts = []
    for dataset in _names(datasets, results / "data"):
        root = results / "data" / dataset
        source = (specs.get(dataset) or {}).get("source")
        if source is None:  # not in the config: tell by what is on disk
            source = "synthetic" if not (root / "clips.parquet").exists() else "real"
        body = (
            synthetic_dataset_summary(root) if source == "synthetic" else real_dataset_summary(root)
        )
        parts.append(f'<div><h3>{esc(dataset)} <span class="meta">({esc(source)})</span></h3>')
        parts.append(f"{body}</div>")
    return (
        f'<div class="grid">{"".join(parts)}</div>'
        if parts
        else missing_note("datasets", results / "data")
    )


def render_report(results: Path, config: Mapping[str, Any] | None = None) -> str:
    """The report's HTML text from what `results` holds now."""
    datasets, methods, baselines = _config_lists(config)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sections = [
        ("tables", "Tables beside the papers", "".join(map(table_section, table_files(results)))),
        ("pairs", "Paired comparisons", pairs_section(results)),
        (
            "reconstructions",
            "Sample reconstructions",
            reconstructions_section(results, datasets, methods + baselines),
        ),
        ("training", "Training curves", training_section(results, datasets, methods)),
        ("datasets", "Datasets", datasets_section(results, config, datasets)),
    ]
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<h2 id="{key}">{esc(title)}</h2>{html}' for key, title, html in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>animbench report</title><style>{CSS}</style></head><body>"
        f'<h1>animbench report</h1><p class="meta">results <code>{esc(results)}</code>; '
        f"animbench {esc(animbench.__version__)}; written {esc(created)}</p>"
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )


def build_report(results: str | Path, config: Mapping[str, Any] | None, out: str | Path) -> Path:
    """Write the self-contained HTML report of `results` to `out` (atomically).

    `config`: the (validated) config or the part of it the report reads: `benchmark`
    (datasets, methods, baselines: what is expected, shown as "not produced yet" when absent)
    and `datasets.<name>.source` (synthetic or real summary). None: only what is on disk.
    """
    results = Path(results)
    return write_text_atomic(Path(out), render_report(results, config))
