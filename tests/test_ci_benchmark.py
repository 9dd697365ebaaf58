"""The CI benchmark subset, end to end: `snakemake --profile profiles/ci` on the synthetic
datasets, then the acceptance checks on the tables it produces.

Runs in a copy of the repository so a developer's own results/ is left alone.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from ci_support import run_profile, snakemake
from ci_support import table_value as _value

from animbench.device import native_bf16

pytestmark = pytest.mark.slow

_FAILURE: list[str] = []  # a failed run fails every test once, without running again


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> Path:
    if _FAILURE:
        pytest.fail(_FAILURE[0])
    workdir, failure = run_profile(
        tmp_path_factory.mktemp("ci"),
        "profiles/ci",
        "results/table2.parquet",
        "results/table1.parquet",
        "results/report.html",
    )
    if failure:
        _FAILURE.append(failure)
        pytest.fail(failure)
    return workdir


METHODS = ("FOMM", "MRAA", "MTIA", "TPSMM")


def test_table2_has_finite_metrics_for_every_method(ci_run: Path):
    table = pd.read_parquet(ci_run / "results/table2.parquet")
    expected = {
        "synthetic-face": ["L1", "AKD", "AED"],
        "synthetic-body": ["L1", "AKD", "MKR", "AED"],
    }
    for dataset, metrics in expected.items():
        for metric in metrics:
            for method in (*METHODS, "Source copy"):
                value = _value(table, dataset, method, metric)
                assert math.isfinite(value), f"{dataset}/{method}/{metric} is {value}"
        assert "MKR" in metrics or table[(table.dataset == dataset) & (table.metric == "MKR")].empty


def test_every_method_beats_source_copy_on_l1(ci_run: Path):
    table = pd.read_parquet(ci_run / "results/table2.parquet")
    for dataset in ("synthetic-face", "synthetic-body"):
        floor = _value(table, dataset, "Source copy", "L1")
        for method in METHODS:
            value = _value(table, dataset, method, "L1")
            assert value < floor, f"{dataset} L1: {method} {value:.4f} ≥ source copy {floor:.4f}"


def test_every_method_beats_source_copy_on_akd(ci_run: Path):
    table = pd.read_parquet(ci_run / "results/table2.parquet")
    for dataset in ("synthetic-face", "synthetic-body"):
        floor = _value(table, dataset, "Source copy", "AKD")
        for method in METHODS:
            value = _value(table, dataset, method, "AKD")
            assert value < floor, f"{dataset} AKD: {method} {value:.4f} ≥ source copy {floor:.4f}"
            # AKD averages the frames with markers in both: a model that blurs the markers
            # away must not win on the few frames left (MTIA at 300 face steps kept 3 of 192)
            rows = table[(table.dataset == dataset) & (table.method == method)]
            akd_frames = int(rows[rows.metric == "AKD"].n_frames.iloc[0])
            frames = int(rows[rows.metric == "L1"].n_frames.iloc[0])
            assert akd_frames >= frames / 2, f"{dataset} AKD of {method}: {akd_frames}/{frames}"


def test_table2_records_provenance(ci_run: Path):
    table = pd.read_parquet(ci_run / "results/table2.parquet")
    # offline (the CI profile allows random weights), VGG19 is randomly initialised: every
    # trained row is a number that deviates from its preset, never "measured"
    trained = table[table.method.isin(METHODS) & table.value.notna()]
    assert (trained.status == "deviates").all()
    fomm = table[table.method.isin(METHODS) & (table.status == "deviates")]
    assert set(fomm.method) == set(METHODS)
    assert fomm.checkpoint_sha256.str.fullmatch(r"[0-9a-f]{64}").all()
    assert (fomm.n_videos > 0).all() and (fomm.n_frames > 0).all()
    assert fomm.config_hash.str.len().gt(0).all()
    assert fomm.note.str.contains("vgg19-dcbb9e9d.pth").all()  # names the missing file
    # the CI profile trains FOMM in bf16 where the CPU has bf16 arithmetic; its rows say so
    bf16 = trained.note.str.contains("trained with bf16 autocast")
    assert (bf16 == ((trained.method == "FOMM") & native_bf16(torch.device("cpu")))).all()


def test_table2_intervals_and_pairs(ci_run: Path):
    table = pd.read_parquet(ci_run / "results/table2.parquet")
    measured = table[table.status == "measured"]
    assert (measured.n_seeds == 1).all() and measured.seed_std.isna().all()  # one seed
    # six test videos each: a finite bootstrap interval around every L1, AKD and AED
    finite = measured[measured.metric.isin(["L1", "AKD", "AED"])]
    assert finite.ci_low.notna().all() and finite.ci_high.notna().all()
    assert (finite.ci_low <= finite.ci_high).all()
    pairs = pd.read_parquet(ci_run / "results/pairs.parquet")
    methods = len(METHODS) + 1  # and source copy
    l1 = pairs[pairs.metric == "L1"]
    assert l1.groupby("dataset").size().to_dict() == {
        "synthetic-face": methods * (methods - 1) // 2,
        "synthetic-body": methods * (methods - 1) // 2,
    }
    assert (l1.n_videos == 6).all() and l1.mean_diff.notna().all()
    assert pairs.p_value.dropna().between(0, 1).all()


def test_table1_exact_fomm_counts(ci_run: Path):
    table = pd.read_parquet(ci_run / "results/table1.parquet")
    exact = table[table.metric == "params"].set_index("method").value
    assert int(exact["ImageGenerator"]) == 45_575_391
    assert int(exact["MotionEstimator-FOMM"]) == 14_215_368
    assert int(exact["MotionEstimator-MRAA"]) == 14_146_728
    assert int(exact["MotionEstimator-MTIA"]) == 12_283_462
    flops = table[table.metric == "FLOPs_G"].set_index("method")
    assert flops.value["ImageGenerator"] == pytest.approx(53.64, abs=0.01)
    assert flops.value["MotionEstimator-FOMM"] == pytest.approx(1.28, abs=0.01)
    millions = table[table.metric == "params_M"].set_index("method")
    assert "pos_embedding" in millions.note["MotionEstimator-MTIA"]  # 12.28 vs the paper's 12.23


def test_report_shows_every_run(ci_run: Path):
    report = (ci_run / "results/report.html").read_text(encoding="utf-8")
    assert "not produced yet" not in report and "could not read" not in report
    # a GIF per (dataset, method), loss curves per run (MRAA and TPSMM: an AVD stage too)
    assert report.count('src="data:image/gif;base64,') == 2 * (len(METHODS) + 1)
    assert report.count('<svg class="line-chart"') == 2 * (len(METHODS) + 2)
    assert report.count('<svg class="bar-chart"') > 0 and "45,575,391" in report
    # each table first in the paper's shape, its notes once as footnotes, the long format below
    assert report.count('<table class="paper-shape">') >= 2  # table2 and table1 at least
    table2 = report[report.index("<h3>table2</h3>") : report.index("<h3>table1</h3>")]
    shaped = table2[: table2.index('class="long-format"')]
    assert re.search(r'<td class="cell [^"]*best"', shaped)  # a best value marked per column
    notes = re.findall(r'<li id="table2-note-\d+"[^>]*>([^<]*)</li>', shaped)
    cells = shaped[: shaped.index('<ol class="footnotes notes">')]
    assert notes and len(set(notes)) == len(notes) and not any(n in cells for n in notes)
    assert '<table class="results">' in table2[table2.index('class="long-format"') :]


def test_rerun_does_nothing(ci_run: Path):
    result = snakemake(ci_run, "--profile", "profiles/ci", "-n", "results/table2.parquet")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_interrupted_run_redoes_only_unfinished_jobs(ci_run: Path):
    # as if the run had stopped before one metrics job and the table: only they are redone
    (ci_run / "results/metrics/synthetic-face/fomm.parquet").unlink()
    (ci_run / "results/table2.parquet").unlink()
    result = snakemake(ci_run, "--profile", "profiles/ci", "-n", "results/table2.parquet")
    plan = result.stdout
    assert "metrics" in plan and "table2" in plan
    for heavy in ("rule train", "rule synthetic", "rule reconstruct"):
        assert heavy not in plan, plan
