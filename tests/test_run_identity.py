"""A run folder never serves a configuration that did not make it (animbench.train.identity):
resuming or rerunning under other overrides, seed or training data stops with a one-line error
naming the keys that differ; a longer schedule continues the run."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from conftest import TINY_OVERRIDES, train_tiny

from animbench import checkpoint
from animbench.errors import ConfigError
from animbench.train import identity

ONE_STEP = copy.deepcopy(TINY_OVERRIDES)
ONE_STEP["train_params"]["max_steps"] = 1


def _base(**changes) -> dict:
    base = {
        "method": "fomm",
        "preset": {"note": "a", "train_params": {"num_epochs": 2, "max_steps": 4, "lr": 1e-4}},
        "seed": 0,
        "data": "d1",
        "precision": "fp32",
    }
    return {**base, **changes}


def test_differences_name_dotted_keys():
    old = _base()
    new = _base(seed=1, preset={**old["preset"], "train_params": {**old["preset"]["train_params"],
                                                                  "lr": 2e-4}})  # fmt: skip
    assert identity.differences(old, new) == ["preset.train_params.lr", "seed"]
    assert identity.differences(old, _base(data="d2", precision="bf16")) == ["data", "precision"]
    # a key the preset did not have (an optional override) differs too
    extra = copy.deepcopy(old)
    extra["preset"]["train_params"]["weight_decay"] = 0.1
    assert identity.differences(old, extra) == ["preset.train_params.weight_decay"]


def test_schedule_may_grow_but_not_shrink_and_notes_are_ignored():
    old = _base()
    longer = copy.deepcopy(old)
    longer["preset"]["train_params"].update(num_epochs=5, max_steps=None)
    longer["preset"]["note"] = "reworded"
    assert identity.differences(old, longer) == []
    shorter = copy.deepcopy(old)
    shorter["preset"]["train_params"].update(num_epochs=1, max_steps=3)
    assert identity.differences(old, shorter) == [
        "preset.train_params.max_steps",
        "preset.train_params.num_epochs",
    ]
    uncapped = copy.deepcopy(old)
    uncapped["preset"]["train_params"]["max_steps"] = None
    assert identity.differences(uncapped, old) == ["preset.train_params.max_steps"]


def test_legacy_checkpoint_compares_its_preset_only():
    legacy = identity.stored_identity({"preset": _base()["preset"]})
    assert identity.differences(legacy, _base(seed=7)) == []
    changed = _base()
    changed["preset"]["train_params"]["lr"] = 1.0
    assert identity.differences(legacy, changed) == ["preset.train_params.lr"]


def test_error_is_one_line_and_truncated(tmp_path):
    old = {f"k{i}": i for i in range(9)}
    new = {f"k{i}": -i - 1 for i in range(9)}
    with pytest.raises(ConfigError) as info:
        identity.check_resume(old, new, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "k0, k1, k2, k3, k4, k5 and 3 more differ" in message
    identity.check_resume(old, dict(old), tmp_path)  # the same identity: no error


@pytest.fixture(scope="module")
def one_step_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("identity") / "run"
    train_tiny(tiny_dataset, out, tmp_path_factory.mktemp("cache"), overrides=ONE_STEP)
    return out


def test_run_records_its_identity(one_step_run, tiny_dataset):
    recorded = json.loads((one_step_run / "identity.json").read_text())
    assert recorded["seed"] == 0 and recorded["precision"] == "fp32"
    assert recorded["data"] == identity.data_digest(tiny_dataset)
    assert recorded["preset"]["train_params"]["max_steps"] == 1
    for name in ("model.pt", "checkpoint-last.pt"):
        assert checkpoint.load(one_step_run / name)["identity"] == recorded, name


def _copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_changed_overrides_stop_with_the_differing_keys(one_step_run, tiny_dataset, tmp_path):
    out = _copy(one_step_run, tmp_path)
    model_before = (out / "model.pt").read_bytes()
    changed = copy.deepcopy(ONE_STEP)
    changed["train_params"]["num_repeats"] = 2
    changed["train_params"]["loss_weights"] = {"perceptual": [1, 1, 1, 1, 1]}
    with pytest.raises(ConfigError, match="run folder") as info:
        train_tiny(tiny_dataset, out, tmp_path / "cache", overrides=changed)
    message = str(info.value)
    assert "preset.train_params.loss_weights.perceptual" in message
    assert "preset.train_params.num_repeats" in message
    assert "\n" not in message
    # the old weights are not rewritten under the new spec
    assert (out / "model.pt").read_bytes() == model_before
    assert checkpoint.load(out / "model.pt")["preset"]["train_params"]["num_repeats"] == 1


def test_changed_seed_or_data_stop(one_step_run, tiny_dataset, tmp_path):
    out = _copy(one_step_run, tmp_path)
    with pytest.raises(ConfigError, match=r"\(seed differ\)"):
        train_tiny(tiny_dataset, out, tmp_path / "cache", seed=1, overrides=ONE_STEP)
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    shutil.rmtree(sorted((data / "train").iterdir())[0])
    with pytest.raises(ConfigError, match=r"\(data differ\)"):
        train_tiny(data, out, tmp_path / "cache", overrides=ONE_STEP)


def test_longer_schedule_continues_the_run(one_step_run, tiny_dataset, tmp_path):
    out = _copy(one_step_run, tmp_path)
    longer = copy.deepcopy(ONE_STEP)
    longer["train_params"]["max_steps"] = 2
    train_tiny(tiny_dataset, out, tmp_path / "cache", overrides=longer)
    final = checkpoint.load(out / "model.pt")
    assert final["step"] == 2
    assert final["identity"]["preset"]["train_params"]["max_steps"] == 2


def test_a_second_stage_may_be_added_but_not_changed():
    main_only = _base()
    main_only["preset"]["train_avd_params"] = None
    both = _base()
    both["preset"]["train_avd_params"] = {"num_epochs": 1, "lr": 1e-3}
    assert identity.differences(main_only, both) == []
    other = copy.deepcopy(both)
    other["preset"]["train_avd_params"]["lr"] = 1e-2
    assert identity.differences(both, other) == ["preset.train_avd_params.lr"]
    dropped = copy.deepcopy(both)
    dropped["preset"]["train_avd_params"] = None
    assert identity.differences(both, dropped) == [
        "preset.train_avd_params",
        "preset.train_avd_params.lr",
        "preset.train_avd_params.num_epochs",
    ]
