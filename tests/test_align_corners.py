"""grid_sample's align_corners per model: the convention each family's released checkpoints
were trained with (FOMM True, MRAA and MTIA False, TPSMM and CPABMM True), used by every warp
and by the equivariance transform, recorded in checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from animbench.errors import ConfigError
from animbench.models import registry
from animbench.models.blocks import make_coordinate_grid, warp
from animbench.train.losses import RandomTPS, equivariance_losses
from animbench.train.region_objective import region_equivariance_losses

# one row of three pixels; the grid samples it at x = -1, -0.5, 0, 0.5, 1
ROW = torch.tensor([10.0, 20.0, 30.0]).view(1, 1, 1, 3)
XS = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])


def _sample(align_corners: bool) -> torch.Tensor:
    """ROW at each of XS: a 5×3 image of identical rows, grid row i all at (XS[i], 0) (y = 0
    is image row 2 under both conventions, and the rows are equal anyway)."""
    image = ROW.expand(1, 1, 5, 3)
    grid = torch.stack([XS.view(5, 1).expand(5, 3), torch.zeros(5, 3)], dim=-1).unsqueeze(0)
    out = warp(image, grid, align_corners=align_corners)[0, 0]
    assert torch.equal(out, out[:, :1].expand(5, 3))
    return out[:, 0]


def test_warp_true_puts_the_ends_on_the_border_pixel_centres():
    # pixel = (x + 1) / 2 · (W − 1): 0, 0.5, 1, 1.5, 2
    torch.testing.assert_close(_sample(True), torch.tensor([10.0, 15.0, 20.0, 25.0, 30.0]))


def test_warp_false_puts_the_ends_on_the_border_pixel_edges():
    # pixel = ((x + 1) · W − 1) / 2: -0.5, 0.25, 1, 1.75, 2.5; zero padding outside
    torch.testing.assert_close(_sample(False), torch.tensor([5.0, 12.5, 20.0, 27.5, 15.0]))


def test_identity_grid_dims_the_borders_only_under_false():
    """What an MRAA/MTIA checkpoint saw in training: the identity grid half a pixel outside."""
    identity = make_coordinate_grid((1, 3)).view(1, 1, 3, 2)
    torch.testing.assert_close(warp(ROW, identity, align_corners=True), ROW)
    torch.testing.assert_close(
        warp(ROW, identity, align_corners=False).flatten(), torch.tensor([5.0, 20.0, 15.0])
    )


def test_random_tps_uses_its_convention():
    # no affine or TPS noise: the identity transform, reflection padding
    identity = {"sigma_affine": 0.0, "sigma_tps": 0.0, "points_tps": 5}
    frame = ROW.expand(1, 1, 3, 3).contiguous()
    kept = RandomTPS(1, **identity, align_corners=True).transform_frame(frame)
    torch.testing.assert_close(kept, frame, atol=1e-5, rtol=0)
    # False + reflection: ±1 mirror at the outer edges, so the border pixels are reflected
    # halves: x=-1 → pixel -0.5 → (10 + 10)/2, x=1 → pixel 2.5 → (30 + 30)/2, centre 20
    shifted = RandomTPS(1, **identity, align_corners=False).transform_frame(frame)
    torch.testing.assert_close(shifted, frame, atol=1e-5, rtol=0)
    # a non-trivial shift tells the two apart: x + 0.5
    theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
    moved = {}
    for corners in (True, False):
        tps = RandomTPS(1, **identity, align_corners=corners)
        tps.theta = theta
        moved[corners] = tps.transform_frame(frame)[0, 0, 0]
    # True: x ∈ {-0.5, 0.5, 1.5} → pixels 0.5, 1.5, 2.5 (reflected to 1.5) → 15, 25, 25
    torch.testing.assert_close(moved[True], torch.tensor([15.0, 25.0, 25.0]))
    # False: pixels ((x+1)·3 − 1)/2 = 0.25, 1.75, 3.25 (reflected about 2.5 to 1.75) → 12.5,
    # 27.5, 27.5
    torch.testing.assert_close(moved[False], torch.tensor([12.5, 27.5, 27.5]))


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("fomm-vox256", True),
        ("mraa-vox256", False),
        ("mraa-taichi256", False),
        ("mtia-taichi256", False),
        ("mtia-vox256", False),
        ("tpsmm-vox256", True),
        ("cpabmm-vox256", True),
        ("mraa-synthetic", False),
        ("mtia-synthetic", False),
        ("fomm-synthetic", True),
    ],
)
def test_presets_carry_the_authors_convention(preset, expected):
    spec = registry.get_preset(preset)
    assert spec["model_params"]["common_params"]["align_corners"] is expected


class _Recorder:
    """Wraps F.grid_sample, recording each call's align_corners."""

    def __init__(self, monkeypatch):
        self.calls: list = []
        original = F.grid_sample

        def recording(*args, **kwargs):
            self.calls.append(kwargs.get("align_corners"))
            return original(*args, **kwargs)

        monkeypatch.setattr(F, "grid_sample", recording)


@pytest.mark.parametrize(
    "preset, align_corners",
    [
        ("fomm-synthetic", True),
        ("fomm-synthetic", False),
        ("mraa-synthetic", True),
        ("mraa-synthetic", False),
        ("mtia-synthetic", True),
        ("mtia-synthetic", False),
        ("tpsmm-synthetic", True),  # False refused (test_tpsmm_and_cpabmm_refuse_false)
    ],
)
def test_every_warp_of_a_model_uses_its_convention(preset, align_corners, monkeypatch):
    overrides = {"model_params": {"common_params": {"align_corners": align_corners}}}
    model = registry.build(preset, overrides).eval()
    assert model.align_corners is align_corners
    recorder = _Recorder(monkeypatch)
    frames = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(frames[:1], frames[1:])
    assert recorder.calls, "the forward pass warped nothing"
    assert set(recorder.calls) == {align_corners}


@pytest.mark.parametrize("preset", ["tpsmm-synthetic", "cpabmm-synthetic", "tpsmm-vox256"])
def test_tpsmm_and_cpabmm_refuse_false(preset):
    if preset not in registry.PRESETS:
        pytest.fail(f"preset {preset} is missing")
    overrides = {"model_params": {"common_params": {"align_corners": False}}}
    with pytest.raises(ConfigError, match="common_params.align_corners"):
        registry.build(preset, overrides)


def test_a_spec_without_the_key_means_true():
    """Checkpoints written before the key existed load with the convention they ran with."""
    spec = registry.get_preset("mraa-synthetic")
    del spec["model_params"]["common_params"]["align_corners"]
    assert registry.build(spec).align_corners is True


def test_equivariance_transforms_follow_the_model(monkeypatch):
    """FOMM/MTIA's keypoint and MRAA's region equivariance sample with the model's setting."""
    frame = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    identity = {"sigma_affine": 0.0, "sigma_tps": 0.0, "points_tps": 5}

    def detector(image):
        b = image.shape[0]
        return {
            "value": torch.zeros(b, 2, 2),
            "jacobian": torch.eye(2).expand(b, 2, 2, 2),
            "shift": torch.zeros(b, 2, 2),
            "affine": torch.eye(2).expand(b, 2, 2, 2),
        }

    for corners in (True, False):
        recorder = _Recorder(monkeypatch)
        equivariance_losses(detector, frame, detector(frame), identity, True, align_corners=corners)
        region_equivariance_losses(
            detector, frame, detector(frame), identity, align_corners=corners
        )
        assert recorder.calls == [corners, corners]
        monkeypatch.undo()


@pytest.mark.parametrize(
    "preset, module, function",
    [
        ("mtia-synthetic", "animbench.train.objectives", "equivariance_losses"),
        ("mraa-synthetic", "animbench.train.region_objective", "region_equivariance_losses"),
    ],
)
def test_the_trainers_objective_passes_the_models_convention(preset, module, function, monkeypatch):
    import importlib

    from animbench.train.objectives import OBJECTIVES

    target = importlib.import_module(module)
    original = getattr(target, function)
    seen: list = []

    def recording(*args, **kwargs):
        seen.append(kwargs.get("align_corners"))
        return original(*args, **kwargs)

    monkeypatch.setattr(target, function, recording)
    spec = registry.get_preset(preset)
    model = registry.build(spec)
    assert model.align_corners is False
    objective = OBJECTIVES[spec["model"]](model, spec["train_params"], pretrained_vgg=False)
    frames = torch.rand(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    objective.generator_losses(model, frames[0], frames[1])
    assert seen == [False]
