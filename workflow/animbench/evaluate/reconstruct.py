"""Video reconstruction, the papers' evaluation protocol (DESIGN.md §4).

Source = frame 0 of each test clip, keypoints of the source computed once; every frame, frame 0
included, is driven with absolute motion. L1 is computed on float frames in [0, 1] before
quantisation; predictions are stored lossless (PNG folders), so detector metrics see exactly
what the model produced, up to 8-bit rounding.

Output folder:
    <clip>/0000000.png ...   predicted frames
    .frames/<clip>.parquet   per-frame L1 of a finished clip (lets an interrupted run resume)
    frames.parquet           video, frame, l1 for all clips (written last)
    reconstruct.json         method, checkpoint and its sha256, warnings, counts
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from animbench.data.video import clip_name, list_clips, read_clip, to_uint8, write_clip
from animbench.errors import ConfigError
from animbench.evaluate.metrics import write_parquet_atomic
from animbench.models.registry import build
from animbench.train import checkpoint as ckpt
from animbench.train.trainer import resolve_device


def load_animator(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Model of an animbench checkpoint, in eval mode."""
    payload = ckpt.load(path)
    model = build(payload["preset"])
    for name, net in model.networks.items():
        net.load_state_dict(payload["networks"][name])
    return model.to(device).eval(), payload


@torch.no_grad()
def drive_clip(model, frames: torch.Tensor, batch_frames: int = 16) -> torch.Tensor:
    """Reconstruct a clip [T, 3, H, W] from its frame 0, driving every frame (absolute motion)."""
    source = frames[:1]
    kp_source = model.detect(source)
    predictions = []
    for start in range(0, len(frames), batch_frames):
        driving = frames[start : start + batch_frames]
        n = len(driving)
        kp_driving = model.detect(driving)
        kp_src = {k: v.expand(n, *v.shape[1:]) for k, v in kp_source.items()}
        out = model.animate(source.expand(n, *source.shape[1:]), kp_src, kp_driving)
        predictions.append(out["prediction"])
    return torch.cat(predictions)


def reconstruct(
    data: str | Path,
    method: str,
    checkpoint: str | Path | None = None,
    out: str | Path = "reconstruction",
    device: str = "auto",
    batch_frames: int = 16,
) -> Path:
    """Reconstruct every clip of `<data>/test`; returns the path of frames.parquet."""
    out = Path(out)
    device = resolve_device(device)
    model, payload, checkpoint_sha = None, {}, None
    if method != "source-copy":
        if checkpoint is None:
            raise ConfigError(f"method '{method}' needs --checkpoint")
        model, payload = load_animator(checkpoint, device)
        checkpoint_sha = ckpt.sha256(checkpoint)
    clips = list_clips(Path(data) / "test")
    parts_dir = out / ".frames"
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for clip in tqdm(clips, desc=f"reconstruct {method}", unit="video"):
        name = clip_name(clip)
        part = parts_dir / f"{name}.parquet"
        if part.exists() and (out / name).is_dir():
            parts.append(pd.read_parquet(part))  # finished in an earlier, interrupted run
            continue
        gt = torch.from_numpy(read_clip(clip)).permute(0, 3, 1, 2).float().div(255.0)
        if model is None:
            prediction = gt[:1].expand_as(gt)  # the source-copy floor: every frame is frame 0
        else:
            prediction = drive_clip(model, gt.to(device), batch_frames).cpu()
        l1 = (prediction - gt).abs().flatten(1).mean(1).numpy()
        write_clip(out / name, to_uint8(prediction.permute(0, 2, 3, 1).numpy()))
        frame_rows = pd.DataFrame({"video": name, "frame": np.arange(len(l1)), "l1": l1})
        write_parquet_atomic(frame_rows, part)
        parts.append(frame_rows)
    frames = pd.concat(parts, ignore_index=True)
    summary = {
        "method": method,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": checkpoint_sha,
        "preset": payload.get("preset", {}).get("note"),
        "warnings": payload.get("warnings", []),
        "n_videos": len(clips),
        "n_frames": len(frames),
        "l1": float(frames["l1"].mean()),
    }
    (out / "reconstruct.json").write_text(json.dumps(summary, indent=2))
    return write_parquet_atomic(frames, out / "frames.parquet")
