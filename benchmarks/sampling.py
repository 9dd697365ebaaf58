"""Random training-pair throughput: whole-clip mp4 decoding (reference) vs frame folders.

The reference's FramesDataset reads an mp4 clip with `imageio.mimread`, converts the whole clip
to float32 and keeps two random frames, for every training sample. animbench trains from
folders of frames (PNG, or the smaller JPEG option), where a pair costs two image reads, and
from video files decodes only up to the later of the two frames. This benchmark generates
procedural clips (moving shapes over a panning textured background with sensor noise, so the
codecs have realistic work), stores them three ways and measures pairs/s for each way, single
process, no augmentation (a last row adds the fomm-vox256 augmentation to the JPEG case to
show its cost). Writes results/bench/sampling.parquet.

    python benchmarks/sampling.py                       # 8 clips x 300 frames, 256x256
    python benchmarks/sampling.py --clips 4 --frames 150 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio
import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pandas as pd
import torch

from animbench.data import video
from animbench.data.datasets import FramePairs
from animbench.data.video import write_clip
from animbench.models.registry import get_preset


def procedural_clip(num_frames: int, size: int, seed: int) -> np.ndarray:
    """uint8 [T, S, S, 3]: moving ellipses over a panning texture, plus per-frame noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # a texture twice the frame size, smoothed noise plus a colour gradient; the camera pans
    texture = rng.random((2 * size, 2 * size, 3)).astype(np.float32)
    for _ in range(3):  # cheap blur: the texture should be compressible, not white noise
        texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) / 3
    texture = 0.35 + 0.4 * (texture - texture.mean()) * 4
    gradient = np.stack([xx, yy, 1 - xx], -1) * 0.3
    shapes = [
        {
            "centre": rng.random(2),
            "velocity": (rng.random(2) - 0.5) * 0.02,
            "radii": 0.05 + 0.12 * rng.random(2),
            "colour": rng.random(3),
        }
        for _ in range(5)
    ]
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        dy, dx = int(t * 0.7) % size, int(t * 0.4) % size
        frame = texture[dy : dy + size, dx : dx + size] + gradient
        for shape in shapes:
            cy, cx = (shape["centre"] + t * shape["velocity"]) % 1.0
            ry, rx = shape["radii"]
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            frame[inside] = shape["colour"]
        frame = frame + rng.normal(0, 0.012, frame.shape).astype(np.float32)
        frames[t] = np.clip(frame * 255, 0, 255).astype(np.uint8)
    return frames


def build_storage(workdir: Path, clips: int, frames: int, size: int) -> dict[str, Path]:
    """The same clips as mp4 files, PNG folders and JPEG folders; reused when present."""
    roots = {name: workdir / f"{name}-{clips}x{frames}x{size}" for name in ("mp4", "png", "jpeg")}
    for index in range(clips):
        name = f"id{index:02d}#clip#000000#{frames:06d}"
        mp4 = roots["mp4"] / "train" / f"{name}.mp4"
        png = roots["png"] / "train" / name
        jpeg = roots["jpeg"] / "train" / name
        if mp4.exists() and png.exists() and jpeg.exists():
            continue
        content = procedural_clip(frames, size, seed=index)
        mp4.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(mp4, content, fps=25, codec="libx264")  # imageio's default quality (5)
        write_clip(png, content)
        write_clip(jpeg, content, image_format="jpeg")
    return roots


def bytes_per_clip(root: Path) -> float:
    files = [p for p in (root / "train").rglob("*") if p.is_file()]
    clips = len(list((root / "train").iterdir()))
    return sum(p.stat().st_size for p in files) / clips


def reference_sampler(root: Path) -> Callable[[int], dict[str, torch.Tensor]]:
    """The reference's FramesDataset on mp4 clips: mimread, whole clip to float32, 2 frames."""
    paths = sorted((root / "train").glob("*.mp4"))

    def sample(index: int) -> dict[str, torch.Tensor]:
        path = paths[index % len(paths)]
        clip = np.array(imageio.v2.mimread(path, memtest=False))
        clip = clip.astype(np.float32) / 255  # img_as_float32 of the whole clip
        pair = clip[np.sort(np.random.choice(len(clip), replace=True, size=2))]
        return {
            "source": torch.from_numpy(pair[0].transpose(2, 0, 1).copy()),
            "driving": torch.from_numpy(pair[1].transpose(2, 0, 1).copy()),
        }

    return sample


def frame_pairs_sampler(
    root: Path, augmentation: dict | None = None
) -> Callable[[int], dict[str, torch.Tensor]]:
    pairs = FramePairs(root, augmentation_params=augmentation or {})
    for clip in pairs.clips:  # frame counts are cached once per clip (per worker) in training
        pairs._length(clip)
    return pairs.__getitem__


def measure(sample: Callable[[int], object], seconds: float, min_samples: int) -> tuple[int, float]:
    """Samples until both the time budget and the minimum count are reached; (n, seconds)."""
    sample(0)  # warm-up: imports, first decoder start
    n, start = 0, time.perf_counter()
    while n < min_samples or time.perf_counter() - start < seconds:
        sample(n)
        n += 1
    return n, time.perf_counter() - start


def host_info() -> dict[str, object]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host_cpu": model,
        "host_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "imageio": imageio.__version__,
        "ffmpeg": imageio_ffmpeg.get_ffmpeg_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per method")
    parser.add_argument("--min-video", type=int, default=30, help="min samples, mp4 methods")
    parser.add_argument("--min-folder", type=int, default=300, help="min samples, folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the clips go (kept); default a temp folder")
    parser.add_argument("--out", default="results/bench/sampling.parquet")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a single data-loading process, as one DataLoader worker

    with tempfile.TemporaryDirectory(prefix="animbench-sampling-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        start = time.perf_counter()
        roots = build_storage(workdir, args.clips, args.frames, args.size)
        print(f"clips ready in {time.perf_counter() - start:.1f} s under {workdir}")
        vox = get_preset("fomm-vox256")["dataset_params"]["augmentation_params"]

        def augmented(root: Path) -> Callable[[int], dict[str, torch.Tensor]]:
            return frame_pairs_sampler(root, vox)

        methods = [
            ("reference: mimread whole mp4", "mp4", reference_sampler, args.min_video),
            ("animbench FramePairs", "png", frame_pairs_sampler, args.min_folder),
            ("animbench FramePairs", "jpeg", frame_pairs_sampler, args.min_folder),
            ("animbench FramePairs (decode to last index)", "mp4", frame_pairs_sampler, 30),
            # not part of the comparison: what the vox preset's augmentation adds per pair
            ("animbench FramePairs + fomm-vox256 augmentation", "jpeg", augmented, 100),
        ]
        records = []
        host = host_info()
        for method, storage, make, min_samples in methods:
            np.random.seed(args.seed)
            video._VIDEO_INFO.clear()
            setup = time.perf_counter()
            sample = make(roots[storage])
            setup = time.perf_counter() - setup
            n, seconds = measure(sample, args.seconds, min_samples)
            records.append(
                {
                    "method": method,
                    "storage": storage,
                    "pairs_per_s": n / seconds,
                    "ms_per_pair": 1000 * seconds / n,
                    "n": n,
                    "setup_s": setup,  # FramePairs: listing clips + counting frames once
                    "clips": args.clips,
                    "frames_per_clip": args.frames,
                    "resolution": args.size,
                    "bytes_on_disk_per_clip": bytes_per_clip(roots[storage]),
                    **host,
                }
            )
    table = pd.DataFrame(records)
    table["ratio_vs_reference"] = table.pairs_per_s / table.pairs_per_s.iloc[0]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(
            table[
                [
                    "method",
                    "storage",
                    "pairs_per_s",
                    "ms_per_pair",
                    "n",
                    "ratio_vs_reference",
                    "bytes_on_disk_per_clip",
                ]
            ].to_string(index=False, float_format=lambda v: f"{v:.4g}")
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
