"""The workflow parses, lints, is formatted, and plans the right jobs (dry-runs only: nothing
here needs the models, data or network, and nothing is written under results/)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

REAL = ["vox", "taichi", "ted", "mgif"]
METHODS = ["fomm", "mraa", "mtia"]  # MTIA's Table 2, the default benchmark
CI_METHODS = [*METHODS, "tpsmm"]  # profiles/ci/benchmark.yaml
SYNTHETIC = ["synthetic-face", "synthetic-body"]


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--nolock", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def planned_jobs(*args: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a forced dry-run plans."""
    return plan(*args)[0]


def plan(*args: str) -> tuple[list[tuple[str, dict]], str]:
    """(rule, wildcards) of every job a forced dry-run plans, and its output."""
    proc = snakemake(*args, "--dry-run", "--forceall", "--workflow-profile", "none")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs: list[tuple[str, dict]] = []
    for line in proc.stdout.splitlines():
        head = re.match(r"^(?:local)?rule (\S+):$", line)
        if head:
            jobs.append((head.group(1), {}))
            continue
        wc = re.match(r"^\s+wildcards: (.*)$", line)
        if wc and jobs:
            jobs[-1][1].update(dict(item.split("=", 1) for item in wc.group(1).split(", ")))
    assert "This was a dry-run" in proc.stdout
    return jobs, proc.stdout


def of_rule(jobs, rule, *keys):
    return {tuple(w[k] for k in keys) for r, w in jobs if r == rule}


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_snakefmt_check():
    snakefmt = BIN / "snakefmt"
    if not snakefmt.exists():
        pytest.skip("snakefmt is not installed in this environment")
    proc = subprocess.run(
        [str(snakefmt), "--check", "."], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_config_plans_the_paper_benchmark():
    jobs = planned_jobs("results/table2.parquet")
    counts = Counter(rule for rule, _ in jobs)
    pinned = of_rule(jobs, "metadata", "dataset", "pinned_file")
    assert pinned == {
        ("vox", "metadata.csv"),
        ("taichi", "metadata.csv"),
        ("ted", "metadata.csv"),
        ("ted", "test_list.txt"),
    }
    assert of_rule(jobs, "download", "dataset") == {(d,) for d in REAL}
    assert of_rule(jobs, "crop", "dataset") == {(d,) for d in REAL}
    assert of_rule(jobs, "train", "dataset", "method") == {(d, m) for d in REAL for m in METHODS}
    evaluated = {(d, m) for d in REAL for m in [*METHODS, "source-copy"]}
    assert of_rule(jobs, "reconstruct", "dataset", "method") == evaluated
    assert of_rule(jobs, "metrics", "dataset", "method") == evaluated
    assert counts["table2"] == 1
    assert counts["synthetic"] == 0 and counts["table1"] == 0
    assert counts["train"] == 12 and counts["reconstruct"] == 16 and counts["metrics"] == 16


def test_real_datasets_plan_offline_with_their_protocol():
    """The four datasets plan from the default config (a dry run touches no network), and each
    crop job carries its dataset's protocol: resolution, frame selection, pinned inputs."""
    targets = [f"results/data/{d}/clips.parquet" for d in REAL]
    proc = snakemake(*targets, "-n", "--forceall", "-p", "--workflow-profile", "none")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shells = [
        line.removeprefix("Shell command: ")
        for line in proc.stdout.splitlines()
        if line.startswith("Shell command: animbench data")
    ]
    crops = {re.search(r"--dataset (\S+)", c).group(1): c for c in shells if " crop " in c}
    downloads = {re.search(r"--dataset (\S+)", c).group(1): c for c in shells if " download " in c}
    assert sorted(crops) == sorted(downloads) == sorted(REAL)
    for name, command in crops.items():
        spec = json.loads(shlex.split(command)[shlex.split(command).index("--spec") + 1])
        assert spec["resolution"] == (384 if name == "ted" else 256)
        assert spec["crop"]["selection"] == ("indices" if name == "ted" else "timestamps")
        assert f"results/data/{name}/availability.parquet" in command
        assert command.endswith(
            f"--out results/data/{name}/clips.parquet > results/logs/crop/{name}.log 2>&1"
        )
    assert "results/data/ted/test_list.txt" in downloads["ted"]
    assert "--input" not in downloads["mgif"]
    assert "youtube.com/watch?v={id}" in downloads["vox"]


def test_released_checkpoints_replace_training(tmp_path):
    release = tmp_path / "vox-cpk.pth.tar"
    release.write_bytes(b"not read by a dry run")
    extra = tmp_path / "release.yaml"
    extra.write_text(
        "methods:\n  fomm:\n    checkpoints:\n"
        f"      vox: {{path: {release}}}\n"
        "      taichi: {url: 'https://example.org/taichi-cpk.pth.tar', sha256: null}\n"
    )
    jobs = planned_jobs("results/table2.parquet", "--configfile", str(extra))
    assert of_rule(jobs, "import_checkpoint", "dataset", "method") == {
        ("vox", "fomm"),
        ("taichi", "fomm"),
    }
    trained = of_rule(jobs, "train", "dataset", "method")
    assert ("vox", "fomm") not in trained and ("taichi", "fomm") not in trained
    assert ("ted", "fomm") in trained and ("vox", "mraa") in trained

    proc = snakemake("results/table2.parquet", "--configfile", str(extra), "-n", "--forceall", "-p")
    imports = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith("Shell command: animbench checkpoint")
    ]
    vox = next(line for line in imports if "fomm-vox256" in line)
    assert str(release) in vox and "-o results/runs/vox/fomm/imported.pt" in vox
    taichi = next(line for line in imports if "fomm-taichi256" in line)
    assert "https://example.org/taichi-cpk.pth.tar" in taichi and "--sha256" not in taichi
    assert "--checkpoint results/runs/vox/fomm/imported.pt" in proc.stdout


def test_ci_profile_plans_the_synthetic_benchmark():
    jobs = planned_jobs("results/table2.parquet", "--profile", "profiles/ci")
    counts = Counter(rule for rule, _ in jobs)
    assert of_rule(jobs, "synthetic", "dataset") == {(d,) for d in SYNTHETIC}
    assert of_rule(jobs, "train", "dataset", "method") == {
        (d, m) for d in SYNTHETIC for m in CI_METHODS
    }
    evaluated = {(d, m) for d in SYNTHETIC for m in [*CI_METHODS, "source-copy"]}
    assert of_rule(jobs, "reconstruct", "dataset", "method") == evaluated
    assert of_rule(jobs, "metrics", "dataset", "method") == evaluated
    assert counts["table2"] == 1
    for rule in ("metadata", "download", "crop"):
        assert counts[rule] == 0, rule


def test_ci_profile_runs_on_cpu():
    proc = snakemake("results/table2.parquet", "--profile", "profiles/ci", "-n", "--forceall", "-p")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shells = [line.removeprefix("Shell command: ") for line in proc.stdout.splitlines()]
    trains = [line for line in shells if line.startswith("exec ") and " train --threads" in line]
    assert len(trains) == 2 * len(CI_METHODS)
    assert all("--device cpu" in line and "-synthetic" in line for line in trains)
    for method in CI_METHODS:
        assert sum(f"--preset {method}-synthetic" in line for line in trains) == 2
    assert "gpu=1" not in proc.stdout
    # methods.fomm.precision of the CI profile reaches FOMM's jobs only; the rest keep
    # training.precision
    for line in trains:
        expected = "bf16-if-native" if "--method fomm " in line else "auto"
        assert f"--precision {expected} " in line, line


def test_cpab_tables_plan_offline():
    """CPAB Tables 1 and 2 plan from the default config: every configured row x dataset is
    trained from its methods entry's preset, variants included, and each table job reads
    exactly its rows' metrics."""
    jobs, out = plan("results/cpab_table1.parquet", "results/cpab_table2.parquet", "-p")
    variants = ["cpabmm-cpab", "cpabmm-cpab-global", "cpabmm-cpab-global-ks"]
    variants.append("cpabmm-cpab-global-struc")
    assert of_rule(jobs, "paper_table", "table") == {("cpab_table1",), ("cpab_table2",)}
    expected = {(d, m) for d in REAL for m in ["fomm", "mraa", "tpsmm", "cpabmm"]}
    expected |= {("taichi", "monkeynet"), ("vox", "monkeynet")}
    expected |= {("taichi", m) for m in variants}
    assert of_rule(jobs, "train", "dataset", "method") == expected
    assert of_rule(jobs, "metrics", "dataset", "method") == expected
    assert "source-copy" not in out and not of_rule(jobs, "table2")

    shells = [line.removeprefix("Shell command: ") for line in out.splitlines()]
    trains = [line for line in shells if line.startswith("exec ") and " train --threads" in line]
    assert any(
        "--method cpabmm-cpab-global-ks --preset cpabmm-taichi256-cpab-global-ks" in line
        for line in trains
    )
    assert any("--method monkeynet --preset fomm-vox256-monkeynet" in line for line in trains)
    table = next(line for line in shells if line.startswith("animbench table paper"))
    args = shlex.split(table.split(" > ")[0])
    name = args[args.index("--name") + 1]
    spec = json.loads(args[args.index("--spec") + 1])
    metrics = args[args.index("--metrics") + 1 : args.index("--spec")]
    assert args[args.index("--out") + 1] == f"results/{name}.parquet"
    if name == "cpab_table2":
        assert [r["label"] for r in spec["rows"]][:2] == ["TPSMM", "+CPAB"]
        assert len(metrics) == 6 and "results/metrics/taichi/cpabmm-cpab.parquet" in metrics
    else:
        assert (spec["rows"][0]["label"], spec["rows"][0]["method"]) == ("X2Face", None)
        assert len(metrics) == 18
        assert list(spec["datasets"]) == ["taichi", "ted", "vox", "mgif"]  # the paper's order
    assert f"results/benchmarks/{name}.tsv" in out


NEW_TABLES = ["mtia_table4", "mtia_table5", "mtia_table6", "fomm_table1", "fomm_table3"]


def test_mtia_and_fomm_tables_plan_offline():
    """MTIA Tables 4-6 and FOMM Tables 1 and 3 plan from the default config: each ablation row
    trains its preset on taichi; the papers' default rows reuse the benchmark's runs (mtia,
    fomm) and Pyr.+O the Monkey-Net run (the same preset)."""
    jobs, out = plan(*[f"results/{t}.parquet" for t in NEW_TABLES], "-p")
    assert of_rule(jobs, "paper_table", "table") == {(t,) for t in NEW_TABLES}
    ablations = ["nope", "stem", "hrw48", "4layers", "8layers"]
    expected = {("taichi", f"mtia-{a}") for a in ablations} | {("taichi", "mtia")}
    expected |= {("taichi", f"fomm-{a}") for a in ["baseline", "pyr", "jac-no-eq"]}
    expected |= {(d, m) for d in ["taichi", "vox"] for m in ["fomm", "monkeynet"]}
    assert of_rule(jobs, "train", "dataset", "method") == expected
    assert of_rule(jobs, "metrics", "dataset", "method") == expected
    assert not of_rule(jobs, "table2") and "source-copy" not in out
    assert "nemo" not in of_rule(jobs, "crop", "dataset")

    shells = [line.removeprefix("Shell command: ") for line in out.splitlines()]
    trains = [line for line in shells if line.startswith("exec ") and " train --threads" in line]
    assert any("--method mtia-hrw48 --preset mtia-taichi256-hrw48" in t for t in trains)
    assert any("--method fomm-baseline --preset fomm-taichi256-baseline" in t for t in trains)
    specs = {}
    for line in shells:
        if line.startswith("animbench table paper"):
            args = shlex.split(line.split(" > ")[0])
            specs[args[args.index("--name") + 1]] = json.loads(args[args.index("--spec") + 1])
    assert sorted(specs) == sorted(NEW_TABLES)
    assert specs["mtia_table5"]["param_networks"] == ["kp_detector"]
    assert list(specs["fomm_table3"]["unavailable"]) == ["nemo", "bair"]  # the paper's order
    assert list(specs["fomm_table3"]["datasets"]) == ["taichi", "vox"]


def test_tables_target_plans_every_paper_table():
    jobs = planned_jobs("tables")
    tables = {t for (t,) in of_rule(jobs, "paper_table", "table")}
    assert tables == {*NEW_TABLES, "cpab_table1", "cpab_table2"}
    counts = Counter(rule for rule, _ in jobs)
    assert counts["table1"] == counts["table2"] == counts["tables"] == 1
    # the default target stays MTIA Tables 1 and 2
    default = Counter(rule for rule, _ in planned_jobs())
    assert default["paper_table"] == 0 and default["table2"] == 1


def test_table1_plans_only_table1():
    jobs = planned_jobs("results/table1.parquet")
    assert [rule for rule, _ in jobs] == ["table1"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("benchmark:\n  foo: 1\n", "config key 'benchmark.foo': unknown key"),
        (
            "datasets:\n  vox:\n    resolution: abc\n",
            "config key 'datasets.vox.resolution': 'abc' is not of type 'integer'",
        ),
        (
            "benchmark:\n  datasets: [vox, nope]\n",
            "config key 'benchmark.datasets[1]': unknown dataset 'nope'",
        ),
    ],
)
def test_bad_config_fails_with_one_line(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = snakemake("-n", "--workflow-profile", "none", "--configfile", str(bad))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"animbench: {message}")


def test_reconstruction_quantisation_reaches_the_reconstruct_jobs(tmp_path):
    """Truncation (the authors') by default; `reconstruction.quantisation: round` in the config
    reaches every reconstruct job, and a value outside the two is a config error."""

    def commands(*extra: str) -> list[str]:
        proc = snakemake(
            "results/table2.parquet", "--profile", "profiles/ci", *extra, "-n", "--forceall", "-p"
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [line for line in proc.stdout.splitlines() if " reconstruct --threads" in line]

    default = commands()
    assert default and all("--quantisation truncate" in line for line in default)
    rounding = tmp_path / "round.yaml"
    rounding.write_text("reconstruction: {quantisation: round}\n")
    rounded = commands("--configfile", "config.yaml", "profiles/ci/benchmark.yaml", str(rounding))
    assert len(rounded) == len(default)
    assert all("--quantisation round" in line for line in rounded)
    bad = tmp_path / "bad.yaml"
    bad.write_text("reconstruction: {quantisation: nearest}\n")
    proc = snakemake("-n", "--workflow-profile", "none", "--configfile", "config.yaml", str(bad))
    assert proc.returncode != 0 and "nearest" in proc.stdout + proc.stderr
