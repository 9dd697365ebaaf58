"""The foundation layer: atomic writes (animbench.files) and the checkpoint format, which
moved from animbench.train.checkpoint to animbench.checkpoint unchanged on disk."""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from animbench import checkpoint
from animbench.errors import DataError
from animbench.files import (
    write_atomic,
    write_bytes_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def test_atomic_writes_replace_whole_files(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "a.txt"
    assert write_text_atomic(out, "one") == out
    write_text_atomic(out, "two")
    assert out.read_text() == "two"
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    write_parquet_atomic(pd.DataFrame({"x": [1, 2]}), tmp_path / "c.parquet")
    assert pd.read_parquet(tmp_path / "c.parquet")["x"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.bin", "c.parquet", "sub"]


def test_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = write_text_atomic(tmp_path / "a.txt", "old")

    def half_written(tmp: Path) -> None:
        tmp.write_text("ne")
        raise KeyboardInterrupt  # a kill mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(out, half_written)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_checkpoint_written_before_the_move_still_loads(tmp_path: Path) -> None:
    """A file as animbench.train.checkpoint.save wrote it (torch.save of a plain dict with the
    format tag) loads; the files hold tensors and builtins only, no module path."""
    networks = {"generator": {"w": torch.arange(3.0)}}
    old = tmp_path / "old.pt"
    torch.save({"format": "animbench-checkpoint/1", "method": "fomm", "networks": networks}, old)
    payload = checkpoint.load(old)
    assert payload["method"] == "fomm"
    assert torch.equal(payload["networks"]["generator"]["w"], torch.arange(3.0))

    new = checkpoint.save({"method": "fomm", "networks": networks, "step": 1}, tmp_path / "n.pt")
    with zipfile.ZipFile(new) as archive:
        pickle = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        globals_ = [
            arg
            for op, arg, _ in pickletools.genops(archive.read(pickle))
            if op.name in ("GLOBAL", "STACK_GLOBAL") or (op.name.endswith("UNICODE") and arg)
        ]
    # module names a pickle would import on load (the format tag is a plain string)
    assert not [g for g in globals_ if str(g).split(" ")[0].split(".")[0] == "animbench"]
    assert "animbench-checkpoint/1" in globals_
    with pytest.raises(DataError, match="not an animbench checkpoint"):
        torch.save({"format": "other"}, tmp_path / "x.pt")
        checkpoint.load(tmp_path / "x.pt")
