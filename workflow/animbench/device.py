"""The torch device a run uses, and the memory layout its convolutions run fastest in."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def has_instance_norm(model: torch.nn.Module) -> bool:
    """Whether a network that generates frames (any but the discriminator) has an
    InstanceNorm layer: TPSMM's and CPABMM's dense motion and inpainting networks."""
    networks = getattr(model, "networks", {"model": model})
    return any(
        isinstance(module, torch.nn.modules.instancenorm._InstanceNorm)
        for name, net in networks.items()
        if name != "discriminator"
        for module in net.modules()
    )


def prefers_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """channels_last (NHWC) on a CPU, unless the model has instance norms: CPU InstanceNorm
    copies NHWC data to NCHW and back (TPSMM vox-256: `aten::copy_` 11.8% of a pass, although
    its convolutions run 13% faster), so TPSMM is slower in NHWC at every batch. NCHW on
    other devices (for reconstruction; training also takes NHWC on CUDA, trainer.TrainOptions)."""
    return torch.device(device).type == "cpu" and not has_instance_norm(model)
