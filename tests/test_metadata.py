"""Clip tables from the published metadata CSVs (counts from the reference-data notes §1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from animbench.data import metadata
from animbench.data.metadata import COLUMNS, read_metadata
from animbench.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
HEADER = "video_id,start,end,bbox,fps,width,height,partition"


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"published metadata not available: {path} is absent")
    return path


@pytest.fixture(scope="module")
def ted_test_ids() -> set[str]:
    return metadata.test_youtube_ids(shared_file("mtia_test_clips_ted384.txt"))


def counts(table):
    return table["partition"].value_counts().to_dict()


def test_taichi_counts_and_names():
    table = read_metadata(shared_file("taichi-metadata.csv"), "taichi")
    assert list(table.columns) == COLUMNS
    assert counts(table) == {"train": 3049, "test": 285}
    assert table["name"].is_unique
    assert table.groupby("partition")["youtube_id"].nunique().to_dict() == {
        "train": 252,
        "test": 28,
    }
    row = table.set_index("name").loc["u6rJiF-gPx8#000080#000300"]
    assert (row["start"], row["end"], row["fps"]) == (80, 300, 29.97)
    assert (row["width"], row["height"]) == (640, 480)
    assert (row["left"], row["top"], row["right"], row["bottom"]) == (118, 82, 508, 472)
    assert row["person_id"] is None
    assert int((table["end"] - table["start"]).sum()) == 1_032_837


def test_vox_first_row_partition_and_duplicates():
    table = read_metadata(shared_file("vox-metadata.csv"), "vox")
    assert counts(table) == {"train": 19242, "test": 522}
    assert table["name"].is_unique
    assert table[table["partition"] == "test"]["youtube_id"].nunique() == 88
    assert "id10280#NXjT3732Ekg#001093#001192" in set(table["name"])
    # Rows of these videos in both partitions: first row's partition (train) wins.
    both = table[table["youtube_id"].isin(["hgB5ziAudzU", "ST2JZXcyYkE"])]
    assert set(both["partition"]) == {"train"}
    assert table["person_id"].str.match(r"^id\d{5}$").all()
    assert (table["name"].str.split("#").str[0] == table["person_id"]).all()
    assert (table["fps"] == 25).all()


def test_ted_split_from_mtia_list(ted_test_ids):
    assert len(ted_test_ids) == 41
    table = read_metadata(shared_file("ted-metadata.csv"), "ted", ted_test_ids)
    assert counts(table) == {"train": 1189, "test": 131}
    assert table.groupby("partition")["youtube_id"].nunique().to_dict() == {
        "train": 370,
        "test": 41,
    }
    row = table.set_index("name").loc["VM6HZqQKhok#016609#016737"]
    assert (row["youtube_id"], row["start"], row["end"]) == ("VM6HZqQKhok", 16609, 16737)
    listed = {
        line.strip().removesuffix(".mp4")
        for line in shared_file("mtia_test_clips_ted384.txt").read_text().splitlines()
        if line.strip()
    }
    assert set(table.loc[table["partition"] == "test", "name"]) == listed


def test_test_youtube_ids_formats(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(
        "-vqV-gHa2FE#006453#006717.mp4\n\nid10280#NXjT3732Ekg#001093#001192.mp4\nabcdefghijk\n"
    )
    assert metadata.test_youtube_ids(listing) == {"-vqV-gHa2FE", "NXjT3732Ekg", "abcdefghijk"}
    # MTIA's published file is a frame list: <clip>.mp4/<5-digit>.png per line
    listing.write_text(
        "-vqV-gHa2FE#006453#006717.mp4/00000.png\n-vqV-gHa2FE#006453#006717.mp4/00001.png\n"
        "id10280#NXjT3732Ekg#001093#001192.mp4/00000.png\n"
    )
    assert metadata.test_youtube_ids(listing) == {"-vqV-gHa2FE", "NXjT3732Ekg"}


def test_small_csv_quirks(tmp_path):
    csv_path = tmp_path / "vox.csv"
    csv_path.write_text(
        HEADER
        + ",person_id\n"
        + "aaaaaaaaaaa,10,20,1-2-3-4,25,640,360,test,id10001\n"
        + "aaaaaaaaaaa,30,40,1-2-3-4,30,1280,720,train,id10001\n"
        + "aaaaaaaaaaa,10,20,1-2-3-4,25,640,360,test,id10001\n"
    )
    table = read_metadata(csv_path, "vox")
    assert list(table["name"]) == [
        "id10001#aaaaaaaaaaa#000010#000020",
        "id10001#aaaaaaaaaaa#000030#000040",
    ]
    assert set(table["partition"]) == {"test"}
    assert set(table["fps"]) == {25.0}
    assert set(table["width"]) == {640}


@pytest.mark.parametrize(
    ("body", "row", "needle"),
    [
        (
            "aaaaaaaaaaa,10,20,1-2-3-4,25,640,360,train\nbbbbbbbbbbb,1,9,1-2-x-4,25,640,360,train\n",
            2,
            "bbox",
        ),
        ("aaaaaaaaaaa,10,20,1-2-3,25,640,360,train\n", 1, "bbox"),
        ("aaaaaaaaaaa,10,20,1-2-3-4,25,640,360\n", 1, "fields"),
        ("aaaaaaaaaaa,ten,20,1-2-3-4,25,640,360,train\n", 1, "start"),
    ],
)
def test_malformed_row_names_file_and_row(tmp_path, body, row, needle):
    csv_path = tmp_path / "broken-metadata.csv"
    csv_path.write_text(HEADER + "\n" + body)
    with pytest.raises(DataError) as err:
        read_metadata(csv_path, "taichi")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(csv_path) in msg
    assert f"row {row}" in msg
    assert needle in msg


def test_missing_column_names_file(tmp_path):
    csv_path = tmp_path / "no-bbox.csv"
    csv_path.write_text("video_id,start,end,fps,width,height,partition\na,1,2,25,640,360,train\n")
    with pytest.raises(DataError, match="bbox") as err:
        read_metadata(csv_path, "taichi")
    assert str(csv_path) in str(err.value)
    assert "\n" not in str(err.value)


def test_ted_requires_test_ids(tmp_path):
    csv_path = tmp_path / "ted.csv"
    csv_path.write_text(HEADER + "\nabcdefghijk#000001#000009,0,0,1-2-3-4,10.0,700,700,train\n")
    with pytest.raises(DataError, match="test_ids"):
        read_metadata(csv_path, "ted")
    table = read_metadata(csv_path, "ted", {"abcdefghijk"})
    assert list(table["partition"]) == ["test"]
    assert list(table["name"]) == ["abcdefghijk#000001#000009"]


@pytest.mark.parametrize("bad_line", [2, 400])
def test_invalid_utf8_names_file_and_line(tmp_path, bad_line):
    """One line naming the line of the bad byte, also past the first block a streamed decoder
    reads ahead (400 rows ≈ 19 kB)."""
    rows = [b"aaaaaaaaaaa,10,20,1-2-3-4,25,640,360,train\n"] * 500
    rows[bad_line - 2] = b"aaaaaaaaaaa,10,20,1-2-3-4,25,640,360,tr\xe9in\n"  # latin-1 é
    csv_path = tmp_path / "latin1-metadata.csv"
    csv_path.write_bytes(HEADER.encode() + b"\n" + b"".join(rows))
    with pytest.raises(DataError) as err:
        read_metadata(csv_path, "taichi")
    msg = str(err.value)
    assert "\n" not in msg and str(csv_path) in msg
    assert f"line {bad_line}: not valid UTF-8 (byte 0xe9 at column 40)" in msg


def test_clip_list_with_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "clips.txt"
    path.write_bytes(b"abcdefghijk#000001#000009\n\xff\n")
    with pytest.raises(DataError, match=r"clips.txt: line 2: not valid UTF-8 \(byte 0xff"):
        metadata.test_youtube_ids(path)
