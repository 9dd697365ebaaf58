"""Predictions made elsewhere (issue 17): validated against the test split, imported in the
reconstruction layout, scored by the unchanged metrics code, tabled with their digest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from animbench.cli import main
from animbench.config import load_config
from animbench.data.synthetic import make_dataset
from animbench.data.video import clip_name, list_clips, read_clip, write_clip
from animbench.errors import ConfigError, DataError
from animbench.evaluate.submissions import (
    evaluate_submission,
    folder_digest,
    import_submission,
    validate_submission,
)
from animbench.tables import write_table2

REPO = Path(__file__).resolve().parents[1]
SHIFT = 2  # pixels: the synthetic detector's keypoints move by exactly this much
OFFSET = 10  # grey levels


@pytest.fixture(scope="module")
def test_split(tmp_path_factory) -> Path:
    """2 synthetic face clips × 8 frames at 64²."""
    root = tmp_path_factory.mktemp("face")
    make_dataset("face", root, num_train=1, num_test=2, frames=8, size=64, progress=False)
    return root / "test"


def shifted(frames: np.ndarray) -> np.ndarray:
    """The clip moved SHIFT pixels to the right (wrapping round)."""
    return np.roll(frames, SHIFT, axis=2)


def brighter(frames: np.ndarray) -> np.ndarray:
    return np.clip(frames.astype(int) + OFFSET, 0, 255).astype(np.uint8)


def write_predictions(gt: Path, out: Path, change, video: str | None = None) -> Path:
    """One prediction per test clip: `change` of its ground truth, PNG folders or `video`
    files (mp4: h264, lossy; mkv: FFV1, lossless)."""
    for clip in list_clips(gt):
        frames = change(read_clip(clip))
        if video:
            write_video(out / f"{clip_name(clip)}.{video}", frames)
        else:
            write_clip(out / clip_name(clip), frames)
    return out


def write_video(path: Path, frames: np.ndarray) -> None:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    codec = {"codec": "ffv1", "pix_fmt_out": "bgr0"} if path.suffix == ".mkv" else {}
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=25, quality=8, macro_block_size=1, **codec
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def expected_l1(gt: Path, change) -> float:
    """Frame-weighted mean |prediction − truth| of the 8-bit frames in [0, 1]."""
    per_frame = [
        np.abs(change(g).astype(float) - g.astype(float)).mean(axis=(1, 2, 3)) / 255.0
        for g in (read_clip(c) for c in list_clips(gt))
    ]
    return float(np.concatenate(per_frame).mean())


def test_shifted_predictions_score_the_known_l1_and_akd(test_split, tmp_path):
    pred = write_predictions(test_split, tmp_path / "pred", shifted)
    folder = tmp_path / "imported"
    df = evaluate_submission(
        test_split,
        pred,
        tmp_path / "metrics.parquet",
        method="mine",
        dataset="synthetic-face",
        keypoints="synthetic-face",
        reconstruction=folder,
    )
    assert list(df["video"]) == [clip_name(c) for c in list_clips(test_split)]
    assert df["l1_sum"].sum() / df["n_frames"].sum() == pytest.approx(
        expected_l1(test_split, shifted), rel=1e-6
    )
    # every marker moved SHIFT pixels in x: AKD = (|dx| + |dy|) / 2 per keypoint
    assert int(df["akd_frames"].sum()) == 16
    assert df["akd_sum"].sum() / df["akd_frames"].sum() == pytest.approx(SHIFT / 2, abs=1e-6)
    digest = folder_digest(pred)
    assert set(df["predictions_sha256"]) == {digest}
    assert df["checkpoint_sha256"].isna().all() and df["warnings"].isna().all()
    record = json.loads((folder / "reconstruct.json").read_text())
    assert record["predictions_sha256"] == digest
    assert record["formats"] == ["png"] and record["lossy"] is False
    # the imported clips are the submitted frames, losslessly
    first = clip_name(list_clips(test_split)[0])
    np.testing.assert_array_equal(read_clip(folder / first), read_clip(pred / first))


def test_cli_prints_the_metrics_and_digest(test_split, tmp_path, capsys):
    pred = write_predictions(test_split, tmp_path / "pred", brighter)
    out = tmp_path / "m.parquet"
    assert main(["evaluate", "--gt", str(test_split), "--pred", str(pred), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    l1 = float(next(line for line in printed.splitlines() if line.startswith("L1 ")).split()[1])
    assert l1 == pytest.approx(expected_l1(test_split, brighter), rel=1e-5)
    assert f"predictions sha256 {folder_digest(pred)}" in printed
    df = pd.read_parquet(out)
    assert set(df["method"]) == {"pred"} and set(df["dataset"]) == {"custom"}


def test_a_missing_frame_is_a_one_line_error_naming_the_clip(test_split, tmp_path, capsys):
    pred = write_predictions(test_split, tmp_path / "pred", brighter)
    name = clip_name(list_clips(test_split)[1])
    (pred / name / "0000007.png").unlink()
    with pytest.raises(
        DataError, match=f"clip {name} has 7 predicted frames, the ground truth has 8"
    ):
        validate_submission(test_split, pred)
    out = tmp_path / "m.parquet"
    assert main(["evaluate", "--gt", str(test_split), "--pred", str(pred), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and name in error and "7 predicted frames" in error
    assert not out.exists()


def test_missing_and_extra_clips_are_listed(test_split, tmp_path):
    pred = write_predictions(test_split, tmp_path / "pred", brighter)
    names = [clip_name(c) for c in list_clips(test_split)]
    shutil.rmtree(pred / names[0])
    shutil.copytree(pred / names[1], pred / "id99999#stray#000000#000008")
    with pytest.raises(DataError) as info:
        validate_submission(test_split, pred)
    message = str(info.value)
    assert "\n" not in message
    assert f"1 test clips have no prediction: {names[0]}" in message
    assert "1 predictions match no test clip: id99999#stray#000000#000008" in message


def test_a_wrong_frame_size_names_the_clip(test_split, tmp_path):
    pred = write_predictions(test_split, tmp_path / "pred", lambda f: f[:, :32])
    name = clip_name(list_clips(test_split)[0])
    with pytest.raises(DataError, match=f"clip {name} has 64x32 frames, the ground truth 64x64"):
        import_submission(test_split, pred, "mine", tmp_path / "imported")
    assert not (tmp_path / "imported").exists()  # nothing computed or written


def test_lossy_mp4_is_scored_with_a_warning_in_the_table_note(test_split, tmp_path):
    pred = write_predictions(test_split, tmp_path / "pred", brighter, video="mp4")
    metrics = tmp_path / "metrics" / "mine.parquet"
    df = evaluate_submission(test_split, pred, metrics, method="mine", dataset="synthetic-face")
    l1 = df["l1_sum"].sum() / df["n_frames"].sum()
    # h264's loss adds to the offset, but stays small beside it
    assert l1 == pytest.approx(expected_l1(test_split, brighter), abs=0.01)
    assert "lossy format (video/h264)" in df["warnings"].iloc[0]
    spec = {
        "datasets": {
            "synthetic-face": {"paper_name": None, "metrics": ["L1"]},
            "synthetic-body": {"paper_name": None, "metrics": ["L1"]},
        },
        "methods": [],
        "baselines": [],
        "submissions": {"mine": {"name": "My model", "datasets": ["synthetic-face"]}},
    }
    table = write_table2([metrics], spec, tmp_path / "table2.parquet")
    mine = table[(table["method"] == "My model") & (table["metric"] == "L1")].set_index("dataset")
    row = mine.loc["synthetic-face"]
    assert row["status"] == "measured" and row["value"] == pytest.approx(l1)
    assert "the protocol expects lossless frames" in row["note"]
    assert row["predictions_sha256"] == folder_digest(pred)
    assert "predictions made elsewhere" in row["note"]
    assert mine.loc["synthetic-body", "status"] == "not run"
    assert "has no predictions for synthetic-body" in mine.loc["synthetic-body", "note"]


def _config(tmp_path: Path, submissions: str) -> Path:
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "benchmark: {datasets: [synthetic-face], methods: [fomm]}\n"
        + f"submissions: {submissions}\n"
    )
    return extra


def test_config_submissions_are_checked(tmp_path):
    ok = _config(tmp_path, "{mine: {name: My model, predictions: {synthetic-face: preds}}}")
    config = load_config([REPO / "config.yaml", ok])
    assert config["submissions"]["mine"]["predictions"] == {"synthetic-face": "preds"}
    bad = _config(tmp_path, "{mine: {predictions: {nowhere: preds}}}")
    with pytest.raises(ConfigError, match="submissions.mine.predictions.nowhere': unknown dataset"):
        load_config([REPO / "config.yaml", bad])
    clash = _config(tmp_path, "{fomm: {predictions: {synthetic-face: preds}}}")
    with pytest.raises(ConfigError, match="'fomm' is already a method or baseline"):
        load_config([REPO / "config.yaml", clash])


def test_workflow_scores_a_submission_beside_the_methods(tmp_path):
    from test_workflow import plan

    preds = tmp_path / "preds"
    preds.mkdir()
    extra = _config(
        tmp_path, f"{{mine: {{name: My model, predictions: {{synthetic-face: {preds}}}}}}}"
    )
    jobs, output = plan("results/table2.parquet", "--configfile", str(extra), "-p")
    submission = [wc for rule, wc in jobs if rule == "submission"]
    assert submission == [{"dataset": "synthetic-face", "method": "mine"}]
    assert {"dataset": "synthetic-face", "method": "mine"} in [
        wc for rule, wc in jobs if rule == "metrics"
    ]
    assert not [wc for rule, wc in jobs if rule == "reconstruct" and wc["method"] == "mine"]
    assert "animbench submission" in output and f"--pred {preds}" in output
    assert "results/metrics/synthetic-face/mine.parquet" in output


def test_the_workflow_commands_import_then_score(test_split, tmp_path):
    """`animbench submission` (rule submission) then `animbench metrics` (rule metrics)."""
    pred = write_predictions(test_split, tmp_path / "pred", brighter)
    folder, out = tmp_path / "reconstruction" / "mine", tmp_path / "mine.parquet"
    common = ["--gt", str(test_split), "--pred"]
    assert main(["submission", *common, str(pred), "--method", "mine", "--out", str(folder)]) == 0
    assert main(["submission", *common, str(pred), "--method", "mine", "--out", str(folder)]) == 0
    args = ["--dataset", "synthetic-face", "--method", "mine", "--out", str(out)]
    assert main(["metrics", *common, str(folder), *args]) == 0
    df = pd.read_parquet(out)
    assert df["l1_sum"].sum() / df["n_frames"].sum() == pytest.approx(
        expected_l1(test_split, brighter), rel=1e-6
    )
    assert set(df["predictions_sha256"]) == {folder_digest(pred)}
    # an import never overwrites a folder it did not write
    other = tmp_path / "other"
    (other / "keep").mkdir(parents=True)
    with pytest.raises(DataError, match="not an earlier import of predictions"):
        import_submission(test_split, pred, "mine", other)
    assert (other / "keep").is_dir()


def test_two_predictions_of_one_clip_are_refused(test_split, tmp_path):
    pred = write_predictions(test_split, tmp_path / "pred", brighter)
    name = clip_name(list_clips(test_split)[0])
    write_video(pred / f"{name}.mp4", read_clip(pred / name))
    with pytest.raises(DataError, match=f"clip {name} has two predictions"):
        validate_submission(test_split, pred)


def test_a_lossless_video_codec_is_exact_and_not_warned(test_split, tmp_path):
    pred = write_predictions(test_split, tmp_path / "pred", brighter, video="mkv")
    folder = tmp_path / "imported"
    import_submission(test_split, pred, "mine", folder)
    record = json.loads((folder / "reconstruct.json").read_text())
    assert record["formats"] == ["video/ffv1"] and record["lossy"] is False
    assert record["warnings"] == []
    assert record["l1"] == pytest.approx(expected_l1(test_split, brighter), rel=1e-6)
