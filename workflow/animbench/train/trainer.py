"""The training loop shared by every model: the papers' schedule (epochs × repeats, Adam with
betas (0.5, 0.999) per network, MultiStepLR at the epoch milestones), a resumable run folder,
and a progress bar.

Run folder:
    checkpoint-last.pt   resumable state, rewritten every `checkpoint_freq` epochs and on
                         SIGTERM/SIGINT (so an interrupted run resumes where it stopped)
    model.pt             final weights (written last: its presence means the run finished)
    log.csv              one row per step: losses, learning rates, seconds (and the gradient
                         norms before clipping of the networks in `clip_grad_norm`)
    log-avd.csv          the same for the AVD stage (`train_avd_params`: MRAA, TPSMM)
    train.json           summary: preset, steps, time, warnings (per stage with an AVD stage)

Presets may set `train_params.clip_grad_norm: {network: max_norm}` (MTIA's kp detector: 1) or
`{network: {max_norm, norm_type}}` (TPSMM: 10 in the max norm, norm_type inf): each network's
gradient norm is clipped after the backward pass, before its optimiser steps. `weight_decay`
(TPSMM: 1e-4) goes to every Adam of the stage. Objectives that depend on the epoch (TPSMM's
dropout schedule and bg_start) define `set_epoch(epoch)`, called before each step.
Pretrained initialisations a model declares (`model.load_pretrained()`, MTIA's ImageNet HRNet)
are loaded when a run starts, never when a model is built.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from animbench import __version__
from animbench.data.datasets import FramePairs
from animbench.errors import ConfigError
from animbench.models.registry import build, get_preset
from animbench.train import checkpoint
from animbench.train.objectives import OBJECTIVES


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag checked between steps, so the loop saves and exits."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    *internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


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


def _loader(
    data, dataset_params: dict, params: dict, seed: int
) -> tuple[DataLoader, torch.Generator]:
    dataset = FramePairs(
        data,
        id_sampling=dataset_params["id_sampling"],
        num_repeats=params["num_repeats"],
        augmentation_params=dataset_params.get("augmentation_params"),
    )
    shuffle_generator = torch.Generator().manual_seed(seed)  # saved, so a resume reshuffles alike
    loader = DataLoader(
        dataset,
        batch_size=params["batch_size"],
        shuffle=True,
        drop_last=True,
        num_workers=params.get("num_workers", 0),
        generator=shuffle_generator,
    )
    if len(loader) == 0:
        raise ValueError(f"{data}: fewer training items ({len(dataset)}) than one batch")
    return loader, shuffle_generator


def train(
    data: str | Path,
    method: str,
    preset: str,
    overrides: dict | None = None,
    out: str | Path = "run",
    device: str = "auto",
    seed: int = 0,
) -> Path:
    """Train `preset` on the dataset at `data`; returns the path of model.pt.

    The main stage trains what the model's objective names. When the preset has
    `train_avd_params` (MRAA, TPSMM), a second stage then trains the AVD network alone, the
    motion estimator frozen (the references' `train_avd` mode). checkpoint-last.pt records the
    stage (`stage`: "main" or "avd"), so an interrupted run resumes in the stage it stopped in.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_preset(preset, overrides)
    train_params, dataset_params = spec["train_params"], spec["dataset_params"]
    avd_params = spec.get("train_avd_params")
    device = resolve_device(device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    model = build(spec).to(device)
    last = out / "checkpoint-last.pt"
    state = checkpoint.load(last) if last.exists() else None
    if state is None and hasattr(model, "load_pretrained"):
        # pretrained initialisations (MTIA's ImageNet HRNet) are fetched here, at the start of
        # a run only: build() never downloads, and a resume restores the trained weights
        model.load_pretrained()
    objective = OBJECTIVES[spec["model"]](model, train_params).to(device)
    run_warnings = list(objective.warnings)
    if state is not None:  # e.g. notes of the first start's pretrained initialisation
        run_warnings += [w for w in state.get("warnings", []) if w not in run_warnings]
    loader, shuffle_generator = _loader(data, dataset_params, train_params, seed)

    # one Adam per network, as the authors do (their checkpoints hold one optimiser each)
    # (the objective may name the networks it trains; learning rates are `lr_<network>`)
    generator_side = list(getattr(objective, "trained_networks", ("generator", "kp_detector")))
    trained = generator_side + (["discriminator"] if objective.use_gan else [])
    optimizers, schedulers = _adam_schedule(
        {name: model.networks[name] for name in trained},
        {name: train_params[f"lr_{name}"] for name in trained},
        train_params["epoch_milestones"],
        train_params.get("weight_decay", 0.0),
    )
    clip = _check_clipping(train_params, generator_side, "train_params")

    num_epochs = train_params["num_epochs"]
    total_steps = num_epochs * len(loader)
    if train_params.get("max_steps"):
        total_steps = min(total_steps, train_params["max_steps"])
    stage = "main" if state is None else state.get("stage", "main")
    start_epoch, step = 0, 0
    if state is not None:
        for name, net in model.networks.items():
            net.load_state_dict(state["networks"][name])
        start_epoch, step = state["epoch"], state["step"]
        if stage == "main":
            _restore(state["training_state"], optimizers, schedulers, shuffle_generator)

    def save_last(stage: str, epoch: int, step: int, stage_state: dict, **extra) -> None:
        """The resumable state; `epoch`/`step` are the main stage's, `extra` the AVD stage's."""
        checkpoint.save(
            {
                "method": method,
                "preset": spec,
                "networks": {name: net.state_dict() for name, net in model.networks.items()},
                "stage": stage,
                "epoch": epoch,
                "step": step,
                **extra,
                "warnings": run_warnings,
                "training_state": {**stage_state, "rng": _rng_state()},
            },
            last,
        )

    def main_state() -> dict:
        return {
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "shuffle_generator": shuffle_generator.get_state(),
        }

    def main_step(source, driving, epoch: int) -> dict:
        if hasattr(objective, "set_epoch"):
            objective.set_epoch(epoch)
        losses, generated = objective.generator_losses(model, source, driving)
        loss = sum(losses.values())
        for name in generator_side:
            optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        norms = clip_gradients(model.networks, clip)
        for name in generator_side:
            optimizers[name].step()
        if objective.use_gan:
            disc_losses = objective.discriminator_losses(model, driving, generated)
            optimizers["discriminator"].zero_grad(set_to_none=True)
            sum(disc_losses.values()).backward()
            optimizers["discriminator"].step()
            losses.update(disc_losses)
        row = {k: float(v.detach()) for k, v in losses.items()}
        row.update({f"grad_norm_{k}": round(v, 6) for k, v in norms.items()})
        row["lr"] = optimizers[generator_side[0]].param_groups[0]["lr"]
        return row

    started = time.time()
    epochs_done = start_epoch
    model.train()
    if stage == "main":
        epochs_done, step = _run_stage(
            loader,
            device,
            main_step,
            schedulers,
            start_epoch,
            step,
            num_epochs,
            total_steps,
            train_params["checkpoint_freq"],
            lambda epoch, step: save_last("main", epoch, step, main_state()),
            out / "log.csv",
            f"train {preset}",
        )
        save_last("main", epochs_done, step, main_state())
    main_summary = {
        "steps": step,
        "epochs": epochs_done,
        "seconds": round(time.time() - started, 1),
    }

    avd_summary = None
    avd_progress: dict = {}
    if avd_params:
        resume = state if stage == "avd" else None
        avd_progress, avd_summary = _train_avd(
            model,
            spec["model"],
            avd_params,
            (data, dataset_params, seed),
            device,
            resume,
            lambda *args, **kw: save_last("avd", epochs_done, step, *args, **kw),
            out,
            preset,
        )

    final = checkpoint.save(
        {
            "method": method,
            "preset": spec,
            "networks": {name: net.state_dict() for name, net in model.networks.items()},
            "epoch": epochs_done,
            "step": step,
            **avd_progress,
            "warnings": run_warnings,
            "animbench_version": __version__,
        },
        out / "model.pt",
    )
    summary = {
        "method": method,
        "preset": preset,
        "overrides": overrides or {},
        "steps": step,
        "epochs": epochs_done,
        "seconds": round(time.time() - started, 1),
        "device": str(device),
        "warnings": run_warnings,
    }
    if avd_summary is not None:
        summary["main"] = main_summary
        summary["avd"] = avd_summary
    (out / "train.json").write_text(json.dumps(summary, indent=2))
    return final


def _restore(training_state: dict, optimizers: dict, schedulers: dict, shuffle_generator) -> None:
    for name, opt in optimizers.items():
        opt.load_state_dict(training_state["optimizers"][name])
        schedulers[name].load_state_dict(training_state["schedulers"][name])
    _set_rng_state(training_state["rng"])
    shuffle_generator.set_state(training_state["shuffle_generator"])


def _train_avd(
    model,
    model_name: str,
    avd_params: dict,
    dataset,
    device,
    state,
    save_last,
    out: Path,
    preset: str,
) -> tuple[dict, dict]:
    """The second stage (MRAA, TPSMM): the AVD network alone (Adam, lr `lr`, MultiStepLR at the
    epoch milestones), the motion estimator frozen; log in log-avd.csv. Returns the progress
    keys of the final checkpoint and the stage summary."""
    from animbench.train.objectives import AVD_OBJECTIVES

    started = time.time()
    objective = AVD_OBJECTIVES[model_name](model, avd_params)
    trained = list(objective.trained_networks)
    optimizers, schedulers = _adam_schedule(
        {name: model.networks[name] for name in trained},
        {name: avd_params.get(f"lr_{name}", avd_params["lr"]) for name in trained},
        avd_params["epoch_milestones"],
    )
    clip = _check_clipping(avd_params, trained, "train_avd_params")
    data, dataset_params, seed = dataset
    loader, shuffle_generator = _loader(data, dataset_params, avd_params, seed)
    num_epochs = avd_params["num_epochs"]
    total_steps = num_epochs * len(loader)
    if avd_params.get("max_steps"):
        total_steps = min(total_steps, avd_params["max_steps"])
    start_epoch, step = 0, 0
    if state is not None:
        _restore(state["training_state"], optimizers, schedulers, shuffle_generator)
        start_epoch, step = state["avd_epoch"], state["avd_step"]

    def stage_state() -> dict:
        return {
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "shuffle_generator": shuffle_generator.get_state(),
        }

    def save(epoch: int, step: int) -> None:
        save_last(stage_state(), avd_epoch=epoch, avd_step=step)

    model.train()  # the objective runs the frozen motion estimator in eval mode

    def avd_step(source, driving, epoch: int) -> dict:
        losses, _ = objective.losses(model, source, driving)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        norms = clip_gradients(model.networks, clip)
        for opt in optimizers.values():
            opt.step()
        row = {k: float(v.detach()) for k, v in losses.items()}
        row.update({f"grad_norm_{k}": round(v, 6) for k, v in norms.items()})
        row["lr"] = optimizers[trained[0]].param_groups[0]["lr"]
        return row

    epochs_done, step = _run_stage(
        loader,
        device,
        avd_step,
        schedulers,
        start_epoch,
        step,
        num_epochs,
        total_steps,
        avd_params["checkpoint_freq"],
        save,
        out / "log-avd.csv",
        f"train {preset} (AVD)",
    )
    save(epochs_done, step)
    progress = {"avd_epoch": epochs_done, "avd_step": step}
    return progress, {
        "steps": step,
        "epochs": epochs_done,
        "seconds": round(time.time() - started, 1),
    }


def _run_stage(
    loader,
    device,
    step_fn,
    schedulers,
    start_epoch,
    step,
    num_epochs,
    total_steps,
    checkpoint_freq,
    save_last,
    log_path,
    desc,
) -> tuple[int, int]:
    """Epochs of `step_fn(source, driving, epoch) -> log row` from (start_epoch, step) up to
    num_epochs or total_steps; schedulers step per epoch; `save_last(epoch, step)` every
    checkpoint_freq epochs and on SIGTERM/SIGINT (then KeyboardInterrupt). Returns
    (epochs done, steps done)."""
    log_columns: list[str] | None = None
    started = time.time()
    progress = tqdm(total=total_steps, initial=step, desc=desc, unit="step")
    epochs_done = start_epoch
    with _StopRequest() as stop:
        for epoch in range(start_epoch, num_epochs):
            if step >= total_steps:  # finished earlier by max_steps: nothing left to do
                break
            for batch in loader:
                if step >= total_steps or stop.requested:
                    break
                source = batch["source"].to(device, non_blocking=True)
                driving = batch["driving"].to(device, non_blocking=True)
                losses = step_fn(source, driving, epoch)
                step += 1
                row = {"step": step, "epoch": epoch, "seconds": round(time.time() - started, 3)}
                row.update(losses)
                log_columns = _append_log(log_path, row, log_columns)
                loss = sum(v for k, v in losses.items() if k != "lr" and not k.startswith("grad_"))
                progress.set_postfix(loss=f"{loss:.3f}")
                progress.update(1)
            if stop.requested:
                save_last(epoch, step)  # resumes at this epoch's start with the weights of now
                progress.close()
                raise KeyboardInterrupt
            for scheduler in schedulers.values():
                scheduler.step()
            epochs_done = epoch + 1
            if step >= total_steps:
                break
            if epochs_done % checkpoint_freq == 0:
                save_last(epochs_done, step)
    progress.close()
    return epochs_done, step


def _append_log(path: Path, row: dict, columns: list[str] | None) -> list[str]:
    if columns is None:
        columns = list(row)
        if not path.exists() or path.stat().st_size == 0:
            path.write_text(",".join(columns) + "\n")
        else:
            columns = path.read_text().splitlines()[0].split(",")
    with path.open("a") as handle:
        handle.write(",".join(str(row.get(c, "")) for c in columns) + "\n")
    return columns
