"""No silent random pretrained weights in training: which files a preset needs, the one-line stop
when one is missing, the explicit switch whose rows say "deviates" down to the tables, and the
workflow fetching the files (a local rule) before the train jobs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import serve_folder, train_tiny

from animbench import weights
from animbench.config import merge
from animbench.errors import DataError
from animbench.models.presets import PRESETS
from animbench.train.pretrained import check_weights, required_weights

REPO = Path(__file__).resolve().parents[1]
VGG19 = weights.WEIGHTS["vgg19"]


def spec(name: str, overrides: dict | None = None) -> dict:
    return merge(PRESETS[name], overrides or {})


@pytest.fixture
def empty_cache(monkeypatch, tmp_path) -> Path:
    """A private table and empty caches; offline unless a test lifts it."""
    monkeypatch.setattr(weights, "WEIGHTS", dict(weights.WEIGHTS))
    monkeypatch.setenv("ANIMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    return tmp_path / "cache" / "weights"


def test_required_weights_follow_the_preset() -> None:
    assert required_weights(spec("fomm-vox256")) == {"vgg19": "the perceptual loss"}
    assert set(required_weights(spec("mtia-vox256"))) == {"vgg19"}  # no ImageNet init
    assert set(required_weights(spec("mtia-taichi256"))) == {"vgg19", "hrnet_w32"}
    # the Stem net loads HRNet-W32's first layers; W48 has its own file
    stem = {"model_params": {"kp_detector_params": {"backbone": "stem"}}}
    assert set(required_weights(spec("mtia-taichi256", stem))) == {"vgg19", "hrnet_w32"}
    w48 = {"model_params": {"kp_detector_params": {"backbone": "hrnet_w48"}}}
    assert set(required_weights(spec("mtia-taichi256", w48))) == {"vgg19", "hrnet_w48"}
    cpab = spec("cpabmm-vox256")
    assert set(required_weights(cpab)) == {"vgg19", "dino_vitb8", "sam_vit_b"}
    no_semantic = {"train_params": {"loss_weights": {"structure": 0, "keypoint_semantic": 0}}}
    assert set(required_weights(spec("cpabmm-vox256", no_semantic))) == {"vgg19"}
    no_perceptual = {"train_params": {"loss_weights": {"perceptual": [0, 0, 0, 0, 0]}}}
    assert required_weights(spec("fomm-vox256", no_perceptual)) == {}
    # every name is a known, downloadable file
    for name in ("fomm-vox256", "mtia-taichi256", "cpabmm-vox256"):
        assert set(required_weights(spec(name))) <= set(weights.WEIGHTS)


def test_paper_preset_without_vgg19_stops_with_one_line(tmp_path: Path) -> None:
    """`animbench train` on a paper preset, VGG19 in no cache and no network: one error line
    naming the file and its URL, before the data is read or the run folder made."""
    env = dict(
        os.environ,
        ANIMBENCH_OFFLINE="1",
        ANIMBENCH_CACHE=str(tmp_path / "cache"),
        TORCH_HOME=str(tmp_path / "torch"),
    )
    out = tmp_path / "run"
    args = ["--data", str(tmp_path / "no-data"), "--method", "fomm", "--preset", "fomm-vox256"]
    result = subprocess.run(
        [sys.executable, "-m", "animbench.cli", "train", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert VGG19.filename in errors[0] and VGG19.url in errors[0]
    assert "--allow-random-weights" in errors[0]
    assert not out.exists()


def test_missing_files_are_deviations_only_when_allowed(empty_cache: Path) -> None:
    cpab = spec("cpabmm-vox256")
    with pytest.raises(DataError, match=VGG19.url) as error:
        check_weights(cpab, allow_random=False)
    assert "\n" not in str(error.value)
    deviations = check_weights(cpab, allow_random=True)
    assert len(deviations) == 3
    for name in ("vgg19", "dino_vitb8", "sam_vit_b"):
        assert sum(weights.WEIGHTS[name].filename in d for d in deviations) == 1, name


@pytest.fixture
def vgg19_server(tmp_path) -> Iterator[tuple[str, str]]:
    """A loopback server with a generated stand-in for VGG19's file: (URL, its sha256)."""
    root = tmp_path / "www"
    root.mkdir()
    payload = b"generated weights\n" * 64
    (root / "vgg19.pth").write_bytes(payload)

    with serve_folder(root) as url:
        yield f"{url}/vgg19.pth", hashlib.sha256(payload).hexdigest()


def test_a_pinned_file_is_fetched_then_no_deviation(
    empty_cache: Path, vgg19_server, monkeypatch
) -> None:
    url, digest = vgg19_server
    weights.configure({"vgg19": {"url": url, "sha256": digest}})
    monkeypatch.delenv("ANIMBENCH_OFFLINE")
    assert check_weights(spec("fomm-vox256"), allow_random=False) == []
    cached = empty_cache / VGG19.filename  # the mirror keeps torchvision's file name
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    # a pin the file does not match is an error, never a silent substitute
    cached.unlink()
    weights.configure({"vgg19": {"sha256": "0" * 64}})
    with pytest.raises(DataError, match="checksum"):
        check_weights(spec("fomm-vox256"), allow_random=True)


def test_random_weights_deviate_down_to_the_table(tiny_dataset, tmp_path: Path) -> None:
    """The switch trains on a random VGG19; the checkpoint, train.json, reconstruct.json and
    the metrics record it, and table 2 gives the rows status "deviates", not "measured"."""
    from animbench import checkpoint, tables
    from animbench.evaluate.metrics import video_metrics
    from animbench.evaluate.reconstruct import reconstruct
    from animbench.report import table_html

    model = train_tiny(tiny_dataset, tmp_path / "run", tmp_path / "cache")
    payload = checkpoint.load(model)
    assert len(payload["deviations"]) == 1 and VGG19.filename in payload["deviations"][0]
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    assert summary["deviations"] == payload["deviations"]

    pred = tmp_path / "rec"
    reconstruct(tiny_dataset, "fomm", checkpoint=model, out=pred, device="cpu")
    assert (
        json.loads((pred / "reconstruct.json").read_text())["deviations"] == (payload["deviations"])
    )
    files = []
    for method, folder in (("fomm", pred), ("source-copy", tmp_path / "copy")):
        if method == "source-copy":
            reconstruct(tiny_dataset, method, out=folder, device="cpu")
        out = tmp_path / "metrics" / f"{method}.parquet"
        video_metrics(
            tiny_dataset / "test", folder, "none", "none", False, out, "synthetic-face", method
        )
        files.append(out)
    spec2 = {
        "datasets": {"synthetic-face": {"paper_name": None, "metrics": ["L1"]}},
        "methods": ["fomm"],
        "baselines": ["source-copy"],
    }
    table = tables.write_table2(files, spec2, tmp_path / "table2.parquet")
    fomm = table[(table.method == "FOMM") & (table.metric == "L1")].iloc[0]
    assert fomm.status == "deviates" and pd.notna(fomm.value)
    assert "deviates" in fomm.note and VGG19.filename in fomm.note
    others = table[(table.method != "FOMM") & table.value.notna()]  # the source-copy baseline
    assert len(others) and (others.status == "measured").all()  # untrained: nothing deviates
    assert '<tr class="deviates">' in table_html(table)


def _dry_run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--nolock", "results/table2.parquet", "-n"]
        + ["--forceall", "-p", "--workflow-profile", "none", *args],
        cwd=REPO,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _jobs(stdout: str) -> list[dict[str, str]]:
    """Each planned job's rule and its indented fields (input, output, wildcards)."""
    jobs: list[dict[str, str]] = []
    for line in stdout.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            jobs.append({"rule": line.split()[1].rstrip(":")})
        elif jobs and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            jobs[-1].setdefault(key, value)
    return jobs


def test_workflow_fetches_training_weights_before_train_jobs() -> None:
    stdout = _dry_run()
    jobs = _jobs(stdout)
    fetches = {
        j["wildcards"].removeprefix("weight="): i
        for i, j in enumerate(jobs)
        if j["rule"] == "weights"
    }
    assert {"vgg19", "hrnet_w32"} <= set(fetches)  # MTIA TaiChi initialises from HRNet-W32
    trains = {j["wildcards"]: (i, j) for i, j in enumerate(jobs) if j["rule"] == "train"}
    assert trains and min(i for i, _ in trains.values()) > fetches["vgg19"]
    stamp = "resources/cache/weights/verified/{}.json"
    for wildcards, (_, job) in trains.items():
        assert stamp.format("vgg19") in job["input"], wildcards
        assert (stamp.format("hrnet_w32") in job["input"]) == (
            wildcards == "dataset=taichi, method=mtia"
        ), wildcards
    commands = [line for line in stdout.splitlines() if " train --threads" in line]
    assert len(commands) == len(trains)
    assert not any("--allow-random-weights" in line for line in commands)
    assert all("--cache resources/cache" in line for line in commands)  # where they were put


def test_ci_profile_trains_on_random_weights_without_fetching() -> None:
    stdout = _dry_run("--profile", "profiles/ci")
    jobs = _jobs(stdout)
    assert not [j for j in jobs if j["rule"] == "weights" and "vgg19" in j["wildcards"]]
    trains = [line for line in stdout.splitlines() if " train --threads" in line]
    assert trains and all("--allow-random-weights" in line for line in trains)


def test_a_cached_vgg19_trains_without_deviation(tiny_dataset, tmp_path: Path, monkeypatch):
    """The switch off and the (generated, pinned) VGG19 file in the cache: training loads it,
    records no deviation and no VGG19 warning."""
    import torch
    from conftest import TINY_OVERRIDES, offline_weights

    from animbench import checkpoint
    from animbench.networks.vgg import Vgg19
    from animbench.train.trainer import TrainOptions, train

    cache = tmp_path / "cache"
    file = cache / "animbench" / "weights" / VGG19.filename  # offline_weights' cache
    file.parent.mkdir(parents=True)
    state = {f"features.{k}": v for k, v in Vgg19(pretrained=False).features.state_dict().items()}
    torch.save(state, file)
    monkeypatch.setattr(weights, "WEIGHTS", dict(weights.WEIGHTS))
    weights.configure({"vgg19": {"sha256": hashlib.sha256(file.read_bytes()).hexdigest()}})
    with offline_weights(cache):
        model = train(
            tiny_dataset, "fomm", "fomm-synthetic", overrides=TINY_OVERRIDES,
            out=tmp_path / "run", device="cpu", options=TrainOptions(image_every=0),
        )  # fmt: skip
    payload = checkpoint.load(model)
    assert payload["deviations"] == []
    assert not any("VGG19" in w for w in payload["warnings"])
