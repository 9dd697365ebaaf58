"""The torch device a run uses, the memory layout its convolutions run fastest in, and whether
it computes bf16 natively."""

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


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs on the device's own bf16 arithmetic: a CUDA GPU that
    supports it, or a CPU with AVX512-BF16 or AMX. Elsewhere bf16 is emulated and slower
    than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # torch's own CPU-capability checks (private, hence getattr)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False
