"""Results tables beside the papers' numbers (DESIGN.md §5).

Long format: one row per (paper, table, dataset, method, metric) with our `value`, the paper's
`paper_value`, `delta = value − paper_value`, a bootstrap 95% interval over test videos
(`ci_low`, `ci_high`; animbench.stats), the training seeds the value is the mean of (`n_seeds`)
and their std (`seed_std`; NaN for one seed), how many videos/frames the value rests on, a
`status` (measured / deviates / not run / not implemented / not computed / missing / not available) and
a `note` saying why a value is absent or how comparable it is, plus provenance: git commit,
config hash, the checkpoint's sha256 (reconstruct.json, via the metrics files) and each
detector's name, version and weights sha256 (the metrics files); a measured row lacking any of
them says so in its note. Values are never invented: a value is NaN unless it was measured (or,
for a parameter count, counted) in this run.

Tables: table2 (MTIA Table 2) here, table1 (MTIA Table 1, model capacity) in animbench.capacity
(write_table1, re-exported); every other paper table (MTIA 4-6, FOMM 1 and 3, CPAB 1 and 2) is
a config `paper_tables` entry written by write_paper_table. The columns, the papers' numbers and
the provenance every table shares: animbench.table_rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from animbench.capacity import (  # noqa: F401  (tables.<name>: table1 and the counts)
    count_parameters,
    preset_parameters,
    write_table1,
)
from animbench.errors import ConfigError
from animbench.evaluate.metrics import aggregate, read_metrics
from animbench.models.names import (  # noqa: F401  (tables.<name>: the row labels)
    display_name,
    entry_model,
    method_name,
    not_implemented_note,
    preset_model,
)
from animbench.models.registry import PLANNED, is_implemented  # noqa: F401  (tables.PLANNED)
from animbench.stats import metric_ci, read_seed_metrics, seed_aggregate
from animbench.table_rows import (  # noqa: F401  (tables.COLUMNS, tables.paper_values: tests)
    COLUMNS,
    MTIA,
    PROVENANCE_COLUMNS,
    blank_row,
    finish_table,
    paper_lookup,
    paper_values,
    provenance,
)

METRICS = ("L1", "AKD", "MKR", "AED")  # the papers' column order

# Per-frame image metrics the papers do not report (evaluate/image_metrics.py): a dataset's
# table rows get all three, after the papers' metrics, once any of its metrics files has one.
EXTRA_METRICS = ("PSNR", "SSIM", "LPIPS")

PARAMS = "params_M"  # a paper table's parameter column (MTIA Table 5), millions

TABLE2_METHODS = ["fomm", "mraa", "mtia"]  # MTIA's Table 2, in the paper's order


def _unique(series: pd.Series | None) -> str | None:
    if series is None:
        return None
    values = sorted({str(v) for v in series.dropna()})
    return ", ".join(values) if values else None


def _detector_label(group: pd.DataFrame, prefix: str) -> str | None:
    """'name version (sha256 abcdef123456)' of the detector a group used, or None."""
    cols = {
        "keypoint": ("keypoint_detector", "keypoint_detector_version", "keypoint_weights_sha256"),
        "identity": ("identity_embedder", "identity_embedder_version", "identity_weights_sha256"),
    }[prefix]
    if cols[0] not in group.columns:
        return None
    labels = set()
    for values in group[[c for c in cols if c in group.columns]].itertuples(index=False):
        name = values[0]
        if name is None or pd.isna(name):
            continue
        label = str(name)
        if len(values) > 1 and values[1] is not None and not pd.isna(values[1]):
            label += f" {values[1]}"
        if len(values) > 2 and values[2] is not None and not pd.isna(values[2]):
            label += f" (sha256 {str(values[2])[:12]})"
        labels.add(label)
    return ", ".join(sorted(labels)) or None


def _missing_provenance(row: dict[str, Any], metric: str, baseline: bool) -> list[str]:
    """Notes naming the provenance a measured row lacks, and why it can be absent."""
    notes = []
    if row.get("checkpoint_sha256") is None and row.get("predictions_sha256"):
        notes.append(
            "predictions made elsewhere, no checkpoint: the predictions folder's sha256 is "
            + str(row["predictions_sha256"])[:12]
        )
    elif row.get("checkpoint_sha256") is None:
        notes.append(
            "no checkpoint (a baseline without a model)"
            if baseline
            else "checkpoint sha256 not recorded (reconstruct.json has none)"
        )
    kind = {"AKD": "keypoint", "MKR": "keypoint", "AED": "identity"}.get(metric)
    if kind:
        name = row.get("keypoint_detector" if kind == "keypoint" else "identity_embedder")
        prefix = "keypoint_detector" if kind == "keypoint" else "identity_embedder"
        weights = "keypoint_weights_sha256" if kind == "keypoint" else "identity_weights_sha256"
        if name is None:
            notes.append(f"{kind} detector not recorded in the metrics")
        else:
            if row.get(f"{prefix}_version") is None:
                notes.append(f"{kind} detector {name}: version not recorded")
            if row.get(weights) is None:
                notes.append(
                    f"{kind} detector {name}: no weights sha256 recorded (a detector without "
                    "weights, e.g. a synthetic one, has none)"
                )
    return notes


def _measure(
    row: dict[str, Any],
    group: pd.DataFrame | None,
    agg: dict[str, tuple[float, int, int]],
    metric: str,
    paper_name: str | None,
    notes: list[str],
    baseline: bool = False,
    seeds: Mapping[str, tuple[int, float, dict[str, float]]] | None = None,
) -> bool:
    """Fill a row from one (dataset, method)'s metrics: value, counts, delta, provenance and
    comparability notes ("measured"; "deviates" when the checkpoint's training departed from
    its preset, e.g. random pretrained weights), or "not computed" when the run lacks the metric's
    backend. False when there are no metrics at all. Provenance a measured row lacks is
    named in its note. `seeds` (stats.seed_aggregate): metric -> (n_seeds, std, per-seed
    values) when the value is a mean over training seeds."""
    if group is None:
        return False
    for column in PROVENANCE_COLUMNS:
        row[column] = _unique(group.get(column))
    labels = [
        f"{kind}: {label}"
        for kind in ("keypoint", "identity")
        if (label := _detector_label(group, kind))
    ]
    row["detector_versions"] = "; ".join(labels) or None
    if metric in agg:
        value, n_videos, n_frames = agg[metric]
        row.update(value=value, n_videos=n_videos, n_frames=n_frames)
        row["ci_low"], row["ci_high"] = metric_ci(group, metric)
        n_seeds, seed_std, per_seed = (seeds or {}).get(metric, (1, np.nan, {}))
        row.update(n_seeds=n_seeds, seed_std=seed_std)
        if n_seeds > 1:
            values = ", ".join(f"seed {k}: {v:.4g}" for k, v in per_seed.items())
            notes.append(f"mean ± std over {n_seeds} training seeds ({values})")
        row["status"] = "measured"
        row["delta"] = value - row["paper_value"]
        if metric not in ("L1", *EXTRA_METRICS) and paper_name:
            kind = "keypoint" if metric in ("AKD", "MKR") else "identity"
            label = _detector_label(group, kind) or "an unnamed detector"
            notes.append(
                f"{metric} uses {label}: protocol-compatible, not identical to the "
                "paper's detectors"
            )
        if metric == "AKD" and "akd_skipped" in group:
            # AKD averages the frames with keypoints in both; frames the detector lost in the
            # prediction are not in it, so say how many (a blurred model can lose many)
            skipped = int(group["akd_skipped"].fillna(0).sum())
            if skipped:
                total = int(group["n_frames"].sum())
                notes.append(
                    f"AKD over {total - skipped} of {total} frames: no keypoints detected in "
                    f"both ground truth and prediction in {skipped} ({skipped / total:.0%})"
                )
        warnings = _unique(group.get("warnings"))
        if warnings:
            notes.append(f"reconstruction warnings: {warnings}")
        # a model not trained as its preset says (random weights in place of a pretrained
        # file): measured, but not the preset's number
        deviations = _unique(group.get("deviations"))
        if deviations:
            row["status"] = "deviates"
            notes.append(f"training deviates from the preset: {deviations}")
        if "training_precision" in group and (group["training_precision"] == "bf16").any():
            notes.append("trained with bf16 autocast (the authors trained in fp32)")
        notes.extend(_missing_provenance(row, metric, baseline))
    elif metric in EXTRA_METRICS:
        row["status"] = "not computed"
        notes.append(
            f"{metric} was not computed in this run (frames.parquet of the reconstruction has "
            "no values: LPIPS weights unavailable, or a reconstruction from before PSNR/SSIM/LPIPS)"
        )
    else:
        row["status"] = "not computed"
        backend = "keypoint detector" if metric in ("AKD", "MKR") else "identity embedder"
        notes.append(f"{metric} was not computed in this run (no {backend} configured)")
    return True


def _groups(df: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    return {key: g for key, g in df.groupby(["dataset", "method"], sort=False)} if len(df) else {}


def _extras(groups: Mapping[tuple[str, str], pd.DataFrame], dataset: str) -> list[str]:
    """EXTRA_METRICS when any metrics file of the dataset has one of them, else none (runs
    from before them keep their tables)."""
    measured = {m for (d, _), g in groups.items() if d == dataset for m in aggregate(g)}
    return list(EXTRA_METRICS) if measured & set(EXTRA_METRICS) else []


def _check_metrics(where: str, dataset: str, wanted: Sequence[str]) -> None:
    unknown = [m for m in wanted if m not in METRICS + EXTRA_METRICS]
    if unknown:
        raise ConfigError(f"{where}.datasets.{dataset}.metrics: unknown metric {unknown[0]}")


def _unmeasured(
    row: dict,
    notes: list[str],
    model: str | None,
    in_run: bool,
    label: str,
    dataset: str,
    method: str,
) -> None:
    """Status and note of a row without a measurement: why there is no number. `model` None:
    a submission (predictions made elsewhere), `in_run` then whether it has the dataset's."""
    if model is not None and not is_implemented(model):
        row["status"], note = "not implemented", not_implemented_note(model)
    elif not in_run:
        row["status"] = "not run"
        note = (
            f"{label} is not part of this run"
            if model is not None
            else f"submission {label} has no predictions for {dataset}"
        )
    else:
        row["status"], note = "missing", f"no metrics file for {dataset}/{method} was given"
    notes.append(note)


def _finish_row(
    row: dict, notes: list[str], metric: str, label: str, paper_name, paper_value: float
) -> None:
    """Add the note on the paper value and join the row's notes."""
    if not paper_name:
        notes.append("synthetic dataset: no paper value")
    elif np.isnan(paper_value):
        notes.append(f"the paper reports no {metric} for {label} on {paper_name}")
    row["note"] = "; ".join(notes)


def write_table2(
    metrics: Sequence[str | Path],
    spec: dict,
    out: str | Path,
    seed_metrics: Mapping[str, Sequence[str | Path]] | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """MTIA's Table 2 (paper mtia_eccv2022, table2) from per-video metrics files.

    Rows: every spec dataset × (FOMM, MRAA, MTIA ∪ spec methods ∪ baselines ∪ measured) × the
    dataset's metrics, then PSNR, SSIM and LPIPS where the dataset's metrics files have them.
    Dataset and method come from the metrics rows, not the file names.
    `spec` = {"datasets": {name: {"paper_name": str|None, "metrics": [...]}}, "methods": [...],
    "baselines": [...], "entries": {method: its config `methods` entry}, "submissions": {key:
    {"name", "datasets"}}, "config_hash": str}; an entry gives a variant key its row label
    (`name`) and model (from its presets); a submission (predictions made elsewhere) its label.
    `seed_metrics` maps further training seeds to their metrics files (`metrics` are seed
    `seed`'s): a method's value is then the mean over its seeds, with n_seeds and seed_std.
    """
    datasets = spec.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError("table2.datasets: expected a non-empty mapping of datasets")
    run_methods = list(spec.get("methods") or [])
    baselines = list(spec.get("baselines") or [])
    entries = dict(spec.get("entries") or {})
    submissions = dict(spec.get("submissions") or {})  # {key: {"name", "datasets"}}
    df = read_seed_metrics(metrics, seed_metrics, seed)
    groups = _groups(df)
    measured_methods = [m for _, m in groups]
    methods = list(
        dict.fromkeys(
            TABLE2_METHODS + run_methods + baselines + list(submissions) + measured_methods
        )
    )
    paper = paper_lookup(MTIA, "table2")
    prov = provenance(spec.get("config_hash"))

    rows: list[dict[str, Any]] = []
    for dataset, dspec in datasets.items():
        dspec = dspec or {}
        paper_name = dspec.get("paper_name")
        wanted = list(dspec.get("metrics") or ["L1"])
        _check_metrics("table2", dataset, wanted)
        wanted += [m for m in _extras(groups, dataset) if m not in wanted]
        for method in methods:
            display = display_name(method, entries.get(method) or submissions.get(method))
            group = groups.get((dataset, method))
            agg, seeds = seed_aggregate(group) if group is not None else ({}, {})
            for metric in wanted:
                paper_value = (
                    paper.get((paper_name, display, metric), np.nan) if paper_name else np.nan
                )
                row = blank_row("table2", dataset, paper_name, display, metric, paper_value, prov)
                notes: list[str] = []
                if not _measure(
                    row,
                    group,
                    agg,
                    metric,
                    paper_name,
                    notes,
                    baseline=method in baselines,
                    seeds=seeds,
                ):
                    if method in submissions:
                        submitted = dataset in (submissions[method].get("datasets") or [])
                        _unmeasured(row, notes, None, submitted, display, dataset, method)
                    else:
                        model = entry_model(method, entries.get(method), dataset)
                        in_run = method in run_methods + baselines
                        _unmeasured(row, notes, model, in_run, display, dataset, method)
                _finish_row(row, notes, metric, display, paper_name, paper_value)
                rows.append(row)
    return finish_table(rows, out)


def _count_params(
    row: dict[str, Any], notes: list[str], preset: str, entry: Mapping, networks: Sequence[str]
) -> None:
    """A params_M row: the preset's parameter count (no training needed), or why there is none."""
    model = preset_model(preset)
    if not is_implemented(model):
        row["status"] = "not implemented"
        notes.append(not_implemented_note(model))
        return
    total, frozen = preset_parameters(preset, entry.get("overrides"), networks)
    value = total / 1e6
    row.update(value=value, delta=value - row["paper_value"], status="measured")
    notes.append(
        f"parameters of {'+'.join(networks)} counted on the preset"
        + (" with the entry's overrides" if entry.get("overrides") else "")
        + f" (untrained): {total:,}, trainable and frozen, buffers excluded (as table1)"
    )
    if frozen:
        notes.append(f"{frozen:,} of them frozen; trainable only: {(total - frozen) / 1e6:.3f}M")


def write_paper_table(metrics: Sequence[str | Path], spec: dict, out: str | Path) -> pd.DataFrame:
    """A paper's results table (config `paper_tables`) from per-video metrics files.

    `spec` (config.paper_table_spec) = {"name", "paper", "table", "datasets": {name:
    {"paper_name", "metrics"}}, "rows": [{"label", "method", "note", "entry"}], "unavailable":
    {paper dataset: reason}, "param_networks": [...], "config_hash"}.
    Each row is labelled as in the paper; its `method` is a config methods entry (its `entry`
    gives presets, overrides and display name) or None for a paper method animbench does not
    have (status "not available", `note` says why). A (row, dataset) is listed when the paper
    reports it or the entry has a preset for the dataset; metrics are the dataset's configured
    ones plus any the paper reports, in the paper's order (mgif: L1 only), then PSNR, SSIM
    and LPIPS where the dataset's metrics files have them. With
    `param_networks`, a `params_M` row first: those networks' parameters on the row's preset
    (MTIA Table 5). Paper datasets animbench does not have (`unavailable`, e.g. FOMM's Nemo and
    BAIR) come last: every number the paper reports there, "not available" with the reason.
    """
    where = f"paper_tables.{spec.get('name') or '?'}"
    datasets = spec.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError(f"{where}.datasets: expected a non-empty mapping of datasets")
    table_rows = spec.get("rows")
    if not isinstance(table_rows, list) or not table_rows:
        raise ConfigError(f"{where}.rows: expected a non-empty list of rows")
    paper_key, table_key = spec.get("paper"), spec.get("table")
    paper = paper_lookup(str(paper_key), str(table_key))
    if not paper:
        raise ConfigError(f"{where}: paper_tables.csv has no table {table_key} of {paper_key}")
    unavailable = dict(spec.get("unavailable") or {})
    param_networks = list(spec.get("param_networks") or [])
    columns = ([PARAMS] if param_networks else []) + list(METRICS)
    groups = _groups(read_metrics(metrics))
    prov = provenance(spec.get("config_hash"))

    def blank(dataset: str, paper_name, label: str, metric: str) -> dict[str, Any]:
        paper_value = paper.get((paper_name, label, metric), np.nan)
        return blank_row(
            str(table_key), dataset, paper_name, label, metric, paper_value, prov, str(paper_key)
        )

    rows: list[dict[str, Any]] = []
    for dataset, dspec in datasets.items():
        dspec = dspec or {}
        paper_name = dspec.get("paper_name")
        configured = list(dspec.get("metrics") or ["L1"])
        _check_metrics(where, dataset, configured)
        configured += [PARAMS] if param_networks else []
        extras = [m for m in EXTRA_METRICS if m in configured or m in _extras(groups, dataset)]
        for trow in table_rows:
            label, method = str(trow["label"]), trow.get("method")
            entry = trow.get("entry") or {}
            preset = (entry.get("presets") or {}).get(dataset) if method else None
            reported = [m for m in columns if (paper_name, label, m) in paper]
            if preset is None and not reported:
                continue  # neither the paper nor this run has anything for it
            group = groups.get((dataset, method)) if method else None
            agg = aggregate(group) if group is not None else {}
            for metric in [m for m in columns if m in configured or m in reported] + extras:
                row = blank(dataset, paper_name, label, metric)
                notes: list[str] = []
                if method is None:
                    row["status"] = "not available"
                    notes.append(trow.get("note") or f"animbench has no {label}")
                elif preset is None:
                    row["status"] = "not available"
                    notes.append(f"methods entry {method} has no preset for {dataset}")
                else:
                    display = display_name(method, entry)
                    named = f" ({display})" if display != label else ""
                    notes.append(f"methods entry {method}{named}, preset {preset}")
                    if trow.get("note"):
                        notes.append(trow["note"])
                    if metric == PARAMS:
                        _count_params(row, notes, preset, entry, param_networks)
                    elif not _measure(row, group, agg, metric, paper_name, notes):
                        _unmeasured(row, notes, preset_model(preset), True, label, dataset, method)
                _finish_row(row, notes, metric, label, paper_name, row["paper_value"])
                rows.append(row)
    for paper_name, reason in unavailable.items():
        for trow in table_rows:
            label = str(trow["label"])
            for metric in [m for m in columns if (paper_name, label, m) in paper]:
                row = blank(paper_name, paper_name, label, metric)
                row["status"] = "not available"
                notes = [reason]
                if trow.get("method") is None:
                    notes.insert(0, trow.get("note") or f"animbench has no {label}")
                row["note"] = "; ".join(notes)
                rows.append(row)
    return finish_table(rows, out)
