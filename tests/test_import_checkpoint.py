"""Importing the authors' checkpoints: synthesised from the reference manifests (keys and
shapes of the authors' state_dicts), loaded strictly, written in our format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MANIFEST_NAMES, MANIFESTS, SHARED, reference_manifest

from animbench import checkpoint as ckpt
from animbench import cli
from animbench.errors import DataError
from animbench.evaluate.reconstruct import load_animator
from animbench.models import registry
from animbench.models.import_checkpoint import import_checkpoint, read_authors_file

# manifest dataset names that differ from our preset names
PRESET_ALIASES = {"mtia_voxceleb1": ["mtia-voxceleb1", "mtia-vox256"]}


def _manifest(name: str) -> dict:
    return reference_manifest(name)


def _preset(name: str) -> str:
    """The registry preset of a manifest: every manifest has one, so a missing one fails."""
    for preset in PRESET_ALIASES.get(name, [name.replace("_", "-")]):
        if preset in registry.PRESETS:
            return preset
    pytest.fail(f"no preset for the authors' manifest {name} in the registry")


def test_every_authors_manifest_is_shipped():
    """tests/reference holds the 17 manifests of shared/reference (FOMM 5, MRAA 4, MTIA 4,
    TPSMM 4), equal to the originals where the shared folder is present."""
    assert len(MANIFEST_NAMES) == 17
    assert {name.split("_")[0] for name in MANIFEST_NAMES} == {"fomm", "mraa", "mtia", "tpsmm"}
    originals = SHARED / "reference" / "state_dicts"
    if originals.is_dir():
        assert sorted(p.stem for p in originals.glob("*.json")) == MANIFEST_NAMES
        for name in MANIFEST_NAMES:
            original = json.loads((originals / f"{name}.json").read_text())
            assert reference_manifest(name) == original, name
    assert MANIFESTS.is_dir()


def _tensor(key: str, shape: list[int], generator: torch.Generator) -> torch.Tensor:
    """A random tensor with values a network tolerates (BatchNorm statistics positive, weights
    scaled by 1/√fan-in)."""
    if key.endswith("num_batches_tracked"):
        return torch.tensor(1000, dtype=torch.long)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=generator) + 0.5
    noise = torch.randn(shape, generator=generator)
    if key.endswith("running_mean") or len(shape) < 2:
        base = 1.0 if key.endswith("norm.weight") or key.endswith("bn.weight") else 0.0
        return base + 0.05 * noise
    return noise / float(np.sqrt(np.prod(shape[1:])))


def authors_file(manifest: dict, path: Path, seed: int = 0, prefix: str = "", **edits) -> Path:
    """An authors-style checkpoint: {network: state_dict, 'epoch', optimizer states holding
    numpy scalars, as the authors' loggers write}."""
    generator = torch.Generator().manual_seed(seed)
    payload: dict = {}
    for net, entry in manifest.items():
        payload[net] = {
            prefix + k: _tensor(k, shape, generator) for k, shape in entry["state_dict"].items()
        }
        payload[f"optimizer_{net}"] = {
            "state": {0: {"step": np.float64(10.0)}},
            "param_groups": [{"lr": np.float32(2e-4), "betas": (0.5, 0.999), "params": [0]}],
        }
    payload["epoch"] = 99
    for dotted, value in edits.items():
        net, key = dotted.split(".", 1)
        if value is None:
            del payload[net][key]
        else:
            payload[net][key] = value
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def fomm_file(tmp_path_factory) -> Path:
    manifest = _manifest("fomm_vox256")
    return authors_file(manifest, tmp_path_factory.mktemp("authors") / "vox-cpk.pth.tar")


@pytest.mark.parametrize("name", MANIFEST_NAMES)
def test_import_every_manifest(name, tmp_path):
    manifest = _manifest(name)
    preset = _preset(name)
    source = authors_file(manifest, tmp_path / f"{name}.pth.tar")
    out = import_checkpoint(preset, source, tmp_path / "imported.pt")
    payload = ckpt.load(out)
    original = read_authors_file(source)
    assert payload["imported"]["source_sha256"] == ckpt.sha256(source)
    assert payload["imported"]["networks"] == [n for n in payload["networks"] if n in manifest]
    assert payload["epoch"] == 99 and payload["preset_name"] == preset
    for net in manifest:
        if net not in payload["networks"]:  # TPSMM mgif: bg False, the file's bg_predictor unused
            assert any(net in w and "not used" in w for w in payload["warnings"]), net
            continue
        state = payload["networks"][net]
        assert state.keys() == original[net].keys(), net
        for key, value in original[net].items():
            assert torch.equal(state[key], value), f"{net}.{key}"
    # the warps' convention the authors trained with (torch < 1.3 or explicit True; MRAA and
    # MTIA on torch 1.4 and 1.6 got grid_sample's new default, False), recorded and used
    expected = name.split("_")[0] not in ("mraa", "mtia")
    assert payload["preset"]["model_params"]["common_params"]["align_corners"] is expected
    # the imported checkpoint loads into the registry model as a trained one would
    model, _ = load_animator(out, torch.device("cpu"))
    assert model.align_corners is expected


def test_missing_tensor_names_it(tmp_path):
    manifest = _manifest("fomm_vox256")
    key = "kp_detector.predictor.encoder.down_blocks.0.conv.weight"
    source = authors_file(manifest, tmp_path / "a.pth.tar", **{key: None})
    with pytest.raises(DataError, match=f"{key}: missing from the file"):
        import_checkpoint("fomm-vox256", source, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_misshaped_tensor_names_it(tmp_path, capsys):
    manifest = _manifest("fomm_vox256")
    source = authors_file(
        manifest, tmp_path / "a.pth.tar", **{"kp_detector.kp.weight": torch.zeros(10, 32, 7, 7)}
    )
    expected = "kp_detector.kp.weight: shape (10, 32, 7, 7) in the file, (10, 35, 7, 7) expected"
    with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        import_checkpoint("fomm-vox256", source, tmp_path / "out.pt")
    # the command line prints it on one line and exits 2
    argv = ["checkpoint", "import", "--preset", "fomm-vox256", str(source), "-o", "x.pt"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_unexpected_tensor_names_it(tmp_path):
    manifest = _manifest("fomm_vox256")
    source = authors_file(
        manifest, tmp_path / "a.pth.tar", **{"generator.extra.weight": torch.zeros(3)}
    )
    with pytest.raises(DataError, match="generator.extra.weight: unexpected tensor"):
        import_checkpoint("fomm-vox256", source, tmp_path / "out.pt")


def test_missing_network_and_dataparallel_prefix(tmp_path):
    manifest = _manifest("fomm_vox256")
    partial = {"generator": manifest["generator"]}
    source = authors_file(partial, tmp_path / "a.pth.tar")
    with pytest.raises(DataError, match="network 'kp_detector' missing"):
        import_checkpoint("fomm-vox256", source, tmp_path / "out.pt")
    # nn.DataParallel's `module.` prefix is stripped
    source = authors_file(manifest, tmp_path / "dp.pth.tar", prefix="module.")
    payload = ckpt.load(import_checkpoint("fomm-vox256", source, tmp_path / "out.pt"))
    assert "kp.weight" in payload["networks"]["kp_detector"]
    assert any("discriminator" in w for w in payload["warnings"])


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="bad.pth: not a readable torch checkpoint"):
        import_checkpoint("fomm-vox256", bad, tmp_path / "out.pt")


def test_round_trip_reconstructs_like_direct_loading(fomm_file, tmp_path):
    """The imported checkpoint animates exactly as the model with the file's tensors."""
    out = import_checkpoint("fomm-vox256", fomm_file, tmp_path / "imported.pt")
    imported, _ = load_animator(out, torch.device("cpu"))
    direct = registry.build("fomm-vox256")
    original = read_authors_file(fomm_file)
    for net in ("generator", "kp_detector"):
        direct.networks[net].load_state_dict(original[net])
    direct.eval()
    frames = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        results = []
        for model in (imported, direct):
            kp_source = model.detect(frames[:1])
            kp_driving = model.detect(frames[1:])
            results.append(model.animate(frames[:1], kp_source, kp_driving)["prediction"])
    assert torch.isfinite(results[0]).all()
    assert torch.equal(results[0], results[1])
