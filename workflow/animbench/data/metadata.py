"""Parse the published metadata CSVs (taichi, vox, ted) into clip tables.

One output row per clip that the reference ``load_videos.py`` (video-preprocessing / MRAA)
would write, with its quirks reproduced on purpose:

- ``partition``, ``fps``, ``width``, ``height`` (and vox ``person_id``) come from the FIRST
  CSV row of each ``video_id`` (``df[...].iloc[0]``) and apply to all its clips;
- rows that map to the same output name collapse to one (the first is kept);
- names are ``[person_id#]<ytid>#<start zfill 6>#<end zfill 6>`` (no extension).

TED (``dataset == "ted"``): the published CSV has ``start=end=0`` and ``partition=train`` on
every row; the frame range is encoded in ``video_id`` as ``<ytid>#<start6>#<end6>`` and the
split is derived from MTIA's test list (:func:`test_youtube_ids`): a clip is ``test`` iff its
YouTube id is in ``test_ids``. (The reference script applied verbatim to that CSV would name
the clips ``<end>#<start>#<ytid>#000000#000000``; we use the MTIA names instead.)

Schema: ``video_id,start,end,bbox,fps,width,height,partition[,person_id]``; bbox is
``left-top-right-bot`` in pixels of a ``width x height`` frame; start/end are frame indices at
``fps``, half-open. A malformed row raises :class:`DataError` naming the file and row.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

from animbench.errors import DataError

REQUIRED = ("video_id", "start", "end", "bbox", "fps", "width", "height", "partition")
DATASETS = ("taichi", "vox", "ted")
PARTITIONS = ("train", "test")
COLUMNS = [
    "name",
    "youtube_id",
    "partition",
    "start",
    "end",
    "fps",
    "width",
    "height",
    "left",
    "top",
    "right",
    "bottom",
    "person_id",
]
_PERSON_RE = re.compile(r"^id\d+$")
_CLIP_SUFFIXES = (".mp4", ".png", ".gif")


def clip_name(youtube_id: str, start: int, end: int, person_id: str | None = None) -> str:
    """Reference output name (without extension): ``[person_id#]ytid#start6#end6``."""
    base = f"{youtube_id}#{str(start).zfill(6)}#{str(end).zfill(6)}"
    return f"{person_id}#{base}" if person_id else base


def _strip_suffix(name: str) -> str:
    for suffix in _CLIP_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def youtube_id_of_clip(name: str) -> str:
    """YouTube id of a clip name (``[person_id#]ytid#start6#end6[.mp4]``, or a bare id)."""
    parts = _strip_suffix(name.strip()).split("#")
    if len(parts) == 4 and _PERSON_RE.match(parts[0]):
        return parts[1]
    return parts[0]


def read_utf8(path: Path, what: str) -> str:
    """The text of a UTF-8 file. Invalid bytes fail with one line naming their line: decoding
    the whole file first, because a streamed reader decodes ahead in blocks and would report
    the error at the line it had reached, not the bad one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{byte} at column {column})"
        ) from None


def test_youtube_ids(clip_list_path: str | Path) -> set[str]:
    """YouTube ids of the clips listed (one name per line) in an MTIA test list."""
    path = Path(clip_list_path)
    lines = read_utf8(path, "clip list").splitlines()
    ids: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        ytid = youtube_id_of_clip(line)
        if not ytid:
            raise DataError(f"{path}: line {lineno}: no YouTube id in clip name {line!r}")
        ids.add(ytid)
    return ids


def _fail(path: Path, row: int, line: int, what: str) -> DataError:
    msg = f"{path}: row {row} (line {line}): {what}"
    return DataError(" ".join(msg.split()))


def _int(value: str, col: str, path: Path, row: int, line: int) -> int:
    try:
        return int(value.strip())
    except (ValueError, AttributeError):
        raise _fail(path, row, line, f"{col} is not an integer: {value!r}") from None


def _parse_row(rec: dict, dataset: str, path: Path, row: int, line: int) -> dict:
    video_id = rec["video_id"].strip()
    if not video_id:
        raise _fail(path, row, line, "empty video_id")
    bbox = rec["bbox"].strip()
    parts = bbox.split("-")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise _fail(path, row, line, f"bad bbox {bbox!r} (want left-top-right-bot ints)")
    left, top, right, bottom = (int(p) for p in parts)
    try:
        fps = float(rec["fps"])
    except (ValueError, TypeError):
        raise _fail(path, row, line, f"fps is not a number: {rec['fps']!r}") from None
    if not fps > 0:
        raise _fail(path, row, line, f"fps must be > 0, got {rec['fps']!r}")
    width = _int(rec["width"], "width", path, row, line)
    height = _int(rec["height"], "height", path, row, line)
    partition = rec["partition"].strip()
    if dataset != "ted" and partition not in PARTITIONS:
        raise _fail(path, row, line, f"partition must be train or test, got {partition!r}")
    if dataset == "ted":
        pieces = video_id.split("#")
        if len(pieces) != 3 or not all(p.isdigit() for p in pieces[1:]):
            raise _fail(path, row, line, f"TED video_id {video_id!r} is not ytid#start6#end6")
        youtube_id = pieces[0]
        start, end = int(pieces[1]), int(pieces[2])
    else:
        youtube_id = video_id.split("#")[0]
        start = _int(rec["start"], "start", path, row, line)
        end = _int(rec["end"], "end", path, row, line)
    if start < 0 or end <= start:
        raise _fail(path, row, line, f"bad frame range start={start} end={end}")
    person_id = None
    if dataset == "vox":
        person_id = (rec.get("person_id") or "").strip()
        if not person_id:
            raise _fail(path, row, line, "empty person_id")
    return {
        "video_id": video_id,
        "youtube_id": youtube_id,
        "partition": partition,
        "start": start,
        "end": end,
        "fps": fps,
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "right": right,
        "bottom": bottom,
        "person_id": person_id,
    }


def read_metadata(path: str | Path, dataset: str, test_ids: set[str] | None = None) -> pd.DataFrame:
    """Clip table (columns :data:`COLUMNS`) for a metadata CSV, as load_videos.py would cut it.

    ``test_ids`` (TED only, required there): YouTube ids of the test split.
    """
    path = Path(path)
    if dataset not in DATASETS:
        raise DataError(f"{path}: unknown dataset {dataset!r} (expected one of {DATASETS})")
    if dataset == "ted" and test_ids is None:
        raise DataError(f"{path}: TED metadata needs test_ids (see test_youtube_ids)")
    required = REQUIRED + (("person_id",) if dataset == "vox" else ())
    fh = io.StringIO(read_utf8(path, "metadata"), newline="")
    rows: list[dict] = []
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty metadata file (no header)") from None
        except csv.Error as exc:
            raise DataError(f"{path}: line 1: unreadable CSV header ({exc})") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: header (line 1) lacks column(s) {', '.join(missing)}")
        row = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise _fail(path, row + 1, reader.line_num, f"unreadable CSV ({exc})") from None
            row += 1
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line: pandas skips it too
            if len(fields) != len(header):
                raise _fail(
                    path,
                    row,
                    reader.line_num,
                    f"{len(fields)} fields, header has {len(header)} ({','.join(header)})",
                )
            rec = dict(zip(header, fields))
            rows.append(_parse_row(rec, dataset, path, row, reader.line_num))

    # Per-video values from the first row of each video_id (load_videos.py: iloc[0]).
    first: dict[str, dict] = {}
    out: dict[str, dict] = {}
    for rec in rows:
        head = first.setdefault(rec["video_id"], rec)
        person_id = head["person_id"]
        if dataset == "ted":
            partition = "test" if rec["youtube_id"] in test_ids else "train"
        else:
            partition = head["partition"]
        name = clip_name(rec["youtube_id"], rec["start"], rec["end"], person_id)
        if name in out:
            continue  # duplicate output name: one clip
        out[name] = {
            "name": name,
            "youtube_id": rec["youtube_id"],
            "partition": partition,
            "start": rec["start"],
            "end": rec["end"],
            "fps": head["fps"],
            "width": head["width"],
            "height": head["height"],
            "left": rec["left"],
            "top": rec["top"],
            "right": rec["right"],
            "bottom": rec["bottom"],
            "person_id": person_id,
        }
    table = pd.DataFrame(list(out.values()), columns=COLUMNS)
    for col in ("start", "end", "width", "height", "left", "top", "right", "bottom"):
        table[col] = table[col].astype("int64")
    table["fps"] = table["fps"].astype("float64")
    table["person_id"] = table["person_id"].astype(object)
    return table
