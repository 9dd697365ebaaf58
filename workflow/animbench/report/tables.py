"""The results tables and paired comparisons as HTML: each `*table*.parquet` in the paper's
shape (methods as rows, dataset × metric as columns, notes and provenance as footnotes), its
bar charts and its long format; `pairs.parquet` as a table of mean differences."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from animbench import stats
from animbench.report.charts import svg_bar_chart
from animbench.report.markup import (
    READ_ERRORS,
    error_note,
    esc,
    fmt,
    is_finite,
    missing_note,
)
from animbench.stats import LOWER_IS_BETTER

# the order tables appear in; any other results/*table*.parquet follows, by name
MAIN_TABLES = ("table2.parquet", "table1.parquet")
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


# which way is better per metric (the papers' arrows; lower: stats.LOWER_IS_BETTER); a metric
# in neither has no "best" marked (parameter and FLOP counts, unknown columns)
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
    return f"+{text}" if is_finite(value) and float(value) > 0 else text


def _best_keys(cells: Mapping[tuple, Mapping[str, Any]], column: str, ranked: bool) -> set:
    """(row, column) keys of the best is_finite `column` value per table column (ties: all).

    `cells`: (row, (dataset, metric)) -> record. `ranked`: only measured / deviates rows."""
    by_column: dict[tuple, list[tuple[tuple, float]]] = {}
    for key, record in cells.items():
        direction = better(str(key[1][1]))
        value = record.get(column)
        if direction is None or not is_finite(value):
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
            if is_finite(value):
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
            if is_finite(value) and is_finite(low) and is_finite(high):
                lines.append(f'<div class="ci">[{esc(fmt(low))}, {esc(fmt(high))}]</div>')
            paper = record.get("paper_value")
            if is_finite(paper):
                paper_text = esc(fmt(paper))
                if (row, column) in paper_best:
                    paper_text = f'<u class="paper-best">{paper_text}</u>'
                delta = record.get("delta")
                delta_html = (
                    f' <span class="delta">Δ {esc(_signed(delta))}</span>'
                    if is_finite(delta)
                    else ""
                )
                lines.append(f'<div class="paper-line">paper {paper_text}{delta_html}</div>')
            title = [f"{row}, {column[0]} {column[1]}"]
            for key in ("n_videos", "n_frames", "n_seeds", "seed_std"):
                if is_finite(record.get(key)):
                    title.append(f"{key} {fmt(record.get(key))}")
            tds.append(
                f'<td class="{esc(" ".join(css))}" title="{esc("; ".join(title))}">'
                f"{''.join(lines)}</td>"
            )
        body.append(f"<tr>{''.join(tds)}</tr>")

    statuses = {str(r.get("status")) for r in records}
    has_ci = any(is_finite(r.get("ci_low")) and is_finite(r.get("ci_high")) for r in records)
    legend = [
        "methods as rows, " + ("dataset × metric" if show_datasets else "metrics") + " as columns",
        "ours"
        + (" with its 95% bootstrap interval [low, high] over test videos" if has_ci else "")
        + (
            ", then the paper's value and Δ = ours − paper"
            if any(is_finite(r.get("paper_value")) for r in records)
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
        if not (group["value"].map(is_finite).any() or group["paper_value"].map(is_finite).any()):
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


# pairs.parquet's columns shown, in stats' order: all but the methods' config keys (the
# method_a/method_b labels stand for them) and the test (in the caption), note and config hash
PAIR_COLUMNS = tuple(
    c for c in stats.PAIR_COLUMNS if c not in {"key_a", "key_b", "test", "note", "config_hash"}
)
PAIR_NUMBERS = frozenset(stats.PAIR_INTS + stats.PAIR_FLOATS)
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
            if c in PAIR_NUMBERS
            else f'<td class="key">{esc(fmt(record.get(c)))}</td>'
            for c in columns
        )
        p_value = record.get("p_value")
        css = ' class="significant"' if is_finite(p_value) and p_value < SIGNIFICANCE else ""
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
