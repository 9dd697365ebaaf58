"""Training logs of a run folder: the per-step CSV, TensorBoard scalars and image grids.

Run folder (stage "main"; another stage, e.g. "avd", writes `log-<stage>.csv` and its own
TensorBoard folder):
    log.csv                        one row per step; header from the first row
    tensorboard/<stage>/           events: scalar "<stage>/<column>" per numeric column, images
    grids/<stage>-step0000123.png  `training_grid` pictures, one per call to `images`
    grid-latest.png                the newest of them (replaced atomically: safe to open while
                                   training runs)

Only rank 0 of a distributed run logs: the others build a `RunLogger(..., enabled=False)`.
"""

from __future__ import annotations

import colorsys
import csv
import io
import numbers
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from animbench.files import write_bytes_atomic

# columns that index the row rather than measure anything: not plotted
INDEX_COLUMNS = ("step", "epoch")
# height in pixels of the column labels above a training grid
HEADER_HEIGHT = 14

_tensorboard_warned = False


def log_name(stage: str) -> str:
    """CSV file name of a training stage: `log.csv` for "main", `log-<stage>.csv` otherwise."""
    return "log.csv" if stage == "main" else f"log-{stage}.csv"


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _as_float(value) -> float | None:
    """A loggable scalar as a float; None for anything else (strings, tensors of many values)."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().cpu()) if value.numel() == 1 else None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


class RunLogger:
    """Writes the training rows of one stage to its CSV and TensorBoard, and training grids.

    CSV semantics: the header comes from the first row; when the run resumes, the existing
    header and rows are kept (call `truncate_after(step)` first to drop the rows a crashed run
    wrote past its last checkpoint). A row with a column the header lacks extends the header
    (earlier rows get empty cells) rather than dropping the value.

    `enabled=False` (non-zero distributed ranks) makes every method a no-op. Without the
    tensorboard package, it warns once and writes the CSV and PNG files only.
    """

    def __init__(
        self, out: Path, stage: str = "main", tensorboard: bool = True, enabled: bool = True
    ) -> None:
        self.out = Path(out)
        self.stage = stage
        self.enabled = enabled
        self.csv_path = self.out / log_name(stage)
        self._tensorboard = tensorboard
        self._writer = None
        self._purge_step: int | None = None
        self._columns: list[str] | None = None
        if enabled:
            self.out.mkdir(parents=True, exist_ok=True)

    # -- CSV -----------------------------------------------------------------------------

    def _read_rows(self) -> tuple[list[list[str]], bool]:
        """Existing CSV rows (header first), and whether the file is whole: a last line without
        its newline (a crash while writing it) is left out."""
        if not self.csv_path.exists():
            return [], True
        text = self.csv_path.read_text()
        whole = not text or text.endswith("\n")
        if not whole:
            text = text[: text.rfind("\n") + 1]
        return [row for row in csv.reader(io.StringIO(text)) if row], whole

    def _rewrite(self, rows: list[list[str]]) -> None:
        write_bytes_atomic(self.csv_path, _csv_text(rows).encode())

    def _ensure_columns(self, row: Mapping) -> list[str]:
        if self._columns is None:
            rows, whole = self._read_rows()
            if rows:
                self._columns = rows[0]
                if not whole:
                    self._rewrite(rows)  # drop a half-written last line before appending
            else:
                self._columns = list(row)
                self._rewrite([self._columns])
        new = [c for c in row if c not in self._columns]
        if new:
            rows, _ = self._read_rows()
            self._columns = self._columns + new
            self._rewrite([self._columns] + [r + [""] * len(new) for r in rows[1:]])
        return self._columns

    def truncate_after(self, step: int) -> int:
        """Drop the CSV rows with a step greater than `step` (what a crashed run logged after
        the checkpoint it resumes from), and hide TensorBoard events past it. Returns how many
        rows were dropped. Call it when resuming, before logging."""
        if not self.enabled:
            return 0
        self._purge_step = step + 1
        if self._writer is not None:  # a writer purges only when it opens
            self._writer.close()
            self._writer = None
        rows, whole = self._read_rows()
        if not rows or "step" not in rows[0]:
            return 0
        index = rows[0].index("step")

        def keep(row: list[str]) -> bool:
            try:
                return float(row[index]) <= step
            except (IndexError, ValueError):
                return True  # no step to judge by: keep rather than lose it

        kept = [rows[0]] + [r for r in rows[1:] if keep(r)]
        if len(kept) < len(rows) or not whole:
            self._rewrite(kept)
        self._columns = None  # re-read on the next row
        return len(rows) - len(kept)

    # -- TensorBoard ---------------------------------------------------------------------

    def _tb(self):
        """The SummaryWriter, opened on first use (so `truncate_after` can set its purge step);
        None without TensorBoard."""
        global _tensorboard_warned
        if not self._tensorboard:
            return None
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                if not _tensorboard_warned:
                    warnings.warn(
                        f"TensorBoard unavailable ({exc}); logging to CSV only",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    _tensorboard_warned = True
                self._tensorboard = False
                return None
            self._writer = SummaryWriter(
                str(self.out / "tensorboard" / self.stage), purge_step=self._purge_step
            )
        return self._writer

    # -- public --------------------------------------------------------------------------

    def scalars(self, row: Mapping) -> None:
        """Append one training row (it has "step") to the CSV, and its numeric columns but
        step and epoch to TensorBoard as "<stage>/<column>" at that step."""
        if not self.enabled:
            return
        columns = self._ensure_columns(row)
        with self.csv_path.open("a", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow([row.get(c, "") for c in columns])
        writer = self._tb()
        if writer is None:
            return
        step = int(row["step"])
        for key, value in row.items():
            number = _as_float(value)
            if key not in INDEX_COLUMNS and number is not None:
                writer.add_scalar(f"{self.stage}/{key}", number, step)

    def images(self, step: int, grid: np.ndarray) -> None:
        """Save a training grid (uint8 H×W×3) as grids/<stage>-step<step>.png, replace
        grid-latest.png with it, and add it to TensorBoard."""
        if not self.enabled:
            return
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(grid, dtype=np.uint8)).save(buffer, format="PNG")
        grids = self.out / "grids"
        grids.mkdir(exist_ok=True)
        write_bytes_atomic(grids / f"{self.stage}-step{step:07d}.png", buffer.getvalue())
        write_bytes_atomic(self.out / "grid-latest.png", buffer.getvalue())
        writer = self._tb()
        if writer is not None:
            writer.add_image(f"{self.stage}/grid", grid, step, dataformats="HWC")

    def flush(self) -> None:
        if self.enabled and self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- training grid -------------------------------------------------------------------------

# keypoint dicts in a model's output, source then driving: FOMM / MTIA / TPSMM / CPABMM, MRAA
KEYPOINT_DICTS = (("kp_source", "kp_driving"), ("regions_source", "regions_driving"))
# coordinates inside such a dict: FOMM / MTIA "value", MRAA region centres "shift",
# TPSMM / CPABMM control points "fg_kp" (K×5)
KEYPOINT_KEYS = ("value", "shift", "fg_kp")


def find_keypoints(kp) -> torch.Tensor | None:
    """B×K×2 keypoint coordinates (x, y in [-1, 1]) from a keypoint dict or a tensor; None if
    there are none."""
    if isinstance(kp, Mapping):
        kp = next((kp[k] for k in KEYPOINT_KEYS if k in kp), None)
    if isinstance(kp, torch.Tensor) and kp.dim() == 3 and kp.shape[-1] == 2:
        return kp.detach().float().cpu()
    return None


def keypoint_colours(count: int) -> list[tuple[int, int, int]]:
    """One saturated colour per keypoint index, hues evenly spaced (neighbouring indices, such
    as the 5 points of one TPS transform, get neighbouring hues)."""
    return [
        tuple(round(255 * c) for c in colorsys.hsv_to_rgb(i / max(count, 1), 1.0, 1.0))
        for i in range(count)
    ]


def draw_keypoints(
    frame: np.ndarray, keypoints: np.ndarray, radius: int | None = None
) -> np.ndarray:
    """A copy of `frame` (uint8 H×W×3) with a dot per keypoint (K×2, x then y in [-1, 1], the
    pixel centres at ±1 as make_coordinate_grid), coloured by index, ringed in black."""
    h, w = frame.shape[:2]
    if radius is None:
        radius = max(1, min(h, w) // 64 + 1)
    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    for (x, y), colour in zip(keypoints, keypoint_colours(len(keypoints))):
        px, py = (x + 1) / 2 * (w - 1), (y + 1) / 2 * (h - 1)
        # a black ring first: saturated dots stay visible on colourful frames
        draw.ellipse([px - radius - 1, py - radius - 1, px + radius + 1, py + radius + 1], fill=0)
        draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour)
    return np.asarray(image)


def _frames(images, size: tuple[int, int], rows: int) -> np.ndarray | None:
    """The first `rows` images of a B×C×h×w tensor as uint8 rows×H×W×3 at `size` (1 channel
    is shown grey); None if absent or not an image batch."""
    if isinstance(images, (list, tuple)):  # multi-resolution masks (TPSMM): the finest
        images = images[-1] if images else None
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        return None
    images = images[:rows].detach().float().cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        return None
    if tuple(images.shape[2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).numpy()


def _header(labels: list[str], width: int) -> np.ndarray:
    """A HEADER_HEIGHT strip with one label per `width`-wide column (clipped to its column)."""
    font = ImageFont.load_default()
    strip = []
    for label in labels:
        cell = Image.new("RGB", (width, HEADER_HEIGHT), (0, 0, 0))
        ImageDraw.Draw(cell).text((2, 1), label, fill=(255, 255, 255), font=font)
        strip.append(np.asarray(cell))
    return np.concatenate(strip, axis=1)


def training_grid(
    source: torch.Tensor, driving: torch.Tensor, out: Mapping, max_rows: int = 4
) -> np.ndarray:
    """A labelled picture of a training batch: one row per sample (the first `max_rows`),
    columns source (its keypoints drawn), driving (its keypoints), prediction, occlusion map
    (grey, resized to the frame) and deformed source. `source` and `driving` are B×3×H×W in
    [0, 1]; `out` is the model's output dict. Columns the output lacks are left out.
    Returns uint8 (HEADER_HEIGHT + rows·H)×(columns·W)×3."""
    size = tuple(source.shape[2:])
    rows = min(source.shape[0], max_rows)
    kp_source = kp_driving = None
    for source_key, driving_key in KEYPOINT_DICTS:
        if source_key in out or driving_key in out:
            kp_source, kp_driving = out.get(source_key), out.get(driving_key)
            break
    columns: list[tuple[str, np.ndarray]] = []
    for label, images, kp in (("source", source, kp_source), ("driving", driving, kp_driving)):
        frames = _frames(images, size, rows)
        points = find_keypoints(kp)
        if points is not None:
            frames = np.stack([draw_keypoints(f, p) for f, p in zip(frames, points.numpy())])
        columns.append((label, frames))
    for label, key in (
        ("prediction", "prediction"),
        ("occlusion", "occlusion_map"),
        ("deformed", "deformed"),
    ):
        frames = _frames(out.get(key), size, rows)
        if frames is not None:
            columns.append((label, frames))
    body = np.concatenate([np.concatenate(list(frames), axis=0) for _, frames in columns], axis=1)
    return np.concatenate([_header([label for label, _ in columns], size[1]), body], axis=0)
