"""GPU check: every model family trains a few steps at its paper configuration, reconstructs
and scores clips, and the run fails loudly on a NaN, a shape error or a device mismatch.

Per preset (on CUDA one fresh process per part, so peak memory is its own and a crash names
its family):

    train     bf16 autocast + channels_last, through the real trainer (data loading, forward,
              backward, optimiser steps; MRAA/TPSMM/CPABMM also run one AVD step)
    compile   the same + torch.compile (CUDA only by default: compiling takes minutes on a CPU)
    ddp       the same on 2 processes (DistributedDataParallel, nccl), only when 2 GPUs are
              present (`--ddp on` forces it, gloo on a CPU); the batch is the global batch
    reconstruct  the trained checkpoint drives the synthetic test clips, batched over frames
              and clips (`drive_clips`, as `animbench reconstruct`), fp32
    metrics   L1, PSNR, SSIM, LPIPS per frame (`frame_metrics`) of those reconstructions

Checks, each raising with the family's name: every logged loss and gradient norm, every trained
weight, every prediction and every L1/PSNR/SSIM is finite (LPIPS too when its weights are
present; offline it is NaN by design); predictions have their clips' shape; the trainer ran on
the requested device and the predictions come back on it. Any failure makes the script exit 1
after writing the rows it has, naming the failed presets on stderr.

MFU is the model FLOPs per second against the card's dense bf16 peak (PEAK_BF16_TFLOPS, vendor
data sheets, no sparsity), for every row (reconstruction runs fp32, so its MFU understates).
Training FLOPs are counted by torch's FlopCounterMode (2 per multiply-add of convolutions and
matrix products) over one generator + discriminator step, forward and backward, on a batch of 2,
scaled to the batch; reconstruction FLOPs over `drive_clips` on 2 frames. An unknown card, or a
CPU, gets MFU NaN with a note (`--peak-tflops` supplies a peak).

The whole run keeps to `--budget-s` (default 300): the core checks (train, reconstruct,
metrics) of every preset first, each an equal share of 60% of the budget (all of it without
compile/ddp rows), its timed steps shrinking (down to 1) when the FLOP probe's step shows they
would not fit; then the compile and the ddp rows in what is left, skipped with a note when too
little is left or stopped at the budget (one process per preset only: `--isolate`, the CUDA
default; on a CPU the presets share one process, saving the imports).

    python benchmarks/gpu_check.py                          # CUDA: paper presets, paper batch
    python benchmarks/gpu_check.py --device cpu --presets fomm-synthetic --steps 2

Writes results/bench/gpu.parquet: one row per preset and check (README: "GPU check").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = ["fomm-vox256", "mraa-vox256", "mtia-vox256", "tpsmm-vox256", "cpabmm-vox256"]
SYNTHETIC = [
    "fomm-synthetic", "mraa-synthetic", "mtia-synthetic", "tpsmm-synthetic", "cpabmm-synthetic"
]  # fmt: skip

# Dense bf16 tensor-core peak, TFLOPS, from NVIDIA's data sheets (the sparsity figures halved).
# Matched in order against torch.cuda.get_device_name(): more specific names first.
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (the name says "HBM3")
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("A6000", 155.0),
]

COLUMNS = [
    "preset", "family", "check", "status", "device", "precision", "channels_last", "compile",
    "processes", "batch", "frame", "steps_timed", "seconds_per_step", "steps_per_s",
    "samples_per_s", "frames_per_s", "flops_per_item", "tflops_per_s", "peak_tflops", "mfu",
    "peak_memory_mib", "memory_kind", "l1", "psnr", "ssim", "lpips", "wall_s", "note", "error",
    "torch",
]  # fmt: skip


_T0 = time.time()


def _log(message: str) -> None:
    print(f"[{time.time() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


CHECKS = ["train", "compile", "ddp", "reconstruct", "metrics"]  # the rows of a preset


class CheckFailed(RuntimeError):
    """A NaN, a shape or a device the check does not accept."""


def peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak (TFLOPS), or None when the card is not in the table."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if pattern.lower() in device_name.lower():
            return tflops
    return None


def _require_finite(family: str, what: str, values) -> None:
    import numpy as np
    import torch

    if isinstance(values, torch.Tensor):
        bad = not bool(torch.isfinite(values.detach().float()).all())
    else:
        bad = not bool(np.isfinite(np.asarray(values, dtype=float)).all())
    if bad:
        raise CheckFailed(f"{family}: NaN or inf in {what}")


def _peak_memory_mib(device) -> tuple[float, str]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process RSS peak"


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _inject_nan(family: str) -> None:
    """Test hook: the trainer's models of `family` start with a NaN weight."""
    import torch

    from animbench.models import registry
    from animbench.train import trainer

    def build(spec, overrides=None):
        model = registry.build(spec, overrides)
        if (registry.get_preset(spec) if isinstance(spec, str) else spec)["model"] == family:
            first = next(iter(model.networks.values()))
            with torch.no_grad():
                next(first.parameters()).fill_(math.nan)
        return model

    trainer.build = build


def training_flops(spec: dict, device, family: str) -> tuple[float, float]:
    """(FLOPs per training sample, seconds of a warm batch-2 step): generator and discriminator
    forward and backward, as the trainer's step runs them; one counted step (fp32: the count
    does not depend on the precision), one timed under bf16 autocast."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from animbench.evaluate.flops import EXTRA_FORMULAS
    from animbench.models.registry import build
    from animbench.train.objectives import OBJECTIVES
    from animbench.train.trainer import LossModule

    torch.manual_seed(0)
    model = build(spec).to(device).train()
    objective = OBJECTIVES[spec["model"]](model, spec["train_params"]).to(device)
    if hasattr(objective, "set_epoch"):
        objective.set_epoch(0)
    loss_module = LossModule(model, objective)
    size = spec["dataset_params"]["frame_shape"][:2]
    source, driving = torch.rand(2, 2, 3, *size, device=device)

    def step() -> None:
        losses, generated = loss_module(source, driving, part="generator")
        _require_finite(family, "the FLOP probe's losses", torch.stack(list(losses.values())))
        sum(losses.values()).backward()
        if getattr(objective, "use_gan", False):
            disc, _ = loss_module(source, driving, part="discriminator", generated=generated)
            sum(disc.values()).backward()

    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with counter:
        step()
    _sync(device)
    started = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):  # timed as the check trains
        step()
    _sync(device)
    return counter.get_total_flops() / 2, time.perf_counter() - started


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dataset(root: Path, size: int, clips: int, frames: int) -> Path:
    """Moving-square face clips at the preset's frame size (content does not change the cost):
    `clips` to train on, 2 test clips of `frames` frames."""
    from animbench.data.synthetic import make_dataset

    return make_dataset("face", root, num_train=clips, num_test=2, frames=frames, size=size,
                        progress=False)  # fmt: skip


def _overrides(spec: dict, batch: int, steps: int, clips: int) -> dict:
    overrides = {
        "train_params": {
            "batch_size": batch,
            "num_repeats": -(-steps * batch // clips),
            "num_epochs": 1,
            "max_steps": steps,
            "checkpoint_freq": 1000,
        },
        "dataset_params": {"id_sampling": False},
    }
    if spec.get("train_avd_params"):
        overrides["train_avd_params"] = {
            "max_steps": 1, "num_epochs": 1, "batch_size": batch,
            "num_repeats": -(-batch // clips), "checkpoint_freq": 1000,
        }  # fmt: skip
    return overrides


def _check_run(run: Path, family: str, device) -> dict:
    """Losses, gradient norms and weights of a finished run are finite, on the right device;
    returns the timing of the main stage's log."""
    import pandas as pd

    from animbench import checkpoint

    summary = json.loads((run / "train.json").read_text())
    if not summary["device"].startswith(device.type):
        raise CheckFailed(f"{family}: trained on {summary['device']}, asked for {device}")
    for log_name in ("log.csv", "log-avd.csv"):
        if not (run / log_name).exists():
            continue
        log = pd.read_csv(run / log_name)
        for column in log.columns:
            if column not in ("step", "epoch", "seconds", "lr", "samples_per_s"):
                _require_finite(family, f"{log_name} column {column}", log[column])
    for name, state in checkpoint.load(run / "model.pt")["networks"].items():
        for key, value in state.items():
            if value.is_floating_point():
                _require_finite(family, f"trained weight {name}.{key}", value)
    seconds = pd.read_csv(run / "log.csv")["seconds"]
    timed = seconds.diff().iloc[1:]  # the first step is the warm-up
    per_step = float(timed.mean()) if len(timed) else float(seconds.iloc[0])
    return {"steps_timed": max(len(timed), 1), "seconds_per_step": per_step}


def _ddp_worker(rank: int, port: int, data: str, spec: dict, preset: str, overrides: dict,
                out: str, device_type: str, options: dict, threads: int) -> None:  # fmt: skip
    import torch

    torch.set_num_threads(threads)
    from animbench.train.trainer import TrainOptions, train

    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    train(data, spec["model"], preset, overrides=overrides, out=out, device=device_type,
          options=TrainOptions(**options), allow_random_weights=True)  # fmt: skip
    peak, _ = _peak_memory_mib(device)
    Path(out, f"peak-{rank}.json").write_text(json.dumps(peak))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(args: argparse.Namespace) -> list[dict]:
    """The checks of one preset's part, returning their rows (CheckFailed on a failed check):
    "core" is train, reconstruct and metrics; "compile" and "ddp" are one training row each."""
    import torch

    from animbench.data.video import list_clips, read_clip
    from animbench.evaluate.flops import count_flops
    from animbench.evaluate.image_metrics import frame_metrics, lpips_note, lpips_pretrained
    from animbench.evaluate.reconstruct import drive_clips, load_animator, to_inference_layout
    from animbench.models.registry import get_preset
    from animbench.train.trainer import TrainOptions, train

    deadline = time.time() + args.seconds
    if args.inject_nan:
        _inject_nan(args.inject_nan)
    preset = args.preset
    spec = get_preset(preset)
    family = spec["model"]
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    batch = spec["train_params"]["batch_size"] if args.batch == "paper" else int(args.batch)
    size = spec["dataset_params"]["frame_shape"][0]
    clips = max(batch, 4)
    work = Path(args.workdir)
    clip_frames = max(args.clip_frames, 2)  # a training pair needs 2 frames
    data = _dataset(work / f"data{size}-{clips}x{clip_frames}", size, clips, clip_frames)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (peak_tflops(device_name) if device.type == "cuda" else None)
    peak_note = "" if peak else f"MFU NaN: no bf16 peak known for '{device_name}'"
    if args.flops == "off":
        peak_note = "MFU NaN: FLOPs not counted (--flops off)"
    common = {
        "preset": preset, "family": family, "device": device_name, "frame": size,
        "peak_tflops": peak or math.nan, "torch": torch.__version__,
    }  # fmt: skip

    _log(f"{preset}: data ready")
    count = args.flops == "on" or (args.flops == "auto" and device.type == "cuda")
    steps = args.steps
    flops_per_sample = math.nan
    if count:
        flops_per_sample, probe_s = training_flops(spec, device, family)
        _log(f"{preset}: {flops_per_sample / 1e9:.1f} GFLOP per sample, probe {probe_s:.2f} s")
        # timed steps that fit a third of the share (setup, reconstruction, metrics: the rest)
        estimate = max(probe_s * batch / 2, 1e-3)
        steps = max(1, min(steps, int((deadline - time.time()) / 3 / estimate) - 1))
    rows: list[dict] = []

    def mfu(flops_per_s: float) -> float:
        return flops_per_s / (peak * 1e12) if peak else math.nan

    def train_row(check: str, compile_: bool, processes: int = 1) -> Path:
        run = Path(tempfile.mkdtemp(prefix=f"{preset}-{check}-", dir=work))
        options = {"precision": "bf16", "channels_last": "on", "compile": compile_,
                   "workers": 0, "image_every": 0, "tensorboard": False}  # fmt: skip
        overrides = _overrides(spec, batch, 1 + steps, clips)
        started = time.time()
        _reset_peak(device)
        if processes == 1:
            # a speed and soundness check: pretrained features change no step's cost, so a
            # missing VGG19/HRNet/DINO/SAM file is replaced by random weights, not an error
            train(data, family, preset, overrides=overrides, out=run, device=args.device,
                  options=TrainOptions(**options), allow_random_weights=True)  # fmt: skip
            memory, kind = _peak_memory_mib(device)
        else:
            import torch.multiprocessing as mp

            mp.spawn(_ddp_worker, nprocs=processes, args=(_free_port(), str(data), spec, preset,
                     overrides, str(run), device.type, options, torch.get_num_threads()))  # fmt: skip
            memory = max(json.loads(p.read_text()) for p in run.glob("peak-*.json"))
            kind = "cuda max allocated, largest process" if device.type == "cuda" else (
                "process RSS peak, largest process")  # fmt: skip
        timing = _check_run(run, family, device)
        if check != "train":  # the train row's checkpoint is reconstructed, then removed
            shutil.rmtree(run)
        per_s = 1 / timing["seconds_per_step"]
        flops_per_s = flops_per_sample * batch * per_s
        rows.append({
            **common, "check": check, "status": "ok", "precision": "bf16",
            "channels_last": True, "compile": compile_, "processes": processes, "batch": batch,
            **timing, "steps_per_s": per_s, "samples_per_s": batch * per_s,
            "flops_per_item": flops_per_sample, "tflops_per_s": flops_per_s / 1e12,
            "mfu": mfu(flops_per_s), "peak_memory_mib": memory, "memory_kind": kind,
            "wall_s": time.time() - started, "note": peak_note,
        })  # fmt: skip
        return run

    def skipped(check: str, why: str) -> None:
        rows.append({**common, "check": check, "status": "skipped", "note": why})

    if args.part == "compile":
        train_row("compile", compile_=True)
        return rows
    if args.part == "ddp":
        if batch % 2:
            skipped("ddp", f"batch {batch} is not divisible by 2 processes")
        else:
            train_row("ddp", compile_=False, processes=2)
        return rows
    run = train_row("train", compile_=False)
    _log(f"{preset}: trained {steps + 1} steps")
    _log(f"{preset}: train rows done")
    # batched reconstruction of the test clips by the trained model, and the frame metrics
    model = to_inference_layout(load_animator(run / "model.pt", device)[0])
    shutil.rmtree(run)
    test = [
        torch.from_numpy(read_clip(c)).permute(0, 3, 1, 2).float().div(255).to(device)
        for c in list_clips(data / "test")
    ]
    frames = sum(len(c) for c in test)
    with torch.no_grad():
        one = test[0][:2]  # warm-up and FLOP count on 2 frames
        warm = lambda: list(drive_clips(model, [(0, one)]))  # noqa: E731
        recon_flops = count_flops(warm) / len(one) if count else math.nan
        warm()
        _reset_peak(device)
        started = time.perf_counter()
        predictions = [p for _, p in drive_clips(model, enumerate(test))]
        _sync(device)
        seconds = time.perf_counter() - started
    memory, kind = _peak_memory_mib(device)
    for clip, prediction in zip(test, predictions, strict=True):
        if prediction.shape != clip.shape:
            raise CheckFailed(f"{family}: prediction {tuple(prediction.shape)} for a clip "
                              f"{tuple(clip.shape)}")  # fmt: skip
        if prediction.device != clip.device:
            raise CheckFailed(f"{family}: prediction on {prediction.device}, clip on {clip.device}")
        _require_finite(family, "the reconstructions", prediction)
    recon = {**common, "status": "ok", "precision": "fp32", "channels_last": device.type == "cpu",
             "compile": False, "processes": 1, "batch": frames, "steps_timed": 1}  # fmt: skip
    rows.append({
        **recon, "check": "reconstruct", "seconds_per_step": seconds, "frames_per_s":
        frames / seconds, "flops_per_item": recon_flops, "tflops_per_s": recon_flops * frames
        / seconds / 1e12, "mfu": mfu(recon_flops * frames / seconds), "peak_memory_mib": memory,
        "memory_kind": kind, "wall_s": seconds, "note": peak_note,
    })  # fmt: skip

    _log(f"{preset}: reconstructed {frames} frames")
    started = time.perf_counter()
    scores: dict[str, list] = {"l1": []}
    for clip, prediction in zip(test, predictions, strict=True):
        scores["l1"].append((prediction - clip).abs().flatten(1).mean(1).cpu())
        for name, values in frame_metrics(prediction, clip).items():
            scores.setdefault(name, []).append(torch.as_tensor(values).cpu())
    _sync(device)
    seconds = time.perf_counter() - started
    means = {}
    note = lpips_note()
    for name, parts in scores.items():
        values = torch.cat([p.reshape(-1) for p in parts])
        if len(values) != frames:
            raise CheckFailed(f"{family}: {len(values)} {name} values for {frames} frames")
        if name != "lpips" or lpips_pretrained():  # offline LPIPS is NaN by design
            _require_finite(family, f"metric {name}", values)
        means[name] = float(values.mean())
    rows.append({
        **recon, "check": "metrics", "seconds_per_step": seconds, "frames_per_s":
        frames / seconds, "wall_s": seconds, **means, "note": f"LPIPS: {note}",
    })  # fmt: skip
    _log(f"{preset}: metrics done")
    return rows


def typed(table):
    """The rows in COLUMNS order with stable dtypes (text, nullable ints and booleans)."""
    table = table.reindex(columns=COLUMNS)
    for column in ("processes", "batch", "frame", "steps_timed"):
        table[column] = table[column].astype("Int64")
    for column in ("channels_last", "compile"):
        table[column] = table[column].astype("boolean")
    for column in table.columns:
        if column in ("preset", "family", "check", "status", "device", "precision",
                      "memory_kind", "note", "error", "torch"):  # fmt: skip
            table[column] = table[column].astype("string")
    return table


def _run_isolated(args: argparse.Namespace, preset: str, part: str, share: float,
                  timeout: float) -> list:  # fmt: skip
    """One preset's part in a fresh process: its rows; RuntimeError with the last line of its
    stderr when it fails, TimeoutError past `timeout` seconds."""
    command = [
        sys.executable, __file__, "--worker", "--preset", preset, "--part", part,
        "--device", args.device, "--batch", str(args.batch), "--steps", str(args.steps),
        "--seconds", str(share), "--flops", args.flops, "--clip-frames", str(args.clip_frames),
        "--workdir", args.workdir,
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.peak_tflops:
        command += ["--peak-tflops", str(args.peak_tflops)]
    if args.inject_nan:
        command += ["--inject-nan", args.inject_nan]
    env = {**os.environ, "ANIMBENCH_OFFLINE": os.environ.get("ANIMBENCH_OFFLINE", "1")}
    log = Path(args.workdir) / f"{preset}-{part}.log"  # the worker's stderr, kept
    if timeout <= 0:
        raise TimeoutError("not run: the time budget was spent")
    try:
        with log.open("w") as stderr:
            result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=stderr,
                                    text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"stopped after {timeout:.0f} s, at the time budget ({log})") from exc
    out = [line for line in result.stdout.splitlines() if line.startswith("GPU-CHECK-ROWS ")]
    if result.returncode or not out:
        lines = log.read_text().strip().splitlines() or [f"exit {result.returncode}"]
        raise RuntimeError(f"{lines[-1]} ({log})")
    return json.loads(out[-1].split(" ", 1)[1])


def _print_row(row: dict) -> None:
    name, check = row["preset"], row["check"]
    if row["status"] != "ok":
        print(f"{name:16s} {check:11s} {row['status']}: {row.get('note') or row.get('error')}",
              flush=True)  # fmt: skip
        return
    rate, unit = (row["steps_per_s"], "steps/s") if row.get("steps_per_s") else (
        row["frames_per_s"], "frames/s")  # fmt: skip
    print(f"{name:16s} {check:11s} {rate:8.3f} {unit:8s} MFU {row.get('mfu', math.nan):.3f}  "
          f"peak {row.get('peak_memory_mib', math.nan):8.0f} MiB", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--presets", nargs="+", help="default: the paper presets on CUDA, "
                        "the *-synthetic ones on a CPU")  # fmt: skip
    parser.add_argument("--batch", default="paper", help="'paper' or a number")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--budget-s", type=float, default=300, help="seconds for the whole run")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="the compile row (auto: on CUDA)")  # fmt: skip
    parser.add_argument("--ddp", choices=["auto", "on", "off"], default="auto",
                        help="the 2-process row (auto: with 2 GPUs)")  # fmt: skip
    parser.add_argument("--flops", choices=["auto", "on", "off"], default="auto",
                        help="count FLOPs for MFU (auto: on CUDA)")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak for MFU")
    parser.add_argument("--isolate", choices=["auto", "on", "off"], default="auto",
                        help="one process per preset (auto: on CUDA; on a CPU the presets share "
                        "one process, saving the imports, and RSS peaks accumulate)")  # fmt: skip
    parser.add_argument("--clip-frames", type=int, default=16, help="frames per test clip")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    parser.add_argument("--workdir", default="results/bench/gpu-work")
    parser.add_argument("--out", default="results/bench/gpu.parquet")
    parser.add_argument("--inject-nan", metavar="FAMILY", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=["core", "compile", "ddp"], help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        print("GPU-CHECK-ROWS " + json.dumps(worker(args)))
        return

    import pandas as pd
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda but torch sees no GPU")
    presets = args.presets or (PRESETS if cuda else SYNTHETIC)
    compile_ = args.compile == "on" or (args.compile == "auto" and cuda)
    ddp = args.ddp == "on" or (args.ddp == "auto" and cuda and torch.cuda.device_count() >= 2)
    isolate = args.isolate == "on" or (args.isolate == "auto" and cuda)
    if not isolate:
        os.environ.setdefault("ANIMBENCH_OFFLINE", "1")
        if args.inject_nan:
            _inject_nan(args.inject_nan)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    started = time.time()
    deadline = started + args.budget_s
    # the core checks of every preset first, with 60% of the budget when compile or ddp follow
    parts = [(p, "core") for p in presets]
    parts += [(p, "compile") for p in presets if compile_] + [(p, "ddp") for p in presets if ddp]
    core_deadline = started + args.budget_s * (0.6 if len(parts) > len(presets) else 1.0)
    rows, failures, failed = [], [], set()
    for preset in presets:
        for check, on, why in [("compile", compile_, "off (--compile, or a CPU)"),
                               ("ddp", ddp, "off (--ddp, or fewer than 2 GPUs)")]:  # fmt: skip
            if not on:
                rows.append({"preset": preset, "family": preset.split("-")[0], "check": check,
                             "status": "skipped", "note": why})  # fmt: skip
    for i, (preset, part) in enumerate(parts):
        family = preset.split("-")[0]
        now = time.time()
        if part == "core":
            share = (core_deadline - now) / sum(1 for _, q in parts[i:] if q == "core")
            # a core check may overrun its share, never the whole budget (plus a minute)
            timeout = max(deadline - now, share) + 60 if deadline > now else 0
        else:
            share, timeout = (deadline - now) / (len(parts) - i), deadline - now
            if preset in failed or share < 20:
                why = "its core checks failed" if preset in failed else (
                    "not enough of the time budget left")  # fmt: skip
                rows.append({"preset": preset, "family": family, "check": part,
                             "status": "skipped", "note": why})  # fmt: skip
                _print_row(rows[-1])
                continue
        try:
            if isolate:
                part_rows = _run_isolated(args, preset, part, share, timeout)
            else:
                part_args = {**vars(args), "preset": preset, "part": part, "seconds": share}
                part_rows = worker(argparse.Namespace(**part_args))
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then exit 1
            error = str(exc) if isolate else f"{type(exc).__name__}: {exc}"
            if part != "core" and isinstance(exc, TimeoutError):  # too slow is not wrong
                rows.append({"preset": preset, "family": family, "check": part,
                             "status": "skipped", "note": error})  # fmt: skip
                _print_row(rows[-1])
                continue
            failed.add(preset)
            failures.append(f"{preset} ({family}) {part}: {error}")
            print(f"FAILED {preset} ({family}) {part}: {error}", file=sys.stderr, flush=True)
            part_rows = [{"preset": preset, "family": family,
                          "check": "train" if part == "core" else part, "status": "failed",
                          "error": error, "wall_s": time.time() - now}]  # fmt: skip
        for row in part_rows:
            rows.append(row)
            _print_row(row)
    order = {check: i for i, check in enumerate(CHECKS)}
    rows.sort(key=lambda r: (presets.index(r["preset"]), order[r["check"]]))
    table = typed(pd.DataFrame(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    print(f"wrote {args.out}")
    if failures:
        print("GPU CHECK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
