"""PSNR, SSIM and LPIPS per frame: hand-checkable values, LPIPS' properties, its agreement with
torchmetrics' implementation and the weight loading (no network)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import offline_weights

from animbench import tables, weights
from animbench.data.video import write_clip
from animbench.downloads import sha256_file
from animbench.errors import DataError
from animbench.evaluate import image_metrics as im
from animbench.evaluate.metrics import (
    FRAME_COLUMNS,
    aggregate,
    video_metrics,
    write_parquet_atomic,
)


@pytest.fixture(autouse=True)
def fresh_lpips():
    """Each test loads the shared LPIPS network anew (it is cached per process)."""
    im._shared_lpips.cache_clear()
    im._lpips_on.cache_clear()
    yield
    im._shared_lpips.cache_clear()
    im._lpips_on.cache_clear()


def images(n: int = 3, size: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_lpips(seed: int = 0, heads: bool = True) -> im.LPIPS:
    torch.manual_seed(seed)
    model = im.LPIPS(pretrained=False)
    if heads:
        model.load_heads(im.bundled_heads())
    return model


def test_psnr_hand_values():
    x = images().double() * 0.9
    assert torch.equal(im.psnr(x, x), torch.full((3,), im.PSNR_CAP, dtype=torch.float64))
    # 10·log10(1/0.01); torchmetrics' float32 ln(10) limits the agreement to ~1e-6 dB
    assert im.psnr(x + 0.1, x).tolist() == pytest.approx([20.0] * 3, abs=1e-5)
    half = x.clone()
    half[..., :24] += 0.2  # MSE 0.02 → 10·log10(50)
    assert im.psnr(half, x).tolist() == pytest.approx([10 * math.log10(50)] * 3, abs=1e-5)
    assert im.psnr(x.float() + 0.1, x.float()).tolist() == pytest.approx([20.0] * 3, abs=1e-4)


def test_ssim_hand_values():
    x = images()
    assert im.ssim(x, x).tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    flat = torch.full((2, 3, 32, 32), 60 / 255)  # float32 cancellation on uniform areas
    flat[1, :, 8:16, 8:16] = 230 / 255
    assert im.ssim(flat, flat).tolist() == pytest.approx([1.0] * 2, abs=1e-3)
    # constant frames: σ = 0, so SSIM = (2ab + C1) / (a² + b² + C1), C1 = 0.01²
    a = torch.full((1, 3, 32, 32), 0.5, dtype=torch.float64)
    b = torch.full((1, 3, 32, 32), 0.6, dtype=torch.float64)
    expected = (2 * 0.5 * 0.6 + 1e-4) / (0.5**2 + 0.6**2 + 1e-4)
    assert im.ssim(a, b).item() == pytest.approx(expected, abs=1e-6)
    y = images(seed=1)
    assert im.ssim(x, y).tolist() == pytest.approx(im.ssim(y, x).tolist(), abs=1e-6)
    assert (im.ssim(x, y) < 0.1).all()


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="equal shape"):
        im.psnr(images(size=32), images(size=48))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        im.frame_metrics(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))


def test_lpips_properties_with_random_weights():
    model = im.LPIPS(pretrained=False)
    assert not model.pretrained and "random" in model.weights_note
    x, y = images(4, seed=0), images(4, seed=1)
    d = model(x, y)
    assert d.shape == (4,)
    assert torch.allclose(model(x, x), torch.zeros(4), atol=1e-7)
    assert torch.allclose(d, model(y, x), atol=1e-7)  # symmetric
    assert (d > 0).all()
    one_by_one = torch.cat([model(x[i : i + 1], y[i : i + 1]) for i in range(4)])
    assert torch.allclose(d, one_by_one, rtol=1e-5, atol=1e-7)
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_lpips_equals_torchmetrics_implementation(monkeypatch):
    """Same trunk (seeded random, no ImageNet file here) and the official heads: our network
    gives torchmetrics' LPIPS (a port of the lpips package) to float precision."""
    tm = pytest.importorskip("torchmetrics.functional.image.lpips")
    if not hasattr(tm, "_get_tv_model_features") or not hasattr(tm, "_LPIPS"):
        pytest.skip("torchmetrics' LPIPS internals changed")
    ours = random_lpips(seed=3)
    monkeypatch.setattr(tm, "_get_tv_model_features", lambda net, pretrained=False: ours.features)
    reference = tm._LPIPS(pretrained=True, net="alex")
    x, y = images(3, size=64, seed=4), images(3, size=64, seed=5)
    with torch.no_grad():
        expected = reference(x, y, normalize=True).flatten()
    assert torch.allclose(ours(x, y), expected, rtol=1e-5, atol=1e-7)


def test_bundled_heads_are_the_pinned_official_file():
    path = im.bundled_heads()
    assert path is not None and path.name == "alex.pth"
    assert sha256_file(path) == weights.WEIGHTS["lpips_alex"].sha256_prefix
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert [tuple(v.shape) for v in state.values()] == [(1, c, 1, 1) for c in im._CHANNELS]
    assert all((v >= 0).all() for v in state.values())


def test_load_trunk_takes_torchvision_layout(tmp_path):
    source = random_lpips(seed=1, heads=False)
    state = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(4096, 9216)  # ignored
    torch.save(state, tmp_path / "alexnet.pth")
    model = random_lpips(seed=2, heads=False)
    model.load_trunk(tmp_path / "alexnet.pth")
    for (key, got), want in zip(model.features.state_dict().items(), state.values()):
        assert torch.equal(got, want), key
    assert [int(k.split(".")[1]) for k in state if k.endswith("weight")][:5] == [0, 3, 6, 8, 10]


def test_offline_lpips_is_nan_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    x, y = images(), images(seed=1)
    with offline_weights(tmp_path):
        with pytest.warns(UserWarning, match=r"LPIPS is NaN.*alexnet-owt-7be5be79\.pth"):
            out = im.frame_metrics(x, y)
        assert np.isnan(out["lpips"]).all() and out["lpips"].shape == (3,)
        assert np.isfinite(out["psnr"]).all() and np.isfinite(out["ssim"]).all()
        assert "alexnet-owt-7be5be79.pth missing" in im.lpips_note()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the warning is given once per process
            again = im.frame_metrics(x, y)
        np.testing.assert_array_equal(again["psnr"], out["psnr"])
        with pytest.raises(DataError, match="alexnet-owt-7be5be79.pth"):
            im.frame_metrics(x, y, require_lpips=True)
        # a network that is not pretrained never reports numbers
        assert torch.isnan(im.lpips(x, y, model=random_lpips())).all()


def _cache_fake_trunk(tmp_path, monkeypatch) -> None:
    """A torchvision-layout AlexNet file in the cache, pinned to its own digest."""
    state = {f"features.{k}": v for k, v in random_lpips(seed=7).features.state_dict().items()}
    path = weights.cache_dir() / weights.WEIGHTS["alexnet"].filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    pinned = dataclasses.replace(weights.WEIGHTS["alexnet"], sha256_prefix=sha256_file(path))
    monkeypatch.setitem(weights.WEIGHTS, "alexnet", pinned)


def test_pretrained_loads_through_the_weight_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    x, y = images(size=64), images(size=64, seed=1)
    bundled = im.bundled_heads()
    with offline_weights(tmp_path):
        _cache_fake_trunk(tmp_path, monkeypatch)
        expected = random_lpips(seed=7)(x, y).double().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = im.frame_metrics(x, y, batch_frames=2)
        np.testing.assert_allclose(out["lpips"], expected, rtol=1e-5)
        assert "lpips_models" in im.lpips_note()  # torchmetrics' copy of the heads

        # without torchmetrics' copy, the heads come from the cache under their pinned name
        im._shared_lpips.cache_clear()
        im._lpips_on.cache_clear()
        monkeypatch.setattr(im, "bundled_heads", lambda: None)
        with pytest.warns(UserWarning, match="lpips-v0.1-alex-df73285e.pth missing"):
            assert np.isnan(im.frame_metrics(x, y)["lpips"]).all()
        im._shared_lpips.cache_clear()
        im._lpips_on.cache_clear()
        heads = weights.cache_dir() / weights.WEIGHTS["lpips_alex"].filename
        shutil.copy(bundled, heads)
        np.testing.assert_allclose(im.frame_metrics(x, y)["lpips"], expected, rtol=1e-5)


def test_frame_metrics_batches_and_types():
    x, y = images(5, size=32), images(5, size=32, seed=1)
    model = random_lpips()
    model.pretrained = True  # stands in for the real weights
    whole = im.frame_metrics(x, y, lpips_model=model)
    chunked = im.frame_metrics(x, y, lpips_model=model, batch_frames=2)
    assert list(whole) == list(im.FRAME_METRICS) == list(FRAME_COLUMNS)  # frames.parquet
    for name in im.FRAME_METRICS:
        assert whole[name].dtype == np.float64 and whole[name].shape == (5,)
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-5, atol=1e-7)
    empty = im.frame_metrics(x[:0], y[:0], lpips_model=model)
    assert all(v.shape == (0,) for v in empty.values())


def test_real_weights_if_cached(monkeypatch):
    """With torchvision's ImageNet AlexNet in the cache (never downloaded by the tests): equal
    to torchmetrics' LPIPS on the same files, and a sensible range."""
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    path, _ = weights.fetch("alexnet")
    if path is None:
        pytest.skip("alexnet-owt-7be5be79.pth not in the weight cache")
    tm = pytest.importorskip("torchmetrics.functional.image.lpips")
    model = im.LPIPS(pretrained=True)
    assert model.pretrained
    monkeypatch.setattr(tm, "_get_tv_model_features", lambda net, pretrained=False: model.features)
    x = images(2, size=64)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    with torch.no_grad():
        expected = tm._LPIPS(pretrained=True, net="alex")(x, y, normalize=True).flatten()
    got = im.lpips(x, y)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert ((got > 0.01) & (got < 1.0)).all()


# --------------------------------------------------------------------------- metrics and tables


def reconstruction(tmp_path, frame_table: pd.DataFrame):
    """Ground truth and prediction folders for `video_metrics`: clips a (3 frames), b (2)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for name, n in (("a", 3), ("b", 2)):
        clip = np.full((n, 32, 32, 3), 100, dtype=np.uint8)
        write_clip(gt / name, clip)
        write_clip(pred / name, clip)
    frame_table.to_parquet(pred / "frames.parquet")
    (pred / "reconstruct.json").write_text(json.dumps({"method": "fomm", "warnings": []}))
    return gt, pred


def frame_table(**extra) -> pd.DataFrame:
    table = {"video": ["a"] * 3 + ["b"] * 2, "frame": [0, 1, 2, 0, 1], "l1": [0.1] * 5}
    return pd.DataFrame({**table, **extra})


def run(tmp_path, table: pd.DataFrame, dataset: str = "vox") -> pd.DataFrame:
    gt, pred = reconstruction(tmp_path / dataset, table)
    out = tmp_path / "metrics" / f"{dataset}.parquet"
    return video_metrics(gt, pred, "none", "none", False, out, dataset, "fomm")


def test_video_metrics_sums_the_extra_columns(tmp_path):
    df = run(
        tmp_path,
        frame_table(
            psnr=[30.0, 20.0, 100.0, 25.0, 25.0],
            ssim=[0.9, 0.8, 1.0, 0.5, 0.5],
            lpips=[0.1, 0.2, 0.3] + [np.nan] * 2,  # clip b without LPIPS weights
        ),
    )
    a, b = df.iloc[0], df.iloc[1]
    assert (a["psnr_sum"], a["psnr_frames"], b["psnr_sum"]) == (150.0, 3, 50.0)
    assert (a["lpips_sum"], a["lpips_frames"]) == (pytest.approx(0.6), 3)
    assert pd.isna(b["lpips_sum"]) and pd.isna(b["lpips_frames"])
    agg = aggregate(df)
    assert agg["PSNR"] == pytest.approx((40.0, 2, 5))  # frame-weighted, like L1
    assert agg["SSIM"] == pytest.approx((0.74, 2, 5))
    assert agg["LPIPS"] == pytest.approx((0.2, 1, 3))  # only the frames that have it


def test_video_metrics_without_extra_columns(tmp_path):
    """frames.parquet of an older run: L1 only, the extras are not computed."""
    df = run(tmp_path, frame_table())
    assert df[[f"{c}_{s}" for c in FRAME_COLUMNS for s in ("sum", "frames")]].isna().all().all()
    assert set(aggregate(df)) == {"L1"}
    with pytest.raises(DataError, match="infinite psnr"):
        run(tmp_path / "inf", frame_table(psnr=[np.inf] + [30.0] * 4))


def test_extras_reach_table2(tmp_path):
    with_extras = run(
        tmp_path, frame_table(psnr=[30.0] * 5, ssim=[0.5] * 5, lpips=[np.nan] * 5), "vox"
    )
    assert set(aggregate(with_extras)) == {"L1", "PSNR", "SSIM"}
    old = run(tmp_path, frame_table(), "synth-face")
    files = [
        write_parquet_atomic(with_extras, tmp_path / "m1.parquet"),
        write_parquet_atomic(old, tmp_path / "m2.parquet"),
    ]
    spec = {
        "datasets": {
            "vox": {"paper_name": "vox", "metrics": ["L1"]},
            "synth-face": {"paper_name": None, "metrics": ["L1"]},
        },
        "methods": ["fomm"],
    }
    df = tables.write_table2(files, spec, tmp_path / "table2.parquet")
    vox = df[(df["dataset"] == "vox") & (df["method"] == "FOMM")].set_index("metric")
    assert list(vox.index) == ["L1", "PSNR", "SSIM", "LPIPS"]
    assert vox.loc["PSNR", "value"] == pytest.approx(30.0) and vox.loc["PSNR", "n_frames"] == 5
    assert vox.loc["SSIM", "status"] == "measured" and np.isnan(vox.loc["SSIM", "paper_value"])
    assert "the paper reports no SSIM" in vox.loc["SSIM", "note"]
    assert "protocol-compatible" not in vox.loc["PSNR", "note"]
    assert vox.loc["LPIPS", "status"] == "not computed"
    assert "LPIPS weights unavailable" in vox.loc["LPIPS", "note"]
    assert set(df[df["dataset"] == "synth-face"]["metric"]) == {"L1"}  # an older run
