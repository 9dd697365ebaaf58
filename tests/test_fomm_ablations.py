"""FOMM's ablation presets (Table 1, Tai-Chi-HD) and Monkey-Net as FOMM's zeroth-order case:
each builds and trains one step, and each switches exactly what its paper row says."""

from __future__ import annotations

import pytest
import torch

from animbench.models import registry
from animbench.models.blocks import count_parameters
from animbench.train.objectives import KeypointObjective

PYRAMID = [1, 0.5, 0.25, 0.125]
# preset -> (Jacobians, occlusion map, perceptual scales, equivariance_jacobian weight)
SWITCHES = {
    "fomm-taichi256-baseline": (False, False, [1], 0),
    "fomm-taichi256-pyr": (False, False, PYRAMID, 0),
    "fomm-taichi256-pyr-occ": (False, True, PYRAMID, 0),
    "fomm-taichi256-jac-no-eq": (True, True, PYRAMID, 0),
    "fomm-taichi256-full": (True, True, PYRAMID, 10),
    **{
        f"fomm-{d}-monkeynet": (False, True, PYRAMID, 0)
        for d in ("taichi256", "vox256", "nemo256", "bair256")
    },
}
PAPER_ROWS = {
    "fomm-taichi256-baseline": "Baseline",
    "fomm-taichi256-pyr": "Pyr.",
    "fomm-taichi256-pyr-occ": "Pyr.+O",
    "fomm-taichi256-jac-no-eq": "Jac. w/o Eq. (12)",
    "fomm-taichi256-full": "Full",
}

# narrow networks and 32×32 frames; VGG19 up to relu2_1 (one pooling: 4 px at scale 1/8)
TINY = {
    "model_params": {
        "kp_detector_params": {
            "block_expansion": 4,
            "max_features": 16,
            "num_blocks": 2,
            "scale_factor": 0.5,
        },
        "generator_params": {
            "block_expansion": 4,
            "max_features": 16,
            "num_bottleneck_blocks": 1,
            "dense_motion_params": {
                "block_expansion": 4,
                "max_features": 16,
                "num_blocks": 2,
                "scale_factor": 0.5,
            },
        },
        "discriminator_params": {"block_expansion": 4, "max_features": 16},
    },
    "train_params": {"loss_weights": {"perceptual": [10, 10, 0, 0, 0]}},
}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(a: str, b: str) -> set[str]:
    """Keys (dotted paths) whose values differ between two presets, the note aside."""
    flat_a, flat_b = _flatten(registry.get_preset(a)), _flatten(registry.get_preset(b))
    keys = (flat_a.keys() | flat_b.keys()) - {"note"}
    return {k for k in keys if flat_a.get(k, "absent") != flat_b.get(k, "absent")}


def test_presets_are_registered_with_their_paper_row():
    for name in SWITCHES:
        spec = registry.get_preset(name)
        assert spec["model"] == "fomm"
        assert "Table 1" in spec["note"] or "Table 3" in spec["note"], name
    for name, row in PAPER_ROWS.items():
        assert f"row {row}" in registry.get_preset(name)["note"]
    assert "Monkey-Net" in registry.get_preset("fomm-vox256-monkeynet")["note"]


def test_each_ablation_row_switches_one_thing():
    """Baseline → Pyr. → Pyr.+O → Jac. w/o Eq. (12) → Full, as in the paper's Sec. 4."""
    chain = list(PAPER_ROWS)
    switch_keys = {
        "jacobian": "model_params.common_params.estimate_jacobian",
        "occlusion": "model_params.generator_params.estimate_occlusion_map",
        "scales": "train_params.scales",
        "eq_jacobian": "train_params.loss_weights.equivariance_jacobian",
    }
    expected = [
        {switch_keys["scales"]},
        {switch_keys["occlusion"]},
        {switch_keys["jacobian"]},
        {switch_keys["eq_jacobian"]},
    ]
    for (a, b), diff in zip(zip(chain, chain[1:]), expected):
        assert _differences(a, b) == diff, (a, b)
    assert _differences("fomm-taichi256-full", "fomm-taichi256") == set()
    # Monkey-Net = FOMM without Jacobians; on Tai-Chi-HD the switches of Pyr.+O
    assert _differences("fomm-taichi256-monkeynet", "fomm-taichi256") == {
        switch_keys["jacobian"],
        switch_keys["eq_jacobian"],
    }
    assert _differences("fomm-taichi256-monkeynet", "fomm-taichi256-pyr-occ") == set()
    assert _differences("fomm-vox256-monkeynet", "fomm-vox256") == {
        switch_keys["jacobian"],
        switch_keys["eq_jacobian"],
    }


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_preset_builds_and_trains_one_step(name):
    jacobian, occlusion, scales, eq_jacobian = SWITCHES[name]
    spec = registry.get_preset(name, TINY)
    assert spec["model_params"]["common_params"]["estimate_jacobian"] is jacobian
    assert spec["model_params"]["generator_params"]["estimate_occlusion_map"] is occlusion
    assert spec["train_params"]["scales"] == scales
    assert spec["train_params"]["loss_weights"]["equivariance_jacobian"] == eq_jacobian

    torch.manual_seed(0)
    model = registry.build(spec)
    assert (model.kp_detector.jacobian is not None) is jacobian
    assert (model.generator.dense_motion_network.occlusion is not None) is occlusion
    objective = KeypointObjective(model, spec["train_params"], pretrained_vgg=False)
    assert objective.perceptual.pyramid.scales == scales
    assert not objective.use_gan

    source, driving = torch.rand(2, 2, 3, 32, 32).unbind(0)
    losses, out = objective.generator_losses(model, source, driving)
    assert ("jacobian" in out["kp_driving"]) is jacobian
    assert ("occlusion_map" in out) is occlusion
    assert out["prediction"].shape == driving.shape
    expected = {"perceptual", "equivariance_value"}
    if eq_jacobian:
        expected.add("equivariance_jacobian")
    assert set(losses) == expected
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = [p.grad for p in model.kp_detector.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if jacobian:  # the Jacobian head is trained through the reconstruction
        assert model.kp_detector.jacobian.weight.grad.abs().sum() > 0


def test_monkeynet_lacks_exactly_the_jacobian_head():
    """At the paper's taichi256 size: same generator, kp_detector minus the 4K-channel head."""
    torch.manual_seed(0)
    full = registry.build("fomm-taichi256")
    zeroth = registry.build("fomm-taichi256-monkeynet")
    head = full.kp_detector.jacobian
    assert (head.in_channels, head.out_channels, head.kernel_size) == (35, 40, (7, 7))
    assert count_parameters(head) == 35 * 40 * 49 + 40
    assert count_parameters(full.kp_detector) == 14_215_368
    assert count_parameters(full.kp_detector) - count_parameters(zeroth.kp_detector) == (
        count_parameters(head)
    )
    assert count_parameters(zeroth.generator) == count_parameters(full.generator)
    assert zeroth.kp_detector.jacobian is None
