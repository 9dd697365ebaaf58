"""Motion Transformer for Unsupervised Image Animation (Tao et al., ECCV 2022).

MTIA is FOMM's generator (with MRAA-style warped skips and, on TaiChi, a global background
motion) driven by a transformer keypoint detector:

* a CNN backbone (HRNet-W32 stages 1–3, single-scale output at 1/4 resolution) gives a feature
  map whose 4×4 patches are projected to d-dimensional *image tokens*;
* a fixed 2-D sine position encoding is added to the image tokens at the input and again
  before every later layer;
* 2K learnable *motion tokens* (K *kp tokens*, K *jacobian tokens*) are prepended and the
  sequence runs through pre-LN transformer layers;
* linear heads read keypoints (2σ − 1) from the kp tokens and 2×2 Jacobians (identity at
  initialisation) from the jacobian tokens.

Module attribute names are the authors' checkpoint keys (`pre_feature.*`, `transformer.*`,
`generator.*`, `bg_predictor.*`), so at the paper's configurations the parameter layout and
counts equal the reference manifests (kp_detector 12,283,462 at 256², 12,344,902 at 384²;
generator 45,575,391 = FOMM's; bg_predictor 6,282,438).

The HRNet (networks/hrnet.py) has the same module names as timm's / the official HRNet
(`conv1 … stage3`), so the ImageNet `hrnet_w32` file (weights.WEIGHTS) loads key by key. Building
never downloads it: with `pretrained`, the trainer calls `load_pretrained()` when a run starts.
The background predictor is MRAA's (models/mraa.py `BGMotionPredictor`, same keys).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from animbench.models.base import Animator
from animbench.models.fomm import DenseMotionNetwork, MultiScaleDiscriminator
from animbench.models.fomm import OcclusionAwareGenerator as _FOMMGenerator
from animbench.models.mraa import BGMotionPredictor
from animbench.networks.hrnet import HRNetBackbone
from animbench.networks.vit import init_transformer_weights

# (stage2 channels, stage3 channels) per backbone; "stem" is the stem net + layer1 (Table 5)
BACKBONES = {"stem": None, "hrnet_w32": 32, "hrnet_w48": 48}


# --- transformer ------------------------------------------------------------------------------


def sine_position_encoding(
    h: int, w: int, dim: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Fixed 2-D sine encoding (DETR; TokenPose 'sine-full'): [1, h·w, dim], y half then x half."""
    half = dim // 2
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32).view(h, 1).expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32).view(1, w).expand(h, w)
    y = y / (h + eps) * scale
    x = x / (w + eps) * scale
    dim_t = temperature ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)

    def encode(pos: torch.Tensor) -> torch.Tensor:
        pos = pos[..., None] / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((encode(y), encode(x)), dim=-1).view(1, h * w, dim)


class PreNorm(nn.Module):
    """x + fn(LayerNorm(x)); keys `fn.norm`, `fn.fn` as the reference (Residual(PreNorm(fn)))."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = nn.Module()
        self.fn.norm = nn.LayerNorm(dim)
        self.fn.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn.fn(self.fn.norm(x))


class Attention(nn.Module):
    """Multi-head self-attention, qkv without bias, scale (dim/heads)^-1/2."""

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """Pre-LN layers; the position encoding is re-added to the image tokens before every layer
    after the first (the motion tokens, first in the sequence, get none)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, Attention(dim, heads, dropout)),
                    PreNorm(dim, FeedForward(dim, mlp_dim, dropout)),
                ]
            )
            for _ in range(depth)
        )

    def forward(
        self, x: torch.Tensor, num_motion_tokens: int, pos: torch.Tensor | None
    ) -> torch.Tensor:
        for i, (attention, feed_forward) in enumerate(self.layers):
            if i > 0 and pos is not None:
                x = torch.cat([x[:, :num_motion_tokens], x[:, num_motion_tokens:] + pos], dim=1)
            x = feed_forward(attention(x))
        return x


class MotionTransformer(nn.Module):
    """Image tokens (patch features → Linear → d, + sine encoding) and 2K motion tokens (K kp
    tokens, K jacobian tokens) through the transformer; heads regress keypoints and Jacobians.
    The motion tokens are drawn from N(0, `motion_token_std`²), truncated at ±2 (the
    reference's 0.02; the small synthetic presets use 1, mtia_presets.py says why)."""

    def __init__(
        self,
        feature_size: tuple[int, int],
        in_channels: int,
        num_kp: int = 10,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 12,
        heads: int = 8,
        mlp_ratio: int = 3,
        dropout: float = 0.0,
        position_encoding: bool = True,
        estimate_jacobian: bool = True,
        motion_token_std: float = 0.02,
    ):
        super().__init__()
        h, w = feature_size
        self.motion_token_std = motion_token_std
        if h % patch_size or w % patch_size:
            raise ValueError(f"feature map {feature_size} is not divisible by patch {patch_size}")
        self.patch_size = patch_size
        self.num_kp = num_kp
        self.grid = (h // patch_size, w // patch_size)
        self.estimate_jacobian = estimate_jacobian
        num_motion_tokens = 2 * num_kp if estimate_jacobian else num_kp
        # the motion tokens of the paper (reference key `keypoint_token`): kp then jacobian
        self.keypoint_token = nn.Parameter(torch.zeros(1, num_motion_tokens, dim))
        self.position_encoding = position_encoding
        if position_encoding:  # fixed, stored as a frozen parameter as in the reference
            self.pos_embedding = nn.Parameter(
                sine_position_encoding(*self.grid, dim), requires_grad=False
            )
        self.patch_to_embedding = nn.Linear(in_channels * patch_size**2, dim)
        self.dropout = nn.Dropout(dropout)
        self.transformer = Transformer(dim, depth, heads, dim * mlp_ratio, dropout)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2))
        if estimate_jacobian:
            self.mlp_head_jacobian = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.keypoint_token, std=self.motion_token_std)
        for module in self.modules():
            init_transformer_weights(module)
        if self.estimate_jacobian:  # identity Jacobians at initialisation
            head = self.mlp_head_jacobian[1]
            with torch.no_grad():
                head.weight.zero_()
                head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))

    def _position(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor | None:
        if not self.position_encoding:
            return None
        if grid == self.grid:
            return self.pos_embedding.to(like.dtype)
        # another frame size than configured: the same fixed function on this grid
        return sine_position_encoding(*grid, like.shape[-1]).to(like)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = features.shape
        p = self.patch_size
        grid = (h // p, w // p)
        # patches flattened as (p1 p2 c), channels fastest, as the reference's rearrange
        patches = features.view(b, c, grid[0], p, grid[1], p).permute(0, 2, 4, 3, 5, 1)
        image_tokens = self.patch_to_embedding(patches.reshape(b, grid[0] * grid[1], p * p * c))
        pos = self._position(grid, image_tokens)
        if pos is not None:
            image_tokens = image_tokens + pos
        motion_tokens = self.keypoint_token.expand(b, -1, -1)
        x = self.dropout(torch.cat([motion_tokens, image_tokens], dim=1))
        x = self.transformer(x, motion_tokens.shape[1], pos)
        kp_tokens = x[:, : self.num_kp]
        out = {"value": 2 * torch.sigmoid(self.mlp_head(kp_tokens)) - 1}
        if self.estimate_jacobian:
            jacobian_tokens = x[:, self.num_kp : 2 * self.num_kp]
            out["jacobian"] = self.mlp_head_jacobian(jacobian_tokens).view(b, self.num_kp, 2, 2)
        return out


class TransformerKPDetector(nn.Module):
    """MTIA's motion estimator (reference TokenPose_B): CNN backbone `pre_feature` + motion
    transformer `transformer`. Keypoints in [-1, 1] (x, y), Jacobians [B, K, 2, 2]."""

    def __init__(
        self,
        num_kp: int = 10,
        num_channels: int = 3,
        estimate_jacobian: bool = True,
        image_size: tuple[int, int] | list[int] = (256, 256),
        backbone: str = "hrnet_w32",
        pretrained: bool = False,
        **transformer_params: Any,
    ):
        """`transformer_params`: MotionTransformer's (patch_size, dim, depth, heads,
        mlp_ratio, dropout, position_encoding; the authors' TokenPose_B names)."""
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone {backbone!r} is not one of {sorted(BACKBONES)}")
        self.pre_feature = HRNetBackbone(BACKBONES[backbone], num_channels)
        self.transformer = MotionTransformer(
            (image_size[0] // 4, image_size[1] // 4),
            self.pre_feature.out_channels,
            num_kp=num_kp,
            estimate_jacobian=estimate_jacobian,
            **transformer_params,
        )
        # the Stem net is the first layers of HRNet-W32: it loads from the same file
        self.pretrained = ("hrnet_w32" if backbone == "stem" else backbone) if pretrained else None
        self.weights_notes: list[str] = []

    def load_pretrained(self) -> list[str]:
        """Initialise the backbone from ImageNet when configured (`pretrained`); returns notes
        on weights that could not be loaded. Construction never downloads: the trainer calls
        this once, at the start of a training run (rebuilds for evaluation load checkpoints)."""
        if self.pretrained is None:
            return []
        loaded, note = self.pre_feature.load_imagenet(self.pretrained)
        if loaded:
            return []
        warnings.warn(note, stacklevel=2)
        self.weights_notes.append(note)
        return [note]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.transformer(self.pre_feature(image))


# --- generator side ---------------------------------------------------------------------------


class BackgroundDenseMotion(DenseMotionNetwork):
    """FOMM's dense motion whose background motion is a global affine (identity without one);
    the 3×3 matrix rides in the driving motion dict under `bg_params`."""

    def sparse_motions(
        self, size: tuple[int, int], kp_driving: dict, kp_source: dict
    ) -> torch.Tensor:
        motions = super().sparse_motions(size, kp_driving, kp_source)
        bg_params = kp_driving.get("bg_params")
        if bg_params is None:
            return motions
        b = motions.shape[0]
        grid = motions[:, 0].reshape(b, -1, 2)
        grid = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1) @ bg_params.transpose(1, 2)
        background = (grid[..., :2] / grid[..., 2:]).view(b, 1, *size, 2)
        return torch.cat([background, motions[:, 1:]], dim=1)


class Generator(_FOMMGenerator):
    """FOMM's occlusion-aware generator (same layout and keys) with the background motion and
    optional warped skips: each decoder input becomes warp(skip)·occ + decoder·(1 − occ), and
    the output warp(source)·occ + output·(1 − occ)."""

    def __init__(self, skips: bool = True, **kwargs):
        dense_motion_params = kwargs.pop("dense_motion_params", None)
        super().__init__(dense_motion_params=None, **kwargs)
        if dense_motion_params is not None:
            self.dense_motion_network = BackgroundDenseMotion(
                num_kp=kwargs.get("num_kp", 10),
                num_channels=kwargs.get("num_channels", 3),
                estimate_occlusion_map=kwargs.get("estimate_occlusion_map", True),
                align_corners=self.align_corners,
                **dense_motion_params,
            )
        self.skips = skips

    def forward(
        self,
        source_image: torch.Tensor,
        kp_driving: dict,
        kp_source: dict,
        bg_params: torch.Tensor | None = None,
        source_features: list[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        if not self.skips and bg_params is None:
            return super().forward(source_image, kp_driving, kp_source, source_features)
        motion = None
        if self.dense_motion_network is not None:
            kp_driving = {**kp_driving, "bg_params": bg_params}
            motion = self.dense_motion_network(source_image, kp_driving, kp_source)
        return self.outputs(source_image, motion, source_features, self.skips)


class MTIA(Animator):
    """The animator: transformer keypoint detector + FOMM generator (+ background predictor,
    + discriminator if configured; the authors save one but train it with weight 0).

    Attribute names are the authors' checkpoint keys. With a background predictor, `detect`
    keeps the frame in the motion dict so that `animate(source, kp_s, kp_d)` can predict the
    background motion from (source, driving), FOMM's call signature unchanged.
    """

    method = "mtia"
    network_names = ("generator", "kp_detector", "bg_predictor", "discriminator")

    def __init__(
        self,
        common_params: dict,
        kp_detector_params: dict,
        generator_params: dict,
        bg_predictor_params: dict | None = None,
        discriminator_params: dict | None = None,
    ):
        super().__init__()
        # MTIA trained on torch 1.6, whose grid_sample default is align_corners=False
        common = self.resolve_common(
            common_params, {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True}
        )
        num_kp, num_channels = common["num_kp"], common["num_channels"]
        estimate_jacobian = common["estimate_jacobian"]
        self.kp_detector = TransformerKPDetector(
            num_kp=num_kp,
            num_channels=num_channels,
            estimate_jacobian=estimate_jacobian,
            **kp_detector_params,
        )
        self.generator = Generator(
            num_kp=num_kp,
            num_channels=num_channels,
            align_corners=self.align_corners,
            **generator_params,
        )
        # MRAA's background predictor (same layout and keys); MTIA's default type is affine
        self.bg_predictor = (
            BGMotionPredictor(
                num_channels=num_channels, **{"bg_type": "affine", **bg_predictor_params}
            )
            if bg_predictor_params is not None
            else None
        )
        self.discriminator = (
            MultiScaleDiscriminator(
                num_kp=num_kp, num_channels=num_channels, **discriminator_params
            )
            if discriminator_params is not None
            else None
        )

    @property
    def warnings(self) -> list[str]:
        """Notes on weights that could not be loaded (recorded by the trainer)."""
        return list(self.kp_detector.weights_notes)

    def load_pretrained(self) -> list[str]:
        """ImageNet init of the keypoint detector's backbone where the preset asks for it
        (`kp_detector_params.pretrained`, TaiChi); called by the trainer at the start of a run.
        Returns notes on weights that could not be loaded."""
        return self.kp_detector.load_pretrained()
