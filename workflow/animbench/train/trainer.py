"""The training loop shared by every model: the papers' schedule (epochs × repeats, Adam with
betas (0.5, 0.999) per network, MultiStepLR at the epoch milestones), data parallel over
torchrun's processes, an exact resume, and logs a researcher can watch.

Run folder:
    checkpoint-last.pt    resumable state (weights, optimisers, schedulers, epoch, batch within
                          the epoch, step, every process's RNG states); rewritten every
                          `checkpoint_freq` epochs, every `checkpoint_every` steps when set, and
                          on SIGTERM / SIGUSR1 / SIGINT (then the run exits: rerun to resume)
    checkpoint-prev.pt    the one before it; checkpoint-epoch<E>.pt the periodic ones; each with
                          a .sha256: a corrupt file is set aside and the previous good one used
    model.pt              final weights (written last: its presence means the run finished)
    log.csv, log-avd.csv  one row per step: losses, learning rate, gradient norms, throughput
    tensorboard/          the same scalars, and the image grids, for TensorBoard
    grid-latest.png       source | driving | prediction | keypoints | occlusion, every
    grids/                `image_every` steps
    train.json            summary: preset, steps, time, options, warnings, deviations
    identity.json         what the weights depend on (resolved preset, seed, training clips,
                          precision; train/identity.py), also in every checkpoint: a rerun under
                          another one stops with an error naming the keys that differ

A preset's `batch_size` is the paper's global batch, whatever the number of processes. Per
preset: `clip_grad_norm: {network: max_norm | {max_norm, norm_type}}` (MTIA's kp detector,
TPSMM), `weight_decay` (TPSMM), objectives' `set_epoch(epoch)` (TPSMM's dropout schedule), and
`train_avd_params` for the second stage (MRAA, TPSMM: the AVD network alone, the motion
estimator frozen). Pretrained initialisations (`model.load_pretrained()`, MTIA's ImageNet
HRNet) are loaded when a run starts, never when a model is built.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from animbench import __version__, checkpoint
from animbench.data.datasets import FramePairs
from animbench.device import native_bf16, prefers_channels_last, resolve_device
from animbench.errors import ConfigError, DataError
from animbench.models.registry import MODEL_BUILDERS, build, get_preset
from animbench.train import identity, pretrained
from animbench.train.distributed import Distributed, PairBatchSampler, synchronise_batch_norm
from animbench.train.logging import RunLogger, training_grid
from animbench.train.objectives import AVD_OBJECTIVES, objective_class


class TrainingInterrupted(KeyboardInterrupt):
    """A stop signal was honoured: the state is saved; rerunning the same command resumes."""


@dataclass
class TrainOptions:
    """How to run, not what to train (results do not depend on them beyond float rounding).

    precision      "bf16" autocast or "fp32"; "auto" = bf16 on a CUDA GPU that supports it;
                   "bf16-if-native" = bf16 where the device has bf16 arithmetic (that GPU, or
                   a CPU with AVX512-BF16 or AMX: 1.56× FOMM's body steps on this project's
                   CPU, benchmarks/train_step.py bf16-cl), else fp32
    channels_last  NHWC memory layout for the convolutions (the model's and the objective's
                   loss networks); "auto" = on CUDA, and on a CPU unless the model has instance
                   norms (device.prefers_channels_last: 1.09-1.55× the steps per second of the
                   small presets there, benchmarks/train_step.py fp32-cl; TPSMM 1.01)
    compile        torch.compile every network (off by default: not yet measured on a GPU)
    workers        DataLoader worker processes (None: the preset's num_workers, else 0)
    image_every    steps between image grids (0: none)
    checkpoint_every  steps between resumable checkpoints besides the epoch ones (0: none)
    tensorboard    write TensorBoard event files beside the CSV log
    """

    precision: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    workers: int | None = None
    image_every: int = 500
    checkpoint_every: int = 0
    tensorboard: bool = True

    def resolve(self, device: torch.device) -> TrainOptions:
        cuda = device.type == "cuda"
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if cuda and native_bf16(device) else "fp32"
        elif precision == "bf16-if-native":
            precision = "bf16" if native_bf16(device) else "fp32"
        if precision not in ("bf16", "fp32"):
            raise ConfigError(
                f"precision {self.precision!r}: expected auto, bf16-if-native, bf16 or fp32"
            )
        if self.channels_last not in ("auto", "on", "off"):
            raise ConfigError(f"channels_last {self.channels_last!r}: expected auto, on or off")
        return TrainOptions(**{**asdict(self), "precision": precision})

    def resolve_layout(self, model: torch.nn.Module, device: torch.device) -> TrainOptions:
        """`channels_last` "auto" made "on" or "off" for this model on this device."""
        if self.channels_last != "auto":
            return self
        on = device.type == "cuda" or prefers_channels_last(model, device)
        return TrainOptions(**{**asdict(self), "channels_last": "on" if on else "off"})


class _StopRequest:
    """SIGTERM, SIGUSR1 (SLURM's warning before preemption or the time limit) and SIGINT set a
    flag checked between steps, so the loop saves where it stands and exits."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    *internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _adam_schedule(
    networks: dict, lrs: dict, milestones, weight_decay: float = 0.0
) -> tuple[dict, dict]:
    """One Adam (betas (0.5, 0.999)) and one MultiStepLR (γ 0.1) per network, as the authors.

    Where an author uses one Adam over several networks (TPSMM: inpainting + dense motion +
    kp detector) one per network gives the same updates: Adam is elementwise and the groups
    share lr, betas and weight decay. Networks without gradient in a step (TPSMM's background
    predictor before bg_start) are left untouched, weight decay included.
    """
    optimizers = {
        name: torch.optim.Adam(
            net.parameters(), lr=lrs[name], betas=(0.5, 0.999), weight_decay=weight_decay
        )
        for name, net in networks.items()
    }
    schedulers = {
        name: torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
        for name, opt in optimizers.items()
    }
    return optimizers, schedulers


def clip_gradients(networks: dict[str, torch.nn.Module], max_norms: dict) -> dict[str, float]:
    """Clip each named network's gradient norm (over all its parameters): `max_norms` maps a
    network to its max_norm (L2, as MTIA's `clip_kp_detector_grad`) or to
    {max_norm, norm_type} (TPSMM: norm_type inf, "inf" accepted); returns the norms before
    clipping."""
    norms = {}
    for name, spec in max_norms.items():
        spec = spec if isinstance(spec, dict) else {"max_norm": spec}
        norms[name] = float(
            torch.nn.utils.clip_grad_norm_(
                networks[name].parameters(),
                float(spec["max_norm"]),
                norm_type=float(spec.get("norm_type", 2.0)),
            )
        )
    return norms


def _check_clipping(params: dict, trained: list[str], key: str) -> dict:
    clip = params.get("clip_grad_norm") or {}
    unknown = sorted(set(clip) - set(trained))
    if unknown:
        raise ConfigError(
            f"{key}.clip_grad_norm: {', '.join(unknown)} not among the trained networks "
            f"({', '.join(trained)})"
        )
    return clip


class LossModule(nn.Module):
    """The model and its objective behind one forward, so DistributedDataParallel sees every
    forward whose gradients it must average: `part` is "generator", "discriminator" or "avd"."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, source, driving, part: str = "generator", generated=None):
        if part == "generator":
            return self.objective.generator_losses(self.model, source, driving)
        if part == "discriminator":
            return self.objective.discriminator_losses(self.model, driving, generated), None
        return self.objective.losses(self.model, source, driving)


@dataclass
class Stage:
    """One training stage: its networks, optimisers, schedule, sampler and log."""

    name: str  # "main" or "avd"
    params: dict  # train_params or train_avd_params
    step: Callable  # (source, driving, epoch) -> (log row, model output)
    optimizers: dict
    schedulers: dict
    sampler: PairBatchSampler
    loader: DataLoader
    logger: RunLogger

    @property
    def total_steps(self) -> int:
        total = self.params["num_epochs"] * len(self.sampler)
        return min(total, self.params["max_steps"]) if self.params.get("max_steps") else total

    def state(self) -> dict:
        return {
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
        }

    def restore(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            self.schedulers[name].load_state_dict(state["schedulers"][name])


def train(
    data: str | Path,
    method: str,
    preset: str,
    overrides: dict | None = None,
    out: str | Path = "run",
    device: str = "auto",
    seed: int = 0,
    options: TrainOptions | None = None,
    allow_random_weights: bool = False,
) -> Path:
    """Train `preset` on the dataset at `data`; returns the path of model.pt. Under torchrun
    each process trains its share of every global batch (DDP).

    A pretrained file the preset needs (VGG19, HRNet, DINO, SAM) that is missing stops the run
    at its start, unless `allow_random_weights`: then random weights stand in and the
    checkpoint's `deviations` say so (train/pretrained.py)."""
    device = resolve_device(device)
    distributed = Distributed.from_environment(device)
    try:
        return _Run(
            data, method, preset, overrides, Path(out), distributed.device(device), seed,
            (options or TrainOptions()).resolve(device), distributed, allow_random_weights,
        ).run()  # fmt: skip
    finally:
        distributed.close()


class _Run:
    """A training run: the model, its stages and the run folder."""

    def __init__(
        self, data, method, preset, overrides, out, device, seed, options, distributed,
        allow_random_weights=False,
    ):  # fmt: skip
        self.data, self.method, self.preset, self.out = data, method, preset, out
        self.device, self.seed, self.options, self.dist = device, seed, options, distributed
        self.overrides = overrides or {}
        self.spec = get_preset(preset, overrides)
        # before any work (the run folder included): a missing pretrained file stops it here
        self.deviations = pretrained.check_weights(self.spec, allow_random_weights)
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)  # the same initial weights in every process
        self.model = build(self.spec).to(device)
        self.options = options = options.resolve_layout(self.model, device)
        # what the weights depend on: a folder trained under another one is never resumed
        self.identity = identity.run_identity(method, self.spec, seed, data, options.precision)
        self.state, resumed_from = self._load_resumable()
        if self.state is not None:
            identity.check_resume(identity.stored_identity(self.state), self.identity, out)
        if distributed.is_main:
            identity.write(out, self.identity)
        if self.state is None and hasattr(self.model, "load_pretrained"):
            # pretrained initialisations (MTIA's ImageNet HRNet) at the start of a run only:
            # build() never downloads, and a resume restores the trained weights
            self.model.load_pretrained()
        if self.state is not None:
            for name, net in self.model.networks.items():
                net.load_state_dict(self.state["networks"][name])
        if distributed.enabled:  # the references' synchronised batch norm (converted in place)
            for net in self.model.networks.values():
                synchronise_batch_norm(net, device)
            self.model.to(device)
        if options.channels_last == "on":
            self.model.to(memory_format=torch.channels_last)
        if options.compile:
            for net in self.model.networks.values():
                net.compile()  # in place: state_dict keys unchanged
        self.warnings: list[str] = []
        if resumed_from is not None and resumed_from.name != checkpoint.LAST:
            self.warnings.append(f"resumed from {resumed_from.name} (a newer file was corrupt)")
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if options.precision == "bf16"
            else nullcontext()
        )
        self.started = time.time()

    def _load_resumable(self) -> tuple[dict | None, Path | None]:
        """Rank 0 picks the newest intact checkpoint (setting corrupt ones aside); the others
        load the same file."""
        payload, path = checkpoint.load_resumable(self.out) if self.dist.is_main else (None, None)
        path = self.dist.gather(str(path) if path else None)[0]
        if path is None:
            return None, None
        if not self.dist.is_main:
            payload = checkpoint.load(path)
        return payload, Path(path)

    # --------------------------------------------------------------------------- stages

    def _stage(self, name: str, params: dict, objective: nn.Module, trained: list[str]) -> Stage:
        """Optimisers, sampler and loader of a stage; `trained` networks get gradients (the
        others are frozen for the stage, so DDP leaves them alone)."""
        networks = self.model.networks
        for net_name, net in networks.items():
            net.requires_grad_(net_name in trained)
        lrs = {n: params.get(f"lr_{n}", params.get("lr")) for n in trained}
        optimizers, schedulers = _adam_schedule(
            {n: networks[n] for n in trained},
            lrs,
            params["epoch_milestones"],
            params.get("weight_decay", 0.0) if name == "main" else 0.0,
        )
        gradient_side = [n for n in trained if n != "discriminator"]
        key = "train_params" if name == "main" else "train_avd_params"
        clip = _check_clipping(params, gradient_side, key)
        dataset_params = self.spec["dataset_params"]
        dataset = FramePairs(
            self.data,
            id_sampling=dataset_params["id_sampling"],
            num_repeats=params["num_repeats"],
            augmentation_params=dataset_params.get("augmentation_params"),
            seed=self.seed,
        )
        sampler = PairBatchSampler(len(dataset), params["batch_size"], self.seed, self.dist)
        if len(sampler) == 0:
            raise DataError(
                f"{self.data}: fewer training items ({len(dataset)}) than one batch "
                f"({params['batch_size']}); add clips or lower {key}.batch_size"
            )
        workers = self.options.workers
        workers = params.get("num_workers", 0) if workers is None else workers
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            # its own generator: starting an epoch's iterator must not draw from the global
            # RNG, whose state a mid-epoch checkpoint restores (items are keyed, not seeded)
            generator=torch.Generator().manual_seed(self.seed),
        )
        loss_module = LossModule(self.model, objective)
        runner = (
            DistributedDataParallel(
                loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # the generator and discriminator parts differ
                broadcast_buffers=False,  # batch norm statistics are already global
            )
            if self.dist.enabled
            else loss_module
        )
        use_gan = getattr(objective, "use_gan", False)

        def step(source, driving, epoch: int) -> tuple[dict, dict]:
            if hasattr(objective, "set_epoch"):
                objective.set_epoch(epoch)
            with self.autocast:
                losses, generated = runner(
                    source, driving, part=name if name == "avd" else "generator"
                )
            for net_name in gradient_side:
                optimizers[net_name].zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            norms = clip_gradients(networks, clip)
            for net_name in gradient_side:
                optimizers[net_name].step()
            if use_gan:
                with self.autocast:
                    disc_losses, _ = runner(
                        source, driving, part="discriminator", generated=generated
                    )
                optimizers["discriminator"].zero_grad(set_to_none=True)
                sum(disc_losses.values()).backward()
                optimizers["discriminator"].step()
                losses.update(disc_losses)
            row = {k: float(v.detach()) for k, v in losses.items()}
            row.update({f"grad_norm_{k}": round(v, 6) for k, v in norms.items()})
            return row, generated

        logger = RunLogger(
            self.out, stage=name, tensorboard=self.options.tensorboard, enabled=self.dist.is_main
        )
        return Stage(name, params, step, optimizers, schedulers, sampler, loader, logger)

    def _save(self, stage: Stage, progress: dict, periodic_epoch: int | None = None) -> None:
        """Every process contributes its RNG states; rank 0 writes the resumable checkpoint."""
        rng = self.dist.gather(_rng_state())
        if self.dist.is_main:
            checkpoint.save_resumable(
                {
                    "method": self.method,
                    "preset": self.spec,
                    "identity": self.identity,
                    "networks": self._weights(),
                    "stage": stage.name,
                    **_flatten(progress),
                    "warnings": self.warnings,
                    "deviations": self.deviations,
                    "training_state": {**stage.state(), "rng": rng},
                },
                self.out,
                periodic_epoch,
            )
        self.dist.barrier()

    def _weights(self) -> dict:
        return {name: net.state_dict() for name, net in self.model.networks.items()}

    def _run_stage(self, stage: Stage, progress: dict, key: str) -> dict:
        """Epochs of the stage from `progress[key]` = {epoch, batch, step} on; returns the
        progress reached. Schedulers step per epoch (the papers' milestones are epochs)."""
        position = dict(progress.get(key, {"epoch": 0, "batch": 0, "step": 0}))
        position.setdefault("batch", 0)
        num_epochs, total = stage.params["num_epochs"], stage.total_steps
        stage.logger.truncate_after(position["step"])  # rows past a resumed step are redone
        global_batch = stage.params["batch_size"]
        bar = tqdm(
            total=total,
            initial=position["step"],
            desc=f"train {self.preset}" + (" (AVD)" if stage.name == "avd" else ""),
            unit="step",
            disable=not self.dist.is_main,
        )
        image_every, checkpoint_every = self.options.image_every, self.options.checkpoint_every

        saved_at: dict = {}

        def save(periodic_epoch: int | None = None) -> None:
            self._save(stage, {**progress, key: dict(position)}, periodic_epoch)
            saved_at.update(position)

        with _StopRequest() as stop:
            while position["epoch"] < num_epochs and position["step"] < total:
                epoch = position["epoch"]
                stage.sampler.start(epoch, position["batch"])
                tick = time.time()
                for batch in stage.loader:
                    source = self._to_device(batch["source"])
                    driving = self._to_device(batch["driving"])
                    row, generated = stage.step(source, driving, epoch)
                    position["batch"] += 1
                    position["step"] += 1
                    step = position["step"]
                    now = time.time()
                    row = self.dist.mean(row)  # the global batch's losses
                    row = {
                        "step": step,
                        "epoch": epoch,
                        "seconds": round(now - self.started, 3),
                        **row,
                        "lr": next(iter(stage.optimizers.values())).param_groups[0]["lr"],
                        "samples_per_s": round(global_batch / max(now - tick, 1e-9), 3),
                    }
                    tick = now
                    stage.logger.scalars(row)
                    bar.set_postfix(
                        loss=f"{_total_loss(row):.3f}",
                        samples_per_s=f"{row['samples_per_s']:.1f}",
                        refresh=False,
                    )
                    bar.update(1)
                    if (
                        self.dist.is_main
                        and stage.name == "main"
                        and image_every
                        and (step % image_every == 0 or step == total)
                    ):
                        stage.logger.images(step, training_grid(source, driving, generated))
                    if self.dist.any(stop.requested):
                        save()
                        bar.close()
                        stage.logger.close()
                        raise TrainingInterrupted(
                            f"stopped by a signal at step {step}; "
                            f"{self.out / checkpoint.LAST} holds the state: rerun to resume"
                        )
                    if step >= total:
                        break
                    if checkpoint_every and step % checkpoint_every == 0:
                        save()
                if position["batch"] >= len(stage.sampler):  # the epoch is complete
                    for scheduler in stage.schedulers.values():
                        scheduler.step()
                    position["epoch"], position["batch"] = epoch + 1, 0
                    if position["epoch"] % stage.params["checkpoint_freq"] == 0:
                        save(periodic_epoch=position["epoch"])
            if saved_at != position:  # an epoch-end save may already hold this position
                save()
        bar.close()
        stage.logger.close()
        return position

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.options.channels_last == "on":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _restore_rng(self, state: dict) -> None:
        rng = state["training_state"]["rng"]
        rng = rng if isinstance(rng, list) else [rng]
        if len(rng) != self.dist.world_size:
            self.warnings.append(
                f"resumed with {self.dist.world_size} processes from a run of {len(rng)}: "
                "the data order is exact, the random draws of the model are not"
            )
        _set_rng_state(rng[self.dist.rank % len(rng)])

    # --------------------------------------------------------------------------- run

    def run(self) -> Path:
        spec, state = self.spec, self.state
        train_params = spec["train_params"]
        # a built-in's, or an external model's objective_class (models/base.py)
        objective = objective_class(spec["model"])(self.model, train_params).to(self.device)
        if self.options.channels_last == "on":  # its frozen VGG19 too: half of a step's work
            objective.to(memory_format=torch.channels_last)
        self.warnings += list(objective.warnings)
        # from here on each process draws its own randomness (dropout, equivariance transforms)
        torch.manual_seed(self.seed + self.dist.rank)
        if state is not None:  # e.g. notes of the first start's pretrained initialisation
            self.warnings += [w for w in state.get("warnings", []) if w not in self.warnings]
            # weights random at the first start leave their mark on the run even if found now
            old = state.get("deviations", [])
            self.deviations += [d for d in old if d not in self.deviations]
        progress = _progress(state)
        stage_name = "main" if state is None else state.get("stage", "main")

        default = (
            ("generator", "kp_detector")
            if spec["model"] in MODEL_BUILDERS
            else [n for n in self.model.networks if n != "discriminator"]
        )
        generator_side = list(getattr(objective, "trained_networks", default))
        trained = generator_side + (["discriminator"] if objective.use_gan else [])
        main = self._stage("main", train_params, objective, trained)
        if stage_name == "main":
            if state is not None:
                main.restore(state["training_state"])
                self._restore_rng(state)
            self.model.train()
            progress["main"] = self._run_stage(main, progress, "main")

        avd_params = spec.get("train_avd_params")
        if avd_params:
            if spec["model"] not in AVD_OBJECTIVES:
                raise ConfigError(f"train_avd_params: {spec['model']} has no AVD stage")
            avd_objective = AVD_OBJECTIVES[spec["model"]](self.model, avd_params)
            avd = self._stage(
                "avd", avd_params, avd_objective, list(avd_objective.trained_networks)
            )
            if stage_name == "avd":
                avd.restore(state["training_state"])
                self._restore_rng(state)
            self.model.train()  # the objective runs the frozen motion estimator in eval mode
            progress["avd"] = self._run_stage(avd, progress, "avd")
        return self._finish(progress)

    def _finish(self, progress: dict) -> Path:
        final = self.out / "model.pt"
        main = progress["main"]
        if self.dist.is_main:
            checkpoint.save(
                {
                    "method": self.method,
                    "preset": self.spec,
                    "identity": self.identity,
                    "networks": self._weights(),
                    **_flatten(progress),
                    "warnings": self.warnings,
                    "deviations": self.deviations,
                    "animbench_version": __version__,
                },
                final,
            )
            summary = {
                "method": self.method,
                "preset": self.preset,
                "overrides": self.overrides,
                "steps": main["step"],
                "epochs": main["epoch"],
                "seconds": round(time.time() - self.started, 1),
                "device": str(self.device),
                "processes": self.dist.world_size,
                "options": asdict(self.options),
                "warnings": self.warnings,
                "deviations": self.deviations,
            }
            if "avd" in progress:
                for name, stage in progress.items():
                    summary[name] = {
                        "steps": stage["step"], "epochs": stage["epoch"], "batch": stage["batch"]
                    }  # fmt: skip
            (self.out / "train.json").write_text(json.dumps(summary, indent=2))
        self.dist.barrier()
        return final


def _progress(state: dict | None) -> dict:
    """{stage: {epoch, batch, step}} of a resumable checkpoint (files before mid-epoch resume
    stored only whole epochs: batch 0)."""
    if state is None:
        return {}
    progress = {
        "main": {"epoch": state["epoch"], "batch": state.get("batch", 0), "step": state["step"]}
    }
    if "avd_step" in state:
        progress["avd"] = {
            "epoch": state["avd_epoch"],
            "batch": state.get("avd_batch", 0),
            "step": state["avd_step"],
        }
    return progress


def _flatten(progress: dict) -> dict:
    """{main: {epoch, batch, step}, avd: {...}} → epoch, batch, step, avd_epoch, ..."""
    flat = dict(progress.get("main", {}))
    flat.update({f"avd_{k}": v for k, v in progress.get("avd", {}).items()})
    return flat


def _total_loss(row: dict) -> float:
    skip = ("step", "epoch", "seconds", "lr", "samples_per_s")
    return sum(v for k, v in row.items() if k not in skip and not k.startswith("grad_norm"))
