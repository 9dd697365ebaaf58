"""The SLURM profile end to end against stand-in SLURM commands: `snakemake --profile
profiles/slurm` submits the synthetic dataset, two tiny trainings, a reconstruction and its
metrics through the real executor plugin; the stand-in `sbatch` records each submission, runs
the job there and then, and `sacct` reports it COMPLETED. The sbatch calls must carry each
job's GPUs, memory, runtime and CPUs from config (defaults, and a per-(method, dataset)
override), and a multi-GPU train job must run the trainer through torchrun.

The run takes the default software route (no conda: every job inherits the environment
Snakemake runs in) and the cluster's network: the stand-in "compute nodes" have no internet
(every proxy variable points at a closed port, loopback included), so the weight files the
jobs load (LPIPS' AlexNet trunk and heads, served here from a loopback server) must be fetched
by the local `weights` rule beforehand, and every job must run with ANIMBENCH_OFFLINE set.

Runs in a copy of the repository so a developer's own results/ is left alone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from ci_support import REPO, _ignore
from conftest import serve_folder

# ----------------------------------------------------------------------------- stand-ins

_PRELUDE = f"""#!{sys.executable}
import fcntl, json, os, shlex, subprocess, sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_STATE"])


def record(tool, argv, **extra):
    with open(STATE / "calls.jsonl", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps({{"tool": tool, "argv": argv, **extra}}) + "\\n")


def jobs():
    return [json.loads(p.read_text()) for p in sorted((STATE / "jobs").glob("*.json"))]
"""

# records its arguments, takes a job id under a lock (the plugin submits from threads), runs
# the --wrap command where SLURM would run the batch script, and prints the id (--parsable)
_SBATCH = """
argv = sys.argv[1:]
record("sbatch", argv)
opts, wrap = {}, None
for i, arg in enumerate(argv):
    if arg.startswith("--wrap="):
        wrap = arg[len("--wrap="):]
    elif arg in ("--job-name", "--output", "--comment", "-D"):
        opts[arg] = argv[i + 1]
if wrap is None:
    sys.exit("sbatch: error: the stand-in only runs --wrap jobs")
(STATE / "jobs").mkdir(exist_ok=True)
with open(STATE / "next_id", "a+") as fh:
    fcntl.flock(fh, fcntl.LOCK_EX)
    fh.seek(0)
    job_id = int(fh.read() or 1000)
    fh.seek(0)
    fh.truncate()
    fh.write(str(job_id + 1))
job = {"id": str(job_id), "name": opts["--job-name"], "comment": opts["--comment"]}
log = Path(opts["--output"].replace("%j", job["id"]))
log.parent.mkdir(parents=True, exist_ok=True)
env = dict(os.environ, SLURM_JOB_ID=job["id"], SLURM_JOBID=job["id"])
# a compute node without internet: every connection goes to a closed port, loopback included
for var in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy"):
    env[var] = env[var.upper()] = "http://127.0.0.1:9"
env["no_proxy"] = env["NO_PROXY"] = ""
with open(log, "w") as out:
    rc = subprocess.call(
        ["/bin/sh", "-c", wrap], cwd=opts.get("-D"), env=env, stdout=out, stderr=out
    )
job["state"] = "COMPLETED" if rc == 0 else "FAILED"
(STATE / "jobs" / f"{job_id}.json").write_text(json.dumps(job))
print(job["id"])
"""

# `sacct ... --format=JobIdRaw,State --name <run>` and `squeue --format=%i|%T --name <run>`:
# one `id|STATE` line per job of that run; other queries (failure reasons) print nothing
_STATUS = """
argv = sys.argv[1:]
record(Path(sys.argv[0]).name, argv)
if "--name" in argv:
    name = argv[argv.index("--name") + 1]
    for job in jobs():
        if job["name"] == name:
            print(f"{job['id']}|{job['state']}")
"""

# srun inside a job: drop its options and run the step's command; records whether the job
# step runs with downloads switched off
_SRUN = """
argv = sys.argv[1:]
record("srun", argv, offline=os.environ.get("ANIMBENCH_OFFLINE"))
while argv and argv[0].startswith("-"):
    argv.pop(0)
os.execvp("/bin/sh", ["/bin/sh", "-c", shlex.join(argv)])
"""

# torchrun: record the launch, then run the module once in this process (no process group:
# a single-process run of the same command, enough to see the launcher's arguments work)
_TORCHRUN = f"""
argv = sys.argv[1:]
record("torchrun", argv)
module = argv.index("-m")
os.execv({sys.executable!r}, [{sys.executable!r}, *argv[module:]])
"""

_STANDINS = {
    "sbatch": _SBATCH,
    "sacct": _STATUS,
    "squeue": _STATUS,
    "srun": _SRUN,
    "torchrun": _TORCHRUN,
    "sinfo": 'record("sinfo", sys.argv[1:])\nprint("PARTITION\\ncpu*\\ngpu")\n',
    "sacctmgr": 'record("sacctmgr", sys.argv[1:])\nprint("testacct")\n',
    "scancel": 'record("scancel", sys.argv[1:])\n',
}


def install_standins(folder: Path) -> None:
    folder.mkdir()
    for name, body in _STANDINS.items():
        path = folder / name
        path.write_text(_PRELUDE + body)
        path.chmod(0o755)


# ----------------------------------------------------------------------------- the run

# a tiny synthetic benchmark: 4 + 2 clips of 8 frames at 32x32, two optimiser steps; `fomm` and
# a second entry of the same model, `fomm-default`, which keeps the default train resources.
# No perceptual loss, so training needs no VGG19 (548 MB): the files the jobs need from outside
# are LPIPS' (reconstruct), served by a loopback server (slurm_run) under config `weights:`.
TINY_TRAIN = {
    "train_params": {
        "max_steps": 2,
        "batch_size": 2,
        "num_epochs": 1,
        "num_repeats": 1,
        "checkpoint_freq": 1,
        "scales": [1, 0.5],
        "loss_weights": {"perceptual": [0, 0, 0, 0, 0]},
    },
    "dataset_params": {"frame_shape": [32, 32, 3]},
}
CONFIG = {
    "device": "cpu",
    "datasets": {"synthetic-face": {"num_train": 4, "num_test": 2, "frames": 8, "size": 32}},
    "methods": {
        "fomm": {"overrides": TINY_TRAIN},
        "fomm-default": {"presets": {"synthetic-face": "fomm-synthetic"}, "overrides": TINY_TRAIN},
    },
    "resources": {
        "synthetic": {"gpu": 0, "mem_mb": 500, "runtime": 5, "threads": 1},
        "train": {
            "gpu": 1,
            "mem_mb": 1000,
            "runtime": 10,
            "threads": 1,
            "methods": {
                "fomm": {"synthetic-face": {"gpu": 2, "mem_mb": 3000, "runtime": 20, "threads": 2}}
            },
        },
        "reconstruct": {
            "gpu": 0,
            "mem_mb": 1000,
            "runtime": 5,
            "threads": 1,
            "methods": {"fomm": {"synthetic-face": {"gpu": 1, "mem_mb": 1500}}},
        },
        "metrics": {"gpu": 0, "mem_mb": 1000, "runtime": 5, "threads": 1},
    },
}
TARGETS = [
    "results/metrics/synthetic-face/fomm.parquet",
    "results/runs/synthetic-face/fomm-default/model.pt",
]

_FAILURE: list[str] = []


def lpips_files(folder: Path) -> dict[str, Path]:
    """Stand-ins for LPIPS' AlexNet trunk and v0.1 heads (random, in the published layouts)."""
    import torch

    from animbench.evaluate.image_metrics import LPIPS

    torch.manual_seed(0)
    model = LPIPS(pretrained=False)
    trunk = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    heads = {f"lin{i}.model.1.weight": lin.weight.abs() for i, lin in enumerate(model.lins)}
    folder.mkdir()
    torch.save(trunk, folder / "alexnet.pth")
    torch.save(heads, folder / "alex.pth")
    return {"alexnet": folder / "alexnet.pth", "lpips_alex": folder / "alex.pth"}


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> Iterator[dict]:
    """The copy's folder, every stand-in call ({tool, argv}) of one profile run, and the paths
    the loopback weight server was asked for."""
    if _FAILURE:
        pytest.fail(_FAILURE[0])
    from animbench.downloads import sha256_file

    tmp = tmp_path_factory.mktemp("slurm")
    workdir, bindir, state = tmp / "repo", tmp / "bin", tmp / "state"
    shutil.copytree(REPO, workdir, ignore=_ignore)
    install_standins(bindir)
    state.mkdir()
    files = lpips_files(tmp / "www")
    requested: list[str] = []
    with serve_folder(tmp / "www", requested) as url:
        pins = {
            name: {"url": f"{url}/{path.name}", "sha256": sha256_file(path)}
            for name, path in files.items()
        }
        (tmp / "config.json").write_text(json.dumps({**CONFIG, "weights": pins}))
        yield run_profile(tmp, workdir, bindir, state) | {"requested": requested}


def run_profile(tmp: Path, workdir: Path, bindir: Path, state: Path) -> dict:
    env = dict(
        os.environ,
        # the default route: the environment Snakemake runs in (its PATH finds `animbench`)
        PATH=f"{bindir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        FAKE_SLURM_STATE=str(state),
        TORCH_HOME=str(tmp / "torch"),
        OMP_NUM_THREADS="1",
        # the login node reaches the loopback server directly (not through a registry proxy)
        no_proxy="127.0.0.1,localhost",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.pop("ANIMBENCH_OFFLINE", None)  # the workflow itself must switch the jobs offline
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            "profiles/slurm",
            *TARGETS,
            "--configfile",
            str(tmp / "config.json"),
            # the cluster's own placement (replaces the profile's default-resources entry)
            "--default-resources",
            "slurm_account=testacct",
            "slurm_partition=testcpu",
            "runtime=5",
            "mem_mb=500",
            "--retries",
            "0",
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--slurm-keep-successful-logs",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    calls_file = state / "calls.jsonl"
    calls = (
        [json.loads(line) for line in calls_file.read_text().splitlines()]
        if calls_file.exists()
        else []
    )
    if proc.returncode != 0:
        logs = "".join(
            f"\n--- {p.relative_to(workdir)}\n{p.read_text()[-3000:]}"
            for p in sorted((workdir / "results").rglob("*.log"))
        )
        _FAILURE.append(
            f"profile run failed:\n{proc.stdout[-3000:]}{proc.stderr[-6000:]}{logs[-12000:]}"
        )
        pytest.fail(_FAILURE[0])
    return {"workdir": workdir, "calls": calls}


def test_jobs_run_offline_on_files_the_local_rules_fetched(slurm_run):
    """Every job ran with downloads switched off and no network; the LPIPS files it needed
    came from the local `weights` rule (one request each, from the login node), and LPIPS was
    measured with them."""
    steps = [call for call in slurm_run["calls"] if call["tool"] == "srun"]
    rules = {rule: False for rule in ("train", "reconstruct", "metrics")}
    for call in steps:
        rule = next((r for r in rules if f"{r}:dataset=" in " ".join(call["argv"])), None)
        if rule:
            rules[rule] = True
            assert call["offline"] == "1", call
    assert all(rules.values()), rules
    assert sorted(slurm_run["requested"]) == ["/alex.pth", "/alexnet.pth"]
    out = slurm_run["workdir"] / "results/reconstruction/synthetic-face/fomm"
    summary = json.loads((out / "reconstruct.json").read_text())
    assert summary["lpips_weights"].startswith("LPIPS v0.1 alex: trunk"), summary
    lpips = pd.read_parquet(out / "frames.parquet")["lpips"]
    assert len(lpips) and all(math.isfinite(v) for v in lpips)


def test_offline_switch_refuses_every_download(tmp_path, monkeypatch):
    from animbench.downloads import download
    from animbench.errors import DataError

    url = "http://127.0.0.1:9/file.bin"  # a closed port: the switch answers before any socket
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        download(url, tmp_path / "file.bin")
    assert str(info.value).startswith(f"download of {url} refused: ANIMBENCH_OFFLINE is set")
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "0")  # 0: downloads allowed (this one then fails)
    with pytest.raises(DataError, match="failed"):
        download(url, tmp_path / "file.bin")


def submissions(run: dict) -> dict[tuple[str, ...], list[str]]:
    """sbatch argument lists by (rule, *wildcard values), from the job's --comment."""
    out = {}
    for call in run["calls"]:
        if call["tool"] != "sbatch":
            continue
        argv = call["argv"]
        rule, _, wildcards = (
            argv[argv.index("--comment") + 1].removeprefix("rule_").partition("_wildcards_")
        )
        key = (rule, *wildcards.split("_"))
        assert key not in out, f"{key} submitted twice"
        out[key] = argv
    return out


def option(argv: list[str], name: str) -> str | None:
    """The value of `name VALUE` or `name=VALUE` in an sbatch argument list."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def requests(argv: list[str]) -> dict[str, str | None]:
    return {
        "gpus": option(argv, "--gpus"),
        "mem": option(argv, "--mem"),
        "time": option(argv, "-t"),
        "cpus": option(argv, "--cpus-per-task"),
        "partition": option(argv, "-p"),
        "account": option(argv, "-A"),
    }


def test_every_heavy_job_went_through_sbatch(slurm_run):
    assert set(submissions(slurm_run)) == {
        ("synthetic", "synthetic-face"),
        ("train", "synthetic-face", "fomm"),
        ("train", "synthetic-face", "fomm-default"),
        ("reconstruct", "synthetic-face", "fomm"),
        ("metrics", "synthetic-face", "fomm"),
    }
    workdir = slurm_run["workdir"]
    for target in TARGETS:
        assert (workdir / target).exists(), target


def test_train_requests_come_from_config(slurm_run):
    jobs = submissions(slurm_run)
    # the rule's defaults
    assert requests(jobs["train", "synthetic-face", "fomm-default"]) == {
        "gpus": "1",
        "mem": "1000",
        "time": "10",
        "cpus": "1",
        "partition": "gpu",  # the profile's placement of train jobs
        "account": "testacct",
    }
    # the (fomm, synthetic-face) override
    assert requests(jobs["train", "synthetic-face", "fomm"]) == {
        "gpus": "2",
        "mem": "3000",
        "time": "20",
        "cpus": "2",
        "partition": "gpu",
        "account": "testacct",
    }
    for method in ("fomm", "fomm-default"):
        argv = jobs["train", "synthetic-face", method]
        assert option(argv, "--signal") == "TERM@300"  # the profile's slurm_extra
        assert "--requeue" in argv  # slurm-requeue
        assert "--cpus-per-gpu" not in " ".join(argv)  # threads are the job's CPUs


def test_other_rules_requests(slurm_run):
    jobs = submissions(slurm_run)
    # a partial override keeps the rule's other defaults
    assert requests(jobs["reconstruct", "synthetic-face", "fomm"]) == {
        "gpus": "1",
        "mem": "1500",
        "time": "5",
        "cpus": "1",
        "partition": "gpu",
        "account": "testacct",
    }
    # CPU jobs: no GPU request, the default (CPU) partition
    synthetic = requests(jobs["synthetic", "synthetic-face"])
    assert synthetic["gpus"] is None and synthetic["partition"] == "testcpu"
    assert (synthetic["mem"], synthetic["time"], synthetic["cpus"]) == ("500", "5", "1")
    assert requests(jobs["metrics", "synthetic-face", "fomm"])["gpus"] is None


def test_multi_gpu_training_runs_torchrun(slurm_run):
    launches = [call["argv"] for call in slurm_run["calls"] if call["tool"] == "torchrun"]
    assert len(launches) == 1, launches  # the 2-GPU job only; fomm-default runs `animbench`
    argv = launches[0]
    assert argv[:4] == ["--standalone", "--nproc_per_node=2", "-m", "animbench.cli"]
    assert argv[4] == "train" and argv[argv.index("--method") + 1] == "fomm"
    assert argv[argv.index("--threads") + 1] == "1"  # 2 CPUs shared by 2 processes
    # the job step inside the allocation asks for the same GPUs and CPUs
    steps = [
        call["argv"]
        for call in slurm_run["calls"]
        if call["tool"] == "srun" and "train:dataset=synthetic-face,method=fomm" in call["argv"]
    ]
    assert steps and all("--gpus=2" in a and "--cpus-per-task=2" in a for a in steps), steps
    run_dir = slurm_run["workdir"] / "results/runs/synthetic-face/fomm"
    assert (run_dir / "model.pt").exists() and (run_dir / "checkpoint-last.pt").exists()


def test_single_gpu_training_runs_animbench(slurm_run):
    steps = [
        call["argv"]
        for call in slurm_run["calls"]
        if call["tool"] == "srun"
        and "train:dataset=synthetic-face,method=fomm-default" in call["argv"]
    ]
    assert steps and all("--gpus=1" in a and "--cpus-per-task=1" in a for a in steps), steps
    assert (slurm_run["workdir"] / "results/runs/synthetic-face/fomm-default/model.pt").exists()


# ----------------------------------------------------------------------------- config


def shipped_config_with(resources: dict) -> dict:
    from animbench.config import load_config, merge

    return merge(load_config([REPO / "config.yaml"], validate=False), {"resources": resources})


def test_an_override_sets_only_its_keys():
    from animbench.config import validate_config

    config = shipped_config_with({"train": {"methods": {"mraa": {"vox": {"runtime": 99}}}}})
    train = validate_config(config)["resources"]["train"]
    assert train["methods"]["mraa"]["vox"] == {"runtime": 99}  # no defaults filled in
    assert train["methods"]["fomm"]["vox"] == {"gpu": 2, "mem_mb": 96000, "threads": 16}
    assert (train["gpu"], train["threads"]) == (1, 8)


@pytest.mark.parametrize(
    "resources, message",
    [
        (
            {"train": {"methods": {"fomm": {"vox": {"gpus": 2}}}}},
            "config key 'resources.train.methods.fomm.vox.gpus': unknown key",
        ),
        (
            {"crop": {"methods": {"fomm": {"vox": {"gpu": 1}}}}},
            "config key 'resources.crop.methods': unknown key",
        ),
        (
            {"train": {"datasets": {"vox": {"gpu": 1}}}},
            "config key 'resources.train.datasets': unknown key",
        ),
    ],
)
def test_unknown_resource_keys_are_named(resources, message):
    from animbench.config import validate_config
    from animbench.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        validate_config(shipped_config_with(resources))
    assert str(info.value) == message


def dry_run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--nolock", "--workflow-profile", "none", "-n", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "resources:\n  train:\n    methods:\n      fomm2: {vox: {gpu: 2}}\n",
            "config key 'resources.train.methods.fomm2': unknown method 'fomm2'",
        ),
        (
            "resources:\n  train:\n    methods:\n      monkeynet: {ted: {gpu: 2}}\n",
            "config key 'resources.train.methods.monkeynet.ted': 'monkeynet' has no train job on "
            "dataset 'ted' (it has: taichi, vox)",
        ),
        (
            "resources:\n  crop:\n    datasets:\n      synthetic-face: {threads: 2}\n",
            "config key 'resources.crop.datasets.synthetic-face': no crop job on dataset",
        ),
    ],
)
def test_overrides_must_name_a_job(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = dry_run("--configfile", str(bad))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"animbench: {message}"), proc.stderr


def test_shipped_config_plans_multi_gpu_training():
    """FOMM on vox trains on 2 GPUs and MTIA on ted on 4, through torchrun; MRAA on 1."""
    targets = ["results/runs/vox/fomm/model.pt", "results/runs/ted/mtia/model.pt"]
    proc = dry_run(*targets, "results/runs/vox/mraa/model.pt", "--forceall", "-p")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs: dict[str, tuple[str, str]] = {}  # method -> (resources line, shell command)
    method = resources = None
    for line in proc.stdout.splitlines():
        if line.strip().startswith("wildcards:") and "method=" in line:
            method = line.split("method=")[1].split(",")[0].strip()
        elif line.strip().startswith("resources:"):
            resources = line
        elif line.startswith("Shell command: exec") and " train " in line and method:
            jobs[method] = (resources, line.removeprefix("Shell command: "))
            method = None
    assert set(jobs) == {"fomm", "mtia", "mraa"}
    assert "gpu=2," in jobs["fomm"][0] and "mem_mb=96000" in jobs["fomm"][0]
    assert jobs["fomm"][1].startswith("exec torchrun --standalone --nproc_per_node=2 -m ")
    assert "gpu=4," in jobs["mtia"][0]
    assert "--nproc_per_node=4 -m animbench.cli train " in jobs["mtia"][1]
    assert "gpu=1," in jobs["mraa"][0] and jobs["mraa"][1].startswith("exec animbench train ")
