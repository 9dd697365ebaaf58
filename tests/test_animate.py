"""`animbench animate`: a source image driven by a video, written as mp4 with the driving
video's frame count, fps and audio."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animbench import checkpoint as ckpt
from animbench import cli
from animbench.animate import has_audio, movement_scale, relative_motion
from animbench.data import ffmpeg
from animbench.errors import ConfigError
from animbench.models.registry import build, get_preset

FRAMES, FPS = 7, 12.5


def _driving(path: Path, audio: bool) -> Path:
    """A 7-frame 80×60 test pattern at 12.5 fps, optionally with a 440 Hz sine track."""
    cmd = [ffmpeg.executable(), "-nostdin", "-y", "-v", "error"]
    cmd += ["-f", "lavfi", "-i", f"testsrc=size=80x60:rate={FPS}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:duration=0.56", "-c:a", "aac"]
    cmd += ["-frames:v", str(FRAMES), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("animate")
    image = np.zeros((50, 70, 3), dtype=np.uint8)
    image[10:40, 20:50] = (200, 60, 30)
    Image.fromarray(image).save(root / "source.png")
    torch.manual_seed(0)
    spec = get_preset("fomm-synthetic")
    model = build(spec)
    checkpoint = ckpt.save(
        {
            "method": "fomm",
            "preset": spec,
            "networks": {n: net.state_dict() for n, net in model.networks.items()},
            "epoch": 0,
            "step": 0,
            "warnings": ["randomly initialised (test)"],
        },
        root / "model.pt",
    )
    return {
        "source": root / "source.png",
        "silent": _driving(root / "silent.mp4", audio=False),
        "audio": _driving(root / "audio.mp4", audio=True),
        "checkpoint": checkpoint,
    }


@pytest.fixture(scope="module")
def mraa_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised mraa-synthetic checkpoint (with its AVD network)."""
    torch.manual_seed(0)
    spec = get_preset("mraa-synthetic")
    model = build(spec)
    return ckpt.save(
        {
            "method": "mraa",
            "preset": spec,
            "networks": {n: net.state_dict() for n, net in model.networks.items()},
            "epoch": 0,
            "step": 0,
            "warnings": ["randomly initialised (test)"],
        },
        tmp_path_factory.mktemp("animate-mraa") / "model.pt",
    )


def _audio_streams(path: Path) -> int:
    result = subprocess.run(
        [ffmpeg.executable(), "-hide_banner", "-i", str(path)], capture_output=True, check=False
    )
    return len(re.findall(r"Stream #\d+:\d+.*?: Audio:", result.stderr.decode()))


@pytest.mark.parametrize(
    ("driving", "mode", "extra"),
    [
        ("silent", "standard", []),
        ("audio", "relative", []),
        ("silent", "relative", ["--no-adapt-scale", "--batch-frames", "3"]),
    ],
)
def test_animate_writes_playable_mp4(inputs, tmp_path, driving, mode, extra):
    out = tmp_path / "out.mp4"
    argv = ["animate", str(inputs["source"]), str(inputs[driving]), "-o", str(out)]
    argv += ["--checkpoint", str(inputs["checkpoint"]), "--mode", mode, "--device", "cpu"]
    assert cli.main(argv + extra) == 0
    info = ffmpeg.probe(out)  # decodes every frame
    assert info.frames == FRAMES and info.fps == pytest.approx(FPS)
    assert (info.width, info.height) == (64, 64)  # the preset's frame size
    assert has_audio(out) == (driving == "audio") == (_audio_streams(out) == 1)


def test_avd_mode_needs_an_avd_network(inputs, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    argv = ["animate", str(inputs["source"]), str(inputs["silent"]), "-o", str(out)]
    argv += ["--checkpoint", str(inputs["checkpoint"]), "--mode", "avd"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "avd_network" in err and "fomm" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_avd_mode_animates_an_mraa_checkpoint(inputs, mraa_checkpoint, tmp_path):
    out = tmp_path / "out.mp4"
    argv = ["animate", str(inputs["source"]), str(inputs["silent"]), "-o", str(out)]
    argv += ["--checkpoint", str(mraa_checkpoint), "--mode", "avd", "--device", "cpu"]
    assert cli.main(argv + ["--batch-frames", "4"]) == 0  # batches of 4 and 3 frames
    info = ffmpeg.probe(out)
    assert info.frames == FRAMES and info.fps == pytest.approx(FPS)
    assert (info.width, info.height) == (64, 64)


def test_relative_motion_and_adapt_scale():
    square = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    eye = torch.eye(2).expand(1, 4, 2, 2)
    kp_source = {"value": square * 0.5, "jacobian": eye * 2}
    kp_initial = {"value": square, "jacobian": eye}
    # the source's hull has a quarter of the area: motion is halved
    assert movement_scale(kp_source, kp_initial) == pytest.approx(0.5)
    kp_driving = {"value": square + 0.2, "jacobian": eye * 3}
    new = relative_motion(kp_source, kp_driving, kp_initial, scale=0.5)
    assert torch.allclose(new["value"], square * 0.5 + 0.1)
    assert torch.allclose(new["jacobian"], eye * 6)  # J_d J_d0⁻¹ J_s


def test_unknown_mode_is_a_config_error(inputs, tmp_path):
    from animbench.animate import animate

    with pytest.raises(ConfigError, match="unknown animation mode"):
        animate(inputs["source"], inputs["silent"], tmp_path / "o.mp4", inputs["checkpoint"], "x")
