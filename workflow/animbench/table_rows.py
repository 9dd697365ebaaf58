"""The long format every results table shares (DESIGN.md §5): its columns, the papers'
numbers (the packaged paper_tables.csv), a run's provenance (git commit, config hash, version,
time), a row with no measurement yet, and writing a table as Parquet. animbench.tables (the
results tables) and animbench.capacity (MTIA Table 1) stand on it."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import animbench
from animbench.evaluate.metrics import DETECTOR_COLUMNS, typed_frame
from animbench.files import write_parquet_atomic

# provenance columns copied from the metrics files (which copy the checkpoint's sha256 from
# reconstruct.json and each detector's name, version and weights sha256 from the detector)
PROVENANCE_COLUMNS = (
    "checkpoint_sha256",
    "predictions_sha256",  # a submission's folder digest (evaluate/submissions.py)
    *DETECTOR_COLUMNS,
)

COLUMNS = [
    "paper",
    "table",
    "dataset",
    "paper_dataset",
    "method",
    "metric",
    "value",
    "paper_value",
    "delta",
    "ci_low",
    "ci_high",
    "n_seeds",
    "seed_std",
    "n_videos",
    "n_frames",
    "status",
    "note",
    "git_commit",
    "config_hash",
    *PROVENANCE_COLUMNS,
    "detector_versions",
    "animbench_version",
    "created",
]

FLOAT_COLUMNS = ["value", "paper_value", "delta", "ci_low", "ci_high", "seed_std"]

INT_COLUMNS = ["n_seeds", "n_videos", "n_frames"]

MTIA = "mtia_eccv2022"


def paper_values() -> pd.DataFrame:
    """Every number of the papers' tables, from the packaged paper_tables.csv."""
    source = resources.files("animbench") / "resources" / "paper_tables.csv"
    with source.open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle, dtype={"value": float}, keep_default_na=False, na_values=[""])


def paper_lookup(paper: str, table: str) -> dict[tuple[str, str, str], float]:
    values = paper_values()
    values = values[(values["paper"] == paper) & (values["table"] == table)]
    return {(r.dataset, r.method, r.metric): float(r.value) for r in values.itertuples(index=False)}


def git_commit() -> str:
    """HEAD of the repository holding the package; "unknown" outside a repository."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else "unknown"


def provenance(config_hash: str | None) -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "config_hash": config_hash,
        "animbench_version": animbench.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def blank_row(
    table: str,
    dataset: str,
    paper_dataset,
    method: str,
    metric: str,
    paper_value,
    prov: dict,
    paper: str = MTIA,
) -> dict[str, Any]:
    """A table row with no measurement yet; other columns default to missing."""
    return {
        "paper": paper,
        "table": table,
        "dataset": dataset,
        "paper_dataset": paper_dataset,
        "method": method,
        "metric": metric,
        "value": np.nan,
        "paper_value": paper_value,
        "delta": np.nan,
        **prov,
    }


def finish_table(rows: list[dict[str, Any]], out: str | Path) -> pd.DataFrame:
    df = typed_frame(rows, COLUMNS, ints=INT_COLUMNS, floats=FLOAT_COLUMNS)
    write_parquet_atomic(df, out)
    return df
