"""Running a benchmark profile end to end in a copy of the repository (a developer's own
results/ is left alone), shared by the CI benchmark tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`env`: variables set on top of this process's environment."""
    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {})
    )
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )


# the developer's environment, outputs and caches; only at the top (the package has a
# resources/ folder of its own, which the copy needs)
_TOP_LEVEL_IGNORED = {".git", ".venv", "results", "resources", ".snakemake"}


def _ignore(folder: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(folder) == REPO:
        ignored |= _TOP_LEVEL_IGNORED.intersection(names)
    return ignored


def run_profile(parent: Path, profile: str, *targets: str, env=None) -> tuple[Path, str | None]:
    """Copy the repository under `parent` and run `snakemake --profile profile targets`;
    returns the copy and, when the run failed, the tail of its output. `env`: a function of
    the copy returning variables to set (e.g. a PYTHONPATH into it)."""
    workdir = parent / "repo"
    shutil.copytree(REPO, workdir, ignore=_ignore)
    extra = env(workdir) if env else None
    result = snakemake(workdir, "--profile", profile, *targets, check=False, env=extra)
    if result.returncode != 0:
        return workdir, f"{profile} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return workdir, None


def table_value(table: pd.DataFrame, dataset: str, method: str, metric: str) -> float:
    row = table[(table.dataset == dataset) & (table.method == method) & (table.metric == metric)]
    assert len(row) == 1, f"expected one row for {dataset}/{method}/{metric}, got {len(row)}"
    return float(row.value.iloc[0])
