"""The training loop shared by every model: the papers' schedule (epochs × repeats, Adam with
betas (0.5, 0.999) per network, MultiStepLR at the epoch milestones), a resumable run folder,
and a progress bar.

Run folder:
    checkpoint-last.pt   resumable state, rewritten every `checkpoint_freq` epochs and on
                         SIGTERM/SIGINT (so an interrupted run resumes where it stopped)
    model.pt             final weights (written last: its presence means the run finished)
    log.csv              one row per step: losses, learning rates, seconds
    train.json           summary: preset, steps, time, warnings
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


def train(
    data: str | Path,
    method: str,
    preset: str,
    overrides: dict | None = None,
    out: str | Path = "run",
    device: str = "auto",
    seed: int = 0,
) -> Path:
    """Train `preset` on the dataset at `data`; returns the path of model.pt."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_preset(preset, overrides)
    train_params, dataset_params = spec["train_params"], spec["dataset_params"]
    device = resolve_device(device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    model = build(spec).to(device)
    objective = OBJECTIVES[spec["model"]](model, train_params).to(device)
    dataset = FramePairs(
        data,
        id_sampling=dataset_params["id_sampling"],
        num_repeats=train_params["num_repeats"],
        augmentation_params=dataset_params.get("augmentation_params"),
    )
    shuffle_generator = torch.Generator().manual_seed(seed)  # saved, so a resume reshuffles alike
    loader = DataLoader(
        dataset,
        batch_size=train_params["batch_size"],
        shuffle=True,
        drop_last=True,
        num_workers=train_params.get("num_workers", 0),
        generator=shuffle_generator,
    )
    if len(loader) == 0:
        raise ValueError(f"{data}: fewer training items ({len(dataset)}) than one batch")

    # one Adam per network, as the authors do (their checkpoints hold one optimiser each)
    # (the objective may name the networks it trains; learning rates are `lr_<network>`)
    generator_side = list(getattr(objective, "trained_networks", ("generator", "kp_detector")))
    trained = generator_side + (["discriminator"] if objective.use_gan else [])
    optimizers = {
        name: torch.optim.Adam(
            model.networks[name].parameters(), lr=train_params[f"lr_{name}"], betas=(0.5, 0.999)
        )
        for name in trained
    }
    schedulers = {
        name: torch.optim.lr_scheduler.MultiStepLR(opt, train_params["epoch_milestones"], gamma=0.1)
        for name, opt in optimizers.items()
    }

    num_epochs = train_params["num_epochs"]
    total_steps = num_epochs * len(loader)
    if train_params.get("max_steps"):
        total_steps = min(total_steps, train_params["max_steps"])
    start_epoch, step = 0, 0
    last = out / "checkpoint-last.pt"
    if last.exists():
        state = checkpoint.load(last)
        for name, net in model.networks.items():
            net.load_state_dict(state["networks"][name])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["training_state"]["optimizers"][name])
            schedulers[name].load_state_dict(state["training_state"]["schedulers"][name])
        _set_rng_state(state["training_state"]["rng"])
        shuffle_generator.set_state(state["training_state"]["shuffle_generator"])
        start_epoch, step = state["epoch"], state["step"]

    def save_last(epoch: int) -> None:
        checkpoint.save(
            {
                "method": method,
                "preset": spec,
                "networks": {name: net.state_dict() for name, net in model.networks.items()},
                "epoch": epoch,
                "step": step,
                "warnings": objective.warnings,
                "training_state": {
                    "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                    "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
                    "rng": _rng_state(),
                    "shuffle_generator": shuffle_generator.get_state(),
                },
            },
            last,
        )

    log_path = out / "log.csv"
    log_columns: list[str] | None = None
    started = time.time()
    model.train()
    progress = tqdm(total=total_steps, initial=step, desc=f"train {preset}", unit="step")
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

                losses, generated = objective.generator_losses(model, source, driving)
                loss = sum(losses.values())
                for name in generator_side:
                    optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                for name in generator_side:
                    optimizers[name].step()

                if objective.use_gan:
                    disc_losses = objective.discriminator_losses(model, driving, generated)
                    optimizers["discriminator"].zero_grad(set_to_none=True)
                    sum(disc_losses.values()).backward()
                    optimizers["discriminator"].step()
                    losses.update(disc_losses)

                step += 1
                row = {"step": step, "epoch": epoch, "seconds": round(time.time() - started, 3)}
                row.update({k: float(v.detach()) for k, v in losses.items()})
                row["lr"] = optimizers["generator"].param_groups[0]["lr"]
                log_columns = _append_log(log_path, row, log_columns)
                progress.set_postfix(loss=f"{loss.item():.3f}")
                progress.update(1)
            if stop.requested:
                save_last(epoch)  # resumes at this epoch's start with the weights of now
                progress.close()
                raise KeyboardInterrupt
            for scheduler in schedulers.values():
                scheduler.step()
            epochs_done = epoch + 1
            if step >= total_steps:
                break
            if epochs_done % train_params["checkpoint_freq"] == 0:
                save_last(epochs_done)
    progress.close()

    save_last(epochs_done)
    final = checkpoint.save(
        {
            "method": method,
            "preset": spec,
            "networks": {name: net.state_dict() for name, net in model.networks.items()},
            "epoch": epochs_done,
            "step": step,
            "warnings": objective.warnings,
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
        "warnings": objective.warnings,
    }
    (out / "train.json").write_text(json.dumps(summary, indent=2))
    return final


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
