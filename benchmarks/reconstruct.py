"""Reconstruction frames per second (and, with --memory, peak memory): one frame at a time
against batched over frames and clips, on the same checkpoint and the same synthetic test clips.

    reference     one frame at a time: the model's forward on (source, frame), a batch of 1,
                  NCHW; the source is re-fed, and its keypoints re-detected, every frame
    per-frame     the authors' reconstruction loop: per clip, the source keypoints once, then
                  per frame the driving keypoints and the generator on a batch of 1, NCHW
    batched-nhwc  `drive_clips`, frames of consecutive clips in batches of `--batch`, each
                  paired with its own clip's source, the model channels_last (NHWC)
    batched-nchw  the same batches in NCHW

The `chosen` column marks the mode and batch `animbench reconstruct` runs with on this device
(`inference_plan`; its batch is always measured). Only the model is timed: clips are decoded
into memory before the clock starts and predictions are not written. Each mode runs once
untimed on one clip (warm-up), then the modes alternate `--repeats` times and each keeps its
fastest pass, so load from other processes on a shared machine penalises none. Outputs are
checked against the reference's (max_abs_diff; against per-frame's without the reference).

--memory also runs each mode once in a child process of its own (the checkpoint loaded, the
clips decoded, one pass) and records its peak resident memory (peak_rss_gb; on a GPU also
peak_cuda_gb): the same fixed part (interpreter, torch, one model, the clips) in every mode.

    python benchmarks/reconstruct.py                           # random fomm-synthetic, 64×64
    python benchmarks/reconstruct.py --preset tpsmm-synthetic --batch 4 16 32
    python benchmarks/reconstruct.py --preset fomm-vox256 --clips 2 --frames 16 \
        --batch 4 16 32 --modes per-frame batched-nhwc batched-nchw --memory   # the paper's size
    python benchmarks/reconstruct.py --checkpoint results/models/x/model.pt

Writes results/bench/reconstruct.parquet (one row per mode and batch size).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from animbench import checkpoint as ckpt
from animbench.data.synthetic import make_dataset
from animbench.data.video import list_clips, read_clip
from animbench.evaluate.reconstruct import (
    drive_clips,
    inference_plan,
    load_animator,
    to_inference_layout,
)
from animbench.models.import_checkpoint import save_untrained

MODES = ("reference", "per-frame", "batched-nhwc", "batched-nchw")


@torch.no_grad()
def reference(model: torch.nn.Module, clips: list[torch.Tensor]) -> list[torch.Tensor]:
    """One frame at a time, the whole model per frame."""
    return [
        torch.cat([model(frames[:1], frames[t : t + 1])["prediction"] for t in range(len(frames))])
        for frames in clips
    ]


@torch.no_grad()
def per_frame(model: torch.nn.Module, clips: list[torch.Tensor]) -> list[torch.Tensor]:
    """One frame at a time, the source keypoints once per clip: the authors' reconstruction.py."""
    predictions = []
    for frames in clips:
        source = frames[:1]
        kp_source = model.detect(source)
        predictions.append(
            torch.cat(
                [
                    model.animate(source, kp_source, model.detect(frames[t : t + 1]))["prediction"]
                    for t in range(len(frames))
                ]
            )
        )
    return predictions


def batched(model: torch.nn.Module, clips: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    return [prediction for _, prediction in drive_clips(model, enumerate(clips), batch)]


def timed(run: Callable[[], list[torch.Tensor]], device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, out


def _mode(model, mode: str, batch: int) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """The run of `mode` at `batch` on `model` (loaded NCHW; converted for batched-nhwc)."""
    if mode == "reference":
        return lambda inputs: reference(model, inputs)
    if mode == "per-frame":
        return lambda inputs: per_frame(model, inputs)
    if mode == "batched-nhwc":
        to_inference_layout(model, channels_last=True)
    return lambda inputs: batched(model, inputs, batch)


def _clips(data: Path, device: torch.device) -> list[torch.Tensor]:
    return [
        torch.from_numpy(read_clip(clip)).permute(0, 3, 1, 2).float().div(255).to(device)
        for clip in list_clips(data / "test")
    ]


def _peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss over fork and exec, so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _child(args: argparse.Namespace) -> None:
    """One pass of one mode, then its peak memory as a JSON line (for --memory)."""
    mode, batch = args.child[0], int(args.child[1])
    device = torch.device(args.device)
    model = load_animator(args.checkpoint, device)[0]
    run = _mode(model, mode, batch)
    clips = _clips(args.data, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run(clips)
    peak = {"peak_rss_gb": _peak_rss_bytes() / 1e9}
    if device.type == "cuda":
        peak["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    print("PEAK " + json.dumps(peak))


def _peak_memory(args, path: Path, data: Path, mode: str, batch: int) -> dict[str, float]:
    command = [
        sys.executable, __file__, "--checkpoint", str(path), "--data", str(data),
        "--device", args.device, "--threads", str(args.threads), "--child", mode, str(batch),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("PEAK ")]
    return json.loads(line[5:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="fomm-synthetic", help="randomly initialised model")
    parser.add_argument("--checkpoint", type=Path, help="an animbench checkpoint instead")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[], help="batches (and always the chosen one)"
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--memory", action="store_true", help="peak memory of each mode")
    parser.add_argument("--clips", type=int, default=6, help="synthetic face test clips")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--size", type=int, help="frame size (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per mode")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=Path("results/bench/reconstruct-work"))
    parser.add_argument("--out", type=Path, default=Path("results/bench/reconstruct.parquet"))
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)  # for --child
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # MODE BATCH (--memory)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return _child(args)
    device = torch.device(args.device)

    path = args.checkpoint or save_untrained(
        args.preset, args.workdir / f"{args.preset}-random.pt", "benchmark"
    )
    payload = ckpt.load(path)
    preset = payload["preset"]
    size = args.size or preset["dataset_params"]["frame_shape"][0]
    data = args.workdir / f"face-{args.clips}x{args.frames}-{size}"
    make_dataset(
        "face", data, num_train=1, num_test=args.clips, frames=args.frames, size=size,
        progress=False,
    )  # fmt: skip
    clips = _clips(data, device)
    frames = sum(len(c) for c in clips)
    plan = inference_plan(load_animator(path, device)[0], device, size)
    chosen = ("batched-nhwc" if plan.channels_last else "batched-nchw", plan.batch_frames)
    name = args.preset if args.checkpoint is None else str(args.checkpoint)
    print(
        f"{name} ({preset['model']}), {len(clips)} clips × {args.frames} frames at {size}², "
        f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}\n"
        f"plan: {plan.reason}"
    )

    batches = sorted({*args.batch, plan.batch_frames})
    modes: dict[tuple[str, int], Callable[[list[torch.Tensor]], list[torch.Tensor]]] = {}
    for mode in args.modes:
        for batch in batches if mode.startswith("batched") else [1]:
            modes[mode, batch] = _mode(load_animator(path, device)[0], mode, batch)
    for run in modes.values():  # warm-up on one clip: allocator, kernel selection
        run(clips[:1])
    best: dict[tuple[str, int], float] = {}
    outputs: dict[tuple[str, int], list[torch.Tensor]] = {}
    for _ in range(args.repeats):
        for key, run in modes.items():
            seconds, outputs[key] = timed(lambda run=run: run(clips), device)
            best[key] = min(seconds, best.get(key, float("inf")))
    baseline = ("reference", 1) if ("reference", 1) in best else next(iter(best))
    per_frame_key = ("per-frame", 1)

    rows = []
    for (mode, batch), seconds in best.items():
        diff = max(
            (a - b).abs().max().item()
            for a, b in zip(outputs[mode, batch], outputs[baseline], strict=True)
        )
        fps = frames / seconds
        row = {
            "preset": name,
            "model": preset["model"],
            "mode": mode,
            "batch": batch,
            "chosen": (mode, batch) == chosen,
            "frames": frames,
            "size": size,
            "seconds": seconds,
            "fps": fps,
            "speedup": fps * best[baseline] / frames,
            "vs_per_frame": fps * best[per_frame_key] / frames if per_frame_key in best else None,
            "max_abs_diff": diff,
            "diff_against": baseline[0],
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "torch": torch.__version__,
            "plan": plan.reason,
        }
        memory = ""
        if args.memory:
            row.update(_peak_memory(args, path, data, mode, batch))
            memory = f", peak RSS {row['peak_rss_gb']:.2f} GB"
        rows.append(row)
        ratio = ""
        if row["vs_per_frame"] is not None and baseline != per_frame_key:
            ratio = f", {row['vs_per_frame']:.2f}× per-frame"
        print(
            f"{mode:12s} batch {batch:3d}{' *' if row['chosen'] else '  '}: "
            f"{fps:8.2f} frames/s ({seconds:6.2f} s for {frames}), "
            f"{row['speedup']:5.2f}× {baseline[0]}{ratio}, max |Δ| {diff:.1e}{memory}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(args.out, index=False)
    print(f"wrote {args.out} (* the batch and layout animbench reconstruct chooses here)")


if __name__ == "__main__":
    main()
