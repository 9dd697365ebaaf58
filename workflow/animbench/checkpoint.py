"""animbench checkpoint files: one dict per file, written atomically, loaded with
weights_only=True (no pickled code). Keys:

    format            "animbench-checkpoint/1"
    method, preset    the registry name and the fully resolved preset (model/train/dataset params)
    identity          what a trained run's weights depend on (animbench.train.identity)
    networks          {checkpoint key (generator, kp_detector, ...): state_dict}
    epoch, step       progress when written
    warnings          things a reader of the results must know (e.g. a resume from an older file)
    deviations        how the training differs from its preset (random weights in place of a
                      missing pretrained file, allowed by --allow-random-weights): the tables
                      give its rows status "deviates"
    training_state    optimisers, schedulers, sampler position, RNG states (resumable files)

Resumable files of a run folder (`save_resumable`, `load_resumable`): checkpoint-last.pt (the
newest), checkpoint-prev.pt (the one before it) and checkpoint-epoch<E>.pt (periodic, every
`checkpoint_freq` epochs). Each has a `<file>.sha256` beside it, written after the file: a
file whose digest does not match (a bit flip, a copy cut short, a kill between the two writes)
is passed over for the next newest good one, with a warning.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch

from animbench.errors import DataError
from animbench.files import write_atomic, write_text_atomic
from animbench.weights import sha256sum as sha256

LAST, PREVIOUS = "checkpoint-last.pt", "checkpoint-prev.pt"

FORMAT = "animbench-checkpoint/1"


def save(payload: dict, path: str | Path) -> Path:
    """Write atomically: a kill during the write never leaves a torn file under `path`."""
    return write_atomic(path, lambda tmp: torch.save({"format": FORMAT, **payload}, tmp))


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise DataError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DataError(f"{path}: not an animbench checkpoint (found {found!r})")
    return payload


def save_resumable(payload: dict, run: str | Path, periodic_epoch: int | None = None) -> Path:
    """checkpoint-last.pt ← payload, the previous last kept as checkpoint-prev.pt (and a copy as
    checkpoint-epoch<E>.pt when `periodic_epoch` is given), each with its digest file. The new
    file is complete before the old one is renamed, so a kill leaves a resumable folder."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    last = run / LAST
    tmp = save(payload, run / f".{LAST}.new")
    digest = sha256(tmp) + "\n"
    if last.exists():
        os.replace(last, run / PREVIOUS)
        if (run / (LAST + ".sha256")).exists():
            os.replace(run / (LAST + ".sha256"), run / (PREVIOUS + ".sha256"))
    os.replace(tmp, last)
    write_text_atomic(run / (LAST + ".sha256"), digest)
    if periodic_epoch:
        # a copy, not a link: damage to one file must not reach the other
        periodic = run / f"checkpoint-epoch{periodic_epoch:04d}.pt"
        write_atomic(periodic, lambda tmp: shutil.copyfile(last, tmp))
        write_text_atomic(periodic.with_name(periodic.name + ".sha256"), digest)
    return last


def _resumable_files(run: Path) -> list[Path]:
    periodic = sorted(run.glob("checkpoint-epoch*.pt"), reverse=True)
    return [p for p in [run / LAST, run / PREVIOUS, *periodic] if p.exists()]


def load_resumable(run: str | Path) -> tuple[dict | None, Path | None]:
    """The newest intact resumable checkpoint of a run folder (None when there is none); a
    corrupt newer file is reported with a warning and passed over."""
    for path in _resumable_files(Path(run)):
        digest_file = path.with_name(path.name + ".sha256")
        try:
            if digest_file.exists() and digest_file.read_text().strip() != sha256(path):
                raise DataError(f"{path}: sha256 differs from {digest_file.name}")
            payload = load(path)
            if "training_state" not in payload:
                raise DataError(f"{path}: no training state")
        except DataError as exc:
            # set aside (never rotated over a good file, kept for inspection)
            os.replace(path, path.with_name(path.name + ".corrupt"))
            digest_file.unlink(missing_ok=True)
            warnings.warn(
                f"corrupt checkpoint set aside as {path.name}.corrupt: {exc}; "
                "resuming from the previous good one",
                stacklevel=2,
            )
            continue
        return payload, path
    return None, None
