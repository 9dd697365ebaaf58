"""CPABMM's per-sample motion cost: CPAB fit + grid warp versus a TPS fit + warp of the same grid.

CPABMM's dense motion network fits, in every forward pass, 10 local CPAB transforms (4×4
tessellation, θ dim 58, 5 keypoints each, Adam for 100 iterations) and 1 global one (6×6, θ dim
130, all 50 keypoints, 150 iterations), then warps the 64×64 grid (the 256² frame at the 0.25
scale) with each. TPSMM solves one small linear system per transform instead. This benchmark
times both for one batch of random keypoint pairs, on the same grid, in the same run, with
animbench.models.cpab (pure PyTorch, closed-form flow) and animbench.models.tpsmm.TPS ('kp'
mode; the 11th, global TPS on all 50 keypoints is added so both sides warp 11 transforms).
Writes results/bench/cpab_warp.parquet and prints the CPAB / TPS time ratio.

    python benchmarks/cpab_warp.py                          # batch 16, CPU, 1 thread
    python benchmarks/cpab_warp.py --batch 4 --local-iterations 20 --global-iterations 30
    python benchmarks/cpab_warp.py --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from animbench.models.cpab import CPAB
from animbench.models.tpsmm import TPS


def host_info(device: torch.device) -> dict[str, object]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return {
        "device": device.type,
        "gpu": gpu,
        "host_cpu": model,
        "host_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def keypoint_pairs(batch: int, groups: int, device: torch.device, seed: int):
    """Source keypoints in [-0.8, 0.8] and driving keypoints moved by a smooth random field."""
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, groups * 5, 2, generator=g) * 1.6 - 0.8
    # a low-frequency displacement (plus a little per-point noise), about 0.05 in [-1, 1] units
    phase = torch.rand(batch, 1, 2, generator=g) * 6.28
    driving = source + 0.05 * torch.sin(3 * source.flip(-1) + phase)
    driving = driving + 0.01 * torch.randn(driving.shape, generator=g)
    return source.to(device), driving.to(device)


def run_cpab(args, source, driving, device):
    local, global_ = CPAB(4).to(device), CPAB(6).to(device)
    b, k = source.shape[0], args.groups
    kp_s, kp_d = source.view(b * k, 5, 2), driving.view(b * k, 5, 2)
    local.fit_theta(kp_d[:1], kp_s[:1], 2)  # warm-up: the first Adam step imports lazily (~2 s)
    theta_l, fit_l = timed(lambda: local.fit_theta(kp_d, kp_s, args.local_iterations), device)
    theta_g, fit_g = timed(
        lambda: global_.fit_theta(driving, source, args.global_iterations), device
    )
    with torch.no_grad():
        grid_l, warp_l = timed(lambda: local.warp_grid(theta_l, args.size, args.size), device)
        grid_g, warp_g = timed(lambda: global_.warp_grid(theta_g, args.size, args.size), device)
        res_l = (2 * local.transform((kp_d + 1) / 2, theta_l) - 1 - kp_s).norm(dim=-1)
        res_g = (2 * global_.transform((driving + 1) / 2, theta_g) - 1 - source).norm(dim=-1)
    assert grid_l.shape == (b * k, args.size, args.size, 2) and grid_g.shape[0] == b
    rows = [
        ("cpab", "fit local 4x4", fit_l, b * k, args.local_iterations, res_l),
        ("cpab", "fit global 6x6", fit_g, b, args.global_iterations, res_g),
        ("cpab", "warp local 4x4", warp_l, b * k, 0, None),
        ("cpab", "warp global 6x6", warp_g, b, 0, None),
    ]
    return rows


def run_tps(args, source, driving, device):
    b, k = source.shape[0], args.groups

    def tps_once():
        local = TPS.from_keypoints(driving.view(b, k, 5, 2), source.view(b, k, 5, 2))
        grids = local.grid((args.size, args.size), device)
        whole = TPS.from_keypoints(driving.view(b, 1, -1, 2), source.view(b, 1, -1, 2))
        return grids, whole.grid((args.size, args.size), device)

    tps_once()  # warm-up
    times = []
    for _ in range(args.tps_repeats):
        (grids, whole), seconds = timed(tps_once, device)
        times.append(seconds)
    assert grids.shape == (b, k, args.size, args.size, 2) and whole.shape[1] == 1
    seconds = sorted(times)[len(times) // 2]  # median
    return [("tps", "fit + warp, 10 local + 1 global", seconds, b * (k + 1), 0, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--groups", type=int, default=10, help="local transforms, 5 kps each")
    parser.add_argument("--size", type=int, default=64, help="grid side (256 × 0.25 in CPABMM)")
    parser.add_argument("--local-iterations", type=int, default=100)
    parser.add_argument("--global-iterations", type=int, default=150)
    parser.add_argument("--tps-repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench/cpab_warp.parquet")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    source, driving = keypoint_pairs(args.batch, args.groups, device, args.seed)

    rows = run_tps(args, source, driving, device) + run_cpab(args, source, driving, device)
    host = host_info(device)
    records = []
    for method, part, seconds, transforms, iterations, residual in rows:
        records.append(
            {
                "method": method,
                "part": part,
                "seconds": seconds,
                "transforms": transforms,
                "adam_iterations": iterations,
                "residual_mean": float(residual.mean()) if residual is not None else float("nan"),
                "residual_max": float(residual.max()) if residual is not None else float("nan"),
                "batch": args.batch,
                "grid": args.size,
                **host,
            }
        )
    table = pd.DataFrame(records)
    tps_seconds = table.loc[table.method == "tps", "seconds"].sum()
    cpab_seconds = table.loc[table.method == "cpab", "seconds"].sum()
    total = {**records[-1], "method": "cpab", "part": "total", "seconds": cpab_seconds}
    total.update(transforms=args.batch * (args.groups + 1), adam_iterations=0)
    total.update(residual_mean=float("nan"), residual_max=float("nan"))
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table["ratio_vs_tps"] = table.seconds / tps_seconds
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(
            table[
                [
                    "method",
                    "part",
                    "seconds",
                    "transforms",
                    "adam_iterations",
                    "residual_mean",
                    "residual_max",
                    "ratio_vs_tps",
                ]
            ].to_string(index=False)
        )
    print(
        f"CPAB (fit + warp) / TPS (fit + warp): {cpab_seconds / tps_seconds:.0f}x "
        f"({cpab_seconds:.2f} s vs {tps_seconds * 1000:.1f} ms, {args.device}, "
        f"{torch.get_num_threads()} thread(s))"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
