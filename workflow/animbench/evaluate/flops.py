"""FLOPs of the animators' networks (MTIA's Table 1: model capacity at 256×256).

Counted with torch's own counter, :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts 2 FLOPs per multiply-add of convolutions and matrix products (bias additions,
normalisation, activations, interpolation and grid_sample are not counted). Multiply-
accumulates (MACs) are half of that: the fvcore/thop convention, which most papers report as
"FLOPs".

One animation step is run on random frames at the preset's resolution (batch 1):
``model.detect(source)``, ``model.detect(driving)``, ``model.animate(source, kp_s, kp_d)``;
every network of ``model.networks`` is timed by forward hooks, so a network's count is what
one call of it costs, including anything it calls inside (FOMM's generator includes its dense
motion network).

`layer_flops` counts only what runs inside convolution and linear *modules*: module-hook
counters (thop and the like) see just that and miss functional calls such as the
anti-aliasing Gaussian blur (`F.conv2d`) or attention products (`q @ k.T`). For FOMM at 256²
the MACs of the layer count equal MTIA's Table 1 (53.64G generator, 1.28G keypoint detector):
the paper counted that way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of softmax(QKᵀ)V: 2·B·H·L·S·(D + Dv), as torch counts the CUDA kernels."""
    batch = math.prod(query_shape[:-2])
    length, dim = query_shape[-2:]
    return 2 * batch * length * key_shape[-2] * (dim + value_shape[-1])


# torch counts the CUDA attention kernels but not the CPU one F.scaled_dot_product_attention
# dispatches to
_CPU_ATTENTION = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
EXTRA_FORMULAS = {_CPU_ATTENTION: attention_flops} if _CPU_ATTENTION is not None else {}


def _counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward call of a network (FlopCounterMode: 2 per multiply-add)."""

    flops: int
    calls: int = 1  # forward calls seen during the step (the count is per call)
    layer_flops: int | None = None  # inside nn.Conv*/nn.Linear modules only (see module doc)

    @property
    def macs(self) -> int:
        """Multiply-accumulates (the fvcore/thop convention): FLOPs / 2."""
        return self.flops // 2


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs (2 per multiply-add) of one call `fn(*args, **kwargs)`, under no_grad."""
    with torch.no_grad(), _counter() as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def network_flops(model: nn.Module, size: int | tuple[int, int] = 256) -> dict[str, FlopCount]:
    """FLOPs per forward call of each network in `model.networks` during one animation step.

    Networks not called by detect/animate (discriminator, AVD) are left out. When a network is
    called more than once (the keypoint detector on source and driving) the calls must cost
    the same; the count is per call.
    """
    height, width = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, height, width, generator=generator)
    driving = torch.rand(1, 3, height, width, generator=generator)
    counter = _counter()
    calls: dict[str, list[int]] = {}
    depth: dict[str, int] = {}
    start: dict[str, int] = {}
    layer_calls: dict[str, int] = {}
    handles = []
    layer_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)

    def pre_hook(name: str) -> Callable:
        def hook(module, args, kwargs=None):
            depth[name] = depth.get(name, 0) + 1
            if depth[name] == 1:
                start[name] = counter.get_total_flops()

        return hook

    def post_hook(name: str) -> Callable:
        def hook(module, args, output):
            depth[name] -= 1
            if depth[name] == 0:
                calls.setdefault(name, []).append(counter.get_total_flops() - start[name])

        return hook

    layer_start: dict[int, int] = {}

    def layer_pre(module, args):
        layer_start[id(module)] = counter.get_total_flops()

    def layer_post(name: str) -> Callable:
        def hook(module, args, output):
            # only the network's first call is kept (all calls must cost the same)
            if len(calls.get(name, [])) == 0:
                spent = counter.get_total_flops() - layer_start.pop(id(module))
                layer_calls[name] = layer_calls.get(name, 0) + spent

        return hook

    for name, net in model.networks.items():
        handles.append(net.register_forward_pre_hook(pre_hook(name)))
        handles.append(net.register_forward_hook(post_hook(name)))
        for module in net.modules():
            if isinstance(module, layer_types):
                handles.append(module.register_forward_pre_hook(layer_pre))
                handles.append(module.register_forward_hook(layer_post(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            kp_source = model.detect(source)
            kp_driving = model.detect(driving)
            model.animate(source, kp_source, kp_driving)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    result = {}
    for name, counts in calls.items():
        if len(set(counts)) != 1:
            raise RuntimeError(f"{name}: forward calls cost different FLOPs {counts}")
        result[name] = FlopCount(
            flops=int(counts[0]), calls=len(counts), layer_flops=int(layer_calls.get(name, 0))
        )
    return result
