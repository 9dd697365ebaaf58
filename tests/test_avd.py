"""MRAA's animation via disentanglement: `MRAA.avd` and the trainer's second (AVD) stage, and
the trainer's per-network gradient clipping."""

from __future__ import annotations

import copy
import json
import shutil
import warnings

import pandas as pd
import pytest
import torch
from conftest import offline_weights

from animbench import checkpoint
from animbench.errors import ConfigError
from animbench.models import registry
from animbench.train.trainer import clip_gradients, train

# mraa-synthetic made tiny: 32×32 frames, 2 main steps, then 3 AVD steps (batch 2, 1 epoch of
# 3 batches over the 6 clips)
TINY = {
    "train_params": {
        "max_steps": 2,
        "batch_size": 2,
        "num_epochs": 1,
        "num_repeats": 1,
        "checkpoint_freq": 1,
        "scales": [1, 0.5],
    },
    "train_avd_params": {
        "num_epochs": 1,
        "num_repeats": 1,
        "batch_size": 2,
        "epoch_milestones": [1],
        "checkpoint_freq": 1,
    },
    "dataset_params": {"frame_shape": [32, 32, 3]},
}


def _train(data, out, cache, overrides=TINY):
    with offline_weights(cache), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "VGG19 ImageNet weights unavailable")
        return train(
            data, "mraa", "mraa-synthetic", overrides, out=out, device="cpu",
            allow_random_weights=True,
        )  # fmt: skip


def _networks(path) -> dict[str, dict[str, torch.Tensor]]:
    return checkpoint.load(path)["networks"]


def _differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def stage_runs(tiny_dataset, tmp_path_factory):
    """(main stage only, both stages resumed from it, both stages in one go) run folders."""
    root = tmp_path_factory.mktemp("avd")
    main_only = root / "main"
    _train(tiny_dataset, main_only, root / "cache", {**TINY, "train_avd_params": None})
    resumed = root / "resumed"
    shutil.copytree(main_only, resumed)
    _train(tiny_dataset, resumed, root / "cache")
    full = root / "full"
    _train(tiny_dataset, full, root / "cache")
    return main_only, resumed, full


def test_mraa_avd_transfers_regions():
    torch.manual_seed(0)
    model = registry.build("mraa-synthetic").eval()
    source, driving = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        regions_source = model.detect(source)
        regions_driving = model.detect(driving)
        expanded = {k: v.expand(3, *v.shape[1:]) for k, v in regions_source.items()}
        regions = model.avd(expanded, regions_driving)
        out = model.animate(source.expand(3, -1, -1, -1), expanded, regions)
    assert regions["shift"].shape == (3, 10, 2)
    assert regions["affine"].shape == regions["covar"].shape == (3, 10, 2, 2)
    torch.testing.assert_close(regions["covar"], regions["affine"] @ regions["affine"].mT)
    assert "frame" not in regions and "bg_params" not in out  # identity background
    assert out["prediction"].shape == (3, 3, 64, 64)
    with pytest.raises(ValueError, match="no AVD network"):
        registry.build("mraa-synthetic", {"model_params": {"avd_network_params": None}}).avd(
            regions_source, regions_source
        )


def test_both_stages_run_and_only_the_avd_network_trains(stage_runs):
    main_only, resumed, full = stage_runs
    assert not (main_only / "log-avd.csv").exists()
    stage1, stage2 = _networks(main_only / "model.pt"), _networks(resumed / "model.pt")
    assert set(stage2) == {"generator", "region_predictor", "bg_predictor", "avd_network"}
    for name in ("generator", "region_predictor", "bg_predictor"):  # buffers included
        assert not _differing(stage1[name], stage2[name]), name
    changed = _differing(stage1["avd_network"], stage2["avd_network"])
    assert any(k.endswith("weight") for k in changed) and len(changed) > 10

    log = pd.read_csv(full / "log-avd.csv")
    assert list(log["step"]) == [1, 2, 3]
    assert {"reconstruction_shift", "reconstruction_affine", "lr"} <= set(log.columns)
    assert (log["reconstruction_shift"] > 0).all()
    assert len(pd.read_csv(full / "log.csv")) == 2
    payload = checkpoint.load(full / "model.pt")
    assert (payload["step"], payload["avd_step"], payload["avd_epoch"]) == (2, 3, 1)
    last = checkpoint.load(full / "checkpoint-last.pt")
    assert last["stage"] == "avd" and last["avd_step"] == 3
    assert set(last["training_state"]["optimizers"]) == {"avd_network"}
    summary = json.loads((full / "train.json").read_text())
    assert summary["main"]["steps"] == 2 and summary["avd"]["steps"] == 3
    # a run resumed after its main stage equals the uninterrupted one
    assert not any(
        _differing(a, b) for a, b in zip(stage2.values(), _networks(full / "model.pt").values())
    )


def test_avd_stage_resumes_and_a_finished_run_does_not_retrain(tiny_dataset, tmp_path):
    two_epochs = copy.deepcopy(TINY)
    two_epochs["train_avd_params"]["num_epochs"] = 2  # 6 AVD steps in all
    uninterrupted = tmp_path / "uninterrupted"
    _train(tiny_dataset, uninterrupted, tmp_path / "cache", two_epochs)
    out = tmp_path / "run"
    _train(tiny_dataset, out, tmp_path / "cache")  # stops after AVD epoch 0 (3 steps)
    assert checkpoint.load(out / "checkpoint-last.pt")["avd_step"] == 3
    _train(tiny_dataset, out, tmp_path / "cache", two_epochs)
    log = pd.read_csv(out / "log-avd.csv")
    assert list(log["step"]) == [1, 2, 3, 4, 5, 6] and len(pd.read_csv(out / "log.csv")) == 2
    reference = pd.read_csv(uninterrupted / "log-avd.csv")
    pd.testing.assert_series_equal(log["reconstruction_shift"], reference["reconstruction_shift"])
    after = _networks(out / "model.pt")
    assert not any(
        _differing(a, after[n]) for n, a in _networks(uninterrupted / "model.pt").items()
    )

    before = (out / "log-avd.csv").read_text()
    _train(tiny_dataset, out, tmp_path / "cache", two_epochs)  # finished: nothing to retrain
    assert (out / "log-avd.csv").read_text() == before
    assert not any(_differing(a, after[n]) for n, a in _networks(out / "model.pt").items())


def test_clip_gradients_clips_each_network_to_its_norm():
    torch.manual_seed(0)
    nets = {"a": torch.nn.Linear(8, 8), "b": torch.nn.Linear(8, 8)}
    for net in nets.values():
        (1000 * net(torch.randn(4, 8)).square().sum()).backward()
    b_before = [p.grad.clone() for p in nets["b"].parameters()]
    norms = clip_gradients(nets, {"a": 1.0})
    assert norms["a"] > 100 and set(norms) == {"a"}
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in nets["a"].parameters()]))
    assert float(total) == pytest.approx(1.0, rel=1e-4)
    assert all(torch.equal(g, p.grad) for g, p in zip(b_before, nets["b"].parameters()))


def test_clipping_an_untrained_network_is_a_config_error(tiny_dataset, tmp_path):
    overrides = copy.deepcopy(TINY)
    overrides["train_params"]["clip_grad_norm"] = {"kp_detector": 1.0}  # MRAA has none
    with pytest.raises(ConfigError, match="clip_grad_norm: kp_detector"):
        _train(tiny_dataset, tmp_path / "run", tmp_path / "cache", overrides)
