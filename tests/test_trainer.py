"""The shared training loop on a tiny moving-square dataset (fomm-synthetic made tiny)."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_OVERRIDES, checkpoint_weights, train_tiny

from animbench import checkpoint
from animbench.data.datasets import FramePairs
from animbench.data.video import write_clip
from animbench.errors import ConfigError, DataError
from animbench.models import registry
from animbench.models.registry import build, get_preset


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_run_folder_outputs(trained_run):
    for name in ("model.pt", "checkpoint-last.pt", "log.csv", "train.json"):
        assert (trained_run / name).is_file(), name
    log = pd.read_csv(trained_run / "log.csv")
    assert list(log["step"]) == [1, 2, 3, 4]
    assert list(log["epoch"]) == [0, 0, 0, 1]  # 6 clips / batch 2 = 3 steps per epoch
    for column in ("perceptual", "equivariance_value", "equivariance_jacobian"):
        assert column in log.columns
        assert log[column].map(math.isfinite).all(), column
        assert (log[column] > 0).all(), column
    summary = json.loads((trained_run / "train.json").read_text())
    assert summary["steps"] == 4
    assert summary["preset"] == "fomm-synthetic"
    assert any("VGG19" in w for w in summary["warnings"]), summary["warnings"]

    payload = checkpoint.load(trained_run / "model.pt")
    assert payload["method"] == "fomm"
    assert payload["step"] == 4
    assert set(payload["networks"]) >= {"generator", "kp_detector"}
    assert any("VGG19" in w for w in payload["warnings"])
    # the resolved preset carries the overrides, so the model can be rebuilt from the file
    assert payload["preset"]["train_params"]["batch_size"] == 2
    last = checkpoint.load(trained_run / "checkpoint-last.pt")
    assert {"optimizers", "schedulers", "rng"} <= set(last["training_state"])
    assert "training_state" not in payload


def test_weights_change_from_initialisation(trained_run):
    spec = get_preset("fomm-synthetic", TINY_OVERRIDES)
    torch.manual_seed(0)  # the trainer seeds torch before building the model
    initial = build(spec)
    trained = checkpoint.load(trained_run / "model.pt")["networks"]
    for name in ("generator", "kp_detector"):
        init_state = initial.networks[name].state_dict()
        changed = [
            k
            for k, v in trained[name].items()
            if v.is_floating_point() and not torch.equal(v, init_state[k])
        ]
        assert changed, f"{name}: no weight changed during training"
        # the keypoint head and the final generator conv receive gradients
    assert not torch.equal(
        trained["kp_detector"]["kp.weight"], initial.kp_detector.state_dict()["kp.weight"]
    )
    assert not torch.equal(
        trained["generator"]["final.weight"], initial.generator.state_dict()["final.weight"]
    )


def test_rerun_of_finished_run_does_not_retrain(trained_run, tiny_dataset, tmp_path):
    log_before = (trained_run / "log.csv").read_text()
    weights_before = checkpoint_weights(trained_run / "model.pt")
    train_tiny(tiny_dataset, trained_run, tmp_path)
    assert (trained_run / "log.csv").read_text() == log_before
    _assert_same_weights(checkpoint_weights(trained_run / "model.pt"), weights_before)
    summary = json.loads((trained_run / "train.json").read_text())
    assert summary["steps"] == 4
    assert checkpoint.load(trained_run / "model.pt")["step"] == 4


def test_same_seed_gives_identical_weights(trained_run, tiny_dataset, tmp_path):
    train_tiny(tiny_dataset, tmp_path / "again", tmp_path / "cache", seed=0)
    _assert_same_weights(
        checkpoint_weights(tmp_path / "again" / "model.pt"),
        checkpoint_weights(trained_run / "model.pt"),
    )
    assert (tmp_path / "again" / "log.csv").read_text().count("\n") == 5


def test_resumed_run_equals_uninterrupted_run(trained_run, tiny_dataset, tmp_path):
    # stop after epoch 0 (3 steps), then resume the same folder with the 2-epoch configuration
    first = copy.deepcopy(TINY_OVERRIDES)
    first["train_params"]["num_epochs"] = 1
    out = tmp_path / "resumed"
    train_tiny(tiny_dataset, out, tmp_path / "cache", overrides=first)
    assert checkpoint.load(out / "checkpoint-last.pt")["step"] == 3
    train_tiny(tiny_dataset, out, tmp_path / "cache")
    log = pd.read_csv(out / "log.csv")
    assert list(log["step"]) == [1, 2, 3, 4]
    uninterrupted = pd.read_csv(trained_run / "log.csv")
    pd.testing.assert_series_equal(log["perceptual"][:3], uninterrupted["perceptual"][:3])
    _assert_same_weights(
        checkpoint_weights(out / "model.pt"), checkpoint_weights(trained_run / "model.pt")
    )


def test_too_few_clips_for_a_batch(tiny_dataset, tmp_path):
    overrides = copy.deepcopy(TINY_OVERRIDES)
    overrides["train_params"]["batch_size"] = 64
    with pytest.raises(DataError, match="fewer training items"):
        train_tiny(tiny_dataset, tmp_path / "run", tmp_path / "cache", overrides=overrides)


def test_missing_train_split(tmp_path):
    with pytest.raises(DataError, match="train"):
        train_tiny(tmp_path / "nothing", tmp_path / "run", tmp_path / "cache")


# --- checkpoint files -------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor(3)}
    path = checkpoint.save(
        {"method": "fomm", "networks": {"generator": state}, "step": 7}, tmp_path / "a" / "c.pt"
    )
    payload = checkpoint.load(path)
    assert payload["format"] == checkpoint.FORMAT
    assert payload["step"] == 7
    assert torch.equal(payload["networks"]["generator"]["w"], state["w"])
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary file left
    assert len(checkpoint.sha256(path)) == 64


def test_truncated_checkpoint_is_a_data_error(trained_run, tmp_path):
    data = (trained_run / "model.pt").read_bytes()
    broken = tmp_path / "truncated.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.pt"):
        checkpoint.load(broken)


@pytest.mark.parametrize("content", ["torch-dict", "torch-tensor", "text"])
def test_foreign_file_is_a_data_error(tmp_path, content):
    path = tmp_path / "foreign.pth.tar"
    if content == "torch-dict":
        torch.save({"generator": {}, "epoch": 3}, path)  # e.g. an authors' checkpoint
    elif content == "torch-tensor":
        torch.save(torch.zeros(2), path)
    else:
        path.write_text("not a checkpoint\n")
    with pytest.raises(DataError, match="foreign.pth.tar"):
        checkpoint.load(path)
    with pytest.raises(DataError, match="not found"):
        checkpoint.load(tmp_path / "missing.pt")


# --- training pairs ---------------------------------------------------------------------------


def _indexed_clip(root, name, num_frames=10, size=8):
    """Frame t has every pixel of channel 0 equal to 20·t, and a marker in its left column."""
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, :, :, 0] = 20 * t
        frames[t, :, 0, 1] = 255  # left column marker, to see horizontal flips
    write_clip(root / "train" / name, frames)


def _frame_index(image: torch.Tensor) -> int:
    value = float(image[0].mean()) * 255 / 20
    assert value == pytest.approx(round(value), abs=1e-3)
    return round(value)


def test_pairs_are_ordered_without_augmentation(tmp_path):
    _indexed_clip(tmp_path, "a#1")
    np.random.seed(0)
    pairs = FramePairs(tmp_path, augmentation_params={})
    seen = set()
    for _ in range(60):
        item = pairs[0]
        assert item["source"].shape == item["driving"].shape == (3, 8, 8)
        assert item["source"].dtype == torch.float32
        s, d = _frame_index(item["source"]), _frame_index(item["driving"])
        assert 0 <= s <= d <= 9
        seen.add((s, d))
        assert torch.equal(item["source"][1, :, 0], torch.ones(8))  # no flip
    assert any(s == d for s, d in seen) or len(seen) > 20  # drawn with replacement
    assert len({s for s, _ in seen}) > 3


def test_id_sampling_groups_clips(tmp_path):
    for name in ("alice#x#000001#000009", "alice#y#000003#000010", "bob#z#000000#000005", "carol"):
        _indexed_clip(tmp_path, name, num_frames=3)
    pairs = FramePairs(tmp_path, id_sampling=True, num_repeats=4)
    assert [[c.name for c in item] for item in pairs.items] == [
        ["alice#x#000001#000009", "alice#y#000003#000010"],
        ["bob#z#000000#000005"],
        ["carol"],
    ]
    assert len(pairs) == 3 * 4
    assert len(FramePairs(tmp_path, id_sampling=False, num_repeats=4)) == 4 * 4


def test_flips_apply_to_both_frames(tmp_path):
    _indexed_clip(tmp_path, "a#1")
    random.seed(0)
    np.random.seed(0)
    pairs = FramePairs(
        tmp_path,
        augmentation_params={"flip_param": {"horizontal_flip": True, "time_flip": True}},
    )
    flipped, reversed_ = set(), set()
    for _ in range(60):
        item = pairs[0]
        left = [bool(item[k][1, :, 0].eq(1).all()) for k in ("source", "driving")]
        right = [bool(item[k][1, :, -1].eq(1).all()) for k in ("source", "driving")]
        assert left[0] == left[1] and right[0] == right[1] and left[0] != right[0]
        flipped.add(right[0])
        s, d = _frame_index(item["source"]), _frame_index(item["driving"])
        if s != d:
            reversed_.add(s > d)
    assert flipped == {False, True}
    assert reversed_ == {False, True}


def test_preset_augmentations_apply_and_unknown_keys_stop(tmp_path):
    _indexed_clip(tmp_path, "a#1", num_frames=2)
    mgif = registry.get_preset("fomm-mgif256")["dataset_params"]["augmentation_params"]
    pair = FramePairs(tmp_path, augmentation_params=mgif)[0]
    assert pair["source"].shape == pair["driving"].shape == (3, 256, 256)  # crop_param size
    with pytest.raises(ConfigError, match=r"augmentation_params\.rotate_param"):
        FramePairs(tmp_path, augmentation_params={"rotate_param": {"degrees": 10}})


def test_rerun_after_max_steps_is_idempotent(tiny_dataset, tmp_path):
    overrides = copy.deepcopy(TINY_OVERRIDES)
    overrides["train_params"]["num_epochs"] = 5  # max_steps 4 ends the run in epoch 1
    out = tmp_path / "run"
    train_tiny(tiny_dataset, out, tmp_path / "cache", overrides=overrides)
    before = json.loads((out / "train.json").read_text())
    last_before = checkpoint.load(out / "checkpoint-last.pt")
    train_tiny(tiny_dataset, out, tmp_path / "cache", overrides=overrides)
    after = json.loads((out / "train.json").read_text())
    last_after = checkpoint.load(out / "checkpoint-last.pt")
    assert after["steps"] == before["steps"] == 4
    assert last_after["epoch"] == last_before["epoch"]
    assert (
        last_after["training_state"]["schedulers"]["generator"]["last_epoch"]
        == last_before["training_state"]["schedulers"]["generator"]["last_epoch"]
    )
    assert after["epochs"] == before["epochs"]


def test_gan_objective_losses():
    """mgif-style training (generator_gan 1): LSGAN + feature matching for G, LSGAN for D."""
    from animbench.train.objectives import KeypointObjective

    spec = get_preset(
        "fomm-synthetic",
        {"train_params": {"scales": [1], "loss_weights": {"generator_gan": 1, "l1": 0}}},
    )
    torch.manual_seed(0)
    model = build(spec)
    objective = KeypointObjective(model, spec["train_params"], pretrained_vgg=False)
    assert objective.use_gan
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    losses, out = objective.generator_losses(model, source, driving)
    assert set(losses) == {
        "perceptual",
        "gen_gan",
        "feature_matching",
        "equivariance_value",
        "equivariance_jacobian",
    }
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    disc = objective.discriminator_losses(model, driving, out)
    assert set(disc) == {"disc_gan"}
    model.zero_grad(set_to_none=True)
    disc["disc_gan"].backward()
    # the discriminator step must not train the generator or the keypoint detector
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(p.grad is None for p in model.kp_detector.parameters())
    assert any(p.grad is not None for p in model.discriminator.parameters())
