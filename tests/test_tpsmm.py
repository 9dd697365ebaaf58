"""TPSMM: the authors' parameter layout, TPS transforms, TPS dropout, dense motion and
inpainting, objectives, training through the shared trainer, checkpoint import."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from conftest import offline_weights, reference_manifest

from animbench.errors import DataError
from animbench.models import registry
from animbench.models.blocks import count_parameters, make_coordinate_grid
from animbench.models.tpsmm import (
    TPS,
    TPSMM,
    BGMotionPredictor,
    DenseMotionNetwork,
    dropout_softmax,
    tps_kernel,
)
from animbench.networks.resnet import ResNet18
from animbench.train.objectives import AVD_OBJECTIVES, OBJECTIVES
from animbench.train.tps_objective import (
    TPSAVDObjective,
    TPSObjective,
    bg_loss,
    dropout_probability,
    random_scale_keypoints,
    warp_loss,
)
from animbench.train.trainer import clip_gradients

TPSMM_DATASETS = ["vox256", "taichi256", "ted384", "mgif256"]


@functools.lru_cache(maxsize=1)
def _built(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build(preset)


def _synthetic(**overrides) -> TPSMM:
    torch.manual_seed(0)
    return registry.build("tpsmm-synthetic", overrides or None)


def _train_params() -> dict:
    params = registry.get_preset("tpsmm-synthetic")["train_params"]
    params["scales"] = [1, 0.5]
    return params


# --- parameter layout -------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", TPSMM_DATASETS)
def test_layout_equals_reference_manifest(dataset):
    manifest = reference_manifest(f"tpsmm_{dataset}")
    model = _built(f"tpsmm-{dataset}")
    # the manifests list a bg_predictor for every dataset; mgif's config (bg False) builds none
    expected_networks = set(manifest) - ({"bg_predictor"} if dataset == "mgif256" else set())
    assert set(model.networks) == expected_networks
    for net in expected_networks:
        reference = manifest[net]
        module = model.networks[net]
        assert count_parameters(module) == reference["params"], net
        shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
        expected = {k: list(v) for k, v in reference["state_dict"].items()}
        assert shapes.keys() - expected.keys() == set(), f"{net}: keys not in the reference"
        assert expected.keys() - shapes.keys() == set(), f"{net}: reference keys missing"
        wrong = {k: (shapes[k], expected[k]) for k in shapes if shapes[k] != expected[k]}
        assert not wrong, f"{net}: shapes differ {wrong}"


def test_paper_counts_without_the_manifests():
    """The counts of DESIGN.md §2 / notes §3, checked even where shared/ is absent."""
    model = _built("tpsmm-vox256")
    counts = {name: count_parameters(net) for name, net in model.networks.items()}
    assert counts == {
        "inpainting_network": 24_737_283,
        "dense_motion_network": 37_941_397,
        "kp_detector": 11_227_812,
        "bg_predictor": 11_188_998,
        "avd_network": 2_583_652,
    }
    assert model.dense_motion_network.hourglass.encoder.down_blocks[0].conv.in_channels == 84


def test_resnet18_has_torchvision_layout():
    net = ResNet18().eval()
    keys = net.state_dict().keys()
    assert count_parameters(net) == 11_689_512  # torchvision resnet18()
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "fc.bias"} <= keys
    assert "layer1.0.downsample.0.weight" not in keys
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 1000)


def test_presets_follow_the_authors_configs():
    vox, taichi, ted, mgif = (registry.get_preset(f"tpsmm-{d}") for d in TPSMM_DATASETS)
    assert [p["train_params"]["num_repeats"] for p in (vox, taichi, ted, mgif)] == [
        75,
        150,
        150,
        50,
    ]
    assert [p["train_params"]["batch_size"] for p in (vox, taichi, ted, mgif)] == [28, 28, 12, 28]
    assert [
        (p["train_params"]["dropout_startp"], p["train_params"]["dropout_maxp"])
        for p in (vox, taichi, ted, mgif)
    ] == [(0.1, 0.3), (0.0, 0.7), (0.0, 0.5), (0.2, 0.5)]
    assert [p["train_params"]["bg_start"] for p in (vox, taichi, ted, mgif)] == [10, 0, 0, 0]
    assert [p["model_params"]["common_params"]["bg"] for p in (vox, taichi, ted, mgif)] == [
        True,
        True,
        True,
        False,
    ]
    assert [
        (
            p["train_avd_params"]["num_epochs"],
            p["train_avd_params"]["num_repeats"],
            p["train_avd_params"]["epoch_milestones"],
        )
        for p in (vox, taichi, ted, mgif)
    ] == [(200, 300, [140, 180]), (100, 150, [70, 90]), (30, 500, [20, 25]), (100, 50, [70, 90])]
    for p in (vox, taichi, ted, mgif):
        train = p["train_params"]
        assert (train["num_epochs"], train["epoch_milestones"]) == (100, [70, 90])
        assert train["lr_kp_detector"] == train["lr_inpainting_network"] == 2e-4
        assert train["weight_decay"] == 1e-4
        assert (train["dropout_epoch"], train["dropout_inc_epoch"]) == (35, 10)
        assert train["loss_weights"] == {
            "perceptual": [10] * 5,
            "equivariance_value": 10,
            "warp_loss": 10,
            "bg": 10,
            "l1": 0,
        }
        assert p["train_avd_params"]["batch_size"] == 256 and p["train_avd_params"]["lr"] == 1e-3
    assert ted["dataset_params"]["frame_shape"] == [384, 384, 3]
    assert set(vox["train_params"]["clip_grad_norm"]) == {
        "kp_detector",
        "dense_motion_network",
        "bg_predictor",
    }
    assert set(mgif["train_params"]["clip_grad_norm"]) == {"kp_detector", "dense_motion_network"}
    assert mgif["dataset_params"]["augmentation_params"]["jitter_param"] == {"hue": 0.5}


def test_registry_builds_tpsmm():
    assert registry.is_implemented("tpsmm") and "tpsmm" not in registry.PLANNED
    assert OBJECTIVES["tpsmm"] is TPSObjective and AVD_OBJECTIVES["tpsmm"] is TPSAVDObjective
    model = _synthetic()
    assert isinstance(model, TPSMM)
    assert list(model.networks) == [
        "inpainting_network",
        "dense_motion_network",
        "kp_detector",
        "bg_predictor",
        "avd_network",
    ]
    assert registry.get_preset("tpsmm-synthetic-body")["train_params"]["num_epochs"] == 9
    mgif_like = _synthetic(model_params={"common_params": {"bg": False}})
    assert "bg_predictor" not in mgif_like.networks


# --- TPS ---------------------------------------------------------------------------------------


def test_tps_kernel():
    d2 = torch.tensor([0.0, 1.0, 4.0])
    torch.testing.assert_close(
        tps_kernel(d2), torch.tensor([0.0, 1.0 * math.log(1 + 1e-9), 4.0 * math.log(4 + 1e-9)])
    )


def test_tps_interpolates_its_control_points():
    generator = torch.Generator().manual_seed(0)
    kp_1 = torch.rand(2, 3, 5, 2, generator=generator) * 1.6 - 0.8
    kp_2 = kp_1 + 0.1 * torch.randn(2, 3, 5, 2, generator=generator)
    exact = TPS.from_keypoints(kp_1, kp_2, regularization=0.0)
    torch.testing.assert_close(exact.warp_coordinates(kp_1), kp_2, atol=1e-4, rtol=0)
    # the reference's L + 0.01·I smooths: close to, not exactly at, the targets
    smoothed = TPS.from_keypoints(kp_1, kp_2)
    assert (smoothed.warp_coordinates(kp_1) - kp_2).abs().max() < 0.03


def test_tps_is_the_identity_for_equal_points():
    kp = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.0], [-0.5, 0.5], [0.5, 0.5]])
    kp = kp.view(1, 1, 5, 2).repeat(2, 2, 1, 1)
    identity = make_coordinate_grid((16, 16)).expand(2, 2, 16, 16, 2)
    exact = TPS.from_keypoints(kp, kp, regularization=0.0).grid((16, 16))
    torch.testing.assert_close(exact, identity, atol=1e-4, rtol=0)
    smoothed = TPS.from_keypoints(kp, kp)  # the regularisation pulls slightly off identity
    torch.testing.assert_close(smoothed.warp_coordinates(kp), kp, atol=1e-3, rtol=0)
    assert (smoothed.grid((16, 16)) - identity).abs().max() < 0.03


def test_tps_moves_an_affine_configuration_affinely():
    kp_1 = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.1], [-0.5, 0.5], [0.4, 0.5]])
    kp_1 = kp_1.view(1, 1, 5, 2)
    kp_2 = kp_1 * 0.8 + torch.tensor([0.1, -0.2])
    grid = TPS.from_keypoints(kp_1, kp_2, regularization=0.0).grid((9, 9))
    expected = make_coordinate_grid((9, 9)) * 0.8 + torch.tensor([0.1, -0.2])
    torch.testing.assert_close(grid[0, 0], expected, atol=1e-4, rtol=0)


def test_tps_runs_in_fp32_under_bf16_autocast():
    """The default on a bf16 GPU is autocast: the splines must not be summed in bf16 (that
    moved grid points by up to 5 px at 64²). Keypoints exactly representable in bf16, so the
    bf16 inputs carry the same numbers as the fp32 ones."""
    generator = torch.Generator().manual_seed(0)
    kp_1 = (torch.rand(4, 10, 5, 2, generator=generator) * 1.6 - 0.8).bfloat16().float()
    kp_2 = (kp_1 + 0.05 * torch.randn(4, 10, 5, 2, generator=generator)).bfloat16().float()
    expected = TPS.from_keypoints(kp_1, kp_2).grid((64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grid = TPS.from_keypoints(kp_1.bfloat16(), kp_2.bfloat16()).grid((64, 64))
    assert grid.dtype == torch.float32
    torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)
    frame = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        warped = TPS.random(2, generator=generator).transform_frame(frame)
    assert warped.dtype == torch.float32


def test_random_tps():
    generator = torch.Generator().manual_seed(0)
    transform = TPS.random(3, sigma_affine=0.05, sigma_tps=0.005, points_tps=5, generator=generator)
    points = torch.rand(3, 7, 2) * 2 - 1
    warped = transform.warp_coordinates(points)
    assert warped.shape == (3, 7, 2)
    assert (warped - points).abs().max() < 0.5
    flat = TPS.random(2, sigma_affine=0.0, sigma_tps=0.0)
    torch.testing.assert_close(flat.warp_coordinates(points[:2]), points[:2])
    frame = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(flat.transform_frame(frame), frame, atol=1e-5, rtol=0)


# --- dense motion -----------------------------------------------------------------------------


def test_dropout_softmax_masks_channels():
    torch.manual_seed(0)
    logits = torch.randn(64, 11, 4, 4)
    maps = dropout_softmax(logits, 0.5)
    sums = maps.sum(dim=1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-4, rtol=0)
    dropped = maps.flatten(2).amax(-1) == 0  # [B, K+1]: channel weight 0 everywhere
    assert not dropped[:, 0].any()  # the background is never dropped
    assert 0.3 < float(dropped[:, 1:].float().mean()) < 0.7
    assert dropout_softmax(logits, 1.0)[:, 1:].abs().max() == 0  # every TPS dropped
    # nothing dropped: the plain softmax (up to the 1e-6 of the partition)
    torch.testing.assert_close(dropout_softmax(logits, 0.0), logits.softmax(1), atol=1e-5, rtol=0)


def test_dropout_schedule():
    schedule = functools.partial(
        dropout_probability, dropout_epoch=35, startp=0.1, maxp=0.3, inc_epoch=10
    )
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(5) == pytest.approx(0.25)
    assert schedule(10) == pytest.approx(0.3) and schedule(34) == pytest.approx(0.3)
    assert schedule(35) is None
    taichi = functools.partial(
        dropout_probability, dropout_epoch=35, startp=0.0, maxp=0.7, inc_epoch=10
    )
    assert [taichi(e) for e in (0, 5, 20)] == pytest.approx([0.0, 0.35, 0.7])


def test_equal_keypoints_and_identity_background_give_near_identity_flow():
    torch.manual_seed(0)
    net = DenseMotionNetwork(16, 3, 64, num_tps=2, scale_factor=0.5).eval()
    kp = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.0], [-0.5, 0.5], [0.5, 0.5]])
    kp = {"fg_kp": kp.repeat(2, 1).unsqueeze(0).expand(2, 10, 2)}
    transforms = net.transformations((16, 16), kp, kp, torch.eye(3).expand(2, 3, 3))
    assert transforms.shape == (2, 3, 16, 16, 2)
    identity = make_coordinate_grid((16, 16)).expand(2, 16, 16, 2)
    torch.testing.assert_close(transforms[:, 0], identity)
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 32), kp, kp)
    assert (out["deformation"] - identity).abs().max() < 0.03


def test_dense_motion_extension_point():
    """A motion model with other transforms (CPABMM: 11 + bg) overrides one method."""

    class ShiftMotion(DenseMotionNetwork):
        def foreground_transformations(self, size, kp_driving, kp_source):
            b = kp_driving["fg_kp"].shape[0]
            grid = make_coordinate_grid(size).expand(b, self.num_transforms, *size, 2)
            return grid + 0.1

    net = ShiftMotion(16, 3, 64, num_tps=10, scale_factor=0.5, num_transforms=11)
    assert net.hourglass.encoder.down_blocks[0].conv.in_channels == 87
    assert net.maps.out_channels == 12
    kp = {"fg_kp": torch.rand(2, 50, 2) * 2 - 1}
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 32), kp, kp)
    assert out["contribution_maps"].shape == (2, 12, 16, 16)
    assert out["deformed_source"].shape == (2, 12, 3, 16, 16)


def test_background_predictor_starts_at_identity():
    net = BGMotionPredictor(width=8).eval()
    out = net(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(out, torch.eye(3).expand(2, 3, 3))
    assert net.bg_encoder.conv1.in_channels == 6


# --- model interface --------------------------------------------------------------------------


def test_forward_and_animate_shapes():
    model = _synthetic().eval()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(source, driving)
        kp_source = model.detect(source[:1])
        kp_source = {k: v.expand(2, *v.shape[1:]) for k, v in kp_source.items()}
        animated = model.animate(source[:1].expand(2, -1, -1, -1), kp_source, model.detect(driving))
    assert out["prediction"].shape == animated["prediction"].shape == (2, 3, 64, 64)
    assert out["kp_driving"]["fg_kp"].shape == (2, 50, 2)
    assert out["kp_driving"]["fg_kp"].abs().max() <= 1
    assert [tuple(o.shape) for o in out["occlusion_map"]] == [
        (2, 1, 8, 8),
        (2, 1, 16, 16),
        (2, 1, 32, 32),
        (2, 1, 64, 64),
    ]
    assert out["contribution_maps"].shape == (2, 11, 32, 32)
    assert out["deformation"].shape == (2, 32, 32, 2)
    assert out["bg_param"].shape == animated["bg_param"].shape == (2, 3, 3)
    assert [w.shape[1] for w in out["warped_encoder_maps"]] == [128, 64, 32, 16]
    assert 0 <= float(out["prediction"].min()) and float(out["prediction"].max()) <= 1


def test_single_occlusion_mask_mode():
    model = _synthetic(model_params={"common_params": {"multi_mask": False}}).eval()
    assert len(model.dense_motion_network.occlusion) == 1
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert out["prediction"].shape == (1, 3, 64, 64) and len(out["occlusion_map"]) == 1


def test_relative_and_avd_modes():
    model = _synthetic().eval()
    source, driving = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        kp_source, kp_driving = model.detect(source), model.detect(driving)
        initial = {k: v[:1] for k, v in kp_driving.items()}
        relative = model.relative_motion(kp_source, kp_driving, initial, adapt_scale=False)
        torch.testing.assert_close(relative["fg_kp"][0], kp_source["fg_kp"][0])
        assert "frame" not in relative  # still background, as the reference's demo
        scaled = model.relative_motion(kp_source, kp_driving, initial, adapt_scale=True)
        assert scaled["fg_kp"].shape == (3, 50, 2)
        expanded = {k: v.expand(3, *v.shape[1:]) for k, v in kp_source.items()}
        avd = model.avd(expanded, kp_driving)
        out = model.animate(source.expand(3, -1, -1, -1), expanded, avd)
    assert avd["fg_kp"].shape == (3, 50, 2)
    assert "bg_param" not in out and out["prediction"].shape == (3, 3, 64, 64)


# --- objectives -------------------------------------------------------------------------------


def test_objective_step_reaches_every_network():
    model = _synthetic().train()
    params = _train_params() | {"dropout_epoch": 5, "dropout_inc_epoch": 2}
    objective = TPSObjective(model, params, pretrained_vgg=False)
    assert objective.trained_networks == [
        "inpainting_network",
        "dense_motion_network",
        "kp_detector",
        "bg_predictor",
    ]
    objective.set_epoch(1)
    assert objective.dropout_p == pytest.approx(0.15)  # 1/2·0.3 + 0
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    losses, _ = objective.generator_losses(model, source, driving)
    assert set(losses) == {"perceptual", "l1", "equivariance_value", "warp_loss", "bg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in objective.trained_networks:
        grads = [p.grad for p in model.networks[name].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert all(p.grad is None for p in model.avd_network.parameters())


def test_warp_loss_trains_only_the_flow():
    model = _synthetic().train()
    params = _train_params()
    params["loss_weights"] = {"perceptual": [0] * 5, "warp_loss": 10}
    objective = TPSObjective(model, params, pretrained_vgg=False)
    objective.set_epoch(100)
    losses, _ = objective.generator_losses(
        model, torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    )
    assert set(losses) == {"perceptual", "warp_loss"} and float(losses["warp_loss"].detach()) > 0
    losses["warp_loss"].backward()
    assert all(p.grad is None for p in model.inpainting_network.parameters())
    assert any(p.grad is not None for p in model.dense_motion_network.maps.parameters())
    assert all(p.grad is None for p in model.dense_motion_network.occlusion.parameters())


def test_warp_and_bg_losses_vanish_when_they_should():
    maps = [torch.rand(2, 4, 8, 8), torch.rand(2, 2, 16, 16)]
    assert float(warp_loss(maps[::-1], maps)) == 0
    assert float(warp_loss([maps[1] + 1, maps[0]], maps)) == pytest.approx(1.0)
    theta = torch.tensor([[1.1, 0.1, 0.2], [0.0, 0.9, -0.1], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    assert float(bg_loss(theta, torch.inverse(theta))) == pytest.approx(0, abs=1e-6)
    assert float(bg_loss(theta, theta)) > 0.01


def test_background_waits_for_bg_start():
    model = _synthetic().train()
    params = _train_params()
    params["bg_start"] = 2
    objective = TPSObjective(model, params, pretrained_vgg=False)
    objective.set_epoch(1)
    losses, out = objective.generator_losses(
        model, torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    )
    assert "bg" not in losses and "bg_param" not in out
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.bg_predictor.parameters())


def test_avd_objective_step():
    model = _synthetic().train()
    objective = TPSAVDObjective(model, registry.get_preset("tpsmm-synthetic")["train_avd_params"])
    running = model.kp_detector.fg_encoder.bn1.running_mean.clone()
    losses, rec = objective.losses(model, torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64))
    assert set(losses) == {"reconstruction_kp"} and rec["fg_kp"].shape == (4, 50, 2)
    losses["reconstruction_kp"].backward()
    assert all(p.grad is not None for p in model.avd_network.parameters())
    assert all(p.grad is None for p in model.kp_detector.parameters())
    torch.testing.assert_close(model.kp_detector.fg_encoder.bn1.running_mean, running)
    assert model.kp_detector.training


def test_random_scale_keypoints_scales_axes():
    kp = {"fg_kp": torch.rand(3, 50, 2) + 0.1}
    ratio = (
        random_scale_keypoints(kp, 0.25, torch.Generator().manual_seed(0))["fg_kp"] / kp["fg_kp"]
    )
    assert ((ratio > 0.75 - 1e-6) & (ratio < 1.25 + 1e-6)).all()
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))


def test_clip_gradients_with_inf_norm():
    torch.manual_seed(0)
    nets = {"a": torch.nn.Linear(8, 8)}
    (1000 * nets["a"](torch.randn(4, 8)).square().sum()).backward()
    norms = clip_gradients(nets, {"a": {"max_norm": 10, "norm_type": "inf"}})
    assert norms["a"] > 10
    assert max(float(p.grad.abs().max()) for p in nets["a"].parameters()) == pytest.approx(
        10, rel=1e-4
    )


# --- training loop ----------------------------------------------------------------------------


def test_trainer_runs_tpsmm_and_reconstruction_loads_it(tiny_dataset, tmp_path):
    import pandas as pd

    from animbench import checkpoint
    from animbench.evaluate.reconstruct import drive_clip, load_animator
    from animbench.train.trainer import train

    overrides = {
        "train_params": {
            "max_steps": 3,
            "batch_size": 2,
            "num_epochs": 1,
            "num_repeats": 1,
            "scales": [1, 0.5],
            "bg_start": 0,
        },
        "train_avd_params": {"max_steps": 2, "batch_size": 2, "num_repeats": 1},
        "dataset_params": {"frame_shape": [32, 32, 3]},
    }
    with offline_weights(tmp_path / "cache"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "VGG19 ImageNet weights unavailable")
        final = train(
            tiny_dataset, "tpsmm", "tpsmm-synthetic", overrides, out=tmp_path / "run", device="cpu",
            allow_random_weights=True,
        )  # fmt: skip
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["step"]) == [1, 2, 3]
    for column in ("perceptual", "equivariance_value", "warp_loss", "bg"):
        assert log[column].map(math.isfinite).all(), column
    assert {
        f"grad_norm_{n}" for n in ("kp_detector", "dense_motion_network", "bg_predictor")
    } <= set(log.columns)
    assert len(pd.read_csv(tmp_path / "run" / "log-avd.csv")) == 2
    last = checkpoint.load(tmp_path / "run" / "checkpoint-last.pt")
    assert last["stage"] == "avd"
    model, payload = load_animator(final, torch.device("cpu"))
    assert set(payload["networks"]) == set(model.networks)
    frames = torch.rand(3, 3, 32, 32)
    assert drive_clip(model, frames, batch_frames=2).shape == frames.shape


def test_a_few_steps_lower_the_loss():
    """Repeated steps on one pair fit it: the reconstruction loss drops."""
    model = _synthetic().train()
    params = _train_params()
    objective = TPSObjective(model, params, pretrained_vgg=False)
    objective.set_epoch(10)
    optimizer = torch.optim.Adam(
        [p for n in objective.trained_networks for p in model.networks[n].parameters()],
        lr=1e-3,
        betas=(0.5, 0.999),
    )
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(2, 3, 64, 64, generator=generator)
    driving = source.roll(4, dims=3)
    values = []
    for _ in range(8):
        losses, _ = objective.generator_losses(model, source, driving)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        values.append(float((losses["perceptual"] + losses["l1"]).detach()))
    assert values[-1] < values[0]


# --- checkpoint import ------------------------------------------------------------------------


def _vox_manifest() -> dict:
    return reference_manifest("tpsmm_vox256")


@pytest.mark.slow  # writes and reads 85M-parameter files (≈12 s)
def test_import_names_missing_and_misshaped_tensors(tmp_path):
    from test_import_checkpoint import authors_file

    from animbench.models.import_checkpoint import import_checkpoint

    manifest = _vox_manifest()
    key = "dense_motion_network.occlusion.3.weight"
    source = authors_file(manifest, tmp_path / "a.pth.tar", **{key: None})
    with pytest.raises(DataError, match=f"{key}: missing from the file"):
        import_checkpoint("tpsmm-vox256", source, tmp_path / "out.pt")
    source = authors_file(
        manifest,
        tmp_path / "b.pth.tar",
        **{"kp_detector.fg_encoder.fc.weight": torch.zeros(50, 512)},
    )
    expected = r"kp_detector.fg_encoder.fc.weight: shape \(50, 512\) in the file, \(100, 512\)"
    with pytest.raises(DataError, match=expected):
        import_checkpoint("tpsmm-vox256", source, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.slow  # writes and reads 85M-parameter files (≈15 s)
def test_import_without_avd_network(tmp_path):
    from test_import_checkpoint import authors_file

    from animbench import checkpoint as ckpt
    from animbench.models.import_checkpoint import import_checkpoint

    manifest = {k: v for k, v in _vox_manifest().items() if k != "avd_network"}
    source = authors_file(manifest, tmp_path / "base.pth.tar")
    payload = ckpt.load(import_checkpoint("tpsmm-vox256", source, tmp_path / "out.pt"))
    assert "avd_network" not in payload["imported"]["networks"]
    assert any("avd_network not in the authors' file" in w for w in payload["warnings"])
    partial = {k: v for k, v in manifest.items() if k != "bg_predictor"}
    source = authors_file(partial, tmp_path / "nobg.pth.tar")
    with pytest.raises(DataError, match="network 'bg_predictor' missing"):
        import_checkpoint("tpsmm-vox256", source, tmp_path / "out2.pt")
