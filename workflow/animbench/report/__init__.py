"""`results/report.html`: one self-contained page of a benchmark's results.

Everything is inline, so the file can be mailed or archived alone and opened offline: CSS in a
`<style>` element (read from the package resource `style.css`), charts as inline SVG drawn here
(no JavaScript at all), animations as GIF `data:` URIs. No element refers to anything outside
the file.

Modules: `markup` (escaping, number formatting, the notes for absent or unreadable inputs),
`charts` (the SVG charts), `gifs` (the sample GIFs), `tables` (results tables and paired
comparisons as HTML), `page` (the other sections and the page around them: `build_report`).

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

from animbench.report.charts import (
    CURVE_POINTS,
    downsample,
    nice_ticks,
    svg_bar_chart,
    svg_line_chart,
)
from animbench.report.gifs import (
    GIF_COLORS,
    GIF_MAX_BYTES,
    GIF_MAX_FRAMES,
    GIF_PANEL,
    gif_strip,
    sample_gif,
    sample_indices,
)
from animbench.report.markup import READ_ERRORS, esc, fmt
from animbench.report.page import build_report, render_report
from animbench.report.tables import table_html, wide_table_html

__all__ = [
    "CURVE_POINTS",
    "GIF_COLORS",
    "GIF_MAX_BYTES",
    "GIF_MAX_FRAMES",
    "GIF_PANEL",
    "READ_ERRORS",
    "build_report",
    "downsample",
    "esc",
    "fmt",
    "gif_strip",
    "nice_ticks",
    "render_report",
    "sample_gif",
    "sample_indices",
    "svg_bar_chart",
    "svg_line_chart",
    "table_html",
    "wide_table_html",
]
