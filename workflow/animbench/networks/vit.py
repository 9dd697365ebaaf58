"""DINO's ViT-B/8 in the layout of `torch.hub.load('facebookresearch/dino:main',
'dino_vitb8')` (DINO's vision_transformer.py, the timm vit_base_patch8_224 parameter names), as
a frozen feature extractor (Caron et al., ICCV 2021).

CPABMM's structure alignment loss (models of notes/reference-models.md §5) reads the keys of its
last block. timm and torchvision are not importable beside this torch, so the network is
written here with DINO's exact parameter names and shapes (`cls_token`, `pos_embed`
[1, 785, 768] for patch 8 at 224², `patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}`, `norm`; no head), so DINO's released file
(`weights.WEIGHTS["dino_vitb8"]`) loads with `strict=True`. ViT-B/8 has 85,807,872 parameters.

Facts carried over from DINO's vision_transformer.py: pre-LN blocks with LayerNorm eps 1e-6,
qkv with bias, GELU MLP of ratio 4, attention scale head_dim^-0.5, truncated-normal (0.02)
initialisation; positional embeddings of other grid sizes are interpolated bicubically from the
28×28 grid with DINO's `scale_factor` (+0.1) recipe, the class embedding kept as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# DINO's published ViT-B/8 ("dino_vitb8")
VIT_B8 = {"patch_size": 8, "embed_dim": 768, "depth": 12, "num_heads": 12}


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, in_channels: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, h·w, D], row-major patches


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def qkv_split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as [B, N, D] each; D is heads × head_dim in DINO's channel order."""
        return self.qkv(x).chunk(3, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (t.reshape(b, n, self.num_heads, -1).transpose(1, 2) for t in self.qkv_split(x))
        # default scale head_dim^-0.5 equals DINO's qk_scale=None
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """The keys this block's attention computes from its input (heads concatenated)."""
        return self.attn.qkv_split(self.norm1(x))[1]


class DinoVisionTransformer(nn.Module):
    """DINO's ViT backbone (no classification head); `forward` returns the keys of one block.

    `img_size` only sets the stored positional grid (224 → 28×28 for patch 8, DINO's files);
    any input size works through interpolation of the positional embedding.
    """

    def __init__(
        self,
        patch_size: int = 8,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        img_size: int = 224,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // patch_size) ** 2 + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_transformer_weights)

    def interpolate_pos_encoding(self, num_patches: int, height: int, width: int) -> torch.Tensor:
        """Positional embedding for a `height`×`width` input (DINO's recipe, bicubic)."""
        n = self.pos_embed.shape[1] - 1
        if num_patches == n and height == width:
            return self.pos_embed
        side = int(math.sqrt(n))
        grid = self.pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        # DINO adds 0.1 to the target grid size so that floor(side·scale) lands on it exactly
        h0, w0 = height // self.patch_size + 0.1, width // self.patch_size + 0.1
        grid = F.interpolate(grid, scale_factor=(h0 / side, w0 / side), mode="bicubic")
        if grid.shape[-2:] != (int(h0), int(w0)):
            raise ValueError(f"positional grid {tuple(grid.shape[-2:])} ≠ {(int(h0), int(w0))}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dim)
        return torch.cat([self.pos_embed[:, :1], grid], dim=1)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[CLS] + patch tokens with positional embedding: [B, 1 + h·w, D]."""
        height, width = x.shape[-2:]
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.interpolate_pos_encoding(tokens.shape[1] - 1, height, width)

    def forward(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Keys of block `layer` (default the last, DINO ViT-B's block 11): [B, 1 + h·w, D].

        Blocks after `layer` are not computed, nor the attention of block `layer` itself.
        """
        layer = layer % len(self.blocks)
        tokens = self.prepare_tokens(x)
        for block in self.blocks[:layer]:
            tokens = block(tokens)
        return self.blocks[layer].keys(tokens)


def init_transformer_weights(module: nn.Module) -> None:
    """timm's ViT initialisation of a linear or LayerNorm layer (other modules: unchanged)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def cosine_self_similarity(tokens: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """[B, N, D] → [B, N, N] cosine similarities, the norm product clamped at `eps` (as
    splice-vit / CPABMM compute the keys' self-similarity)."""
    norms = tokens.norm(dim=-1, keepdim=True)
    return (tokens @ tokens.transpose(1, 2)) / (norms @ norms.transpose(1, 2)).clamp(min=eps)
