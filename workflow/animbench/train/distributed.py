"""Data-parallel training: the process group torchrun describes, a resumable sharded batch
sampler, and batch norm synchronised across processes on any backend.

One process per GPU (`torchrun --standalone --nproc_per_node=N -m animbench.cli train ...`);
RANK / WORLD_SIZE / LOCAL_RANK come from torchrun. A preset's `batch_size` is the paper's
global batch: each of N processes takes batch_size / N items of every global batch, so the
union of the processes' batches is exactly the single-process batch, in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

from animbench.errors import ConfigError


@dataclass
class Distributed:
    """Where this process stands in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        """Join torchrun's process group (nccl on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank, world_size, local_rank)

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: cuda:LOCAL_RANK."""
        if device.type == "cuda" and self.enabled:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise ConfigError(
                f"train_params.batch_size {global_batch} is not divisible by the "
                f"{self.world_size} processes; the preset's batch is the global one"
            )
        return global_batch // self.world_size

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over processes of each value (a loss of the global batch)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(tensor)
        return {k: float(v) / self.world_size for k, v in zip(keys, tensor.tolist())}

    def any(self, flag: bool) -> bool:
        """True on every process when it is True on one (e.g. a stop signal)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)])
        dist.all_reduce(tensor)
        return bool(tensor.item())

    def gather(self, obj) -> list:
        """Every process's `obj`, in rank order (on every process)."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class PairBatchSampler:
    """Batches of (epoch, index) keys: a permutation per epoch drawn from (seed, epoch), cut
    into global batches (the last partial one dropped, as the references' drop_last), of which
    this process takes its slice. `start(epoch, skip)` resumes mid-epoch after `skip` batches.

    Keys carry the epoch so a dataset can draw each item's randomness from (seed, epoch, index):
    items then do not depend on the process count, the worker count or where a run resumed.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, distributed: Distributed):
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self.rank = distributed.rank
        self.local = distributed.local_batch(global_batch)
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.num_items // self.global_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=generator).tolist()
        for batch in range(self.skip, len(self)):
            first = batch * self.global_batch + self.rank * self.local
            yield [(self.epoch, index) for index in order[first : first + self.local]]


class CrossProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch on any backend (torch's SyncBatchNorm is GPU-only):
    per-channel count, sum and sum of squares are summed across processes with a
    differentiable all-reduce, so forward and backward equal batch norm of the whole batch."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        x = input.float()
        channels = x.shape[1]
        shape = [1, channels] + [1] * (input.dim() - 2)
        # two passes (mean, then the squared deviations from it), as a single process would:
        # E[x²] − E[x]² in float32 loses digits to cancellation
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        stats = differentiable_all_reduce(torch.cat([count, x.sum(dims)]))
        total = stats[0]
        mean = stats[1:] / total
        centred = x - mean.view(shape)
        var = differentiable_all_reduce((centred * centred).sum(dims)) / total  # biased
        if self.track_running_stats:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 0.0
                self.num_batches_tracked += 1
                if self.momentum is None:  # cumulative average, as _BatchNorm
                    momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def synchronise_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm layers → torch's SyncBatchNorm on CUDA (the references' synchronised batch
    norm), CrossProcessBatchNorm elsewhere. Parameter and buffer names are unchanged."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, CrossProcessBatchNorm
    ):
        converted = CrossProcessBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        if module.affine:
            with torch.no_grad():
                converted.weight.copy_(module.weight)
                converted.bias.copy_(module.bias)
        if module.track_running_stats:
            converted.running_mean.copy_(module.running_mean)
            converted.running_var.copy_(module.running_var)
            converted.num_batches_tracked.copy_(module.num_batches_tracked)
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module
