"""The weight cache: config pins over the built-in table, fetching from a loopback HTTP server,
the `animbench weights` command and the workflow's `weights` rule inputs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import serve_folder

from animbench import weights
from animbench.cli import main
from animbench.config import load_config, validate_config
from animbench.errors import ConfigError, DataError
from animbench.evaluate import detectors

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b"pretend these are network weights\n" * 100
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def table(monkeypatch, tmp_path) -> Path:
    """A private copy of the table and an empty cache; the network allowed (loopback only)."""
    monkeypatch.setattr(weights, "WEIGHTS", dict(weights.WEIGHTS))
    monkeypatch.setenv("ANIMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("ANIMBENCH_OFFLINE", raising=False)
    return tmp_path / "cache" / "weights"


@pytest.fixture
def server(tmp_path) -> Iterator[str]:
    """Base URL of a loopback server with `model.pth` (PAYLOAD)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.pth").write_bytes(PAYLOAD)

    with serve_folder(root) as url:
        yield url


def test_config_pin_verifies_a_mirror_download(table, server) -> None:
    weights.configure({"dino_vitb8": {"url": f"{server}/model.pth", "sha256": DIGEST}})
    entry = weights.WEIGHTS["dino_vitb8"]
    assert entry.sha256_prefix == DIGEST
    assert entry.filename == "dino_vitbase8_pretrain.pth"  # the mirror keeps the cached name
    stamp = table / "verified" / "dino_vitb8.json"
    paths = weights.fetch_all(["dino_vitb8"], stamp=stamp)
    assert paths["dino_vitb8"] == table / "dino_vitbase8_pretrain.pth"
    assert paths["dino_vitb8"].read_bytes() == PAYLOAD
    record = json.loads(stamp.read_text())
    assert record["dino_vitb8"]["sha256"] == DIGEST


def test_a_wrong_pin_rejects_and_deletes_the_download(table, server) -> None:
    weights.configure({"dino_vitb8": {"url": f"{server}/model.pth", "sha256": "0" * 64}})
    with pytest.raises(DataError, match="fails its checksum"):
        weights.fetch_all(["dino_vitb8"])
    assert not (table / "dino_vitbase8_pretrain.pth").exists()


def test_a_cached_file_that_no_longer_matches_its_pin_is_an_error(table, server) -> None:
    weights.configure({"dino_vitb8": {"url": f"{server}/model.pth", "sha256": DIGEST}})
    weights.fetch_all(["dino_vitb8"])
    weights.configure({"dino_vitb8": {"sha256": DIGEST[::-1]}})
    with pytest.raises(DataError, match="dino_vitbase8_pretrain.pth: checksum does not match"):
        weights.fetch_all(["dino_vitb8"])


def test_unreachable_files_are_all_named_in_one_error(table, monkeypatch) -> None:
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        weights.fetch_all(["s3fd", "2dfan4"])
    message = str(info.value)
    assert "\n" not in message
    for name in ("s3fd", "2dfan4"):
        assert weights.WEIGHTS[name].filename in message
        assert weights.WEIGHTS[name].url in message


def test_unknown_names_are_config_errors(table) -> None:
    with pytest.raises(ConfigError, match="weights.nope"):
        weights.configure({"nope": {"sha256": DIGEST}})
    with pytest.raises(ConfigError, match="unknown weight file 'nope'"):
        weights.fetch_all(["nope"])


def test_cli_fetches_with_pins_and_reports_failures_in_one_line(table, server, capsys) -> None:
    pins = json.dumps({"dino_vitb8": {"url": f"{server}/model.pth", "sha256": DIGEST[:12]}})
    stamp = table / "verified" / "dino_vitb8.json"
    args = ["weights", "fetch", "dino_vitb8", "--weight-pins", pins, "--stamp", str(stamp)]
    assert main(args) == 0
    assert stamp.is_file()
    capsys.readouterr()
    pins = json.dumps({"dino_vitb8": {"url": f"{server}/missing.pth"}})
    (table / "dino_vitbase8_pretrain.pth").unlink()
    assert main(["weights", "fetch", "dino_vitb8", "--weight-pins", pins]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("animbench weights: error: weights missing: dino_vitbase8_pretrain.pth")
    assert "missing.pth" in err and "\n" not in err


def test_cli_list_shows_pins_and_unpinned_files(table, capsys) -> None:
    assert main(["weights", "list"]) == 0
    rows = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(rows) == set(weights.WEIGHTS)
    assert "sha256 UNPINNED" in rows["dino_vitb8"] and "not cached" in rows["dino_vitb8"]
    assert "sha256 619a316812" in rows["s3fd"]


def test_config_weights_are_validated() -> None:
    config = load_config([ROOT / "config.yaml"], validate=False)
    config["weights"] = {"nope": {"sha256": DIGEST}}
    with pytest.raises(ConfigError, match="config key 'weights.nope'"):
        validate_config(config)
    config["weights"] = {"s3fd": {"sha256": "not-hex"}}
    with pytest.raises(ConfigError, match="weights.s3fd.sha256"):
        validate_config(config)


def test_shipped_config_pins_agree_with_the_package_table() -> None:
    """config.yaml repeats the evaluation networks' URLs and digests for users to see and edit;
    shipped, it must say what the package says."""
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())["weights"]
    assert shipped, "config.yaml lists the evaluation weights"
    for name, entry in shipped.items():
        assert entry["url"] == weights.WEIGHTS[name].url, name
        assert entry["sha256"] == weights.WEIGHTS[name].sha256_prefix, name


def test_every_third_party_backend_declares_the_weights_it_needs() -> None:
    modules = {**detectors._KEYPOINT_MODULES, **detectors._IDENTITY_MODULES}
    assert set(detectors.BACKEND_WEIGHTS) == set(modules)
    for backend, names in detectors.BACKEND_WEIGHTS.items():
        assert names and set(names) <= set(weights.WEIGHTS), backend
    assert detectors.weights_for("face-alignment", "synthetic-face", "none") == ["s3fd", "2dfan4"]
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())["weights"]
    needed = {name for names in detectors.BACKEND_WEIGHTS.values() for name in names}
    assert needed <= set(shipped), "config.yaml lists every evaluation weight file"
