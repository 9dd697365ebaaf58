"""FOMM modules: the authors' parameter layout, keypoint detector, dense motion, anti-aliasing."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import reference_manifest

from animbench.models import registry
from animbench.models.blocks import (
    AntiAliasInterpolation2d,
    count_parameters,
    make_coordinate_grid,
    warp,
)
from animbench.models.fomm import DenseMotionNetwork, KPDetector

FOMM_DATASETS = ["vox256", "taichi256", "mgif256", "nemo256", "bair256"]


@functools.lru_cache(maxsize=1)
def _built(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build(preset)


# --- parameter layout -------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", FOMM_DATASETS)
def test_layout_equals_reference_manifest(dataset):
    manifest = reference_manifest(f"fomm_{dataset}")
    model = _built(f"fomm-{dataset}")
    assert {"generator", "kp_detector"} <= set(manifest)
    for net, reference in manifest.items():
        module = model.networks[net]
        assert count_parameters(module) == reference["params"], net
        shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
        expected = {k: list(v) for k, v in reference["state_dict"].items()}
        assert shapes.keys() - expected.keys() == set(), f"{net}: keys not in the reference"
        assert expected.keys() - shapes.keys() == set(), f"{net}: reference keys missing"
        wrong = {k: (shapes[k], expected[k]) for k in shapes if shapes[k] != expected[k]}
        assert not wrong, f"{net}: shapes differ {wrong}"


def test_vox256_parameter_counts():
    model = _built("fomm-vox256")
    assert count_parameters(model.generator) == 45_575_391
    assert count_parameters(model.kp_detector) == 14_215_368
    # dense motion is part of the generator (37.73M of it in the reference)
    dense = count_parameters(model.generator.dense_motion_network)
    assert 37_700_000 < dense < 37_760_000


# --- keypoint detector ------------------------------------------------------------------------


def _synthetic_kp_detector() -> KPDetector:
    torch.manual_seed(0)
    return registry.build("fomm-synthetic").kp_detector.eval()


def test_kp_detector_identity_jacobian_at_init():
    detector = _synthetic_kp_detector()
    assert torch.equal(detector.jacobian.weight, torch.zeros_like(detector.jacobian.weight))
    assert torch.equal(detector.jacobian.bias, torch.tensor([1.0, 0, 0, 1] * 10))
    torch.manual_seed(1)
    with torch.no_grad():
        out = detector(torch.rand(2, 3, 64, 64))
    assert out["value"].shape == (2, 10, 2)
    assert out["jacobian"].shape == (2, 10, 2, 2)
    eye = torch.eye(2).expand(2, 10, 2, 2)
    torch.testing.assert_close(out["jacobian"], eye, atol=1e-5, rtol=0)
    assert out["value"].abs().max() <= 1.0
    # keypoints depend on the image: another input moves them
    with torch.no_grad():
        other = detector(torch.rand(2, 3, 64, 64))["value"]
    assert not torch.allclose(other, out["value"])


def test_kp_detector_keypoints_are_expected_grid_coordinates():
    """Keypoints are E[z] under a softmax heatmap: a sharply peaked heatmap gives its peak."""
    detector = _synthetic_kp_detector()
    with torch.no_grad():
        detector.kp.weight.zero_()
        detector.kp.bias.zero_()  # uniform heatmap → keypoints at the grid centre (0, 0)
        out = detector(torch.rand(1, 3, 64, 64))
    torch.testing.assert_close(out["value"], torch.zeros(1, 10, 2), atol=1e-6, rtol=0)


def test_kp_detector_vox256_shapes():
    detector = _built("fomm-vox256").kp_detector.eval()
    with torch.no_grad():
        out = detector(torch.rand(2, 3, 256, 256))
    assert out["value"].shape == (2, 10, 2)
    assert out["jacobian"].shape == (2, 10, 2, 2)
    assert out["value"].abs().max() <= 1.0


def test_kp_detector_single_jacobian_map():
    torch.manual_seed(0)
    spec = registry.get_preset("fomm-mgif256")
    params = {
        **spec["model_params"]["kp_detector_params"],
        "block_expansion": 4,
        "max_features": 16,
        "num_blocks": 2,
    }
    assert params["single_jacobian_map"] is True
    detector = KPDetector(num_kp=10, num_channels=3, **params).eval()
    assert detector.jacobian.out_channels == 4
    with torch.no_grad():
        out = detector(torch.rand(2, 3, 64, 64))
    assert out["jacobian"].shape == (2, 10, 2, 2)
    torch.testing.assert_close(out["jacobian"], torch.eye(2).expand(2, 10, 2, 2), atol=1e-5, rtol=0)


# --- dense motion -----------------------------------------------------------------------------


def _dense(num_kp=4) -> DenseMotionNetwork:
    torch.manual_seed(0)
    return DenseMotionNetwork(
        block_expansion=4, num_blocks=2, max_features=16, num_kp=num_kp, scale_factor=0.5
    ).eval()


def _kp(batch=2, num_kp=4, seed=0, jacobian=True):
    g = torch.Generator().manual_seed(seed)
    kp = {"value": torch.rand(batch, num_kp, 2, generator=g) * 1.6 - 0.8}
    if jacobian:
        kp["jacobian"] = torch.eye(2) + 0.2 * torch.randn(batch, num_kp, 2, 2, generator=g)
    return kp


def test_same_keypoints_give_identity_motion():
    dense = _dense()
    kp = _kp()
    size = (16, 16)
    motions = dense.sparse_motions(size, kp, kp)
    assert motions.shape == (2, 5, 16, 16, 2)
    identity = make_coordinate_grid(size).expand_as(motions)
    torch.testing.assert_close(motions, identity, atol=1e-5, rtol=0)
    with torch.no_grad():
        out = dense(torch.rand(2, 3, 32, 32), kp, kp)
    # whatever the masks, a convex combination of identities is the identity
    torch.testing.assert_close(
        out["deformation"], make_coordinate_grid(size).expand(2, 16, 16, 2), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(out["mask"].sum(1), torch.ones(2, 16, 16), atol=1e-5, rtol=0)
    assert out["occlusion_map"].shape == (2, 1, 16, 16)


def test_identity_warp_returns_the_input():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 17, 23)
    grid = make_coordinate_grid((17, 23)).expand(2, 17, 23, 2)
    torch.testing.assert_close(warp(image, grid), image, atol=1e-5, rtol=0)
    # a one-pixel shift of the sampling grid moves the image by one pixel (align_corners=True)
    shifted = grid.clone()
    shifted[..., 0] += 2 / (23 - 1)
    torch.testing.assert_close(warp(image, shifted)[..., :-1], image[..., 1:], atol=1e-5, rtol=0)


def test_translation_gives_shifted_motion():
    dense = _dense()
    kp_driving = _kp(jacobian=False)
    d = torch.tensor([0.1, -0.2])
    kp_source = {"value": kp_driving["value"] + d}
    size = (8, 12)
    for with_jacobian in (False, True):
        if with_jacobian:
            kp_driving["jacobian"] = torch.eye(2).expand(2, 4, 2, 2).clone()
            kp_source["jacobian"] = kp_driving["jacobian"].clone()
        motions = dense.sparse_motions(size, kp_driving, kp_source)
        identity = make_coordinate_grid(size)
        torch.testing.assert_close(motions[:, 0], identity.expand(2, *size, 2))
        torch.testing.assert_close(
            motions[:, 1:], (identity + d).expand(2, 4, *size, 2), atol=1e-6, rtol=0
        )


def test_affine_motion_formula():
    """T_k(z) = kp_s + J_s J_d⁻¹ (z − kp_d), checked at a few grid points."""
    dense = _dense()
    kp_s, kp_d = _kp(seed=1), _kp(seed=2)
    size = (5, 7)
    motions = dense.sparse_motions(size, kp_d, kp_s)
    grid = make_coordinate_grid(size)
    for b, k, i, j in [(0, 0, 0, 0), (1, 3, 4, 6), (0, 2, 2, 3)]:
        z = grid[i, j]
        a = kp_s["jacobian"][b, k] @ torch.linalg.inv(kp_d["jacobian"][b, k])
        expected = kp_s["value"][b, k] + a @ (z - kp_d["value"][b, k])
        torch.testing.assert_close(motions[b, k + 1, i, j], expected, atol=1e-5, rtol=0)


def test_hourglass_input_channel_order():
    """Per motion (background first): [heatmap difference, R, G, B]."""
    dense = _dense(num_kp=2)
    captured = {}

    def hook(module, args, output):
        captured["x"] = args[0]

    dense.hourglass.register_forward_hook(hook)
    kp_d, kp_s = _kp(num_kp=2, seed=3), _kp(num_kp=2, seed=4)
    kp_s["jacobian"] = kp_d["jacobian"].clone()
    torch.manual_seed(0)
    source = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        dense(source, kp_d, kp_s)
    x = captured["x"].view(2, 3, 4, 16, 16)
    small = dense.down(source)
    heat = dense.heatmap_representation((16, 16), kp_d, kp_s)[:, :, 0]
    torch.testing.assert_close(x[:, :, 0], heat)
    assert torch.equal(x[:, 0, 0], torch.zeros(2, 16, 16))  # background: no heatmap
    torch.testing.assert_close(x[:, 0, 1:], small, atol=1e-5, rtol=0)  # identity warp
    motions = dense.sparse_motions((16, 16), kp_d, kp_s)
    for k in (1, 2):
        torch.testing.assert_close(x[:, k, 1:], warp(small, motions[:, k]), atol=1e-6, rtol=0)
    # heatmap channel = G(kp_d) − G(kp_s): positive at the driving keypoint
    grid = make_coordinate_grid((16, 16))
    nearest = ((grid - kp_d["value"][0, 0]) ** 2).sum(-1).argmin()
    assert heat[0, 1].flatten()[nearest] > 0


def test_generator_with_identity_motion_warps_identically():
    torch.manual_seed(0)
    model = registry.build(
        "fomm-synthetic",
        {
            "model_params": {
                "generator_params": {
                    "block_expansion": 4,
                    "max_features": 16,
                    "num_bottleneck_blocks": 1,
                    "dense_motion_params": {
                        "block_expansion": 4,
                        "max_features": 16,
                        "num_blocks": 2,
                        "scale_factor": 1,  # deformation at full size: no grid resize
                    },
                }
            }
        },
    ).eval()
    source = torch.rand(1, 3, 32, 32)
    kp = _kp(batch=1, num_kp=10)
    with torch.no_grad():
        out = model.animate(source, kp, kp)
    torch.testing.assert_close(out["deformed"], source, atol=1e-5, rtol=0)
    assert out["prediction"].shape == (1, 3, 32, 32)
    assert out["prediction"].min() >= 0 and out["prediction"].max() <= 1


# --- anti-aliased downscale -------------------------------------------------------------------


def test_anti_alias_kernel():
    down = AntiAliasInterpolation2d(3, 0.25)
    assert down.weight.shape == (3, 1, 13, 13)
    torch.testing.assert_close(down.weight.sum(dim=(1, 2, 3)), torch.ones(3))
    # separable Gaussian with σ = 1.5, peak at the centre
    k = down.weight[0, 0]
    assert k.argmax() == 6 * 13 + 6
    torch.testing.assert_close(k[6, 7] / k[6, 6], torch.exp(torch.tensor(-1 / (2 * 1.5**2))))
    assert AntiAliasInterpolation2d(3, 0.5).weight.shape[-1] == 5


def test_anti_alias_constant_image_and_size():
    down = AntiAliasInterpolation2d(3, 0.25)
    image = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1).expand(2, 3, 64, 48)
    out = down(image)
    assert out.shape == (2, 3, 16, 12)
    # zero padding darkens the border; 2 output pixels (8 input pixels ≥ 6 taps) in, it is exact
    interior = out[:, :, 2:-2, 2:-2]
    torch.testing.assert_close(interior, image[:, :, : interior.shape[2], : interior.shape[3]])
    # the stride slice keeps the pixel at every 4th position (blurred)
    image2 = torch.rand(1, 3, 64, 64)
    blurred = F.conv2d(F.pad(image2, (6, 6, 6, 6)), down.weight, groups=3)
    torch.testing.assert_close(down(image2), blurred[:, :, ::4, ::4])


def test_synthetic_presets_steps_match_their_notes() -> None:
    """A synthetic preset of batch 4 takes half the repeats, so its 24 training videos still
    make 30 steps an epoch; the note states the steps and the batch it trains with."""
    from animbench.models.presets import PRESETS, SYNTHETIC_STEPS_PER_EPOCH, synthetic_variant

    names = [n for n in PRESETS if n.split("-", 1)[1] in ("synthetic", "synthetic-body")]
    assert {n.split("-")[0] for n in names} >= {"fomm", "mraa", "mtia", "tpsmm"}
    batches = set()
    for name in names:
        train = PRESETS[name]["train_params"]
        per_epoch = 24 * train["num_repeats"] // train["batch_size"]
        if name.startswith("cpabmm"):
            continue  # its own schedule (test_cpabmm)
        assert per_epoch == SYNTHETIC_STEPS_PER_EPOCH, name
        steps = train["num_epochs"] * per_epoch
        assert f"{steps} steps of batch {train['batch_size']}" in PRESETS[name]["note"], name
        batches.add(train["batch_size"])
    assert batches == {4, 8}
    with pytest.raises(ValueError, match="batch 8 or 4"):
        synthetic_variant(PRESETS["fomm-synthetic"], "FOMM", "faces", 2, batch_size=2)
