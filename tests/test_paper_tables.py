"""`animbench table paper`: a config paper_tables entry (CPAB Table 2) written from hand-made
metrics files, the way the paper_table rule calls it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from animbench.cli import main
from animbench.config import load_config, paper_table_spec
from animbench.evaluate.metrics import COLUMNS as METRIC_COLUMNS
from animbench.evaluate.metrics import write_parquet_atomic

REPO = Path(__file__).resolve().parents[1]


def metric_rows(dataset: str, method: str, frames: list[int]) -> pd.DataFrame:
    """Per-video metrics with L1 = 0.05 and nothing else computed."""
    rows = [
        {"dataset": dataset, "method": method, "video": f"v{i}", "n_frames": n, "l1_sum": 0.05 * n}
        for i, n in enumerate(frames)
    ]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config([REPO / "config.yaml"])


def test_cli_writes_cpab_table2(tmp_path, config):
    measured = write_parquet_atomic(
        metric_rows("taichi", "cpabmm-cpab-global", [2, 6]), tmp_path / "m.parquet"
    )
    spec = json.dumps(paper_table_spec(config, "cpab_table2"))
    out = tmp_path / "cpab_table2.parquet"
    args = ["table", "paper", "--name", "cpab_table2", "--metrics", str(measured)]
    assert main([*args, "--spec", spec, "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    labels = ["TPSMM", "+CPAB", "+CPAB,Global", "+CPAB,Global,L_KS", "+CPAB,Global,L_struc"]
    assert list(dict.fromkeys(df["method"])) == [*labels, "full model"]
    assert len(df) == 6 * 4 and set(df["dataset"]) == {"taichi"}
    r = df[(df["method"] == "+CPAB,Global") & (df["metric"] == "L1")].iloc[0]
    assert r["status"] == "measured" and r["value"] == pytest.approx(0.05)
    assert r["paper_value"] == pytest.approx(0.044) and r["table"] == "table2"
    assert "preset cpabmm-taichi256-cpab-global" in r["note"]
    r = df[(df["method"] == "TPSMM") & (df["metric"] == "AED")].iloc[0]
    assert r["status"] == "missing" and math.isnan(r["value"])
    assert r["paper_value"] == pytest.approx(0.151)
    # the unmeasured CPABMM rows say why, whichever state the registry is in
    assert set(df.loc[df["method"] == "full model", "status"]) <= {"missing", "not implemented"}


def test_cli_error_names_the_table(tmp_path, config, capsys):
    spec = json.dumps({**paper_table_spec(config, "cpab_table1"), "table": "table9"})
    args = ["table", "paper", "--name", "mine", "--spec", spec, "--out", str(tmp_path / "t.pq")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "animbench table: error: paper_tables.mine: paper_tables.csv has no table table9 of cpabmm_aaai2024"
    )
