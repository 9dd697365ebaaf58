"""CPABMM: CPAB dense motion (bg + 10 local + 1 global), the θ fit, parameter counts, the
Table 2 presets, the objective's semantic losses, training and checkpoint import."""

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
from animbench.models.cpabmm import CPABMM, CPABDenseMotionNetwork
from animbench.models.tpsmm import TPSMM
from animbench.train.cpab_objective import CPABObjective
from animbench.train.objectives import AVD_OBJECTIVES, OBJECTIVES
from animbench.train.tps_objective import TPSAVDObjective

DATASETS = ["vox256", "taichi256", "ted384", "mgif256"]
TABLE2 = ["cpab", "cpab-global", "cpab-global-ks", "cpab-global-struc"]
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_SAM = {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,)}

# five keypoints of one group, not collinear
GROUP = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.1], [-0.5, 0.5], [0.4, 0.5]])


@functools.lru_cache(maxsize=1)
def _built(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build(preset)


def _synthetic(**overrides) -> CPABMM:
    torch.manual_seed(0)
    return registry.build("cpabmm-synthetic", overrides or None)


def _keypoints(batch: int, groups: int) -> dict[str, torch.Tensor]:
    return {"fg_kp": GROUP.repeat(groups, 1).unsqueeze(0).expand(batch, -1, -1).clone()}


def _small_dense_motion(**kwargs) -> CPABDenseMotionNetwork:
    torch.manual_seed(0)
    params = {"num_cpab": 2, "scale_factor": 0.5, "max_iter": 10} | kwargs
    return CPABDenseMotionNetwork(16, 3, 64, **params).eval()


# --- dense motion -----------------------------------------------------------------------------


def test_grids_are_background_local_and_global():
    net = _small_dense_motion(num_cpab=10, max_iter=3)
    assert net.hourglass.encoder.down_blocks[0].conv.in_channels == 87
    assert net.maps.out_channels == 12
    assert (net.max_iter, net.global_max_iter) == (3, 4)  # int(1.5 · 3), as the reference
    assert (net.local_cpab.theta_dim, net.global_cpab.theta_dim) == (58, 130)  # 4×4, 6×6
    kp_s = {"fg_kp": torch.rand(2, 50, 2) * 1.6 - 0.8}
    kp_d = {"fg_kp": kp_s["fg_kp"] + 0.05 * torch.randn(2, 50, 2)}
    transforms = net.transformations((16, 16), kp_d, kp_s, torch.eye(3).expand(2, 3, 3))
    assert transforms.shape == (2, 12, 16, 16, 2)
    identity = make_coordinate_grid((16, 16)).expand(2, 16, 16, 2)
    torch.testing.assert_close(transforms[:, 0], identity)  # identity background
    assert torch.isfinite(transforms).all()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 32), kp_d, kp_s, dropout_p=1.0)
    assert out["contribution_maps"].shape == (2, 12, 16, 16)
    assert out["deformed_source"].shape == (2, 12, 3, 16, 16)
    sizes = [tuple(o.shape[2:]) for o in out["occlusion_map"]]
    assert sizes == [(4, 4), (8, 8), (16, 16), (32, 32)]
    # the TPS dropout covers every CPAB channel, the global one included (as the reference's
    # dropout_softmax, which keeps only channel 0): at p = 1 only the background is left
    maps = out["contribution_maps"]
    assert maps[:, 1:].abs().max() == 0 and maps[:, 0].min() > 0.99


def test_without_global_cpab():
    net = _small_dense_motion(num_cpab=10, use_global_cpab=False, max_iter=2)
    assert net.global_cpab is None
    assert net.hourglass.encoder.down_blocks[0].conv.in_channels == 84  # TPSMM's input
    assert net.maps.out_channels == 11
    kp = {"fg_kp": torch.rand(1, 50, 2) * 1.6 - 0.8}
    assert net.foreground_transformations((8, 8), kp, kp).shape == (1, 10, 8, 8, 2)


def test_equal_keypoints_give_near_identity_transforms():
    net = _small_dense_motion()
    kp = _keypoints(2, 2)
    local, global_theta = net.fit_thetas(kp, kp)
    assert local.shape == (2, 2, 58) and global_theta.shape == (2, 130)
    grids = net.foreground_transformations((16, 16), kp, kp)
    identity = make_coordinate_grid((16, 16))
    # Adam's normalised steps wander around θ = 0 (the residual is ~0): near, not exactly at
    assert (grids - identity).abs().max() < 0.02


def test_fitted_local_transform_recovers_a_displacement():
    net = _small_dense_motion(max_iter=100)  # the reference's fit: 100 Adam steps at 1e-2
    kp_d = _keypoints(1, 2)
    shift = torch.tensor([0.1, -0.05])
    kp_s = {"fg_kp": kp_d["fg_kp"] + shift}
    local, global_theta = net.fit_thetas(kp_d, kp_s)
    # backward warp: T(kp_d) ≈ kp_s
    moved = 2 * net.local_cpab.transform((kp_d["fg_kp"].view(2, 5, 2) + 1) / 2, local[0]) - 1
    assert (moved - kp_s["fg_kp"].view(2, 5, 2)).abs().max() < 0.01
    moved = 2 * net.global_cpab.transform((kp_d["fg_kp"] + 1) / 2, global_theta) - 1
    assert (moved - kp_s["fg_kp"]).abs().max() < 0.01
    # the grid moves by about the shift near the keypoints' centre
    grid = net.foreground_transformations((9, 9), kp_d, kp_s)
    centre = grid[0, :, 4, 4] - make_coordinate_grid((9, 9))[4, 4]
    torch.testing.assert_close(centre, shift.expand(3, 2), atol=0.02, rtol=0)


def test_no_gradient_reaches_the_keypoints_through_the_fit():
    net = _small_dense_motion(max_iter=3)
    kp_d = {"fg_kp": (torch.rand(1, 10, 2) * 1.6 - 0.8).requires_grad_(True)}
    kp_s = {"fg_kp": (kp_d["fg_kp"].detach() + 0.05).requires_grad_(True)}
    grids = net.foreground_transformations((8, 8), kp_d, kp_s)
    assert not grids.requires_grad
    # the fit's own backward passes ran: they reached θ only
    assert kp_d["fg_kp"].grad is None and kp_s["fg_kp"].grad is None
    # through the dense motion, the keypoints learn from the heatmaps alone
    out = net(torch.rand(1, 3, 16, 16), kp_d, kp_s)
    (out["deformation"].sum()).backward()
    assert kp_d["fg_kp"].grad is not None and torch.isfinite(kp_d["fg_kp"].grad).all()


def test_fit_runs_in_eval_under_no_grad():
    net = _small_dense_motion(max_iter=3)
    kp_s = {"fg_kp": torch.rand(1, 10, 2) * 1.6 - 0.8}
    kp_d = {"fg_kp": kp_s["fg_kp"] + 0.1}
    with torch.no_grad():
        local, _ = net.fit_thetas(kp_d, kp_s)
    assert local.abs().max() > 1e-3  # θ moved from identity(1e-6)


# --- parameter layout -------------------------------------------------------------------------


def test_counts_tpsmm_networks_and_the_cpab_dense_motion():
    model = _built("cpabmm-vox256")
    counts = {name: count_parameters(net) for name, net in model.networks.items()}
    assert counts == {
        "inpainting_network": 24_737_283,
        "dense_motion_network": 37_957_759,  # notes §5: 37.96M
        "kp_detector": 11_227_812,
        "bg_predictor": 11_188_998,
        "avd_network": 2_583_652,
    }
    dense = model.dense_motion_network
    assert dense.hourglass.encoder.down_blocks[0].conv.in_channels == 87
    assert dense.maps.out_channels == 12
    # CPAB bases are non-persistent: no tensor beyond the authors' in the state_dict
    assert not any("cpab" in k for k in dense.state_dict())


def test_tpsmm_networks_equal_the_reference_manifests():
    manifest = reference_manifest("tpsmm_vox256")
    model = _built("cpabmm-vox256")
    assert set(model.networks) == set(manifest)
    for name in ("inpainting_network", "kp_detector", "bg_predictor", "avd_network"):
        module = model.networks[name]
        assert count_parameters(module) == manifest[name]["params"], name
        shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert shapes == {k: list(v) for k, v in manifest[name]["state_dict"].items()}, name
    # the dense motion network has TPSMM's keys. 3 more input channels (87) and 1 more map
    # (12); the hourglass output (block_expansion + input channels: 151, TPSMM 148) feeds the
    # maps, the top occlusion conv and the up blocks (151 → 75 → 37, the reference's c // 2)
    dense = {k: list(v.shape) for k, v in model.dense_motion_network.state_dict().items()}
    reference = manifest["dense_motion_network"]["state_dict"]
    assert dense.keys() == reference.keys()
    differ = {k: dense[k] for k in dense if dense[k] != list(reference[k])}
    assert differ == {
        "hourglass.encoder.down_blocks.0.conv.weight": [128, 87, 3, 3],
        "maps.weight": [12, 151, 7, 7],
        "maps.bias": [12],
        "up.0.conv.weight": [75, 151, 3, 3],
        "up.0.conv.bias": [75],
        "up.0.norm.weight": [75],
        "up.0.norm.bias": [75],
        "up.1.conv.weight": [37, 75, 3, 3],
        "occlusion.1.weight": [1, 151, 7, 7],
        "occlusion.2.weight": [1, 75, 7, 7],
    }


# --- presets and registry ---------------------------------------------------------------------


def test_registry_builds_cpabmm():
    assert registry.is_implemented("cpabmm") and "cpabmm" not in registry.PLANNED
    assert OBJECTIVES["cpabmm"] is CPABObjective
    assert AVD_OBJECTIVES["cpabmm"] is TPSAVDObjective
    model = _synthetic()
    assert isinstance(model, CPABMM) and isinstance(model, TPSMM)
    assert isinstance(model.dense_motion_network, CPABDenseMotionNetwork)
    assert list(model.networks) == [
        "inpainting_network",
        "dense_motion_network",
        "kp_detector",
        "bg_predictor",
        "avd_network",
    ]
    with pytest.raises(ValueError, match="num_cpab or num_tps"):
        CPABMM({"num_cpab": 2, "num_tps": 2}, {}, {})


def test_presets_follow_the_authors_configs():
    presets = {d: registry.get_preset(f"cpabmm-{d}") for d in DATASETS}
    tpsmm = {d: registry.get_preset(f"tpsmm-{d}") for d in DATASETS}
    assert [presets[d]["model_params"]["dense_motion_params"]["max_iter"] for d in DATASETS] == [
        100,
        200,
        100,
        100,
    ]
    assert [presets[d]["train_params"]["lr_kp_detector"] for d in DATASETS] == [
        1e-4,
        1e-4,
        2e-4,
        1e-4,
    ]
    assert [presets[d]["train_params"]["num_repeats"] for d in DATASETS] == [75, 300, 150, 50]
    assert [presets[d]["train_params"]["checkpoint_freq"] for d in DATASETS] == [50, 25, 25, 50]
    for d in DATASETS:
        p, t = presets[d], tpsmm[d]
        train = p["train_params"]
        assert p["model"] == "cpabmm" and train["batch_size"] == 8
        assert p["model_params"]["common_params"]["num_cpab"] == 10
        assert "num_tps" not in p["model_params"]["common_params"]
        assert train["loss_weights"] == {**t["train_params"]["loss_weights"], "structure": 0.1,
                                         "keypoint_semantic": 1}  # fmt: skip
        for key in ("dropout_startp", "dropout_maxp", "dropout_epoch", "bg_start", "weight_decay"):
            assert train[key] == t["train_params"][key], (d, key)
        assert p["dataset_params"] == t["dataset_params"]
        dense = p["model_params"]["dense_motion_params"]
        assert dense["use_global_cpab"] and dense["global_iter_factor"] == 1.5
        assert (dense["local_tessellation"], dense["global_tessellation"]) == (4, 6)
        assert dense["fit_lr"] == 1e-2
    assert "broken" in presets["vox256"]["note"]
    assert presets["mgif256"]["model_params"]["common_params"]["bg"] is False


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_table2_presets_differ_only_in_their_switches():
    full = _flatten(registry.get_preset("cpabmm-taichi256"))
    switches = {
        "cpab": {"use_global_cpab": False, "keypoint_semantic": 0, "structure": 0},
        "cpab-global": {"use_global_cpab": True, "keypoint_semantic": 0, "structure": 0},
        "cpab-global-ks": {"use_global_cpab": True, "keypoint_semantic": 1, "structure": 0},
        "cpab-global-struc": {"use_global_cpab": True, "keypoint_semantic": 0, "structure": 0.1},
    }
    keys = {
        "use_global_cpab": "model_params.dense_motion_params.use_global_cpab",
        "keypoint_semantic": "train_params.loss_weights.keypoint_semantic",
        "structure": "train_params.loss_weights.structure",
    }
    assert [full[k] for k in keys.values()] == [True, 1, 0.1]
    for row in TABLE2:
        preset = _flatten(registry.get_preset(f"cpabmm-taichi256-{row}"))
        differ = {k for k in full if full[k] != preset[k]} - {"note"}
        assert differ <= set(keys.values()), row
        assert {name: preset[key] for name, key in keys.items()} == switches[row], row
        model = registry.build(f"cpabmm-taichi256-{row}")
        in_channels = model.dense_motion_network.hourglass.encoder.down_blocks[0].conv.in_channels
        assert in_channels == (84 if row == "cpab" else 87), row


def test_synthetic_presets():
    for name in ("cpabmm-synthetic", "cpabmm-synthetic-body"):
        preset, tps = (
            registry.get_preset(name),
            registry.get_preset(name.replace("cpabmm", "tpsmm")),
        )
        assert preset["train_params"]["loss_weights"]["structure"] == 0
        assert preset["train_params"]["loss_weights"]["keypoint_semantic"] == 0
        # the schedule of the small presets before TPSMM's own was shortened (CI time)
        assert preset["train_params"]["num_epochs"] == (25 if "body" in name else 15)
        assert preset["dataset_params"] == tps["dataset_params"]
        assert preset["model_params"]["dense_motion_params"]["max_iter"] == 10
        assert "CPU time" in preset["note"]


# --- model interface --------------------------------------------------------------------------


def test_forward_animate_relative_and_avd():
    model = _synthetic().eval()
    source, driving = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(source.expand(2, -1, -1, -1), driving)
        kp_source, kp_driving = model.detect(source), model.detect(driving)
        expanded = {k: v.expand(2, *v.shape[1:]) for k, v in kp_source.items()}
        animated = model.animate(source.expand(2, -1, -1, -1), expanded, kp_driving)
        initial = {k: v[:1] for k, v in kp_driving.items()}
        relative = model.relative_motion(kp_source, kp_driving, initial, adapt_scale=True)
        avd = model.avd(expanded, kp_driving)
    assert out["prediction"].shape == animated["prediction"].shape == (2, 3, 64, 64)
    assert out["contribution_maps"].shape == (2, 12, 32, 32)
    assert animated["bg_param"].shape == (2, 3, 3)
    assert relative["fg_kp"].shape == avd["fg_kp"].shape == (2, 50, 2)


# --- objective --------------------------------------------------------------------------------


def _train_params(**weights) -> dict:
    params = registry.get_preset("cpabmm-synthetic")["train_params"]
    params["scales"] = [1, 0.5]
    params["loss_weights"].update(weights)
    params["structure_params"] = {"size": 32, "max_size": None, "vit_params": TINY_VIT}
    params["keypoint_semantic_params"] = {"image_size": 64, "sam_params": TINY_SAM}
    return params


def test_semantic_losses_are_built_only_when_weighted():
    model = _synthetic(model_params={"dense_motion_params": {"max_iter": 2}})
    objective = CPABObjective(model, _train_params(), pretrained_vgg=False)
    assert objective.structure is None and objective.keypoint_semantic is None
    objective = CPABObjective(
        model, _train_params(structure=0.1), pretrained_vgg=False, pretrained_semantic=False
    )
    assert objective.structure is not None and objective.keypoint_semantic is None
    assert any("DINO ViT randomly initialised" in w for w in objective.warnings)


def test_weighted_semantic_losses_enter_the_step():
    model = _synthetic(model_params={"dense_motion_params": {"max_iter": 2}}).train()
    objective = CPABObjective(
        model,
        _train_params(structure=0.1, keypoint_semantic=1),
        pretrained_vgg=False,
        pretrained_semantic=False,
    )
    assert len(objective.warnings) == 3  # VGG, DINO, SAM: all randomly initialised
    objective.set_epoch(1)
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    losses, out = objective.generator_losses(model, source, driving)
    assert set(losses) == {
        "perceptual",
        "l1",
        "equivariance_value",
        "warp_loss",
        "bg",
        "structure",
        "keypoint_semantic",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    assert out["contribution_maps"].shape[1] == 12
    model.zero_grad()
    losses["keypoint_semantic"].backward(retain_graph=True)
    assert any(p.grad is not None for p in model.kp_detector.parameters())  # L_KS trains kps
    model.zero_grad()
    losses["structure"].backward()
    assert any(p.grad is not None for p in model.inpainting_network.parameters())
    assert all(p.grad is None for p in objective.structure.parameters())  # frozen


def test_absent_semantic_weights_warn(tmp_path):
    model = _synthetic(model_params={"dense_motion_params": {"max_iter": 2}})
    params = _train_params(structure=0.1)
    params["structure_params"] = {"size": 32, "max_size": None}  # ViT-B/8: the published one
    with offline_weights(tmp_path / "cache"), pytest.warns(UserWarning, match="DINO ViT-B/8"):
        objective = CPABObjective(model, params, pretrained_vgg=False)
    assert not objective.structure.pretrained
    assert any("weights unavailable" in w for w in objective.warnings)


# --- training loop ----------------------------------------------------------------------------


def test_trainer_runs_cpabmm_and_reconstruction_loads_it(tiny_dataset, tmp_path):
    import pandas as pd

    from animbench.evaluate.reconstruct import drive_clip, load_animator
    from animbench.train.trainer import train

    overrides = {
        "model_params": {"dense_motion_params": {"max_iter": 3}},
        "train_params": {
            "max_steps": 3,
            "batch_size": 2,
            "num_epochs": 1,
            "num_repeats": 1,
            "scales": [1, 0.5],
        },
        "train_avd_params": {"max_steps": 1, "batch_size": 2, "num_repeats": 1},
        "dataset_params": {"frame_shape": [32, 32, 3]},
    }
    with offline_weights(tmp_path / "cache"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "VGG19 ImageNet weights unavailable")
        final = train(
            tiny_dataset,
            "cpabmm",
            "cpabmm-synthetic",
            overrides,
            out=tmp_path / "run",
            device="cpu",
            allow_random_weights=True,
        )
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["step"]) == [1, 2, 3]
    for column in ("perceptual", "equivariance_value", "warp_loss", "bg"):
        assert log[column].map(math.isfinite).all(), column
    assert "structure" not in log.columns and "keypoint_semantic" not in log.columns
    model, payload = load_animator(final, torch.device("cpu"))
    assert isinstance(model, CPABMM) and set(payload["networks"]) == set(model.networks)
    frames = torch.rand(3, 3, 32, 32)
    assert drive_clip(model, frames, batch_frames=2).shape == frames.shape


# --- checkpoint import ------------------------------------------------------------------------


def test_import_accepts_the_authors_layout(tmp_path):
    from animbench import checkpoint as ckpt
    from animbench.models.import_checkpoint import import_checkpoint

    model = _synthetic()
    # the authors' logger: {network: state_dict, ..., optimizer*, epoch} (no AVD yet)
    payload = {
        name: net.state_dict() for name, net in model.networks.items() if name != "avd_network"
    }
    payload |= {"optimizer": {"state": {}, "param_groups": []}, "epoch": 99}
    torch.save(payload, tmp_path / "00000099-checkpoint.pth.tar")
    out = import_checkpoint(
        "cpabmm-synthetic", tmp_path / "00000099-checkpoint.pth.tar", tmp_path / "out.pt"
    )
    imported = ckpt.load(out)
    assert imported["method"] == "cpabmm" and imported["epoch"] == 99
    assert "avd_network" not in imported["imported"]["networks"]
    torch.testing.assert_close(
        imported["networks"]["dense_motion_network"]["maps.weight"],
        model.dense_motion_network.maps.weight,
    )
    # a TPSMM file of the same size does not pass for CPABMM: 84 input channels, 11 maps
    tps = registry.build("tpsmm-synthetic")
    torch.save({n: net.state_dict() for n, net in tps.networks.items()}, tmp_path / "tps.pth")
    with pytest.raises(DataError, match=r"dense_motion_network\.hourglass.*shape"):
        import_checkpoint("cpabmm-synthetic", tmp_path / "tps.pth", tmp_path / "bad.pt")
