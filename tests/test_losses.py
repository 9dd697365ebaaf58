"""Losses: TPS equivariance transforms, equivariance terms, VGG19 perceptual pyramid, LSGAN."""

from __future__ import annotations

import pytest
import torch

from animbench.models.blocks import make_coordinate_grid
from animbench.networks.vgg import Vgg19
from animbench.train.losses import (
    PerceptualPyramidLoss,
    RandomTPS,
    discriminator_gan_loss,
    equivariance_losses,
    feature_matching_loss,
    generator_gan_loss,
)

IDENTITY = {"sigma_affine": 0.0, "sigma_tps": 0.0, "points_tps": 5}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- random TPS -------------------------------------------------------------------------------


def test_tps_with_zero_sigma_is_identity():
    tps = RandomTPS(2, **IDENTITY, generator=_generator(0))
    frame = torch.rand(2, 3, 20, 24, generator=_generator(1))
    torch.testing.assert_close(tps.transform_frame(frame), frame, atol=1e-5, rtol=0)
    points = torch.rand(2, 7, 2, generator=_generator(2)) * 2 - 1
    torch.testing.assert_close(tps.warp_coordinates(points), points, atol=1e-6, rtol=0)
    torch.testing.assert_close(tps.jacobian(points), torch.eye(2).expand(2, 7, 2, 2))


def test_tps_affine_part():
    """With no TPS weights, warp_coordinates is z ↦ θ[:, :2] z + θ[:, 2]."""
    tps = RandomTPS(3, sigma_affine=0.2, sigma_tps=0.0, generator=_generator(3))
    points = torch.rand(3, 5, 2, generator=_generator(4)) * 2 - 1
    expected = torch.einsum("bij,bnj->bni", tps.theta[:, :, :2], points) + tps.theta[:, None, :, 2]
    torch.testing.assert_close(tps.warp_coordinates(points), expected)
    # the frame is sampled at the warped positions: check one pixel centre exactly
    h, w = 9, 11
    frame = torch.rand(3, 1, h, w, generator=_generator(5))
    out = tps.transform_frame(frame)
    grid = make_coordinate_grid((h, w)).view(1, -1, 2)
    warped = tps.warp_coordinates(grid).view(3, h, w, 2)
    b, i, j = 1, 4, 5
    x = (warped[b, i, j, 0] + 1) / 2 * (w - 1)
    y = (warped[b, i, j, 1] + 1) / 2 * (h - 1)
    x0, y0 = int(x.floor()), int(y.floor())
    fx, fy = x - x0, y - y0
    f = frame[b, 0]
    manual = (
        f[y0, x0] * (1 - fx) * (1 - fy)
        + f[y0, x0 + 1] * fx * (1 - fy)
        + f[y0 + 1, x0] * (1 - fx) * fy
        + f[y0 + 1, x0 + 1] * fx * fy
    )
    torch.testing.assert_close(out[b, 0, i, j], manual, atol=1e-5, rtol=0)


def test_tps_jacobian_matches_finite_differences():
    tps = RandomTPS(2, sigma_affine=0.1, sigma_tps=0.05, generator=_generator(6))
    points = (torch.rand(2, 6, 2, generator=_generator(7)) * 1.8 - 0.9).double()
    analytic = tps.jacobian(points)
    assert analytic.shape == (2, 6, 2, 2)
    eps = 1e-6
    numeric = torch.zeros(2, 6, 2, 2, dtype=torch.float64)
    for j in range(2):
        step = torch.zeros(2, dtype=torch.float64)
        step[j] = eps
        diff = tps.warp_coordinates(points + step) - tps.warp_coordinates(points - step)
        numeric[..., j] = diff / (2 * eps)  # column j: ∂T/∂z_j
    torch.testing.assert_close(analytic.double(), numeric, atol=1e-3, rtol=0)
    # the TPS part is not an affine map: the Jacobian varies from point to point
    assert not torch.allclose(analytic[0, 0], analytic[0, 1], atol=1e-4)


# --- equivariance -----------------------------------------------------------------------------


class FixedDetector:
    """Returns the same keypoints and Jacobians whatever the frame."""

    def __init__(self, value, jacobian):
        self.value, self.jacobian = value, jacobian
        self.calls = 0

    def __call__(self, frame):
        self.calls += 1
        b = frame.shape[0]
        return {
            "value": self.value.expand(b, -1, -1),
            "jacobian": self.jacobian.expand(b, -1, -1, -1),
        }


def _fixed(jacobian=None) -> FixedDetector:
    value = torch.rand(1, 4, 2, generator=_generator(8)) * 1.6 - 0.8
    if jacobian is None:
        jacobian = torch.eye(2).expand(1, 4, 2, 2)
    return FixedDetector(value, jacobian)


def test_equivariance_is_zero_for_an_equivariant_detector():
    detector = _fixed()
    frame = torch.rand(2, 3, 16, 16)
    kp = detector(frame)
    losses = equivariance_losses(detector, frame, kp, IDENTITY, use_jacobian=True)
    assert detector.calls == 2  # once above, once on the transformed frame
    assert losses["equivariance_value"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["equivariance_jacobian"].item() == pytest.approx(0.0, abs=1e-6)


def test_equivariance_values_under_an_affine_transform():
    """A detector blind to the warp violates equivariance by exactly the affine map."""
    detector = _fixed()
    frame = torch.rand(2, 3, 16, 16)
    kp = detector(frame)
    params = {"sigma_affine": 0.3, "sigma_tps": 0.0, "points_tps": 5}
    losses = equivariance_losses(
        detector, frame, kp, params, use_jacobian=True, generator=_generator(9)
    )
    theta = RandomTPS(2, **params, generator=_generator(9)).theta  # the same draw
    a, t = theta[:, None, :, :2], theta[:, None, :, 2]
    warped = (a @ kp["value"].unsqueeze(-1)).squeeze(-1) + t
    expected_value = (kp["value"] - warped).abs().mean()
    expected_jacobian = (torch.eye(2) - a.expand(2, 4, 2, 2)).abs().mean()
    torch.testing.assert_close(losses["equivariance_value"], expected_value)
    torch.testing.assert_close(losses["equivariance_jacobian"], expected_jacobian)
    assert losses["equivariance_jacobian"].item() > 0


def test_equivariance_jacobian_term_compares_jacobians():
    # J_d⁻¹ · I · J_t with J_t = J_d is the identity even when J_d is not
    jac = torch.tensor([[2.0, 0.5], [0.0, 1.5]]).expand(1, 4, 2, 2)
    detector = _fixed(jac)
    frame = torch.rand(1, 3, 16, 16)
    losses = equivariance_losses(detector, frame, detector(frame), IDENTITY, use_jacobian=True)
    assert losses["equivariance_jacobian"].item() == pytest.approx(0.0, abs=1e-6)
    # driving Jacobians of 2I against detected identities: |I − I/2| = 0.5 on the diagonal
    kp = {"value": detector.value, "jacobian": 2 * torch.eye(2).expand(1, 4, 2, 2)}
    losses = equivariance_losses(_fixed(), frame, kp, IDENTITY, use_jacobian=True)
    assert losses["equivariance_jacobian"].item() == pytest.approx(0.25, abs=1e-6)
    no_jac = equivariance_losses(_fixed(), frame, kp, IDENTITY, use_jacobian=False)
    assert set(no_jac) == {"equivariance_value"}


# --- VGG19 perceptual loss --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return Vgg19(pretrained=False)


def test_vgg19_features(vgg):
    assert not vgg.pretrained
    # torchvision's vgg19().features[:30]: 13 convs, Σ (c_in·9 + 1)·c_out by hand
    assert sum(p.numel() for p in vgg.parameters()) == 12_944_960
    assert all(not p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    with torch.no_grad():
        feats = vgg(torch.rand(1, 3, 32, 48))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [32 // f.shape[2] for f in feats] == [1, 2, 4, 8, 16]
    assert [48 // f.shape[3] for f in feats] == [1, 2, 4, 8, 16]
    assert all((f >= 0).all() for f in feats)  # relu outputs


def test_vgg19_stays_eval_inside_a_training_module():
    torch.manual_seed(0)
    loss = PerceptualPyramidLoss([1, 0.5], [10] * 5, pretrained=False)
    loss.train()
    assert not loss.vgg.training


def test_perceptual_loss():
    torch.manual_seed(0)
    loss = PerceptualPyramidLoss([1, 0.5], [10] * 5, pretrained=False)
    real = torch.rand(2, 3, 32, 32, requires_grad=True)
    assert float(loss(real.detach().clone(), real.detach())) == 0.0
    prediction = (real.detach() + 0.1 * torch.randn(2, 3, 32, 32)).clamp(0, 1)
    prediction.requires_grad_(True)
    value = loss(prediction, real)
    assert value.item() > 0
    value.backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert real.grad is None
    assert all(p.grad is None for p in loss.vgg.parameters())
    with torch.no_grad():
        # weights scale the loss linearly; zero weights switch layers off
        loss.layer_weights = [5] * 5
        torch.testing.assert_close(loss(prediction, real), value.detach() / 2)
        loss.layer_weights = [0] * 5
        assert float(loss(prediction, real)) == 0.0


# --- LSGAN ------------------------------------------------------------------------------------


def test_gan_losses_hand_computed():
    gen = {
        "prediction_map_1": torch.tensor([[0.5, 1.0], [0.0, 2.0]]),
        "feature_maps_1": [torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])],
    }
    real = {
        "prediction_map_1": torch.tensor([[1.0, 0.0], [0.5, 1.0]]),
        "feature_maps_1": [torch.tensor([2.0, 2.0]), torch.tensor([1.0, 3.0])],
    }
    # mean (1 − D(G))² = (0.25 + 0 + 1 + 1) / 4
    assert float(generator_gan_loss(gen, [1])) == pytest.approx(0.5625)
    # mean (1 − D(x))² + D(G)² = (0 + 1 + 0.25 + 0)/4 + (0.25 + 1 + 0 + 4)/4
    assert float(discriminator_gan_loss(real, gen, [1])) == pytest.approx(0.3125 + 1.3125)
    # Σ w_i mean|f_real − f_gen| = 10 · 0.5 + 2 · 2
    assert float(feature_matching_loss(real, gen, [1], [10, 2])) == pytest.approx(9.0)
    assert float(feature_matching_loss(real, gen, [1], [0, 0])) == 0.0
