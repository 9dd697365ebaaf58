"""Bootstrap intervals over test videos and paired comparisons of methods (animbench.stats)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from animbench import stats, tables
from animbench.evaluate.metrics import COLUMNS as METRIC_COLUMNS
from animbench.evaluate.metrics import write_parquet_atomic


def metrics_frame(dataset: str, method: str, l1: list[float], frames: list[int]) -> pd.DataFrame:
    """Per-video metrics rows with the given per-video L1 means and frame counts."""
    rows = [
        {
            "dataset": dataset,
            "method": method,
            "video": f"v{i}",
            "n_frames": n,
            "l1_sum": value * n,
            "checkpoint_sha256": "cd" * 32,
        }
        for i, (value, n) in enumerate(zip(l1, frames))
    ]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def test_identical_videos_give_a_zero_width_interval():
    low, high = stats.bootstrap_ci([0.25 * 4, 0.25 * 8, 0.25 * 2], [4, 8, 2])
    assert low == pytest.approx(0.25, abs=1e-12) and high == pytest.approx(0.25, abs=1e-12)


def test_hand_computed_interval_is_frame_weighted():
    # video A: mean 2 over 1 frame, video B: mean 0 over 3 frames. Resamples of two videos:
    # AA -> 2 (p 1/4), AB/BA -> 2/4 = 0.5 (p 1/2), BB -> 0 (p 1/4): the 2.5% and 97.5%
    # percentiles are 0 and 2, around the frame-weighted value 0.5 (not the video mean 1)
    low, high = stats.bootstrap_ci([2.0, 0.0], [1, 3])
    assert (low, high) == (0.0, 2.0)
    # three videos of one frame, values 0, 1, 2: P(all 0) = 1/27 > 2.5%, so [0, 2]
    assert stats.bootstrap_ci([0.0, 1.0, 2.0], [1, 1, 1]) == (0.0, 2.0)


def test_interval_is_reproducible_and_needs_two_videos():
    rng = np.random.default_rng(5)
    sums, counts = rng.uniform(0, 1, 40), rng.integers(1, 9, 40)
    first, second = stats.bootstrap_ci(sums, counts), stats.bootstrap_ci(sums, counts)
    assert first == second and first[0] < sums.sum() / counts.sum() < first[1]
    assert all(math.isnan(v) for v in stats.bootstrap_ci([1.0], [2]))
    with pytest.raises(ValueError):
        stats.bootstrap_ci([1.0, 2.0], [1])


def test_paired_test_detects_a_planted_difference():
    rng = np.random.default_rng(0)
    videos = [f"v{i}" for i in range(20)]
    a = pd.Series(rng.uniform(0.03, 0.08, 20), index=videos)
    b = a + 0.01 + rng.normal(0, 0.002, 20)  # b is worse by 0.01 on every video
    result = stats.paired_comparison(a, b)
    assert result["n_videos"] == 20 and result["mean_diff"] == pytest.approx(-0.01, abs=2e-3)
    assert result["ci_high"] < 0 and result["p_value"] < 0.001


def test_paired_test_exact_p_value():
    # 10 videos all better by the same amount: of the 2**10 sign flips only "all +" and
    # "all −" are as extreme, so the exact two-sided p-value is 2 / 1024
    a = pd.Series(np.linspace(0.1, 0.2, 10), index=[f"v{i}" for i in range(10)])
    result = stats.paired_comparison(a, a + 0.05)
    assert result["p_value"] == pytest.approx(2 / 1024)


def test_paired_test_does_not_flag_identical_methods():
    a = pd.Series([0.1, 0.3, 0.2, 0.5], index=["w", "x", "y", "z"])
    result = stats.paired_comparison(a, a.sample(frac=1, random_state=1))  # same, reordered
    assert result["mean_diff"] == 0 and result["p_value"] == 1.0
    assert result["ci_low"] == 0 and result["ci_high"] == 0
    # only shared videos are compared; none shared: nothing to compare
    one = stats.paired_comparison(a, pd.Series([9.0], index=["x"]))
    assert one["n_videos"] == 1 and one["mean_diff"] == pytest.approx(-8.7)
    assert math.isnan(one["p_value"]) and math.isnan(one["ci_low"])
    empty = stats.paired_comparison(a, pd.Series([9.0], index=["q"]))
    assert empty["n_videos"] == 0 and math.isnan(empty["p_value"])


def test_pairs_table_every_pair_per_dataset_and_metric(tmp_path):
    frames = [8, 8, 8, 8, 8, 8]
    base = [0.05, 0.06, 0.04, 0.07, 0.05, 0.06]
    paths = [
        write_parquet_atomic(metrics_frame("d", "fomm", base, frames), tmp_path / "a.parquet"),
        write_parquet_atomic(
            metrics_frame("d", "mraa", [v + 0.02 for v in base], frames), tmp_path / "b.parquet"
        ),
        write_parquet_atomic(
            metrics_frame("d", "source-copy", base, frames), tmp_path / "c.parquet"
        ),
    ]
    out = tmp_path / "pairs.parquet"
    table = stats.write_pairs(paths, {"config_hash": "cafe"}, out)
    back = pd.read_parquet(out)
    assert list(back.columns) == stats.PAIR_COLUMNS and len(back) == 3  # L1 only: 3 pairs
    pairs = {(r.key_a, r.key_b): r for r in back.itertuples()}
    assert set(pairs) == {("fomm", "mraa"), ("fomm", "source-copy"), ("mraa", "source-copy")}
    planted = pairs[("fomm", "mraa")]
    assert planted.method_a == "FOMM" and planted.method_b == "MRAA" and planted.metric == "L1"
    assert planted.mean_diff == pytest.approx(-0.02) and planted.n_videos == 6
    assert planted.p_value == pytest.approx(2 / 64)  # exact: all six videos agree
    same = pairs[("fomm", "source-copy")]
    assert same.mean_diff == pytest.approx(0, abs=1e-12) and same.p_value == 1.0
    assert back["config_hash"].eq("cafe").all()
    pd.testing.assert_frame_equal(back, stats.write_pairs(paths, {"config_hash": "cafe"}, out))
    assert len(table) == 3


def test_table2_rows_carry_intervals_and_seed_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "is_implemented", lambda m: True)
    paths = [
        write_parquet_atomic(
            metrics_frame("d", "fomm", [0.05, 0.07, 0.02, 0.09], [4, 8, 6, 2]),
            tmp_path / "a.parquet",
        ),
        write_parquet_atomic(
            metrics_frame("d", "mraa", [0.04] * 3, [5, 9, 3]), tmp_path / "b.parquet"
        ),
        write_parquet_atomic(metrics_frame("d", "mtia", [0.03], [5]), tmp_path / "c.parquet"),
    ]
    spec = {"datasets": {"d": {"paper_name": None, "metrics": ["L1"]}}, "methods": ["fomm"]}
    table = tables.write_table2(paths, spec, tmp_path / "t.parquet")
    assert {"ci_low", "ci_high", "n_seeds", "seed_std"} <= set(table.columns)
    rows = table.set_index("method")
    fomm = rows.loc["FOMM"]
    assert fomm["ci_low"] < fomm["value"] < fomm["ci_high"]
    assert (fomm["ci_low"], fomm["ci_high"]) == stats.bootstrap_ci(
        [0.05 * 4, 0.07 * 8, 0.02 * 6, 0.09 * 2], [4, 8, 6, 2]
    )
    assert fomm["n_seeds"] == 1 and math.isnan(fomm["seed_std"])
    mraa = rows.loc["MRAA"]  # identical videos: a zero-width interval at the value
    assert mraa["ci_low"] == pytest.approx(0.04) and mraa["ci_high"] == pytest.approx(0.04)
    assert math.isnan(rows.loc["MTIA", "ci_low"])  # one video: no interval
    again = tables.write_table2(paths, spec, tmp_path / "t2.parquet")
    assert again["ci_low"].equals(table["ci_low"]) and again["ci_high"].equals(table["ci_high"])


def test_cli_writes_pairs(tmp_path):
    from animbench.cli import main

    a = write_parquet_atomic(metrics_frame("d", "fomm", [0.1, 0.2], [3, 3]), tmp_path / "a.pq")
    b = write_parquet_atomic(metrics_frame("d", "mraa", [0.2, 0.3], [3, 3]), tmp_path / "b.pq")
    out = tmp_path / "pairs.parquet"
    args = ["table", "pairs", "--metrics", str(a), str(b), "--out", str(out)]
    assert main([*args, "--spec", '{"config_hash": "beef"}']) in (0, None)
    back = pd.read_parquet(out)
    assert len(back) == 1 and back.loc[0, "mean_diff"] == pytest.approx(-0.1)
    assert back.loc[0, "config_hash"] == "beef"


def test_workflow_plans_pairs_from_the_metrics_files():
    from test_workflow import of_rule, plan

    jobs, out = plan("results/pairs.parquet", "--profile", "profiles/ci", "-p")
    assert [rule for rule, _ in jobs].count("pairs") == 1
    evaluated = {
        (d, m)
        for d in ("synthetic-face", "synthetic-body")
        for m in ("fomm", "mraa", "mtia", "tpsmm", "source-copy")
    }
    assert of_rule(jobs, "metrics", "dataset", "method") == evaluated
    shell = next(line for line in out.splitlines() if "animbench table pairs" in line)
    for dataset, method in evaluated:
        assert f"results/metrics/{dataset}/{method}.parquet" in shell
    # the report (and so the default target) shows the comparisons
    assert "pairs" in [
        rule for rule, _ in plan("results/report.html", "--profile", "profiles/ci")[0]
    ]


def test_bar_chart_draws_error_bars_covering_the_interval():
    from animbench.report import svg_bar_chart

    chart = svg_bar_chart(
        "L1",
        ["FOMM", "MRAA"],
        {"measured": [1.0, 2.0], "paper": [1.5, math.nan]},
        intervals={"measured": [(0.8, 1.3), (math.nan, math.nan)]},
    )
    bars = re.findall(r'class="error-bar" d="([^"]*)"', chart)
    assert len(bars) == 1  # MRAA has no interval, the paper's bars never do
    assert "95% CI 0.8 to 1.3" in chart
    # the whisker spans y(1.3)..y(0.8) on the chart's scale: ticks 0..2 over 138 px from y=34
    y = {v: f"{34 + 138 * (2 - v) / 2:.1f}" for v in (0.8, 1.3)}
    assert f",{y[0.8]}H" in bars[0] and f"V{y[1.3]}" in bars[0]
    # an interval above every bar widens the axis to show it
    tall = svg_bar_chart("t", ["a"], {"measured": [1.0]}, intervals={"measured": [(0.5, 7.0)]})
    assert ">8<" in tall  # ticks 0, 2, ..., 8


def test_report_shows_intervals_and_pairs(tmp_path):
    from animbench.report import build_report

    frames = [8] * 6
    base = [0.05, 0.06, 0.04, 0.07, 0.05, 0.06]
    paths = [
        write_parquet_atomic(metrics_frame("d", "fomm", base, frames), tmp_path / "a.parquet"),
        write_parquet_atomic(
            metrics_frame("d", "mraa", [v + 0.02 for v in base], frames), tmp_path / "b.parquet"
        ),
    ]
    results = tmp_path / "results"
    spec = {"datasets": {"d": {"paper_name": None, "metrics": ["L1"]}}, "methods": ["fomm"]}
    table = tables.write_table2(paths, spec, results / "table2.parquet")
    stats.write_pairs(paths, spec, results / "pairs.parquet")
    page = build_report(results, None, results / "report.html").read_text(encoding="utf-8")
    assert "<th>ci_low</th><th>ci_high</th>" in page and "<th>n_seeds</th>" not in page
    fomm = table[table["method"] == "FOMM"].iloc[0]
    assert f"95% CI {fomm['ci_low']:.4g} to {fomm['ci_high']:.4g}" in page
    assert page.count('class="error-bar"') == 2  # FOMM and MRAA measured
    section = page.split('id="pairs"')[1]
    assert "<th>mean_diff</th>" in section and "<th>p_value</th>" in section
    # p = 2/64 (all six videos agree) < 0.05: the pair is shown in bold
    assert section.count('<tr class="significant">') == 1
    assert "0.03125" in section and "-0.02" in section
    # without pairs.parquet: a note, not a crash
    (results / "pairs.parquet").unlink()
    page = build_report(results, None, results / "report.html").read_text(encoding="utf-8")
    assert "pairs: not produced yet" in page


def test_table2_mean_and_std_over_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "is_implemented", lambda m: True)
    frames = [4, 4, 4]

    def files(seed_values: dict[str, list[float]], name: str) -> list:
        out = []
        for method, values in seed_values.items():
            path = tmp_path / name / f"{method}.parquet"
            out.append(write_parquet_atomic(metrics_frame("d", method, values, frames), path))
        return out

    first = files({"fomm": [0.1, 0.1, 0.1], "source-copy": [0.3, 0.3, 0.3]}, "s0")
    seed_metrics = {
        "1": files({"fomm": [0.2, 0.2, 0.2]}, "s1"),
        "2": files({"fomm": [0.3, 0.3, 0.3]}, "s2"),
    }
    spec = {
        "datasets": {"d": {"paper_name": None, "metrics": ["L1"]}},
        "methods": ["fomm"],
        "baselines": ["source-copy"],
    }
    out = tmp_path / "t.parquet"
    table = tables.write_table2(first, spec, out, seed_metrics=seed_metrics, seed=0)
    fomm = table[table["method"] == "FOMM"].iloc[0]
    assert fomm["value"] == pytest.approx(0.2) and fomm["n_seeds"] == 3
    assert fomm["seed_std"] == pytest.approx(0.1)  # std of 0.1, 0.2, 0.3 (ddof 1)
    assert (fomm["n_videos"], fomm["n_frames"]) == (3, 12)  # one seed's videos
    assert "over 3 training seeds (seed 0: 0.1, seed 1: 0.2, seed 2: 0.3)" in fomm["note"]
    # each video pooled over the seeds has the mean 0.2: a zero-width interval
    assert fomm["ci_low"] == pytest.approx(0.2) and fomm["ci_high"] == pytest.approx(0.2)
    copy = table[table["method"] == "Source copy"].iloc[0]  # a baseline has one seed
    assert copy["n_seeds"] == 1 and math.isnan(copy["seed_std"])
    # pairs compare the seed-pooled per-video values
    pairs = stats.write_pairs(first, spec, tmp_path / "p.parquet", seed_metrics=seed_metrics)
    assert pairs.loc[0, "mean_diff"] == pytest.approx(0.2 - 0.3)
    # one seed: the table is the single-seed table
    single = tables.write_table2(first, spec, tmp_path / "one.parquet")
    assert single.loc[single["method"] == "FOMM", "value"].iloc[0] == pytest.approx(0.1)
    assert single["n_seeds"].dropna().eq(1).all()


def test_workflow_trains_and_measures_every_seed(tmp_path):
    import json
    import shlex

    from test_workflow import METHODS, REAL, of_rule, plan

    release = tmp_path / "vox-cpk.pth.tar"
    release.write_bytes(b"not read by a dry run")
    extra = tmp_path / "seeds.yaml"
    extra.write_text(
        f"seeds: [3, 7, 9]\nmethods:\n  fomm:\n    checkpoints:\n      vox: {{path: {release}}}\n"
    )
    jobs, out = plan("results/table2.parquet", "--configfile", str(extra), "-p")
    seeded = {(s, d, m) for s in ("7", "9") for d in REAL for m in METHODS} - {
        ("7", "vox", "fomm"),
        ("9", "vox", "fomm"),  # a released checkpoint has one seed
    }
    for rule in ("train_seed", "reconstruct_seed", "metrics_seed"):
        assert of_rule(jobs, rule, "seed", "dataset", "method") == seeded, rule
    shells = [line.removeprefix("Shell command: ") for line in out.splitlines()]
    trains = [line for line in shells if line.startswith("exec ") and " train --threads" in line]
    assert sum("--seed 3 " in t and "--out results/runs/" in t for t in trains) == 11
    assert sum("--seed 9 " in t and "--out results/seeds/9/runs/" in t for t in trains) == 11
    table = shlex.split(next(line for line in shells if line.startswith("animbench table table2")))
    assert table[table.index("--seed") + 1] == "3"
    seeds = json.loads(table[table.index("--seed-metrics") + 1])
    assert sorted(seeds) == ["7", "9"] and len(seeds["7"]) == 11
    assert "results/seeds/7/metrics/taichi/mtia.parquet" in seeds["7"]


def test_report_table_shows_seed_columns_only_with_several_seeds():
    from animbench.report import table_html

    row = {"dataset": "d", "method": "FOMM", "metric": "L1", "value": 0.2, "ci_low": 0.1}
    one = pd.DataFrame([{**row, "n_seeds": 1, "seed_std": np.nan}])
    assert "<th>n_seeds</th>" not in table_html(one) and "<th>ci_low</th>" in table_html(one)
    three = pd.DataFrame([{**row, "n_seeds": 3, "seed_std": 0.05}])
    html = table_html(three)
    assert "<th>n_seeds</th><th>seed_std</th>" in html and '<td class="num">0.05</td>' in html
