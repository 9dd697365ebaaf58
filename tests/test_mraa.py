"""MRAA: the authors' parameter layout, PCA regions, background motion, objectives, training."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from conftest import offline_weights, reference_manifest

from animbench.models import registry
from animbench.models.blocks import (
    count_parameters,
    heatmap_covariance,
    heatmap_mean,
    make_coordinate_grid,
    region2gaussian,
)
from animbench.models.mraa import (
    MRAA,
    BGMotionPredictor,
    PixelwiseFlowPredictor,
    apply_homography,
    pca_affine,
)
from animbench.train.objectives import OBJECTIVES
from animbench.train.region_objective import AVDObjective, RegionObjective, random_scale

MRAA_DATASETS = ["vox256", "taichi256", "ted384", "mgif256"]


@functools.lru_cache(maxsize=1)
def _built(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build(preset)


def _synthetic(**overrides) -> MRAA:
    torch.manual_seed(0)
    return registry.build("mraa-synthetic", overrides or None)


# --- parameter layout -------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", MRAA_DATASETS)
def test_layout_equals_reference_manifest(dataset):
    manifest = reference_manifest(f"mraa_{dataset}")
    model = _built(f"mraa-{dataset}")
    assert set(manifest) == set(model.networks)
    for net, reference in manifest.items():
        module = model.networks[net]
        assert count_parameters(module) == reference["params"], net
        shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
        expected = {k: list(v) for k, v in reference["state_dict"].items()}
        assert shapes.keys() - expected.keys() == set(), f"{net}: keys not in the reference"
        assert expected.keys() - shapes.keys() == set(), f"{net}: reference keys missing"
        wrong = {k: (shapes[k], expected[k]) for k in shapes if shapes[k] != expected[k]}
        assert not wrong, f"{net}: shapes differ {wrong}"


def test_presets_follow_the_authors_configs():
    vox, ted, mgif = (registry.get_preset(f"mraa-{d}") for d in ("vox256", "ted384", "mgif256"))
    assert vox["model_params"]["region_predictor_params"]["pad"] == 3  # vox256.yaml omits pad
    assert ted["model_params"]["region_predictor_params"]["pad"] == 0
    assert ted["dataset_params"]["frame_shape"] == [384, 384, 3]
    assert [p["train_params"]["batch_size"] for p in (vox, ted, mgif)] == [14, 6, 14]
    assert [p["train_params"]["num_repeats"] for p in (vox, ted, mgif)] == [75, 150, 50]
    assert mgif["model_params"]["bg_predictor_params"]["bg_type"] == "zero"
    assert mgif["dataset_params"]["augmentation_params"]["jitter_param"] == {"hue": 0.5}
    assert vox["train_avd_params"]["num_repeats"] == 2000
    assert vox["model_params"]["generator_params"]["skips"] is True


def test_registry_builds_mraa():
    assert registry.is_implemented("mraa")
    assert "mraa" not in registry.PLANNED
    assert OBJECTIVES["mraa"] is RegionObjective
    model = registry.build("mraa-synthetic")
    assert isinstance(model, MRAA)
    assert set(model.networks) == {"generator", "region_predictor", "bg_predictor", "avd_network"}
    assert registry.get_preset("mraa-synthetic-body")["train_params"]["num_epochs"] == 8


# --- regions ----------------------------------------------------------------------------------


def test_pca_affine_recovers_gaussian_covariance():
    size = 129
    mean = torch.tensor([[[0.1, -0.2]]], dtype=torch.float64)
    theta = 0.5
    rotation = torch.tensor(
        [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
        dtype=torch.float64,
    )
    covar = rotation @ torch.diag(torch.tensor([0.02, 0.005], dtype=torch.float64)) @ rotation.T
    covar = covar.view(1, 1, 2, 2)
    heatmap = region2gaussian(mean, covar, (size, size))
    heatmap = heatmap / heatmap.sum(dim=(2, 3), keepdim=True)
    estimated_mean = heatmap_mean(heatmap)
    estimated_covar = heatmap_covariance(heatmap, estimated_mean)
    torch.testing.assert_close(estimated_mean, mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(estimated_covar, covar, atol=1e-4, rtol=0)
    affine = pca_affine(estimated_covar)
    torch.testing.assert_close(affine @ affine.transpose(-1, -2), covar, atol=1e-4, rtol=0)
    # columns: principal axes scaled by the standard deviations (largest first)
    lengths = affine[0, 0].norm(dim=0)
    torch.testing.assert_close(
        lengths, torch.tensor([0.02, 0.005]).sqrt().double(), atol=1e-4, rtol=0
    )
    major = affine[0, 0][:, 0] / lengths[0]
    assert abs(float(major @ rotation[:, 0])) == pytest.approx(1.0, abs=1e-4)


def test_region2gaussian_isotropic_equals_scalar_variance():
    mean = torch.rand(2, 3, 2) * 2 - 1
    covar = 0.01 * torch.eye(2).expand(2, 3, 2, 2)
    torch.testing.assert_close(
        region2gaussian(mean, covar, (16, 20)), region2gaussian(mean, 0.01, (16, 20))
    )


def test_region_predictor_outputs():
    model = _synthetic().eval()
    with torch.no_grad():
        regions = model.region_predictor(torch.rand(2, 3, 64, 64))
    assert regions["shift"].shape == (2, 10, 2)
    assert regions["heatmap"].shape == (2, 10, 32, 32)
    assert regions["covar"].shape == regions["affine"].shape == (2, 10, 2, 2)
    torch.testing.assert_close(
        regions["affine"] @ regions["affine"].transpose(-1, -2),
        regions["covar"],
        atol=1e-6,
        rtol=1e-4,
    )


def test_same_regions_give_identity_motion_despite_axis_swap():
    flow = PixelwiseFlowPredictor(16, 2, 64, num_regions=3, scale_factor=1)
    shift = torch.rand(2, 3, 2) * 2 - 1
    affine = pca_affine(torch.tensor([[0.02, 0.01], [0.01, 0.03]]).expand(2, 3, 2, 2).contiguous())
    driving = {"shift": shift, "affine": affine}
    source = {"shift": shift, "affine": -affine}  # the SVD's arbitrary column signs
    motions = flow.sparse_motions((8, 8), driving, source)
    identity = make_coordinate_grid((8, 8)).expand(2, 4, 8, 8, 2)
    torch.testing.assert_close(motions, identity, atol=1e-5, rtol=0)


# --- background motion ------------------------------------------------------------------------


def test_background_predictor_modes():
    source, driving = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    zero = BGMotionPredictor(8, 3, 32, 2, bg_type="zero")
    assert count_parameters(zero) == 0 and zero.state_dict() == {}
    eye = torch.eye(3).expand(2, 3, 3)
    torch.testing.assert_close(zero(source, driving), eye)
    for bg_type, size in (("shift", 2), ("affine", 6), ("perspective", 8)):
        net = BGMotionPredictor(8, 3, 32, 2, bg_type=bg_type).eval()
        assert net.fc.out_features == size
        torch.testing.assert_close(net(source, driving), eye)  # initialised to the identity
    shift = BGMotionPredictor(8, 3, 32, 2, bg_type="shift").eval()
    affine = BGMotionPredictor(8, 3, 32, 2, bg_type="affine").eval()
    with torch.no_grad():
        shift.fc.bias.copy_(torch.tensor([0.1, -0.2]))
        affine.fc.bias.copy_(torch.tensor([0.9, 0.1, 0.3, -0.1, 1.1, 0.0]))
    expected = torch.tensor([[1.0, 0.0, 0.1], [0.0, 1.0, -0.2], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(shift(source, driving), expected.expand(2, 3, 3))
    expected = torch.tensor([[0.9, 0.1, 0.3], [-0.1, 1.1, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(affine(source, driving), expected.expand(2, 3, 3))
    # the background grid moves by the transform
    grid = make_coordinate_grid((4, 4)).expand(2, 1, 4, 4, 2)
    moved = apply_homography(grid, shift(source, driving))
    torch.testing.assert_close(moved - grid, torch.tensor([0.1, -0.2]).expand_as(grid))
    with pytest.raises(ValueError, match="bg_type"):
        BGMotionPredictor(bg_type="rotation")


# --- model interface --------------------------------------------------------------------------


def test_forward_and_animate_shapes():
    model = _synthetic().eval()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(source, driving)
        # reconstruction's call: regions of the source once, expanded to the driving batch
        regions_source = model.detect(source[:1])
        regions_source = {k: v.expand(2, *v.shape[1:]) for k, v in regions_source.items()}
        animated = model.animate(
            source[:1].expand(2, -1, -1, -1), regions_source, model.detect(driving)
        )
    assert out["prediction"].shape == animated["prediction"].shape == (2, 3, 64, 64)
    assert out["occlusion_map"].shape == (2, 1, 32, 32)
    assert out["mask"].shape == (2, 11, 32, 32)
    assert out["deformation"].shape == (2, 32, 32, 2)
    assert out["bg_params"].shape == (2, 3, 3)
    assert out["regions_driving"]["shift"].shape == (2, 10, 2)
    assert 0 <= float(out["prediction"].min()) and float(out["prediction"].max()) <= 1


# --- objectives -------------------------------------------------------------------------------


def _train_params(model_preset: str = "mraa-synthetic") -> dict:
    params = registry.get_preset(model_preset)["train_params"]
    params["scales"] = [1, 0.5]
    return params


def test_region_objective_step_reaches_every_network():
    model = _synthetic().train()
    objective = RegionObjective(model, _train_params(), pretrained_vgg=False)
    assert objective.trained_networks == ["generator", "region_predictor", "bg_predictor"]
    generator = torch.Generator().manual_seed(0)
    source, driving = torch.rand(2, 3, 64, 64, generator=generator), torch.rand(2, 3, 64, 64)
    losses, _ = objective.generator_losses(model, source, driving)
    assert set(losses) == {"perceptual", "l1", "equivariance_shift", "equivariance_affine"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in objective.trained_networks:
        grads = [p.grad for p in model.networks[name].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert all(p.grad is None for p in model.avd_network.parameters())


def test_zero_background_is_not_trained():
    model = _synthetic(model_params={"bg_predictor_params": {"bg_type": "zero"}})
    objective = RegionObjective(model, _train_params(), pretrained_vgg=False)
    assert objective.trained_networks == ["generator", "region_predictor"]


def test_avd_objective_step():
    model = _synthetic().train()
    objective = AVDObjective(model, registry.get_preset("mraa-synthetic")["train_avd_params"])
    running = model.region_predictor.predictor.encoder.down_blocks[0].norm.running_mean.clone()
    losses, rec = objective.losses(model, torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64))
    assert set(losses) == {"reconstruction_shift", "reconstruction_affine"}
    assert rec["shift"].shape == (4, 10, 2) and rec["covar"].shape == (4, 10, 2, 2)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.avd_network.parameters())
    assert all(p.grad is None for p in model.region_predictor.parameters())  # frozen
    torch.testing.assert_close(
        model.region_predictor.predictor.encoder.down_blocks[0].norm.running_mean, running
    )
    assert model.region_predictor.training  # mode restored


def test_random_scale_scales_axes():
    regions = {"shift": torch.rand(3, 5, 2), "affine": torch.rand(3, 5, 2, 2)}
    scaled = random_scale(regions, 0.25, torch.Generator().manual_seed(0))
    ratio = scaled["shift"] / regions["shift"]
    assert ((ratio > 0.75 - 1e-6) & (ratio < 1.25 + 1e-6)).all()
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))  # one scale per sample


# --- training loop ----------------------------------------------------------------------------


def test_trainer_runs_mraa_and_reconstruction_loads_it(tiny_dataset, tmp_path):
    from animbench.evaluate.reconstruct import drive_clip, load_animator
    from animbench.train.trainer import train

    overrides = {
        "train_params": {
            "max_steps": 2,
            "batch_size": 2,
            "num_epochs": 1,
            "num_repeats": 1,
            "scales": [1, 0.5],
        },
        "train_avd_params": {"max_steps": 2, "batch_size": 2, "num_repeats": 1},
        "dataset_params": {"frame_shape": [32, 32, 3]},
    }
    with offline_weights(tmp_path / "cache"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "VGG19 ImageNet weights unavailable")
        final = train(
            tiny_dataset, "mraa", "mraa-synthetic", overrides, out=tmp_path / "run", device="cpu",
            allow_random_weights=True,
        )  # fmt: skip
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert "equivariance_affine" in log[0] and len(log) == 3
    assert len((tmp_path / "run" / "log-avd.csv").read_text().splitlines()) == 3
    model, payload = load_animator(final, torch.device("cpu"))
    assert set(payload["networks"]) == set(model.networks)
    assert payload["avd_step"] == 2
    frames = torch.rand(3, 3, 32, 32)
    assert drive_clip(model, frames, batch_frames=2).shape == frames.shape
