"""The page: the reconstructions, training-curve and dataset sections, and the one
self-contained HTML file around every section, its CSS (`style.css`, a package resource)
inline."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

import animbench
from animbench.data.video import list_clips
from animbench.report.charts import svg_line_chart
from animbench.report.gifs import gif_figure, sample_gif
from animbench.report.markup import READ_ERRORS, error_note, esc, fmt, missing_note
from animbench.report.tables import pairs_section, table_files, table_section

# log.csv columns that index or describe a step rather than measure a loss term
NOT_LOSS_COLUMNS = frozenset({"step", "epoch", "seconds", "lr", "samples_per_s"})


def stylesheet() -> str:
    """The page's CSS: the package resource style.css, inlined in the page's <style>."""
    return resources.files("animbench.report").joinpath("style.css").read_text(encoding="utf-8")


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
        f"<title>animbench report</title><style>\n{stylesheet()}</style></head><body>"
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
