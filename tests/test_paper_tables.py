"""`animbench table paper`: the config's paper_tables entries (CPAB Tables 1-2, MTIA Tables 4-6,
FOMM Tables 1 and 3) written from hand-made metrics files, the way the paper_table rule calls
it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED

from animbench import tables
from animbench.cli import main
from animbench.config import load_config, paper_table_runs, paper_table_spec
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


# Every table of the seed papers beyond MTIA's Tables 1 and 2 (table1/table2.parquet): the
# paper's row labels in order, the datasets in order (Nemo and BAIR: not available).
SHIPPED = {
    "mtia_table4": (["MTIA w/o PE", "MTIA w PE"], ["taichi"]),
    "mtia_table5": (["MTIA Stem", "MTIA HR-W32", "MTIA HR-W48"], ["taichi"]),
    "mtia_table6": (["MTIA layers=4", "MTIA layers=8", "MTIA layers=12"], ["taichi"]),
    "fomm_table1": (["Baseline", "Pyr.", "Pyr.+O", "Jac. w/o Eq.(12)", "Full"], ["taichi"]),
    "fomm_table3": (["X2Face", "Monkey-Net", "FOMM"], ["taichi", "vox", "nemo", "bair"]),
    "cpab_table1": (
        ["X2Face", "Monkey-Net", "FOMM", "MRAA", "TPSMM", "CPABMM"],
        ["taichi", "ted", "vox", "mgif"],
    ),
    "cpab_table2": (
        ["TPSMM", "+CPAB", "+CPAB,Global", "+CPAB,Global,L_KS", "+CPAB,Global,L_struc"]
        + ["full model"],
        ["taichi"],
    ),
}


@pytest.fixture
def counted(monkeypatch):
    """Parameter counts without building the real models (tests/test_tables.py has the real
    MTIA counts, marked slow)."""
    monkeypatch.setattr(tables, "preset_parameters", lambda preset, overrides, networks: (7e6, 0))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_table_holds_the_papers_numbers(tmp_path, config, counted, name):
    """Each table lists every number of the paper's table with paper_value from the packaged
    paper_tables.csv; a measured row has delta = value - paper_value; every row without a
    value says why."""
    labels, datasets = SHIPPED[name]
    runs = paper_table_runs(config, name)
    files = [
        write_parquet_atomic(metric_rows(d, m, [2, 6]), tmp_path / f"{d}-{m}.parquet")
        for d, m in runs
    ]
    spec = json.dumps(paper_table_spec(config, name))
    out = tmp_path / f"{name}.parquet"
    args = ["table", "paper", "--name", name, "--metrics", *map(str, files)]
    assert main([*args, "--spec", spec, "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert list(df.columns) == tables.COLUMNS
    assert list(dict.fromkeys(df["method"])) == labels
    assert list(dict.fromkeys(df["dataset"])) == datasets

    paper_key, table_key = (
        config["paper_tables"][name]["paper"],
        config["paper_tables"][name]["table"],
    )
    assert set(df["paper"]) == {paper_key} and set(df["table"]) == {table_key}
    paper = tables.paper_values()
    paper = paper[(paper["paper"] == paper_key) & (paper["table"] == table_key)]
    expected = {(r.dataset, r.method, r.metric): r.value for r in paper.itertuples()}
    got = {
        (r.paper_dataset, r.method, r.metric): r.paper_value
        for r in df.itertuples()
        if not pd.isna(r.paper_value)
    }
    assert got == expected  # every number of the paper's table, and only those

    measured = df[df["status"] == "measured"]
    assert len(measured) > 0
    assert (measured["delta"] - (measured["value"] - measured["paper_value"])).abs().max() < 1e-12
    unmeasured = df[df["status"] != "measured"]
    assert unmeasured["value"].isna().all() and unmeasured["delta"].isna().all()
    assert df["note"].str.len().gt(0).all() and df["status"].notna().all()
    assert set(df["status"]) <= {"measured", "not computed", "not available", "not implemented"}

    metric_rows_ = df[(df["status"] == "measured") & (df["metric"] != "params_M")]
    assert (metric_rows_["checkpoint_sha256"] == "cd" * 32).all()
    assert (metric_rows_["config_hash"] == paper_table_spec(config, name)["config_hash"]).all()
    assert metric_rows_["git_commit"].str.len().gt(0).all()


def test_shipped_ablation_rows(tmp_path, config, counted):
    """The ablation tables' rows come from their presets; the paper's default row of each is
    the benchmark's own run."""

    def build(name, runs):
        files = [
            write_parquet_atomic(metric_rows(d, m, [4]), tmp_path / f"{name}-{d}-{m}.parquet")
            for d, m in runs
        ]
        out = tmp_path / f"{name}.parquet"
        spec = json.dumps(paper_table_spec(config, name))
        args = ["table", "paper", "--name", name, "--metrics", *map(str, files), "--spec", spec]
        assert main([*args, "--out", str(out)]) == 0
        return pd.read_parquet(out).set_index(["method", "metric"])

    df = build("fomm_table1", paper_table_runs(config, "fomm_table1"))
    assert "preset fomm-taichi256-baseline" in df.loc[("Baseline", "L1"), "note"]
    assert "preset fomm-taichi256-jac-no-eq" in df.loc[("Jac. w/o Eq.(12)", "L1"), "note"]
    assert "equals fomm-taichi256-pyr-occ" in df.loc[("Pyr.+O", "L1"), "note"]
    assert "methods entry fomm (FOMM), preset fomm-taichi256;" in df.loc[("Full", "L1"), "note"]
    r = df.loc[("Baseline", "L1")]
    assert r["value"] == pytest.approx(0.05) and r["paper_value"] == pytest.approx(0.073)
    assert r["delta"] == pytest.approx(0.05 - 0.073) and r["status"] == "measured"

    df = build("mtia_table5", [("taichi", "mtia-stem")])
    r = df.loc[("MTIA Stem", "params_M")]
    assert r["status"] == "measured" and r["value"] == pytest.approx(7.0)
    assert r["paper_value"] == pytest.approx(5.56) and r["delta"] == pytest.approx(1.44)
    assert "parameters of kp_detector counted on the preset" in r["note"]
    r = df.loc[("MTIA HR-W48", "AKD")]
    assert r["status"] == "missing" and r["paper_value"] == pytest.approx(4.829)
    assert "preset mtia-taichi256-hrw48" in r["note"]

    df = build("mtia_table4", [("taichi", "mtia")])
    assert df.loc[("MTIA w PE", "L1"), "status"] == "measured"
    assert "preset mtia-taichi256-nope" in df.loc[("MTIA w/o PE", "L1"), "note"]
    assert df.loc[("MTIA w/o PE", "L1"), "status"] == "missing"


def test_fomm_table3_not_available_rows(tmp_path, config):
    out = tmp_path / "fomm_table3.parquet"
    spec = json.dumps(paper_table_spec(config, "fomm_table3"))
    assert main(["table", "paper", "--metrics", "--spec", spec, "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    gone = df[df["dataset"].isin(["nemo", "bair"])]
    assert len(gone) == 3 * 3 + 3 and set(gone["status"]) == {"not available"}
    assert gone["note"].str.contains("not an animbench dataset").all()
    x2face = df[df["method"] == "X2Face"]
    assert set(x2face["status"]) == {"not available"}
    assert (
        x2face["note"]
        .str.contains("X2Face (Wiles et al., 2018) is not implemented", regex=False)
        .all()
    )
    r = df[(df["dataset"] == "nemo") & (df["method"] == "X2Face") & (df["metric"] == "AKD")]
    assert r.iloc[0]["paper_value"] == pytest.approx(3.539)
    assert "UvA-Nemo" in r.iloc[0]["note"] and "X2Face" in r.iloc[0]["note"]
    assert set(df.loc[df["dataset"] == "vox", "metric"]) == {"L1", "AKD", "AED"}


def test_packaged_paper_values_are_the_reference():
    reference = SHARED / "reference" / "paper_tables.csv"
    if not reference.is_file():
        pytest.skip(f"{reference} (the reference beside the checkout) is absent")
    packaged = Path(tables.__file__).parent / "resources" / "paper_tables.csv"
    assert packaged.read_bytes() == reference.read_bytes()
