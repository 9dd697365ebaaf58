"""Per-frame image metrics of a reconstruction beside L1: PSNR, SSIM and LPIPS.

PSNR and SSIM are torchmetrics' (data range 1.0; SSIM with the standard 11×11 Gaussian window,
σ 1.5, k1 0.01, k2 0.03, averaged over the three channels). Identical frames have an infinite
PSNR; it is capped at `PSNR_CAP` (100 dB, the usual `if mse == 0: return 100` convention) so
that frame means stay finite: the source-copy baseline reproduces frame 0 exactly.

LPIPS is Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", v0.1 with the AlexNet trunk (the `lpips` package's default). torchmetrics' LPIPS needs
torchvision, so the network is written here and checked against torchmetrics' implementation
(tests): torchvision's AlexNet `features` (networks/alexnet.py: same keys, so torchvision's
ImageNet file loads directly through the weight cache, `weights.WEIGHTS["alexnet"]`) and the
five 1×1 linear heads of the official v0.1 release (`lpips/weights/v0.1/alex.pth`; torchmetrics
ships the identical file, which is used when present, else `weights.WEIGHTS["lpips_alex"]`).

Without those weights (offline), LPIPS is NaN, with one warning naming the missing file; PSNR
and SSIM are still computed. `require_lpips=True` raises instead. LPIPS is never reported from
random weights.
"""

from __future__ import annotations

import copy
import functools
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from animbench import weights
from animbench.downloads import sha256_file
from animbench.errors import DataError
from animbench.networks.alexnet import (
    RELU_CHANNELS,
    RELU_SLICES,
    alexnet_features,
    load_features,
)
from animbench.networks.published import FrozenNetwork

FRAME_METRICS = ("psnr", "ssim", "lpips")  # frames.parquet columns, in this order
PSNR_CAP = 100.0  # dB, the PSNR of identical frames
BATCH_FRAMES = 8  # frames per pass: torchmetrics SSIM peaks at ~110 MB per 384² frame

# LPIPS v0.1 input scaling (lpips.ScalingLayer), applied to images in [-1, 1]
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# torchvision's alexnet().features up to relu5 (networks/alexnet.py); LPIPS taps the five ReLUs
_TAPS = RELU_SLICES
_CHANNELS = RELU_CHANNELS


def psnr(prediction: Tensor, target: Tensor) -> Tensor:
    """PSNR per frame in dB ([N], float64), data range 1, capped at `PSNR_CAP`."""
    _check(prediction, target)
    value = peak_signal_noise_ratio(
        prediction.double(), target.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return value.clamp(max=PSNR_CAP)


def ssim(prediction: Tensor, target: Tensor) -> Tensor:
    """SSIM per frame ([N]): 11×11 Gaussian window (σ 1.5), data range 1, channel mean.

    float32 on every device (float64 convolutions are ~13× slower on CPU and need im2col
    memory): on flat regions σ² = E[x²] − μ² cancels, so identical frames with large uniform
    areas may score slightly below 1 (0.9999 on the synthetic squares).
    """
    _check(prediction, target)
    return structural_similarity_index_measure(
        prediction.float(),
        target.float(),
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
        reduction="none",
    )


def bundled_heads() -> Path | None:
    """torchmetrics' copy of the official v0.1 AlexNet heads, if it is the pinned file."""
    try:
        path = Path(str(resources.files("torchmetrics.functional.image"))) / "lpips_models"
    except (ModuleNotFoundError, TypeError):
        return None
    path /= "alex.pth"
    pin = weights.WEIGHTS["lpips_alex"].sha256_prefix or ""
    return path if path.is_file() and sha256_file(path).startswith(pin) else None


class LPIPS(FrozenNetwork):
    """LPIPS v0.1, AlexNet trunk: a frozen network mapping two image batches [N, 3, H, W] in
    [0, 1] to distances [N] (H, W ≥ 32).

    d(x, y) = Σ_l mean_hw w_l · (f̂_l(x) − f̂_l(y))², f̂_l the relu_l features scaled to unit
    length over channels, w_l the 1×1 heads (no bias). With `pretrained`, the ImageNet trunk
    and the official heads are loaded through the weight cache; if either is unavailable,
    `pretrained` is False and `weights_note` says which file is missing (the network keeps
    torchvision's random trunk initialisation and uniform heads 1/C).
    """

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _CHANNELS)
        for lin, channels in zip(self.lins, _CHANNELS):
            nn.init.constant_(lin.weight, 1.0 / channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.freeze(pretrained, "LPIPS")

    def load_trunk(self, path: str | Path) -> None:
        """torchvision's AlexNet state_dict (features.* keys; the classifier is ignored)."""
        load_features(self.features, path)

    def load_heads(self, path: str | Path) -> None:
        """The official heads file (keys lin{i}.model.1.weight, as lpips saves them)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        heads = {f"{i}.weight": state[f"lin{i}.model.1.weight"] for i in range(len(_CHANNELS))}
        self.lins.load_state_dict(heads, strict=True)

    def load_pretrained(self) -> tuple[bool, str]:
        """The ImageNet AlexNet trunk and the official heads (bundled, else fetched)."""
        trunk, reason = weights.fetch("alexnet")
        if trunk is None:
            return False, f"AlexNet trunk {weights.WEIGHTS['alexnet'].filename} missing: {reason}"
        heads = bundled_heads()
        if heads is None:
            heads, reason = weights.fetch("lpips_alex")
            if heads is None:
                return False, f"heads {weights.WEIGHTS['lpips_alex'].filename} missing: {reason}"
        self.load_trunk(trunk)
        self.load_heads(heads)
        return True, f"LPIPS v0.1 alex: trunk {trunk}, heads {heads}"

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check(x, y)
        n = len(x)
        out = ((torch.cat([x, y]).float() * 2 - 1) - self.shift) / self.scale
        total = out.new_zeros(n)
        for (start, stop), lin in zip(_TAPS, self.lins):
            for layer in self.features[start:stop]:
                out = layer(out)
            unit = out / (out.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((unit[:n] - unit[n:]).pow(2)).mean((1, 2, 3))
        return total


@functools.cache
def _shared_lpips() -> LPIPS:
    """The pretrained network, loaded once per process; warns once if weights are missing."""
    model = LPIPS(pretrained=True)
    if not model.pretrained:
        warnings.warn(
            f"LPIPS is NaN (not computed): {model.weights_note}; PSNR and SSIM are computed. "
            f"Put the file in {weights.cache_dir()} to compute LPIPS",
            stacklevel=2,
        )
    return model


@functools.cache
def _lpips_on(device: torch.device) -> LPIPS:
    return copy.deepcopy(_shared_lpips()).to(device)


def lpips_pretrained() -> bool:
    """Whether this process's LPIPS has the published weights (offline: NaN by design)."""
    return _shared_lpips().pretrained


def lpips_note() -> str:
    """Which LPIPS weights `lpips`/`frame_metrics` use, or why LPIPS is NaN (provenance)."""
    return _shared_lpips().weights_note


def lpips(
    prediction: Tensor, target: Tensor, model: LPIPS | None = None, required: bool = False
) -> Tensor:
    """LPIPS per frame ([N], float32) with the pretrained network, on the inputs' device.

    NaN when the weights are unavailable (or `model` is not pretrained); with `required`, a
    DataError naming the missing file instead.
    """
    _check(prediction, target)
    if model is None:
        model = _lpips_on(prediction.device)
    if not model.pretrained:
        if required:
            raise DataError(f"LPIPS required but unavailable: {model.weights_note}")
        return torch.full((len(prediction),), float("nan"), device=prediction.device)
    with torch.no_grad():
        return model.to(prediction.device)(prediction, target.to(prediction.device))


@torch.no_grad()
def frame_metrics(
    prediction: Tensor,
    target: Tensor,
    require_lpips: bool = False,
    lpips_model: LPIPS | None = None,
    batch_frames: int = BATCH_FRAMES,
) -> dict[str, np.ndarray]:
    """PSNR, SSIM and LPIPS of each frame: {"psnr", "ssim", "lpips"} -> float64 [N].

    `prediction` and `target` are [N, 3, H, W] in [0, 1], on any device (computed on the
    prediction's, `batch_frames` at a time). LPIPS is NaN without its weights (see `lpips`).
    """
    _check(prediction, target)
    target = target.to(prediction.device)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in FRAME_METRICS}
    for start in range(0, len(prediction), batch_frames):
        p, t = prediction[start : start + batch_frames], target[start : start + batch_frames]
        values = {
            "psnr": psnr(p, t),
            "ssim": ssim(p, t),
            "lpips": lpips(p, t, lpips_model, require_lpips),
        }
        for name, value in values.items():
            parts[name].append(value.double().cpu().numpy())
    return {
        name: np.concatenate(chunks) if chunks else np.zeros(0) for name, chunks in parts.items()
    }


def _check(prediction: Tensor, target: Tensor) -> None:
    if prediction.shape != target.shape or prediction.ndim != 4 or prediction.shape[1] != 3:
        raise ValueError(
            f"expected two [N, 3, H, W] batches of equal shape: "
            f"{tuple(prediction.shape)} vs {tuple(target.shape)}"
        )
