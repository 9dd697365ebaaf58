"""MTIA: the authors' parameter layout, the transformer keypoint detector, the TaiChi mask
losses, one optimisation step and the registry."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import reference_manifest

from animbench.models import registry
from animbench.models.blocks import count_parameters
from animbench.models.mtia import MotionTransformer, TransformerKPDetector, sine_position_encoding
from animbench.train.objectives import (
    OBJECTIVES,
    bg_fg_mask_loss,
    fg_mask_concentration_loss,
)

MTIA_PRESETS = {
    "voxceleb1": "mtia-vox256",
    "taichi256": "mtia-taichi256",
    "ted384": "mtia-ted384",
    "mgif256": "mtia-mgif256",
}


def _no_fetch(name, *args, **kwargs):
    raise AssertionError(f"building a model fetched the {name} weights")


@functools.lru_cache(maxsize=1)
def _built(preset: str) -> torch.nn.Module:
    """The preset's model as is (mtia-taichi256 asks for ImageNet HRNet: build never fetches)."""
    from animbench import weights

    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(weights, "fetch", _no_fetch)
        return registry.build(preset)


def _small(**kp) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build("mtia-synthetic", {"model_params": {"kp_detector_params": kp}})


# --- parameter layout -------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(MTIA_PRESETS))
def test_layout_equals_reference_manifest(dataset):
    manifest = reference_manifest(f"mtia_{dataset}")
    model = _built(MTIA_PRESETS[dataset])
    assert set(model.networks) == set(manifest)
    for net, reference in manifest.items():
        module = model.networks[net]
        assert count_parameters(module) == reference["params"], net
        shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
        expected = {k: list(v) for k, v in reference["state_dict"].items()}
        assert shapes.keys() - expected.keys() == set(), f"{net}: keys not in the reference"
        assert expected.keys() - shapes.keys() == set(), f"{net}: reference keys missing"
        wrong = {k: (shapes[k], expected[k]) for k in shapes if shapes[k] != expected[k]}
        assert not wrong, f"{net}: shapes differ {wrong}"


def test_paper_parameter_counts():
    """Issue 4 / MTIA Table 5 (counts there leave out the frozen position encoding)."""
    counts = {}
    for backbone in ("stem", "hrnet_w32", "hrnet_w48"):
        detector = TransformerKPDetector(backbone=backbone)
        counts[backbone] = count_parameters(detector)
        assert detector.transformer.pos_embedding.numel() == 256 * 192
    assert counts["hrnet_w32"] == 12_283_462
    frozen = 256 * 192
    assert round((counts["stem"] - frozen) / 1e6, 2) == 5.56
    assert round((counts["hrnet_w32"] - frozen) / 1e6, 2) == 12.23
    assert round((counts["hrnet_w48"] - frozen) / 1e6, 2) == 21.30


def test_depth_and_position_encoding_change_parameter_count():
    per_layer = 4 * 192 * 192 + 192 + 2 * 192 * 576 + 576 + 192 + 4 * 192  # attn, MLP, 2 LN
    base = count_parameters(TransformerKPDetector(depth=12))
    for depth in (4, 8):
        assert base - count_parameters(TransformerKPDetector(depth=depth)) == (
            (12 - depth) * per_layer
        )
    no_pe = TransformerKPDetector(depth=1, position_encoding=False)
    assert count_parameters(TransformerKPDetector(depth=1)) - count_parameters(no_pe) == 256 * 192
    assert not hasattr(no_pe.transformer, "pos_embedding")


# --- keypoint detector ------------------------------------------------------------------------


def test_forward_shapes_and_identity_jacobian_on_small_preset():
    model = _small().eval()
    assert set(model.networks) == {"generator", "kp_detector"}
    torch.manual_seed(1)
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(source, driving)
    assert out["prediction"].shape == (2, 3, 64, 64)
    assert out["kp_driving"]["value"].shape == (2, 10, 2)
    assert out["kp_driving"]["value"].abs().max() < 1
    assert out["kp_driving"]["jacobian"].shape == (2, 10, 2, 2)
    torch.testing.assert_close(out["kp_driving"]["jacobian"], torch.eye(2).expand(2, 10, 2, 2))
    assert out["mask"].shape == (2, 11, 32, 32)
    # the keypoints depend on the image, if only slightly at initialisation (~1e-7: the kp
    # tokens, not the image tokens, dominate what the head reads before training)
    assert (out["kp_source"]["value"] - out["kp_driving"]["value"]).abs().max() > 0


def test_position_encoding_is_sine_and_changes_outputs():
    pos = sine_position_encoding(16, 16, 192)
    assert pos.shape == (1, 256, 192)
    # first half encodes y (constant along a row), second half x; sin(·)² + cos(·)² = 1
    grid = pos.view(16, 16, 192)
    torch.testing.assert_close(grid[3, 0, :96], grid[3, 9, :96])
    torch.testing.assert_close(grid[0, 5, 96:], grid[7, 5, 96:])
    torch.testing.assert_close(grid[..., 0] ** 2 + grid[..., 1] ** 2, torch.ones(16, 16))

    with_pe = _small().kp_detector.eval()
    without = _small(position_encoding=False).kp_detector.eval()
    missing, unexpected = without.load_state_dict(with_pe.state_dict(), strict=False)
    assert missing == [] and unexpected == ["transformer.pos_embedding"]
    assert not with_pe.transformer.pos_embedding.requires_grad
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = with_pe(image)["value"], without(image)["value"]
    assert not torch.allclose(a, b)


def test_other_frame_size_uses_the_same_encoding_function():
    detector = _small().kp_detector.eval()
    with torch.no_grad():
        out = detector(torch.rand(1, 3, 32, 32))
    assert out["value"].shape == (1, 10, 2)


# --- TaiChi mask losses -----------------------------------------------------------------------


def test_bg_fg_mask_loss_on_hand_made_masks():
    k = 4
    all_background = torch.zeros(2, k + 1, 8, 8)
    all_background[:, 0] = 1
    assert bg_fg_mask_loss(all_background) == 0
    uniform = torch.full((2, k + 1, 8, 8), 1 / (k + 1))
    expected = (1 - 1 / (k + 1)) + (10 / k) * (1 / (k + 1))
    torch.testing.assert_close(bg_fg_mask_loss(uniform), torch.tensor(expected))
    one_part = torch.zeros(1, k + 1, 8, 8)
    one_part[:, 1] = 1  # all foreground on part 1: |0 − 1| + (10/k)·mean over k maps = 1 + 10/k²
    torch.testing.assert_close(bg_fg_mask_loss(one_part), torch.tensor(1 + 10 / k**2))


def test_fg_mask_concentration_on_hand_made_masks():
    h = w = 5
    peaked = torch.zeros(1, 3, h, w)
    peaked[0, 1, 2, 2] = 1.0
    peaked[0, 2, 0, 4] = 0.3  # scale does not matter: masks are normalised
    assert float(fg_mask_concentration_loss(peaked)) == pytest.approx(0.0, abs=1e-6)
    # two equal points at x = ±1 on the middle row: variance 1 around μ = (0, 0)
    two = torch.zeros(2, 2, h, w)
    two[:, 1, 2, 0] = 0.5
    two[:, 1, 2, 4] = 0.5
    torch.testing.assert_close(fg_mask_concentration_loss(two), torch.tensor(1.0))
    # uniform mask on the 5×5 grid in [-1, 1]²: Var x + Var y = 2 · mean(x²) = 2 · 0.5
    uniform = torch.ones(1, 2, h, w)
    torch.testing.assert_close(fg_mask_concentration_loss(uniform), torch.tensor(1.0))


# --- training ---------------------------------------------------------------------------------


def test_one_step_is_finite_and_reaches_every_network():
    spec = registry.get_preset(
        "mtia-synthetic",
        {
            "model_params": {
                "bg_predictor_params": {
                    "block_expansion": 4,
                    "max_features": 16,
                    "num_blocks": 2,
                    "bg_type": "affine",
                }
            },
            "train_params": {
                "scales": [1, 0.5],
                "loss_weights": {"bg_fg_mask": 1, "fg_mask_concentration": 1},
            },
        },
    )
    torch.manual_seed(0)
    model = registry.build(spec)
    objective = OBJECTIVES["mtia"](model, spec["train_params"], pretrained_vgg=False)
    assert objective.trained_networks == ["generator", "kp_detector", "bg_predictor"]
    source, driving = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    losses, out = objective.generator_losses(model, source, driving)
    assert {"perceptual", "equivariance_value", "equivariance_jacobian"} <= set(losses)
    assert {"bg_fg_mask", "fg_mask_concentration"} <= set(losses)
    assert out["bg_params"].shape == (2, 3, 3)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name in objective.trained_networks:
        params = [p for p in model.networks[name].parameters() if p.requires_grad]
        grads = [p.grad for p in params]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    kp = model.kp_detector.transformer
    assert kp.keypoint_token.grad.abs().sum() > 0
    assert kp.mlp_head_jacobian[1].weight.grad.abs().sum() > 0
    assert model.kp_detector.pre_feature.conv1.weight.grad.abs().sum() > 0


def test_registry():
    assert registry.is_implemented("mtia")
    assert "mtia" not in registry.PLANNED
    model = registry.build("mtia-synthetic")
    assert model.method == "mtia"
    for name in ("nope", "stem", "hrw48", "4layers", "8layers"):
        assert registry.get_preset(f"mtia-taichi256-{name}")["model"] == "mtia"
    spec = registry.get_preset("mtia-taichi256")
    assert spec["model_params"]["kp_detector_params"]["pretrained"] is True
    assert spec["train_params"]["loss_weights"]["bg_fg_mask"] == 1
    assert registry.get_preset("mtia-vox256")["train_params"]["loss_weights"]["bg_fg_mask"] == 0


def test_imagenet_backbone_loads_from_the_weight_cache(tmp_path, monkeypatch):
    """The ImageNet file (official HRNet names, stage 4 and classifier included) fills every
    backbone key; offline, the detector keeps its init and the objective records a warning."""
    from animbench import weights
    from animbench.networks.hrnet import HRNetBackbone

    torch.manual_seed(3)
    full = HRNetBackbone(32)
    state = dict(full.state_dict())
    state["stage4.0.branches.3.0.conv1.weight"] = torch.zeros(256, 256, 3, 3)  # not MTIA's
    state["stage3.3.fuse_layers.1.0.0.0.weight"] = torch.zeros(64, 32, 3, 3)  # trimmed here
    state["classifier.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "hrnet_w32-36af842e.pth"
    torch.save(state, path)
    monkeypatch.setattr(weights, "fetch", _no_fetch)
    stem = TransformerKPDetector(backbone="stem", image_size=(64, 64), depth=1, pretrained=True)
    assert stem.pretrained == "hrnet_w32"  # the Stem net loads from the W32 file
    monkeypatch.setattr(weights, "fetch", lambda name: (path, "cached"))
    assert stem.load_pretrained() == []
    torch.testing.assert_close(stem.pre_feature.layer1[3].conv3.weight, full.layer1[3].conv3.weight)
    assert stem.weights_notes == []
    assert (
        TransformerKPDetector(backbone="stem", image_size=(64, 64), depth=1).load_pretrained() == []
    )

    monkeypatch.setattr(weights, "fetch", lambda name: (None, "offline"))
    spec = registry.get_preset(
        "mtia-synthetic", {"model_params": {"kp_detector_params": {"pretrained": True}}}
    )
    model = registry.build(spec)
    with pytest.warns(UserWarning, match="HRNet ImageNet weights unavailable"):
        assert "HRNet" in model.load_pretrained()[0]
    objective = OBJECTIVES["mtia"](model, spec["train_params"], pretrained_vgg=False)
    assert any("HRNet" in w for w in objective.warnings)


def test_hrnet_weight_files_are_plain_registry_entries():
    from animbench import weights

    for name, digest in (("hrnet_w32", "36af842e"), ("hrnet_w48", "8ef0771d")):
        entry = weights.WEIGHTS[name]
        assert entry.sha256_prefix == digest and entry.filename == f"{name}-{digest}.pth"
        assert entry.url.startswith("https://download.openmmlab.com/mmpose/pretrain_models/")


def test_background_predictor_is_mraa_s():
    from animbench.models.mraa import BGMotionPredictor

    model = registry.build(
        "mtia-synthetic",
        {"model_params": {"bg_predictor_params": {"block_expansion": 4, "max_features": 16}}},
    )
    assert type(model.bg_predictor) is BGMotionPredictor
    assert model.bg_predictor.bg_type == "affine"  # MTIA's default


def test_trainer_checkpoint_and_reconstruction(tiny_dataset, tmp_path, monkeypatch):
    """The shared trainer picks MTIA's objective, fetches the ImageNet backbone at the start of
    training (not when the checkpoint is rebuilt), clips the keypoint detector's
    gradient norm to 1; its checkpoint rebuilds for reconstruction."""
    import warnings

    import pandas as pd
    from conftest import TINY_OVERRIDES, offline_weights

    from animbench import weights
    from animbench.evaluate.reconstruct import drive_clip, load_animator
    from animbench.train import trainer

    fetched = []
    monkeypatch.setattr(weights, "fetch", lambda name: fetched.append(name) or (None, "offline"))
    hrnet = lambda: [n for n in fetched if n != "vgg19"]  # noqa: E731 (VGG19: the loss's)
    clipped = []

    def spy(networks, max_norms):
        norms = clip_gradients(networks, max_norms)
        after = torch.nn.utils.get_total_norm(
            [p.grad for p in networks["kp_detector"].parameters() if p.grad is not None]
        )
        clipped.append((norms["kp_detector"], float(after)))
        return norms

    clip_gradients = trainer.clip_gradients
    monkeypatch.setattr(trainer, "clip_gradients", spy)
    overrides = {
        "train_params": {
            **TINY_OVERRIDES["train_params"],
            "max_steps": 2,
            "loss_weights": {"equivariance_value": 1e4},  # large keypoint gradients
        },
        "model_params": {"kp_detector_params": {"pretrained": True}},
    }
    with offline_weights(tmp_path / "cache"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "VGG19 ImageNet weights unavailable")
        warnings.filterwarnings("ignore", "HRNet ImageNet weights unavailable")
        final = trainer.train(
            tiny_dataset, "mtia", "mtia-synthetic", overrides, tmp_path / "run", "cpu",
            allow_random_weights=True,
        )  # fmt: skip
    # the start's availability check and the initialisation; nothing else
    assert set(hrnet()) == {"hrnet_w32"}
    fetched_in_training = hrnet()
    assert len(clipped) == 2
    for before, after in clipped:
        assert before > 1 and after == pytest.approx(1.0, rel=1e-4)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["grad_norm_kp_detector"]) == pytest.approx([b for b, _ in clipped], rel=1e-5)
    model, payload = load_animator(final, torch.device("cpu"))
    assert hrnet() == fetched_in_training  # the rebuild loads the checkpoint, fetches nothing
    assert any("HRNet" in w for w in payload["warnings"])
    assert any("hrnet_w32-36af842e.pth" in d for d in payload["deviations"])
    assert payload["method"] == "mtia" and payload["step"] == 2
    assert set(payload["networks"]) == {"generator", "kp_detector"}
    frames = torch.rand(3, 3, 32, 32)
    assert drive_clip(model, frames).shape == (3, 3, 32, 32)


def test_motion_tokens_drawn_with_the_configured_std():
    """The reference's 0.02 by default; the small synthetic presets draw them with std 1 so
    the kp tokens start apart (mtia_presets.py)."""
    reference = MotionTransformer((16, 16), 32, patch_size=4, dim=64, depth=1, heads=2)
    assert 0.015 < reference.keypoint_token.std() < 0.025
    small = _small().networks["kp_detector"].transformer
    assert small.motion_token_std == 1.0
    assert 0.7 < small.keypoint_token.std() < 1.0  # truncated at ±2: std ≈ 0.88
    assert small.keypoint_token.abs().max() <= 2
