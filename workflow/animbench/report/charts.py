"""The report's charts as inline SVG drawn here (no JavaScript, no library): bar charts of
measured vs paper values with 95% interval error bars, and line charts of training losses."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from animbench.report.markup import esc, fmt, is_finite

CURVE_POINTS = 300  # points per training curve line at most (bin means beyond)
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
    values = [[float(v) if is_finite(v) else math.nan for v in series[n]] for n in names]
    bounds = [
        [
            (float(lo), float(hi)) if is_finite(lo) and is_finite(hi) else None
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
