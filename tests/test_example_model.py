"""A model from another package (examples/animbench-example-model, README "Add your model"):
the registry resolves it, and `snakemake --profile profiles/ci-example` trains, reconstructs and
tabulates it with no change to animbench's source."""

from __future__ import annotations

import copy
import math
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from ci_support import REPO, run_profile
from ci_support import table_value as _value
from conftest import TINY_OVERRIDES, TINY_SIZE, checkpoint_weights, offline_weights

from animbench import checkpoint
from animbench.config import validate_config
from animbench.errors import ConfigError
from animbench.evaluate.reconstruct import drive_clip, load_animator
from animbench.models import registry
from animbench.models.base import MotionModel, MotionObjective
from animbench.train.objectives import objective_class

EXAMPLE_SRC = REPO / "examples/animbench-example-model/src"
REFERENCE = "animbench_example_model.model:GlobalAffineAnimator"
ROW = "Global affine (example)"  # the class's `name`, with the entry's key


@pytest.fixture
def example_importable(monkeypatch):
    """The example package importable here (CI installs it; a checkout has its src)."""
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    yield
    registry.resolve_model.cache_clear()
    registry._entry_points.cache_clear()


def test_registry_resolves_a_module_class_reference(example_importable):
    cls = registry.resolve_model(REFERENCE)
    assert cls.__name__ == "GlobalAffineAnimator" and registry.is_external(REFERENCE)
    spec = registry.get_preset(registry.qualified_preset(REFERENCE, "affine-synthetic"))
    assert spec["model"] == REFERENCE
    model = registry.build(spec)
    assert isinstance(model, MotionModel)
    objective = objective_class(REFERENCE)(model, spec["train_params"], False)
    assert isinstance(objective, MotionObjective)
    frames = torch.rand(2, 3, 64, 64)
    losses, out = objective.generator_losses(model, frames, frames.flip(0))
    assert out["prediction"].shape == frames.shape
    assert all(torch.isfinite(v) for v in losses.values())
    assert registry.model_name(REFERENCE) == "Global affine"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_pkg.models:Model", "no module 'no_such_pkg'"),
        ("animbench_example_model.model:Missing", "has no 'Missing'"),
        ("no-such-entry-point", "not a built-in model"),
    ],
)
def test_a_missing_module_or_class_is_a_one_line_config_error(
    example_importable, reference, message
):
    with pytest.raises(ConfigError, match=message) as info:
        registry.resolve_model(reference)
    assert "\n" not in str(info.value)


def test_an_entry_point_names_a_model(example_importable, tmp_path, monkeypatch):
    dist = tmp_path / "animbench_example_model-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: animbench-example-model\n")
    (dist / "entry_points.txt").write_text(f"[animbench.models]\nexample-affine = {REFERENCE}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._entry_points.cache_clear()
    assert registry.resolve_model("example-affine").__name__ == "GlobalAffineAnimator"
    assert registry.get_preset("example-affine/affine-synthetic")["model"] == "example-affine"


def _train_example(data: Path, out: Path, cache: Path, num_epochs: int) -> None:
    from animbench.train.trainer import train

    overrides = copy.deepcopy(TINY_OVERRIDES)
    overrides["train_params"]["num_epochs"] = num_epochs
    with offline_weights(cache), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "VGG19 ImageNet weights unavailable")
        train(
            data,
            "example",
            registry.qualified_preset(REFERENCE, "affine-synthetic"),
            overrides=overrides,
            out=out,
            device="cpu",
            seed=0,
            allow_random_weights=True,
        )


def test_the_shared_trainer_resumes_an_external_model_exactly(
    example_importable, tiny_dataset, tmp_path
):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _train_example(tiny_dataset, whole, tmp_path / "cache", num_epochs=2)
    _train_example(tiny_dataset, resumed, tmp_path / "cache", num_epochs=1)  # stops at step 3
    _train_example(tiny_dataset, resumed, tmp_path / "cache", num_epochs=2)
    a, b = checkpoint_weights(whole / "model.pt"), checkpoint_weights(resumed / "model.pt")
    assert a.keys() == b.keys() and {k.split(".")[0] for k in a} == {"pose_net", "refiner"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    payload = checkpoint.load(whole / "model.pt")
    assert payload["preset"]["model"] == REFERENCE and payload["step"] == 4
    # reconstruction rebuilds it from the checkpoint alone
    model, _ = load_animator(whole / "model.pt", torch.device("cpu"))
    assert drive_clip(model, torch.rand(3, 3, TINY_SIZE, TINY_SIZE)).shape == (
        3,
        3,
        TINY_SIZE,
        TINY_SIZE,
    )


def _config(entry: dict) -> dict:
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["methods"]["example"] = entry
    config["benchmark"].update(methods=["example"], datasets=["synthetic-face"], baselines=[])
    return config


def test_a_methods_entry_with_model_gets_qualified_presets(example_importable):
    out = validate_config(
        _config({"model": REFERENCE, "presets": {"synthetic-face": "affine-synthetic"}})
    )
    assert out["methods"]["example"]["presets"] == {
        "synthetic-face": f"{REFERENCE}/affine-synthetic"
    }
    # overrides are checked against the model's own presets
    with pytest.raises(ConfigError, match="unknown key"):
        validate_config(
            _config(
                {
                    "model": REFERENCE,
                    "presets": {"synthetic-face": "affine-synthetic"},
                    "overrides": {"model_params": {"pose_parms": {}}},
                }
            )
        )
    with pytest.raises(ConfigError, match="has no preset 'nope'"):
        validate_config(_config({"model": REFERENCE, "presets": {"synthetic-face": "nope"}}))
    with pytest.raises(ConfigError, match="methods.example.model.*no module"):
        validate_config(_config({"model": "nope.mod:X", "presets": {"synthetic-face": "a"}}))


@pytest.mark.slow
def test_the_example_model_runs_through_the_synthetic_benchmark(tmp_path):
    def env(workdir: Path) -> dict:
        # the copy's package and example first (whether or not CI installed the example)
        paths = [workdir / "workflow", workdir / "examples/animbench-example-model/src"]
        old = os.environ.get("PYTHONPATH")
        return {"PYTHONPATH": os.pathsep.join([*map(str, paths), *([old] if old else [])])}

    workdir, failure = run_profile(
        tmp_path, "profiles/ci-example", "results/table2.parquet", env=env
    )
    assert failure is None, failure
    table = pd.read_parquet(workdir / "results/table2.parquet")
    assert {ROW, "Source copy"} <= set(table.method)
    for metric in ("L1", "AKD", "AED"):
        assert math.isfinite(_value(table, "synthetic-face", ROW, metric))
    ours = _value(table, "synthetic-face", ROW, "L1")
    floor = _value(table, "synthetic-face", "Source copy", "L1")
    assert ours < floor, f"L1: the example {ours:.4f} ≥ source copy {floor:.4f}"
    trained = table[(table.method == ROW) & table.value.notna()]
    # offline (random VGG19 allowed by the CI profile): "deviates", not "measured"
    assert len(trained) and (trained.status == "deviates").all()
    assert trained.checkpoint_sha256.str.fullmatch(r"[0-9a-f]{64}").all()
