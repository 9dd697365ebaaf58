"""Video reconstruction, the papers' evaluation protocol (DESIGN.md §4).

Source = frame 0 of each test clip, keypoints of the source computed once; every frame, frame 0
included, is driven with absolute motion. L1 is computed on float frames in [0, 1] before
quantisation; predictions are stored lossless (PNG folders), so detector metrics see exactly
what the model produced, up to 8-bit quantisation. That quantisation truncates by default, as
the authors' reconstruction saves `(255 * prediction).astype(np.uint8)`, so the detector
metrics (AKD, AED, MKR) see the frames theirs saw; `quantisation="round"` rounds instead.

The model runs batched over frames and clips: frames of consecutive clips fill batches of
`batch_frames` (chosen per model and device by `inference_plan`, or `--batch-frames`), each
frame paired with its own clip's source and source keypoints, so short clips still fill a
batch. The networks are in eval mode (BatchNorm uses its running statistics), so a
frame's output does not depend on its batch, up to float rounding (CPABMM, whose CPAB fit couples
a batch, animates frame by frame: `frames_are_independent`). `benchmarks/reconstruct.py`
measures the speed and peak memory against driving one frame at a time.

Output folder:
    <clip>/0000000.png ...   predicted frames
    .frames/<clip>.parquet   per-frame L1 of a finished clip (lets an interrupted run resume)
    .frames/record.json      method, checkpoint sha256 and quantisation the finished clips came
                             from: a run with another checkpoint or quantisation redoes them all
    frames.parquet           video, frame, l1, psnr, ssim, lpips for all clips (written last)
    reconstruct.json         method, checkpoint and its sha256, warnings, counts, quantisation,
                             and the batch_frames, channels_last and batch_reason it ran with
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from animbench import checkpoint as ckpt
from animbench.data.video import (
    QUANTISATIONS,
    clip_name,
    list_clips,
    read_clip,
    to_uint8,
    write_clip,
)
from animbench.device import prefers_channels_last, resolve_device
from animbench.errors import ConfigError
from animbench.evaluate.image_metrics import FRAME_METRICS, frame_metrics, lpips_note
from animbench.files import write_parquet_atomic
from animbench.models.registry import build

# `drive_clips`'s default frames per forward pass; `reconstruct` picks its batch per model and
# device instead (`inference_plan`).
BATCH_FRAMES = 32
# On a CPU, measured at the paper configuration (FOMM vox-256, 2 clips × 16 frames, 2 threads,
# benchmarks/reconstruct.py): batch 4 runs 1.21× the authors' frame-at-a-time loop at 2.3 GB
# peak against 1.9 GB; batch 16 1.11× at 3.5 GB, batch 32 0.95× at 5.1 GB (page faults and
# system time grow with the batch).
CPU_BATCH_FRAMES = 4
# On a GPU: at most this many frames a pass, and at most this share of the free memory.
MAX_BATCH_FRAMES = 64
GPU_MEMORY_SHARE = 0.5

Key = TypeVar("Key", bound=Hashable)
T = TypeVar("T")


def load_animator(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Model of an animbench checkpoint, in eval mode."""
    payload = ckpt.load(path)
    model = build(payload["preset"])
    for name, net in model.networks.items():
        net.load_state_dict(payload["networks"][name])
    return model.to(device).eval(), payload


def _channels_last_input(module: torch.nn.Module, args: tuple) -> tuple | None:
    x = args[0]
    if x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def to_inference_layout(
    model: torch.nn.Module, channels_last: bool | None = None
) -> torch.nn.Module:
    """`model`, in place, in the memory layout reconstruction runs fastest in: channels_last
    (NHWC) where `channels_last`, by default where `prefers_channels_last` (a CPU, no instance
    norms): oneDNN's convolutions run up to 1.5× faster in it; unchanged otherwise. The layout
    changes the outputs by float rounding only.

    Weights alone are not enough: tensors built by grid_sample, cat or reshapes come out NCHW,
    and a convolution keeps its input's layout, so whole sub-networks (TPSMM's dense motion
    network) would run NCHW against NHWC weights, converting both every call, and CPU nearest
    upsampling is ~8× slower on NCHW. Each convolution's input is therefore made NHWC."""
    if channels_last is None:
        channels_last = prefers_channels_last(model, next(model.parameters()).device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.register_forward_pre_hook(_channels_last_input)
    return model


class InferencePlan(NamedTuple):
    """How `reconstruct` runs a model on a device: frames per pass, layout, and why."""

    batch_frames: int
    channels_last: bool
    reason: str


def _probe_frame_bytes(model: torch.nn.Module, device: torch.device, size: int) -> float:
    """Peak CUDA memory of driving 2 frames of `size`², per frame; the fixed part (source
    features, workspace) is counted in, so it overestimates a frame at larger batches."""
    frames = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    list(drive_clips(model, [(0, frames.to(device))], batch_frames=2))
    torch.cuda.synchronize(device)
    return max(torch.cuda.max_memory_allocated(device) - base, 1) / 2


def cuda_batch_frames(free_bytes: float, frame_bytes: float) -> int:
    """Frames a pass on a GPU: `GPU_MEMORY_SHARE` of the free memory over a frame's peak
    memory, from 1 to `MAX_BATCH_FRAMES`."""
    return int(min(MAX_BATCH_FRAMES, max(1, GPU_MEMORY_SHARE * free_bytes // frame_bytes)))


def inference_plan(
    model: torch.nn.Module,
    device: torch.device | str,
    frame_size: int = 256,
    batch_frames: int | None = None,
) -> InferencePlan:
    """Batch and layout for reconstructing with `model` (on `device`, in eval mode), chosen
    so that reconstruction is never slower than, and needs little more memory than, the
    authors' frame-at-a-time loop (benchmarks/reconstruct.py, README "Reconstruction speed"):

    - a CPU: `CPU_BATCH_FRAMES` frames; channels_last unless the model has instance norms
      (`prefers_channels_last`). Larger batches are slower there, and peak memory grows by
      ~100 MB a frame at 256² (FOMM);
    - a GPU: as many frames as half the free memory holds (`torch.cuda.mem_get_info`, plus
      torch's cached blocks) at a frame's peak memory, probed on 2 frames of `frame_size`²,
      up to `MAX_BATCH_FRAMES`; NCHW;
    - other devices: `CPU_BATCH_FRAMES`, NCHW.

    `batch_frames` overrides the batch (`animbench reconstruct --batch-frames`)."""
    device = torch.device(device)
    channels_last = prefers_channels_last(model, device)
    layout = "channels_last" if channels_last else "NCHW"
    if batch_frames is not None:
        if batch_frames < 1:
            raise ConfigError(f"--batch-frames must be at least 1, got {batch_frames}")
        return InferencePlan(
            batch_frames, channels_last, f"--batch-frames {batch_frames}; {layout}"
        )
    if device.type == "cuda":
        frame_bytes = _probe_frame_bytes(model, device, frame_size)
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        batch = cuda_batch_frames(free, frame_bytes)
        reason = (
            f"cuda: {GPU_MEMORY_SHARE:.0%} of {free / 2**30:.1f} GiB free at "
            f"{frame_bytes / 2**20:.0f} MiB a {frame_size}² frame (probed), "
            f"at most {MAX_BATCH_FRAMES}; {layout}"
        )
        return InferencePlan(batch, channels_last, reason)
    if device.type == "cpu":
        why = "no instance norms" if channels_last else "instance norms run slower in NHWC"
        reason = f"cpu: {CPU_BATCH_FRAMES} frames, larger batches measured slower; {layout} ({why})"
        return InferencePlan(CPU_BATCH_FRAMES, channels_last, reason)
    return InferencePlan(CPU_BATCH_FRAMES, channels_last, f"{device.type}: default; {layout}")


@dataclass
class _Clip:
    """A clip being driven: its frames, its source keypoints once known, finished outputs."""

    key: Hashable
    frames: torch.Tensor
    kp_source: dict[str, torch.Tensor] | None = None
    source_features: list[torch.Tensor] | None = None  # the generator's encoding of frame 0
    outputs: list[torch.Tensor] = field(default_factory=list)
    done: int = 0


def _rows(kp: dict[str, torch.Tensor], index: int, n: int) -> dict[str, torch.Tensor]:
    """Row `index` of a batched motion representation, repeated n times (a view, no copy)."""
    return {k: v[index : index + 1].expand(n, *v.shape[1:]) for k, v in kp.items()}


def _cat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def frames_are_independent(model: torch.nn.Module) -> bool:
    """Whether `animate` gives a frame the same output whatever else is in its batch.

    Not for CPABMM: as the authors' code, it fits its CPAB parameters by Adam on one norm over
    the whole batch, so a frame's warp depends on its batch-mates (by up to 0.47 on a random
    model). Its frames are animated one at a time, as in the authors' batch-1 evaluation; its
    keypoints are still detected batched. (Its fit is sensitive enough that the keypoints'
    float rounding, ~1e-7, moves its output by ~1e-3: below the stored frames' 8-bit step.)
    """
    from animbench.models.cpabmm import CPABMM

    return not isinstance(model, CPABMM)


def _animate(
    model: torch.nn.Module,
    source: torch.Tensor,
    kp_source: dict,
    kp_driving: dict,
    independent: bool,
    source_features: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    if independent:
        if source_features is not None:
            return model.animate(source, kp_source, kp_driving, source_features)["prediction"]
        return model.animate(source, kp_source, kp_driving)["prediction"]
    one = [
        model.animate(source[i : i + 1], _rows(kp_source, i, 1), _rows(kp_driving, i, 1))
        for i in range(len(source))
    ]
    return torch.cat([out["prediction"] for out in one])


@torch.no_grad()  # not inference_mode: CPABMM fits its CPAB parameters by gradient descent
def drive_clips(
    model: torch.nn.Module,
    clips: Iterable[tuple[Key, torch.Tensor]],
    batch_frames: int = BATCH_FRAMES,
) -> Iterator[tuple[Key, torch.Tensor]]:
    """Reconstruct clips [T, 3, H, W] from their frame 0, driving every frame (absolute motion),
    batched over frames and clips. Yields (key, prediction [T, 3, H, W]) in input order, each
    as soon as its last frame is done; clips are read from `clips` only as batches need them.

    A batch is up to `batch_frames` frames taken in order from the pending clips. Frame 0 of a
    clip is its source and is driven too, and it is always in the batch where its clip starts:
    the source keypoints are that row of the batch's detection, kept for the clip's later
    batches, so every frame is detected exactly once. If reading a clip fails, the clips before
    it are still driven and yielded, then the error is raised."""
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be at least 1, got {batch_frames}")
    independent = frames_are_independent(model)
    # the source's encoder features once per clip instead of once per frame (10-20% of a frame)
    encode_once = independent and hasattr(model, "encode_source")
    pending: deque[_Clip] = deque()  # clips with frames still to drive, in input order
    queued = 0  # frames of `pending` not driven yet
    source_iter = iter(clips)
    exhausted = False
    failure: Exception | None = None  # raised once the clips before it are finished
    while True:
        while not exhausted and queued < batch_frames:
            try:
                key, frames = next(source_iter)
                if len(frames) == 0:
                    raise ValueError(f"clip {key!r} has no frames")
            except StopIteration:
                exhausted = True
                break
            except Exception as exc:  # e.g. a corrupt clip: finish the earlier ones first
                exhausted, failure = True, exc
                break
            pending.append(_Clip(key, frames))
            queued += len(frames)
        if queued == 0:
            if failure is not None:
                raise failure
            return
        # slices (clip, start, stop) of the next batch
        batch: list[tuple[_Clip, int, int]] = []
        size = 0
        for clip in pending:
            if size == batch_frames:
                break
            start = clip.done
            stop = min(len(clip.frames), start + batch_frames - size)
            batch.append((clip, start, stop))
            size += stop - start
        driving = torch.cat([clip.frames[start:stop] for clip, start, stop in batch])
        kp_driving = model.detect(driving)
        sources, kp_sources, features, row = [], [], [], 0
        for clip, start, stop in batch:
            n = stop - start
            if start == 0:  # a copy: a view would keep the whole batch alive
                clip.kp_source = {k: v[row : row + 1].clone() for k, v in kp_driving.items()}
                if encode_once:
                    clip.source_features = model.encode_source(clip.frames[:1])
            sources.append(clip.frames[:1].expand(n, *clip.frames.shape[1:]))
            kp_sources.append(_rows(clip.kp_source, 0, n))
            if encode_once:
                features.append([f.expand(n, *f.shape[1:]) for f in clip.source_features])
            row += n
        source_features = [torch.cat(level) for level in zip(*features)] if encode_once else None
        prediction = _animate(
            model, torch.cat(sources), _cat(kp_sources), kp_driving, independent, source_features
        )
        row = 0
        for clip, start, stop in batch:
            clip.outputs.append(prediction[row : row + stop - start])
            clip.done, row = stop, row + stop - start
        queued -= size
        while pending and pending[0].done == len(pending[0].frames):
            clip = pending.popleft()
            yield clip.key, torch.cat(clip.outputs)


def drive_clip(
    model: torch.nn.Module, frames: torch.Tensor, batch_frames: int = BATCH_FRAMES
) -> torch.Tensor:
    """Reconstruct one clip [T, 3, H, W] from its frame 0, driving every frame (absolute motion)."""
    ((_, prediction),) = drive_clips(model, [(0, frames)], batch_frames)
    return prediction


def _read_ahead(
    items: Iterable[T], load: Callable[[T], object], pool: ThreadPoolExecutor
) -> Iterator[tuple[T, object]]:
    """Yield (item, load(item)) in order, loading the next item in `pool` meanwhile."""
    futures: deque[tuple[T, Future]] = deque()
    for item in items:
        futures.append((item, pool.submit(load, item)))
        if len(futures) > 1:
            item, future = futures.popleft()
            yield item, future.result()
    for item, future in futures:
        yield item, future.result()


def _load_clip(clip: Path) -> torch.Tensor:
    """Ground truth as float frames [T, 3, H, W] in [0, 1]."""
    return torch.from_numpy(read_clip(clip)).permute(0, 3, 1, 2).float().div(255.0)


def _finish_clip(
    out: Path,
    part: Path,
    name: str,
    prediction: np.ndarray,
    l1: np.ndarray,
    extra: dict[str, np.ndarray],
    quantisation: str,
) -> pd.DataFrame:
    """PNG folder then per-clip table, each atomic: a clip with both is finished."""
    write_clip(out / name, to_uint8(prediction.transpose(0, 2, 3, 1), quantisation))
    rows = pd.DataFrame({"video": name, "frame": np.arange(len(l1)), "l1": l1, **extra})
    write_parquet_atomic(rows, part)
    return rows


def _mean(frames: pd.DataFrame, column: str) -> float | None:
    """Frame mean of a column; None where absent or never computed (JSON has no NaN)."""
    if column not in frames or frames[column].isna().all():
        return None
    return float(frames[column].mean())


def _claim_parts(parts_dir: Path, record: dict) -> None:
    """Keep the finished clips of `parts_dir` only if they came from `record` (method and
    checkpoint sha256); otherwise drop their tables, so every clip is driven again. The tables
    go before the new record is written: an interruption between the two leaves nothing stale."""
    path = parts_dir / "record.json"
    try:
        same = json.loads(path.read_text()) == record
    except (OSError, ValueError):
        same = False  # none (an older run) or unreadable: nothing proves the clips match
    if same:
        return
    for part in parts_dir.glob("*.parquet"):
        part.unlink()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def reconstruct(
    data: str | Path,
    method: str,
    checkpoint: str | Path | None = None,
    out: str | Path = "reconstruction",
    device: str = "auto",
    batch_frames: int | None = None,
    quantisation: str = "truncate",
) -> Path:
    """Reconstruct every clip of `<data>/test`; returns the path of frames.parquet. The batch
    and layout are `inference_plan`'s for the model and device; `batch_frames` overrides the
    batch. reconstruct.json records them. `quantisation`: how predicted frames become 8-bit
    PNGs, "truncate" (the authors') or "round"."""
    if quantisation not in QUANTISATIONS:
        raise ConfigError(f"quantisation {quantisation!r}: expected one of {QUANTISATIONS}")
    out = Path(out)
    device = resolve_device(device)
    model, payload, checkpoint_sha, plan = None, {}, None, None
    if method != "source-copy":
        if checkpoint is None:
            raise ConfigError(f"method '{method}' needs --checkpoint")
        model, payload = load_animator(checkpoint, device)
        size = payload["preset"].get("dataset_params", {}).get("frame_shape", [256])[0]
        plan = inference_plan(model, device, size, batch_frames)
        model = to_inference_layout(model, plan.channels_last)
        checkpoint_sha = ckpt.sha256(checkpoint)
    clips = list_clips(Path(data) / "test")
    parts_dir = out / ".frames"
    parts_dir.mkdir(parents=True, exist_ok=True)
    # the stored 8-bit frames depend on the quantisation too
    record = {"method": method, "checkpoint_sha256": checkpoint_sha, "quantisation": quantisation}
    _claim_parts(parts_dir, record)
    parts: dict[str, pd.DataFrame] = {}
    todo: list[Path] = []
    for clip in clips:
        name = clip_name(clip)
        part = parts_dir / f"{name}.parquet"
        if part.exists() and (out / name).is_dir():
            parts[name] = pd.read_parquet(part)  # finished in an earlier, interrupted run
        else:
            todo.append(clip)
    progress = tqdm(
        total=len(clips), initial=len(parts), desc=f"reconstruct {method}", unit="video"
    )
    # Reading the next clip and writing finished ones run in threads, beside the model.
    with ThreadPoolExecutor(max_workers=2) as pool:
        truth: dict[str, torch.Tensor] = {}

        def inputs() -> Iterator[tuple[str, torch.Tensor]]:
            for clip, gt in _read_ahead(todo, _load_clip, pool):
                truth[clip_name(clip)] = gt
                yield clip_name(clip), gt

        if model is None:  # the source-copy floor: every frame is frame 0
            predictions = ((name, gt[:1].expand_as(gt)) for name, gt in inputs())
        else:
            on_device = ((name, gt.to(device)) for name, gt in inputs())
            predictions = drive_clips(model, on_device, plan.batch_frames)
        writes: deque[tuple[str, Future]] = deque()
        for name, prediction in predictions:
            gt = truth.pop(name)
            extra = frame_metrics(prediction.to(device), gt)  # psnr, ssim, lpips per frame
            prediction = prediction.cpu()
            l1 = (prediction - gt).abs().flatten(1).mean(1).numpy()
            part = parts_dir / f"{name}.parquet"
            writes.append(
                (
                    name,
                    pool.submit(
                        _finish_clip,
                        out,
                        part,
                        name,
                        prediction.numpy(),
                        l1,
                        extra,
                        quantisation,
                    ),
                )
            )
            while len(writes) > 2:  # bounds the predictions held in memory
                done, future = writes.popleft()
                parts[done] = future.result()
                progress.update()
        for done, future in writes:
            parts[done] = future.result()
            progress.update()
    progress.close()
    frames = pd.concat([parts[clip_name(clip)] for clip in clips], ignore_index=True)
    summary = {
        "method": method,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": checkpoint_sha,
        "preset": payload.get("preset", {}).get("note"),
        "warnings": payload.get("warnings", []),
        "deviations": payload.get("deviations", []),  # the tables' status "deviates"
        # the trainer's numerics (fp32 or bf16 autocast; none for imported releases)
        "training_precision": payload.get("identity", {}).get("precision"),
        "n_videos": len(clips),
        "n_frames": len(frames),
        "l1": float(frames["l1"].mean()),
        **{m: _mean(frames, m) for m in FRAME_METRICS},
        "lpips_weights": lpips_note(),
        # how the stored frames were quantised (the detector metrics read them); L1, PSNR,
        # SSIM and LPIPS above are computed on the float predictions
        "quantisation": quantisation,
        "align_corners": getattr(model, "align_corners", None),
        "batch_frames": plan.batch_frames if plan else None,  # model frames per forward pass
        "channels_last": plan.channels_last if plan else None,
        "batch_reason": plan.reason if plan else None,
    }
    (out / "reconstruct.json").write_text(json.dumps(summary, indent=2))
    return write_parquet_atomic(frames, out / "frames.parquet")
