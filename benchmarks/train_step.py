"""Training steps per second and peak memory of every model at its paper configuration,
through the real trainer (data loading, forward, backward, optimiser steps).

Each (preset, variant) runs in a fresh process, so peak memory is its own: the resident set's
peak on CPU (ru_maxrss, the process as a whole), torch's peak allocation on CUDA. The first
step is a warm-up and not timed. Variants are the trainer's options:

    fp32        fp32, NCHW: the reference implementations' numerics and layout (the baseline)
    fp32-cl     fp32 + channels_last (the CPU default)
    bf16        bf16 autocast (the default on a CUDA GPU with bf16 support)
    bf16-cl     bf16 autocast + channels_last (the CUDA default)
    compile     bf16-cl + torch.compile

    python benchmarks/train_step.py                          # every model, paper batch
    python benchmarks/train_step.py --batch 2 --steps 2      # CPU-sized
    python benchmarks/train_step.py --presets fomm-vox256 --variants fp32 bf16-cl compile
    python benchmarks/train_step.py --presets fomm-synthetic fomm-synthetic-body \
        --variants fp32 fp32-cl --steps 10 --threads 1     # the CI benchmark's jobs

Writes results/bench/train.parquet (one row per preset and variant).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

PRESETS = ["fomm-vox256", "mraa-vox256", "mtia-vox256", "tpsmm-vox256", "cpabmm-vox256"]
VARIANTS = {
    "fp32": {"precision": "fp32", "channels_last": "off"},
    "fp32-cl": {"precision": "fp32", "channels_last": "on"},
    "bf16": {"precision": "bf16", "channels_last": "off"},
    "bf16-cl": {"precision": "bf16", "channels_last": "on"},
    "compile": {"precision": "bf16", "channels_last": "on", "compile": True},
}


def _dataset(root: Path, size: int, clips: int) -> Path:
    """Moving-square clips at the preset's frame size (content does not change the cost)."""
    from animbench.data.synthetic import make_dataset

    return make_dataset("face", root, num_train=clips, num_test=1, frames=8, size=size,
                        progress=False)  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    import torch

    from animbench.models.registry import get_preset
    from animbench.train.trainer import TrainOptions, train

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_preset(args.preset)
    batch = spec["train_params"]["batch_size"] if args.batch == "paper" else int(args.batch)
    size = spec["dataset_params"]["frame_shape"][0]
    clips = max(batch, 4)
    data = _dataset(Path(args.workdir) / f"data{size}-{clips}", size, clips=clips)
    steps = 1 + args.steps  # the first is the warm-up
    overrides = {
        "train_params": {
            "batch_size": batch,
            "num_repeats": -(-steps * batch // max(batch, 4)),
            "num_epochs": 1,
            "max_steps": steps,
            "checkpoint_freq": 1000,
        },
        "dataset_params": {"id_sampling": False},
    }
    if spec.get("train_avd_params"):
        overrides["train_avd_params"] = {"max_steps": 1, "num_epochs": 1, "batch_size": batch}
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(dir=args.workdir) as out:
        train(
            data,
            spec["model"],
            args.preset,
            overrides=overrides,
            out=out,
            device=args.device,
            options=TrainOptions(
                **VARIANTS[args.variant], workers=0, image_every=0, tensorboard=False
            ),
            allow_random_weights=True,  # the cost of a step does not depend on the weights
        )
        log = pd.read_csv(Path(out) / "log.csv")
    seconds = log["seconds"].diff().iloc[1:]  # per step, warm-up excluded
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    print(
        json.dumps(
            {
                "preset": args.preset,
                "model": spec["model"],
                "variant": args.variant,
                "batch": batch,
                "paper_batch": spec["train_params"]["batch_size"],
                "frame": size,
                "steps_timed": len(seconds),
                "seconds_per_step": float(seconds.mean()),
                "steps_per_s": float(1 / seconds.mean()),
                "samples_per_s": float(batch / seconds.mean()),
                "peak_memory_mib": round(peak, 1),
                "memory_kind": "cuda max allocated"
                if device.type == "cuda"
                else "process RSS peak",
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS))
    parser.add_argument("--batch", default="paper", help="'paper' or a number")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument("--workdir", default="results/bench/train-work")
    parser.add_argument("--out", default="results/bench/train.parquet")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        worker(args)
        return
    variants = args.variants or (
        ["fp32", "bf16", "bf16-cl", "compile"]
        if args.device == "cuda"
        else ["fp32", "fp32-cl", "bf16"]
    )
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ANIMBENCH_OFFLINE": os.environ.get("ANIMBENCH_OFFLINE", "1")}
    rows = []
    for preset in args.presets:
        for variant in variants:
            command = [
                sys.executable, __file__, "--worker", "--preset", preset, "--variant", variant,
                "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device,
                "--workdir", args.workdir,
            ] + (["--threads", str(args.threads)] if args.threads else [])  # fmt: skip
            started = time.time()
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode:
                error = (result.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{preset:16s} {variant:8s} FAILED: {error}")
                rows.append({"preset": preset, "variant": variant, "error": error})
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row["wall_s"] = round(time.time() - started, 1)
            rows.append(row)
            print(
                f"{preset:16s} {variant:8s} batch {row['batch']:3d}: "
                f"{row['steps_per_s']:.3f} steps/s, {row['samples_per_s']:.2f} samples/s, "
                f"peak {row['peak_memory_mib']:.0f} MiB"
            )
    table = pd.DataFrame(rows)
    if "steps_per_s" in table:
        baseline = table[table.variant == "fp32"].set_index("preset")["steps_per_s"]
        table["speedup_vs_fp32"] = table["steps_per_s"] / table["preset"].map(baseline)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
