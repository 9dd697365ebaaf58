"""Tables beside the papers' numbers: statuses, paper values, deltas, parameter counts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from animbench import capacity, tables
from animbench.evaluate.flops import FlopCount
from animbench.evaluate.metrics import COLUMNS as METRIC_COLUMNS
from animbench.evaluate.metrics import write_parquet_atomic
from animbench.models import registry


def metric_rows(dataset, method, videos, akd=True, detector="fake-kp"):
    rows = []
    for i, n in enumerate(videos):
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "video": f"v{i}",
                "n_frames": n,
                "l1_sum": 0.05 * n,
                "akd_sum": 1.5 * n if akd else np.nan,
                "akd_frames": n if akd else np.nan,
                "akd_skipped": 0 if akd else np.nan,
                "mkr_sum": np.nan,
                "mkr_frames": np.nan,
                "aed_sum": np.nan,
                "aed_frames": np.nan,
                "keypoint_detector": detector if akd else None,
                "keypoint_detector_version": "1.5.0" if akd else None,
                "keypoint_weights_sha256": "ef" * 32 if akd else None,
                "identity_embedder": None,
                "identity_embedder_version": None,
                "identity_weights_sha256": None,
                "checkpoint_sha256": "cd" * 32,
                "warnings": "VGG19 randomly initialised",
            }
        )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


SPEC = {
    "datasets": {
        "vox": {"paper_name": "vox", "metrics": ["L1", "AKD", "AED"]},
        "synth-face": {"paper_name": None, "metrics": ["L1"]},
    },
    "methods": ["fomm"],
    "baselines": ["source-copy"],
    "config_hash": "cafe",
}


@pytest.fixture
def metric_files(tmp_path):
    # file names deliberately disagree with the rows: dataset/method come from the rows
    paths = [
        write_parquet_atomic(metric_rows("vox", "fomm", [2, 6]), tmp_path / "x" / "one.parquet"),
        write_parquet_atomic(
            metric_rows("synth-face", "fomm", [3], akd=False), tmp_path / "x" / "two.parquet"
        ),
        write_parquet_atomic(
            metric_rows("synth-face", "source-copy", [3], akd=False), tmp_path / "three.parquet"
        ),
    ]
    return paths


def row(df, dataset, method, metric):
    sel = df[(df["dataset"] == dataset) & (df["method"] == method) & (df["metric"] == metric)]
    assert len(sel) == 1, (dataset, method, metric)
    return sel.iloc[0]


def test_table2_statuses_and_paper_values(tmp_path, metric_files, monkeypatch):
    monkeypatch.setattr(tables, "is_implemented", lambda m: m in {"fomm", "source-copy"})
    monkeypatch.setitem(tables.PLANNED, "mraa", "issue 4")  # as if MRAA were still planned
    out = tmp_path / "table2.parquet"
    df = tables.write_table2(metric_files, SPEC, out)
    assert list(df.columns) == tables.COLUMNS
    back = pd.read_parquet(out)
    assert len(back) == len(df) == 3 * 4 + 1 * 4  # vox: 3 metrics, synth: 1; 4 methods

    r = row(back, "vox", "FOMM", "L1")
    assert r["status"] == "measured" and r["paper"] == "mtia_eccv2022" and r["table"] == "table2"
    assert r["value"] == pytest.approx(0.05) and r["paper_value"] == pytest.approx(0.041)
    assert r["delta"] == pytest.approx(0.05 - 0.041)
    assert (r["n_videos"], r["n_frames"]) == (2, 8)
    assert r["paper_dataset"] == "vox" and r["config_hash"] == "cafe"
    assert r["checkpoint_sha256"] == "cd" * 32
    assert len(r["git_commit"]) in (40, 7) or r["git_commit"] == "unknown"
    assert "VGG19" in r["note"]

    r = row(back, "vox", "FOMM", "AKD")
    assert r["value"] == pytest.approx(1.5) and r["paper_value"] == pytest.approx(1.29)
    assert "fake-kp 1.5.0" in r["note"] and "protocol-compatible" in r["note"]
    assert "fake-kp 1.5.0" in r["detector_versions"]

    r = row(back, "vox", "FOMM", "AED")
    assert r["status"] == "not computed" and math.isnan(r["value"])
    assert r["paper_value"] == pytest.approx(0.133)

    r = row(back, "vox", "MRAA", "L1")
    assert r["status"] == "not implemented" and math.isnan(r["value"])
    assert r["paper_value"] == pytest.approx(0.04) and math.isnan(r["delta"])
    assert "MRAA is not implemented yet (issue 4)" in r["note"]
    assert row(back, "vox", "MTIA", "AKD")["paper_value"] == pytest.approx(1.18)

    r = row(back, "vox", "Source copy", "L1")  # in the spec, implemented, no file given
    assert r["status"] == "missing" and math.isnan(r["value"]) and math.isnan(r["paper_value"])

    r = row(back, "synth-face", "FOMM", "L1")
    assert r["status"] == "measured" and r["value"] == pytest.approx(0.05)
    assert math.isnan(r["paper_value"]) and math.isnan(r["delta"])
    assert "synthetic dataset: no paper value" in r["note"]
    assert pd.isna(r["paper_dataset"])
    assert row(back, "synth-face", "Source copy", "L1")["status"] == "measured"


def test_table2_not_run(tmp_path, metric_files, monkeypatch):
    monkeypatch.setattr(tables, "is_implemented", lambda m: True)
    df = tables.write_table2(metric_files, SPEC, tmp_path / "t.parquet")
    assert row(df, "vox", "MRAA", "L1")["status"] == "not run"
    assert row(df, "vox", "MTIA", "AED")["status"] == "not run"


def test_table2_rejects_duplicate_videos(tmp_path, metric_files):
    from animbench.errors import DataError

    with pytest.raises(DataError, match="twice"):
        tables.write_table2(metric_files + metric_files[:1], SPEC, tmp_path / "t.parquet")
    with pytest.raises(DataError, match="nope.parquet"):
        tables.write_table2([tmp_path / "nope.parquet"], SPEC, tmp_path / "t.parquet")


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(10, 10)  # 110 parameters
        self.table = nn.Parameter(torch.zeros(5), requires_grad=False)  # frozen: counted
        self.register_buffer("stats", torch.zeros(1000))  # buffer: not counted


def fake_build(preset):
    if preset == "fomm-vox256":
        return SimpleNamespace(networks={"generator": Frozen(), "kp_detector": nn.Linear(3, 2)})
    raise KeyError(preset)


def fake_flops(model):
    return {
        "generator": FlopCount(flops=4_000_000_000, layer_flops=3_000_000_000),
        "kp_detector": FlopCount(flops=2_000_000, calls=2, layer_flops=2_000_000),
    }


def test_table1_with_fake_modules(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "build", fake_build, raising=False)
    monkeypatch.setattr(capacity, "network_flops", fake_flops)
    monkeypatch.setattr(capacity, "is_implemented", lambda m: m == "fomm")
    df = tables.write_table1(tmp_path / "table1.parquet")
    back = pd.read_parquet(tmp_path / "table1.parquet")
    assert len(back) == len(df) == 4 * 3
    r = row(back, "-", "ImageGenerator", "params")
    assert r["value"] == 115 and r["status"] == "measured" and math.isnan(r["paper_value"])
    r = row(back, "-", "ImageGenerator", "params_M")
    assert r["value"] == pytest.approx(115e-6) and r["paper_value"] == pytest.approx(45.57)
    assert row(back, "-", "MotionEstimator-FOMM", "params")["value"] == 8
    r = row(back, "-", "MotionEstimator-MRAA", "params_M")
    assert r["status"] == "not implemented" and math.isnan(r["value"])
    assert r["paper_value"] == pytest.approx(14.2) and "not implemented yet" in r["note"]
    r = row(back, "-", "ImageGenerator", "FLOPs_G")
    # GMACs of the conv/linear modules (the paper's convention); all ops in the note
    assert r["status"] == "measured" and r["value"] == pytest.approx(1.5)
    assert r["paper_value"] == pytest.approx(53.64) and "4.000 GFLOPs" in r["note"]
    assert "2.000 GMACs" in r["note"] and "dense motion" in r["note"]
    assert row(back, "-", "MotionEstimator-FOMM", "FLOPs_G")["value"] == pytest.approx(1e-3)
    r = row(back, "-", "MotionEstimator-MRAA", "FLOPs_G")
    assert r["status"] == "not implemented" and math.isnan(r["value"])
    assert r["paper_value"] == pytest.approx(1.26)


def test_table1_fomm_failure_raises(tmp_path, monkeypatch):
    def broken(preset):
        raise KeyError(preset)

    monkeypatch.setattr(registry, "build", broken, raising=False)
    monkeypatch.setattr(capacity, "is_implemented", lambda m: m == "fomm")
    with pytest.raises(KeyError):
        tables.write_table1(tmp_path / "table1.parquet")
    assert not (tmp_path / "table1.parquet").exists()


def test_table1_real_fomm_counts(tmp_path):
    df = tables.write_table1(tmp_path / "table1.parquet")
    assert row(df, "-", "ImageGenerator", "params")["value"] == 45_575_391
    assert row(df, "-", "MotionEstimator-FOMM", "params")["value"] == 14_215_368
    for name in ("ImageGenerator", "MotionEstimator-FOMM"):
        r = row(df, "-", name, "params_M")
        assert abs(r["value"] - r["paper_value"]) < 0.01
        r = row(df, "-", name, "FLOPs_G")
        assert r["status"] == "measured" and math.isfinite(r["value"])
        assert math.isfinite(r["paper_value"]) and "GMACs" in r["note"]
        # multiply-accumulates of the conv/linear modules: the paper's numbers to its rounding
        assert abs(r["value"] - r["paper_value"]) < 0.005


# --------------------------------------------------------------------------- paper tables

CPAB1 = {
    "name": "cpab_table1",
    "paper": "cpabmm_aaai2024",
    "table": "table1",
    "datasets": {
        "taichi": {"paper_name": "taichi", "metrics": ["L1", "AKD", "MKR", "AED"]},
        "mgif": {"paper_name": "mgif", "metrics": ["L1"]},
        "synth-body": {"paper_name": None, "metrics": ["L1"]},
    },
    "rows": [
        {"label": "X2Face", "method": None, "note": "X2Face is not in animbench"},
        {
            "label": "Monkey-Net",
            "method": "monkeynet",
            "note": "zeroth-order FOMM",
            "entry": {"name": "Monkey-Net", "presets": {"taichi": "fomm-taichi256-monkeynet"}},
        },
        {
            "label": "FOMM",
            "method": "fomm",
            "entry": {
                "name": None,
                "presets": {
                    "taichi": "fomm-taichi256",
                    "mgif": "fomm-mgif256",
                    "synth-body": "fomm-synthetic-body",
                },
            },
        },
        {
            "label": "CPABMM",
            "method": "cpabmm",
            "entry": {"presets": {"taichi": "cpabmm-taichi256", "mgif": "cpabmm-mgif256"}},
        },
    ],
    "config_hash": "beef",
}


@pytest.fixture
def not_cpabmm(monkeypatch):
    """CPABMM unimplemented whatever the registry says today (it is being built in parallel)."""
    monkeypatch.setattr(tables, "is_implemented", lambda model: model != "cpabmm")
    monkeypatch.setitem(tables.PLANNED, "cpabmm", "issue 5")


def test_paper_table_values_statuses_and_rows(tmp_path, not_cpabmm):
    files = [
        write_parquet_atomic(metric_rows("taichi", "fomm", [2, 6]), tmp_path / "a.parquet"),
        write_parquet_atomic(metric_rows("mgif", "fomm", [4], akd=False), tmp_path / "b.parquet"),
        write_parquet_atomic(
            metric_rows("synth-body", "fomm", [3], akd=False), tmp_path / "c.parquet"
        ),
    ]
    out = tmp_path / "cpab_table1.parquet"
    df = tables.write_paper_table(files, CPAB1, out)
    back = pd.read_parquet(out)
    assert list(back.columns) == tables.COLUMNS
    # taichi: 4 rows x 4 metrics; mgif: FOMM and CPABMM, L1 only (X2Face and Monkey-Net have
    # neither a paper value nor a preset there); synthetic: FOMM's measured L1 only
    assert len(back) == len(df) == 16 + 2 + 1
    assert set(back["paper"]) == {"cpabmm_aaai2024"} and set(back["table"]) == {"table1"}
    assert set(back.loc[back["dataset"] == "mgif", "metric"]) == {"L1"}

    r = row(back, "taichi", "FOMM", "L1")
    assert r["status"] == "measured" and r["value"] == pytest.approx(0.05)
    assert r["paper_value"] == pytest.approx(0.055) and r["delta"] == pytest.approx(-0.005)
    assert (r["n_videos"], r["n_frames"]) == (2, 8) and r["config_hash"] == "beef"
    assert "methods entry fomm, preset fomm-taichi256" in r["note"]
    assert r["checkpoint_sha256"] == "cd" * 32
    r = row(back, "taichi", "FOMM", "AKD")
    assert r["paper_value"] == pytest.approx(6.62) and "protocol-compatible" in r["note"]
    r = row(back, "taichi", "FOMM", "MKR")
    assert r["status"] == "not computed" and r["paper_value"] == pytest.approx(0.031)

    r = row(back, "taichi", "X2Face", "AKD")
    assert r["status"] == "not available" and math.isnan(r["value"])
    assert r["paper_value"] == pytest.approx(17.65) and r["note"] == "X2Face is not in animbench"
    assert (back["method"] == "X2Face").sum() == 4

    r = row(back, "taichi", "Monkey-Net", "L1")
    assert r["status"] == "missing" and r["paper_value"] == pytest.approx(0.077)
    assert "preset fomm-taichi256-monkeynet" in r["note"] and "zeroth-order FOMM" in r["note"]

    r = row(back, "taichi", "CPABMM", "AED")
    assert r["status"] == "not implemented" and r["paper_value"] == pytest.approx(0.117)
    assert "CPABMM is not implemented yet (issue 5)" in r["note"]

    r = row(back, "mgif", "FOMM", "L1")
    assert r["status"] == "measured" and r["paper_value"] == pytest.approx(0.0225)
    assert row(back, "mgif", "CPABMM", "L1")["paper_value"] == pytest.approx(0.0169)

    r = row(back, "synth-body", "FOMM", "L1")
    assert r["status"] == "measured" and math.isnan(r["paper_value"]) and math.isnan(r["delta"])
    assert "synthetic dataset: no paper value" in r["note"]


def test_paper_table_variants_and_metrics_the_paper_lacks(tmp_path, not_cpabmm):
    spec = {
        "name": "cpab_table2",
        "paper": "cpabmm_aaai2024",
        "table": "table2",
        "datasets": {"taichi": {"paper_name": "taichi", "metrics": ["L1", "AKD"]}},
        "rows": [
            {
                "label": "TPSMM",
                "method": "tpsmm",
                "entry": {"presets": {"taichi": "tpsmm-taichi256"}},
            },
            {
                "label": "+CPAB,Global",
                "method": "cpabmm-cpab-global",
                "entry": {
                    "name": "+CPAB,Global",
                    "presets": {"taichi": "cpabmm-taichi256-cpab-global"},
                },
            },
            {
                "label": "full model",
                "method": "cpabmm",
                "entry": {"presets": {"taichi": "cpabmm-taichi256"}},
            },
            {
                "label": "ours only",
                "method": "fomm",
                "entry": {"presets": {"taichi": "fomm-taichi256"}},
            },
        ],  # fmt: skip
    }
    files = [
        write_parquet_atomic(metric_rows("taichi", "cpabmm-cpab-global", [5]), tmp_path / "a.pq"),
        write_parquet_atomic(metric_rows("taichi", "cpabmm", [5]), tmp_path / "b.pq"),
        write_parquet_atomic(metric_rows("taichi", "fomm", [5]), tmp_path / "c.pq"),
    ]
    df = tables.write_paper_table(files, spec, tmp_path / "t.parquet")
    # the paper's four metrics on every paper row, the configured two on our extra row
    assert len(df) == 3 * 4 + 2
    r = row(df, "taichi", "+CPAB,Global", "L1")
    assert r["status"] == "measured" and r["paper_value"] == pytest.approx(0.044)
    assert "methods entry cpabmm-cpab-global, preset cpabmm-taichi256-cpab-global" in r["note"]
    r = row(df, "taichi", "+CPAB,Global", "MKR")  # the paper has it, this run does not
    assert r["status"] == "not computed" and r["paper_value"] == pytest.approx(0.023)
    r = row(df, "taichi", "full model", "AKD")
    assert r["value"] == pytest.approx(1.5) and r["paper_value"] == pytest.approx(4.61)
    assert "methods entry cpabmm (CPABMM), preset cpabmm-taichi256" in r["note"]
    assert row(df, "taichi", "TPSMM", "L1")["status"] == "missing"
    r = row(df, "taichi", "ours only", "AKD")  # measured, but not in the paper
    assert r["status"] == "measured" and math.isnan(r["paper_value"]) and math.isnan(r["delta"])
    assert "the paper reports no AKD for ours only on taichi" in r["note"]


def test_paper_table_errors(tmp_path):
    from animbench.errors import ConfigError

    with pytest.raises(ConfigError, match="paper_tables.x: paper_tables.csv has no table table9"):
        tables.write_paper_table([], {**CPAB1, "name": "x", "table": "table9"}, tmp_path / "t.pq")
    with pytest.raises(ConfigError, match="paper_tables.cpab_table1.rows"):
        tables.write_paper_table([], {**CPAB1, "rows": []}, tmp_path / "t.pq")
    assert not (tmp_path / "t.pq").exists()


def test_variant_display_names_and_models():
    # a variant's model comes from its preset, registered or still planned
    entry = {"presets": {"taichi": "cpabmm-taichi256-cpab"}}
    assert tables.entry_model("cpabmm-cpab", entry, "taichi") == "cpabmm"
    assert tables.entry_model("monkeynet", {"presets": {"vox": "fomm-vox256-monkeynet"}}) == "fomm"
    assert tables.entry_model("source-copy", None) == "source-copy"
    assert tables.display_name("cpabmm-cpab", {**entry, "name": "+CPAB"}) == "+CPAB"
    assert tables.display_name("cpabmm-cpab", entry) == "CPABMM (cpabmm-cpab)"
    assert tables.display_name("fomm", {"presets": {"vox": "fomm-vox256"}}) == "FOMM"
    assert tables.display_name("source-copy") == "Source copy"


def test_table2_labels_a_variant_and_asks_its_model(tmp_path, metric_files, monkeypatch):
    asked = []

    def implemented(model):
        asked.append(model)
        return model in {"fomm", "source-copy"}

    monkeypatch.setattr(tables, "is_implemented", implemented)
    monkeypatch.setitem(tables.PLANNED, "cpabmm", "issue 5")
    entries = {"cpabmm-cpab": {"name": "+CPAB", "presets": {"vox": "cpabmm-vox256"}}}
    spec = {**SPEC, "methods": ["fomm", "cpabmm-cpab"], "entries": entries}
    df = tables.write_table2(metric_files, spec, tmp_path / "t.parquet")
    r = row(df, "vox", "+CPAB", "L1")
    assert r["status"] == "not implemented" and "CPABMM is not implemented yet" in r["note"]
    assert "cpabmm" in asked and "cpabmm-cpab" not in asked


# --------------------------------------------------------------------------- provenance


def test_provenance_columns_come_from_the_metrics(tmp_path, metric_files):
    df = tables.write_table2(metric_files, SPEC, tmp_path / "t.parquet")
    r = row(df, "vox", "FOMM", "AKD")
    assert (r["keypoint_detector"], r["keypoint_detector_version"]) == ("fake-kp", "1.5.0")
    assert r["keypoint_weights_sha256"] == "ef" * 32 and r["checkpoint_sha256"] == "cd" * 32
    assert r["config_hash"] == "cafe" and r["git_commit"]
    assert "no weights sha256" not in r["note"] and "not recorded" not in r["note"]
    assert pd.isna(r["identity_embedder"]) and pd.isna(r["identity_weights_sha256"])
    r = row(df, "vox", "MRAA", "L1")  # nothing measured: no provenance either
    assert pd.isna(r["checkpoint_sha256"]) and pd.isna(r["keypoint_detector"])


def test_missing_provenance_is_named(tmp_path):
    rows = metric_rows("vox", "fomm", [4])
    rows["checkpoint_sha256"] = None
    rows["keypoint_weights_sha256"] = None  # a detector without weights (the synthetic ones)
    base = metric_rows("vox", "source-copy", [4], akd=False)
    base["checkpoint_sha256"] = None
    files = [
        write_parquet_atomic(rows, tmp_path / "a.parquet"),
        write_parquet_atomic(base, tmp_path / "b.parquet"),
    ]
    df = tables.write_table2(files, SPEC, tmp_path / "t.parquet")
    r = row(df, "vox", "FOMM", "AKD")
    assert r["status"] == "measured" and pd.isna(r["checkpoint_sha256"])
    assert "checkpoint sha256 not recorded (reconstruct.json has none)" in r["note"]
    assert "keypoint detector fake-kp: no weights sha256 recorded" in r["note"]
    assert "(sha256" not in r["detector_versions"]  # the label lacks it too
    assert "no weights sha256" not in row(df, "vox", "FOMM", "L1")["note"]  # L1 needs none
    r = row(df, "vox", "Source copy", "L1")
    assert r["status"] == "measured" and "no checkpoint (a baseline without a model)" in r["note"]


# --------------------------------------------------------------------------- paper tables:
# unavailable datasets and a parameter column

FOMM3 = {
    "name": "fomm_table3",
    "paper": "fomm_neurips2019",
    "table": "table3",
    "datasets": {
        "taichi": {"paper_name": "taichi", "metrics": ["L1", "AKD", "MKR", "AED"]},
        "vox": {"paper_name": "vox", "metrics": ["L1", "AKD", "AED"]},
    },
    "unavailable": {"nemo": "Nemo is not in animbench", "bair": "BAIR is not in animbench"},
    "rows": [
        {"label": "X2Face", "method": None, "note": "X2Face is not in animbench"},
        {
            "label": "Monkey-Net",
            "method": "monkeynet",
            "entry": {
                "name": "Monkey-Net",
                "presets": {"taichi": "fomm-taichi256-monkeynet", "vox": "fomm-vox256-monkeynet"},
            },
        },
        {
            "label": "FOMM",
            "method": "fomm",
            "entry": {"presets": {"taichi": "fomm-taichi256", "vox": "fomm-vox256"}},
        },
    ],
    "config_hash": "f00d",
}


def test_paper_table_unavailable_datasets(tmp_path):
    files = [
        write_parquet_atomic(metric_rows("taichi", "fomm", [2, 6]), tmp_path / "a.parquet"),
        write_parquet_atomic(metric_rows("vox", "monkeynet", [5]), tmp_path / "b.parquet"),
    ]
    df = tables.write_paper_table(files, FOMM3, tmp_path / "fomm_table3.parquet")
    # taichi 3x4, vox 3x3, nemo 3x3, bair 3x1: every number of the paper's table
    assert len(df) == 12 + 9 + 9 + 3
    paper = tables.paper_values()
    paper = paper[(paper["paper"] == "fomm_neurips2019") & (paper["table"] == "table3")]
    assert len(paper) == len(df)
    got = {(r.dataset, r.method, r.metric): r.paper_value for r in df.itertuples()}
    assert got == {(r.dataset, r.method, r.metric): r.value for r in paper.itertuples()}
    assert list(dict.fromkeys(df["dataset"])) == ["taichi", "vox", "nemo", "bair"]

    r = row(df, "taichi", "FOMM", "L1")
    assert r["status"] == "measured" and r["delta"] == pytest.approx(0.05 - 0.063)
    r = row(df, "vox", "Monkey-Net", "AKD")
    assert r["status"] == "measured" and r["delta"] == pytest.approx(1.5 - 1.878)
    assert row(df, "vox", "FOMM", "AED")["status"] == "missing"
    r = row(df, "nemo", "FOMM", "AED")
    assert r["status"] == "not available" and r["note"] == "Nemo is not in animbench"
    assert r["paper_value"] == pytest.approx(0.048) and math.isnan(r["value"])
    assert math.isnan(r["delta"]) and r["paper_dataset"] == "nemo"
    r = row(df, "bair", "X2Face", "L1")
    assert r["status"] == "not available" and r["paper_value"] == pytest.approx(0.065)
    assert r["note"] == "X2Face is not in animbench; BAIR is not in animbench"
    assert set(df.loc[df["dataset"] == "bair", "metric"]) == {"L1"}
    assert not df.loc[df["status"] == "not available", "value"].notna().any()
    assert df["note"].str.len().gt(0).all()


MTIA5 = {
    "name": "mtia_table5",
    "paper": "mtia_eccv2022",
    "table": "table5",
    "datasets": {"taichi": {"paper_name": "taichi", "metrics": ["L1", "AKD", "MKR", "AED"]}},
    "param_networks": ["kp_detector"],
    "rows": [
        {
            "label": "MTIA Stem",
            "method": "mtia-stem",
            "entry": {"name": "MTIA Stem", "presets": {"taichi": "mtia-taichi256-stem"}},
        },
        {
            "label": "MTIA HR-W32",
            "method": "mtia",
            "entry": {"presets": {"taichi": "mtia-taichi256"}, "overrides": {"x": 1}},
        },
        {"label": "MTIA HR-W48", "method": None, "note": "not configured"},
    ],
    "config_hash": "f00d",
}


def test_paper_table_parameter_column(tmp_path, monkeypatch):
    counted = []

    def fake_parameters(preset, overrides, networks):
        counted.append((preset, overrides, tuple(networks)))
        return (5_611_014, 49_152) if preset.endswith("stem") else (12_283_462, 49_152)

    monkeypatch.setattr(tables, "preset_parameters", fake_parameters)
    files = [write_parquet_atomic(metric_rows("taichi", "mtia-stem", [4]), tmp_path / "a.pq")]
    df = tables.write_paper_table(files, MTIA5, tmp_path / "t.parquet")
    assert len(df) == 3 * 5 and list(df["metric"][:5]) == ["params_M", "L1", "AKD", "MKR", "AED"]
    assert counted == [
        ("mtia-taichi256-stem", None, ("kp_detector",)),
        ("mtia-taichi256", {"x": 1}, ("kp_detector",)),
    ]
    r = row(df, "taichi", "MTIA Stem", "params_M")
    assert r["status"] == "measured" and r["value"] == pytest.approx(5.611014)
    assert r["paper_value"] == pytest.approx(5.56) and r["delta"] == pytest.approx(0.051014)
    assert "5,611,014" in r["note"] and "trainable only: 5.562M" in r["note"]
    assert pd.isna(r["n_videos"]) and pd.isna(r["checkpoint_sha256"])
    r = row(df, "taichi", "MTIA HR-W32", "params_M")
    assert r["value"] == pytest.approx(12.283462) and "with the entry's overrides" in r["note"]
    assert row(df, "taichi", "MTIA HR-W32", "L1")["status"] == "missing"  # not trained yet
    assert row(df, "taichi", "MTIA Stem", "L1")["status"] == "measured"
    r = row(df, "taichi", "MTIA HR-W48", "params_M")
    assert r["status"] == "not available" and r["paper_value"] == pytest.approx(21.3)


def test_paper_table_parameters_of_a_planned_model(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "is_implemented", lambda model: model != "mtia")
    monkeypatch.setitem(tables.PLANNED, "mtia", "issue 3")
    monkeypatch.setattr(tables, "preset_parameters", lambda *a: pytest.fail("counted"))
    df = tables.write_paper_table([], MTIA5, tmp_path / "t.parquet")
    r = row(df, "taichi", "MTIA Stem", "params_M")
    assert r["status"] == "not implemented" and "MTIA is not implemented yet" in r["note"]


def test_preset_parameters_counts_frozen_ones():
    total, frozen = tables.preset_parameters("mtia-synthetic", None, ["kp_detector"])
    model = registry.build("mtia-synthetic")
    assert total == tables.count_parameters(model.networks["kp_detector"])
    assert frozen == sum(
        p.numel() for p in model.networks["kp_detector"].parameters() if not p.requires_grad
    )
    from animbench.errors import ConfigError

    with pytest.raises(ConfigError, match="preset mtia-synthetic has no network nope"):
        tables.preset_parameters("mtia-synthetic", {}, ["nope"])


@pytest.mark.slow
def test_mtia_table5_parameters_are_the_papers_trainable_counts():
    """MTIA Table 5's Param. column counts trainable parameters: ours equal it exactly once
    the frozen sine position table is left out (the table reports both)."""
    for preset, paper in [("stem", 5.56), ("hrw48", 21.30), ("", 12.23)]:
        name = f"mtia-taichi256-{preset}".rstrip("-")
        total, frozen = tables.preset_parameters(name, None, ["kp_detector"])
        assert frozen == 49_152 and round((total - frozen) / 1e6, 2) == paper


def test_akd_note_counts_the_frames_without_keypoints(tmp_path) -> None:
    """AKD averages only frames with keypoints in both; a row whose prediction lost keypoints
    says over how many frames it stands, and a row that lost none says nothing."""
    lost = metric_rows("vox", "fomm", [4, 6])
    lost["akd_frames"] = [1, 6]
    lost["akd_skipped"] = [3, 0]
    lost["akd_sum"] = [1.5, 9.0]
    paths = [
        write_parquet_atomic(lost, tmp_path / "fomm.parquet"),
        write_parquet_atomic(metric_rows("vox", "source-copy", [4, 6]), tmp_path / "sc.parquet"),
    ]
    table = tables.write_table2(paths, SPEC, tmp_path / "table2.parquet")
    akd = row(table, "vox", "FOMM", "AKD")
    assert akd.value == pytest.approx(10.5 / 7) and akd.n_frames == 7
    assert "AKD over 7 of 10 frames: no keypoints detected" in akd.note and "3 (30%)" in akd.note
    assert "AKD over" not in row(table, "vox", "Source copy", "AKD").note
    assert "AKD over" not in row(table, "vox", "FOMM", "L1").note


def test_bf16_training_is_noted(tmp_path) -> None:
    """A row whose checkpoint trained under bf16 autocast says so; fp32 rows and rows without
    a recorded precision (baselines, releases) do not."""
    bf16 = metric_rows("vox", "fomm", [4, 6])
    bf16["training_precision"] = "bf16"
    fp32 = metric_rows("vox", "mraa", [4, 6])
    fp32["training_precision"] = "fp32"
    paths = [
        write_parquet_atomic(bf16.astype({"training_precision": "string"}), tmp_path / "f.parquet"),
        write_parquet_atomic(fp32.astype({"training_precision": "string"}), tmp_path / "m.parquet"),
        write_parquet_atomic(metric_rows("vox", "source-copy", [4, 6]), tmp_path / "sc.parquet"),
    ]
    spec = {**SPEC, "methods": ["fomm", "mraa"]}
    table = tables.write_table2(paths, spec, tmp_path / "table2.parquet")
    note = "trained with bf16 autocast"
    assert note in row(table, "vox", "FOMM", "L1").note
    assert note in row(table, "vox", "FOMM", "AKD").note
    assert note not in row(table, "vox", "MRAA", "L1").note
    assert note not in row(table, "vox", "Source copy", "L1").note
