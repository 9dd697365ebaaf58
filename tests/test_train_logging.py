"""RunLogger (CSV, TensorBoard, grid PNGs) and training_grid on real model outputs."""

from __future__ import annotations

import csv
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from animbench.models.registry import build, get_preset
from animbench.train import logging as train_logging
from animbench.train.logging import (
    HEADER_HEIGHT,
    RunLogger,
    draw_keypoints,
    keypoint_colours,
    training_grid,
)


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def row(step, loss, **extra):
    return {"step": step, "epoch": 0, "seconds": 0.5 * step, "loss": loss, "lr": 1e-3, **extra}


def tb_scalars(folder, tag):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_csv_rows_and_header_reused_on_resume(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.scalars(row(1, 0.9))
        log.scalars(row(2, 0.8))
    # the resumed run's row has its columns in another order: the file's header wins
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.scalars({"lr": 1e-4, "loss": 0.7, "seconds": 1.5, "epoch": 1, "step": 3})
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,seconds,loss,lr"
    assert lines[1:] == ["1,0,0.5,0.9,0.001", "2,0,1.0,0.8,0.001", "3,1,1.5,0.7,0.0001"]


def test_avd_stage_and_new_columns(tmp_path):
    with RunLogger(tmp_path, stage="avd", tensorboard=False) as log:
        log.scalars(row(1, 0.9))
        log.scalars(row(2, 0.8, samples_per_s=12.5))  # a column appearing later is kept
    assert not (tmp_path / "log.csv").exists()
    rows = read_csv(tmp_path / "log-avd.csv")
    assert [r["samples_per_s"] for r in rows] == ["", "12.5"]
    assert rows[0]["loss"] == "0.9"


def test_truncate_after_drops_later_rows(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        for step in range(1, 6):
            log.scalars(row(step, 1.0 / step))
    with (tmp_path / "log.csv").open("a") as handle:
        handle.write("6,0,3.0,0.1")  # a crash in the middle of a row: no newline
    with RunLogger(tmp_path, tensorboard=False) as log:
        assert log.truncate_after(3) == 2
        log.scalars(row(4, 0.2))
    steps = [int(r["step"]) for r in read_csv(tmp_path / "log.csv")]
    assert steps == [1, 2, 3, 4]
    assert read_csv(tmp_path / "log.csv")[-1]["loss"] == "0.2"
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_half_written_row_dropped_before_append(tmp_path):
    (tmp_path / "log.csv").write_text("step,loss\n1,0.5\n2,0.")
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.scalars({"step": 2, "loss": 0.4})
    assert (tmp_path / "log.csv").read_text() == "step,loss\n1,0.5\n2,0.4\n"


def test_tensorboard_scalars_and_image(tmp_path):
    grid = np.zeros((20, 30, 3), np.uint8)
    grid[:, :10] = (255, 0, 0)
    with RunLogger(tmp_path) as log:
        log.scalars(row(1, 0.9, grad_norm_generator=2.0, note="text is not a scalar"))
        log.scalars(row(2, 0.5, grad_norm_generator=1.0))
        log.images(2, grid)
        log.flush()
    folder = tmp_path / "tensorboard" / "main"
    acc = EventAccumulator(str(folder))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags == {"main/seconds", "main/loss", "main/lr", "main/grad_norm_generator"}
    assert tb_scalars(folder, "main/loss") == [(1, pytest.approx(0.9)), (2, pytest.approx(0.5))]
    assert tb_scalars(folder, "main/grad_norm_generator") == [(1, 2.0), (2, 1.0)]
    (image,) = acc.Images("main/grid")
    assert (image.step, image.width, image.height) == (2, 30, 20)


def test_tensorboard_resume_purges_later_steps(tmp_path):
    with RunLogger(tmp_path) as log:
        for step in range(1, 5):
            log.scalars(row(step, float(step)))
    with RunLogger(tmp_path) as log:
        log.truncate_after(2)
        log.scalars(row(3, 30.0))
    values = tb_scalars(tmp_path / "tensorboard" / "main", "main/loss")
    assert values == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_without_tensorboard_warns_once_and_logs_csv(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(train_logging, "_tensorboard_warned", False)
    with pytest.warns(RuntimeWarning, match="TensorBoard unavailable"):
        with RunLogger(tmp_path) as log:
            log.scalars(row(1, 0.9))
            log.scalars(row(2, 0.8))
            log.images(2, np.zeros((8, 8, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per logger
        RunLogger(tmp_path / "other").scalars(row(1, 0.9))
    assert len(read_csv(tmp_path / "log.csv")) == 2
    assert (tmp_path / "grid-latest.png").exists()
    assert not (tmp_path / "tensorboard").exists()


def test_images_written_and_latest_replaced(tmp_path):
    first = np.full((10, 12, 3), 40, np.uint8)
    second = np.full((10, 12, 3), 200, np.uint8)
    with RunLogger(tmp_path, stage="avd", tensorboard=False) as log:
        log.images(5, first)
        log.images(17, second)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grids/avd-step0000005.png")), first)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grids/avd-step0000017.png")), second)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid-latest.png")), second)


def test_disabled_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with RunLogger(out, enabled=False) as log:
        log.scalars(row(1, 0.9))
        log.images(1, np.zeros((8, 8, 3), np.uint8))
        assert log.truncate_after(0) == 0
        log.flush()
    assert not out.exists()


def test_keypoint_dot_at_expected_pixel():
    frame = np.zeros((65, 65, 3), np.uint8)
    # (0, 0) is the centre; (1, -1) is x right, y top: x comes first
    drawn = draw_keypoints(frame, np.array([[0.0, 0.0], [1.0, -1.0], [-1.0, 1.0]]))
    red, green, blue = keypoint_colours(3)
    assert tuple(drawn[32, 32]) == red
    assert tuple(drawn[0, 64]) == green
    assert tuple(drawn[64, 0]) == blue
    assert not drawn[0, 0].any() and not drawn[64, 64].any()
    assert not frame.any()  # the input is left untouched


def test_grid_keypoint_colours_match_between_source_and_driving():
    source = torch.zeros(1, 3, 33, 33)
    driving = torch.zeros(1, 3, 33, 33)
    out = {
        "kp_source": {"value": torch.tensor([[[0.0, 0.0], [-1.0, -1.0]]])},
        "kp_driving": {"value": torch.tensor([[[-1.0, -1.0], [0.0, 0.0]]])},
    }
    grid = training_grid(source, driving, out)
    assert grid.shape == (HEADER_HEIGHT + 33, 2 * 33, 3)
    body = grid[HEADER_HEIGHT:]
    first, second = keypoint_colours(2)
    assert tuple(body[16, 16]) == first and tuple(body[0, 0]) == second
    assert tuple(body[16, 33 + 16]) == second and tuple(body[0, 33]) == first


def _forward(preset, overrides=None, batch=2, size=64):
    torch.manual_seed(0)
    model = build(get_preset(preset, overrides)).eval()
    source, driving = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
    with torch.no_grad():
        return source, driving, model(source, driving)


FOMM_64 = {**TINY_OVERRIDES, "dataset_params": {"frame_shape": [64, 64, 3]}}


@pytest.mark.parametrize(
    "preset, overrides",
    [("fomm-synthetic", FOMM_64), ("mraa-synthetic", None), ("tpsmm-synthetic", None)],
)
def test_training_grid_on_model_outputs(preset, overrides):
    source, driving, out = _forward(preset, overrides, batch=2)
    grid = training_grid(source, driving, out)
    # source, driving, prediction, occlusion, deformed; 2 samples of 64 px under the header
    assert grid.dtype == np.uint8
    assert grid.shape == (HEADER_HEIGHT + 2 * 64, 5 * 64, 3)
    assert grid[:HEADER_HEIGHT].any()  # labels drawn
    # keypoint dots: the source column differs from the plain source frame
    plain = (source[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert (grid[HEADER_HEIGHT : HEADER_HEIGHT + 64, :64] != plain).any(-1).sum() >= 3
    # the occlusion column is grey
    occlusion = grid[HEADER_HEIGHT:, 3 * 64 : 4 * 64].astype(int)
    assert (occlusion[..., 0] == occlusion[..., 1]).all()
    assert (occlusion[..., 1] == occlusion[..., 2]).all()


def test_training_grid_rows_limited_and_parts_omitted():
    source, driving, out = _forward("fomm-synthetic", FOMM_64, batch=3)
    out = {k: v for k, v in out.items() if k not in ("occlusion_map", "deformed")}
    grid = training_grid(source.bfloat16(), driving.bfloat16(), out, max_rows=2)
    assert grid.shape == (HEADER_HEIGHT + 2 * 64, 3 * 64, 3)
    # no model output at all: the two input columns only, without dots
    bare = training_grid(source, driving, {}, max_rows=5)
    assert bare.shape == (HEADER_HEIGHT + 3 * 64, 2 * 64, 3)
    plain = (source[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(bare[HEADER_HEIGHT : HEADER_HEIGHT + 64, :64], plain)


def test_training_grid_tps_occlusion_list_takes_finest():
    source = torch.zeros(1, 3, 16, 16)
    coarse, fine = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 16, 16)
    grid = training_grid(source, source, {"occlusion_map": [coarse, fine]})
    assert grid.shape == (HEADER_HEIGHT + 16, 3 * 16, 3)
    assert (grid[HEADER_HEIGHT:, 32:] == 255).all()
