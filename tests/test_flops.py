"""FLOPs counting (evaluate/flops.py): hand counts on tiny networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from animbench.evaluate.flops import FlopCount, count_flops, network_flops

# Conv2d(3→4, 3×3, pad 1) on 8×8: 4·3·9 multiply-adds per output pixel, 64 pixels
CONV_MACS = 4 * 3 * 9 * 8 * 8
# Linear(256→10)
LINEAR_MACS = 256 * 10


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_tiny_conv_net_equals_hand_count():
    flops = count_flops(TinyNet(), torch.rand(1, 3, 8, 8))
    assert flops == 2 * (CONV_MACS + LINEAR_MACS)  # 2 FLOPs per multiply-add


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)

    def forward(self, x):
        # a functional blur (1 channel, 3×3) that module-hook counters miss
        blurred = F.conv2d(x[:, :1], torch.ones(1, 1, 3, 3) / 9, padding=1)
        return {"value": self.conv(x).mean((2, 3)) + blurred.mean()}


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, kernel_size=1)

    def forward(self, source, kp_source, kp_driving):
        return {"prediction": self.conv(source)}


class ToyAnimator(nn.Module):
    """The animator protocol of the registry: networks, detect, animate."""

    def __init__(self):
        super().__init__()
        self.kp_detector = Detector()
        self.generator = Generator()
        self.discriminator = nn.Linear(2, 2)  # not called in an animation step

    @property
    def networks(self):
        return {
            "kp_detector": self.kp_detector,
            "generator": self.generator,
            "d": self.discriminator,
        }

    def detect(self, frame):
        return self.kp_detector(frame)

    def animate(self, source, kp_source, kp_driving):
        return self.generator(source, kp_source, kp_driving)


def test_network_flops_per_call_and_layer_count():
    counts = network_flops(ToyAnimator(), size=8)
    assert set(counts) == {"kp_detector", "generator"}
    detector = counts["kp_detector"]
    blur_macs = 9 * 8 * 8
    assert detector.calls == 2  # source and driving
    assert detector.macs == CONV_MACS + blur_macs
    assert detector.layer_flops == 2 * CONV_MACS  # the functional blur is not a module
    assert counts["generator"] == FlopCount(
        flops=2 * 3 * 3 * 64, calls=1, layer_flops=2 * 3 * 3 * 64
    )


def test_cpu_attention_is_counted():
    q, k, v = torch.rand(1, 2, 5, 8), torch.rand(1, 2, 7, 8), torch.rand(1, 2, 7, 8)
    flops = count_flops(F.scaled_dot_product_attention, q, k, v)
    assert flops == 2 * (2 * 5 * 7 * 8) * 2  # QKᵀ and AV: 2·H·L·S·D multiply-adds
