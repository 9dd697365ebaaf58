"""AlexNet in the layout of torchvision.models.alexnet `features` (indices 0–11, up to relu5).

Written here because torchvision is not importable beside this torch; same indices and
initialisation as torchvision's, so its ImageNet file (`weights.WEIGHTS["alexnet"]`,
alexnet-owt-7be5be79.pth) loads key for key. LPIPS v0.1 (evaluate/image_metrics.py) uses it as
its trunk, tapping the five ReLUs.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from animbench.networks.published import read

# the five ReLUs of `features` as (start, stop) slices, and their channels
RELU_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
RELU_CHANNELS = (64, 192, 384, 256, 256)


def alexnet_features() -> nn.Sequential:
    """torchvision's `alexnet().features[:12]` (up to relu5), same indices and initialisation."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
    )


def load_features(features: nn.Sequential, path: str | Path) -> None:
    """torchvision's AlexNet state_dict (features.* keys; the classifier is ignored)."""
    state = read(path)
    trunk = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    features.load_state_dict(trunk, strict=True)
