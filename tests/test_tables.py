"""Tables beside the papers' numbers: statuses, paper values, deltas, parameter counts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from animbench import tables
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
    monkeypatch.setattr(tables, "network_flops", fake_flops)
    monkeypatch.setattr(tables, "is_implemented", lambda m: m == "fomm")
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
    monkeypatch.setattr(tables, "is_implemented", lambda m: m == "fomm")
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
