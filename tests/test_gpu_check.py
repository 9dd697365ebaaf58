"""benchmarks/gpu_check.py on a CPU: every family of the small synthetic presets trains, is
reconstructed and scored, the parquet has its documented columns, and a NaN fails the run."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SYNTHETIC = ["fomm", "mraa", "mtia", "tpsmm", "cpabmm"]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """The script on a CPU at the smallest sizes: batch 2, 1 timed step, 2-frame test clips."""
    out = tmp_path / "gpu.parquet"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "workflow"), os.environ.get("PYTHONPATH", "")]),
        "OPENBLAS_NUM_THREADS": "1",
        "ANIMBENCH_OFFLINE": "1",
    }
    command = [
        sys.executable, str(SCRIPT), "--device", "cpu", "--batch", "2", "--steps", "1",
        "--clip-frames", "2", "--threads", "1", "--workdir", str(tmp_path / "work"),
        "--out", str(out), *args,
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path), out


def test_peak_table_matches_device_names():
    peak = _module().peak_tflops
    assert peak("NVIDIA H100 80GB HBM3") == 989.0
    assert peak("NVIDIA H100 PCIe") == 756.0
    assert peak("NVIDIA H200") == 989.0
    assert peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak("NVIDIA L40S") == 362.0
    assert peak("NVIDIA L4") == 121.0
    assert peak("NVIDIA A10") == 125.0
    assert peak("Tesla T4") is None  # unknown: MFU NaN


def test_cpu_check_every_family(tmp_path):
    result, out = run_check(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(out)
    assert list(table.columns) == _module().COLUMNS
    assert sorted(table["family"].unique()) == sorted(SYNTHETIC)
    assert set(table["preset"]) == {f"{f}-synthetic" for f in SYNTHETIC}
    for family, rows in table.groupby("family"):
        checks = dict(zip(rows["check"], rows["status"], strict=True))
        assert checks == {
            "train": "ok", "compile": "skipped", "ddp": "skipped", "reconstruct": "ok",
            "metrics": "ok",
        }, family  # fmt: skip
    train = table[table["check"] == "train"]
    assert (train["precision"] == "bf16").all() and train["channels_last"].all()
    assert (train["steps_per_s"] > 0).all() and (train["samples_per_s"] > 0).all()
    assert (train["batch"] == 2).all() and (train["steps_timed"] >= 1).all()
    recon = table[table["check"] == "reconstruct"]
    assert (recon["frames_per_s"] > 0).all() and (recon["batch"] == 4).all()  # 2 clips × 2
    assert (table.loc[table["status"] == "ok", "peak_memory_mib"].dropna() > 0).all()
    metrics = table[table["check"] == "metrics"]
    for column in ("l1", "psnr", "ssim"):
        assert metrics[column].map(math.isfinite).all(), column
    # no peak for a CPU: MFU NaN, with the reason
    assert train["mfu"].isna().all()
    assert train["note"].str.contains("MFU NaN").all()


def test_nan_fails_loudly_naming_the_family(tmp_path):
    result, out = run_check(tmp_path, "--presets", "fomm-synthetic", "--inject-nan", "fomm")
    assert result.returncode != 0
    assert "GPU CHECK FAILED" in result.stderr
    assert "fomm-synthetic (fomm)" in result.stderr and "NaN" in result.stderr
    table = pd.read_parquet(out)  # the rows so far are still written
    failed = table[table["status"] == "failed"]
    assert list(failed["family"]) == ["fomm"]
    assert "fomm: NaN" in failed["error"].iloc[0]


@pytest.mark.slow
def test_cpu_ddp_and_flops(tmp_path):
    """The 2-process row (gloo on a CPU) and MFU from counted FLOPs against a given peak, one
    process per preset as on a GPU."""
    result, out = run_check(
        tmp_path, "--presets", "mraa-synthetic", "--ddp", "on", "--flops", "on",
        "--peak-tflops", "1", "--isolate", "on",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(out).set_index("check")
    assert table.loc["ddp", "status"] == "ok" and table.loc["ddp", "processes"] == 2
    for check in ("train", "ddp", "reconstruct"):
        row = table.loc[check]
        assert row["flops_per_item"] > 0
        assert row["mfu"] == pytest.approx(row["tflops_per_s"] / 1.0)
