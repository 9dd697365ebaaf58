"""CPABMM's two losses on frozen foundation models (Wang et al., AAAI 2024; notes §5).

* `StructureAlignmentLoss` (paper Eq. 9, "Structural Alignment Loss from DINO ViT"), as the
  authors' code computes it (modules/model.py `calculate_structure_ssim_loss`): per sample, the
  image is resized so that its short side is 224 (long side at most 480), ImageNet-normalised and
  fed to DINO ViT-B/8; the keys of the last block (11) give a cosine self-similarity matrix
  (785×785 with the [CLS] token at 224²); the loss is the MSE between the generated frame's and
  the driving frame's matrices (driving under no_grad), **summed over the batch**. The paper
  writes a Frobenius norm; the code (followed here) uses the MSE. The code multiplies it by a
  hard-coded λ_str = 0.1 (the objective's `structure` weight). Cost: ViT-B/8 over 785 tokens
  for 2B frames per step; B = 2 on 2 busy CPU cores: forward 21 s, forward + backward 34 s.
* `KeypointSemanticLoss` L_KS (paper Eq. 8, "SAM-Guided Keypoint Semantic Loss"). **The authors
  never published this loss** (its module is not in their repository, issue #4); it is written
  here from the paper's text and Figure 4, and its free choices are ours (see the class).

Both networks are frozen and always in eval mode; like `Vgg19` (networks/vgg.py) they load their
published weights through `animbench.weights` when `pretrained` (nothing is downloaded
otherwise), and without the file they keep a random initialisation, warn, and say so in
`weights_note` (training continues).
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

from animbench.networks.published import FrozenNetwork, load_or_random
from animbench.networks.vit import VIT_B8, DinoVisionTransformer, cosine_self_similarity

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _load_frozen(module: nn.Module, name: str, what: str, loss: str) -> tuple[bool, str]:
    """Load weight file `name` into `module` (strict); (False, note) with a warning if absent."""
    return load_or_random(module, name, what, f"{loss} uses a randomly initialised {what}")


class FrozenNetworkLoss(FrozenNetwork):
    """A loss on a frozen network with published weights. Subclasses name the network and its
    weight file (`published_weights`)."""

    def freeze(self, pretrained: bool, what: str, published: bool, unpublished_error: str) -> None:
        """End of `__init__`: as `FrozenNetwork.freeze`, but a ValueError with
        `unpublished_error` if `pretrained` is asked of an architecture with no published file."""
        if pretrained and not published:
            raise ValueError(unpublished_error)
        super().freeze(pretrained, what)

    @abc.abstractmethod
    def published_weights(self) -> tuple[nn.Module, str, str, str]:
        """(network, weight file name, its description, the loss's description)."""

    def load_pretrained(self) -> tuple[bool, str]:
        """Load the network's published weights (`weights.fetch(name)`); (loaded, note)."""
        return _load_frozen(*self.published_weights())


# --- structure alignment (DINO ViT-B/8) ---------------------------------------------------------


def resized_shape(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    """torchvision's `Resize(size, max_size)` output for an int size: the short side becomes
    `size`, the long side keeps the aspect ratio (truncated) but is capped at `max_size`."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if width <= height else (new_short, new_long)


class StructureAlignmentLoss(FrozenNetworkLoss):
    """Σ_b MSE(S(generated_b), S(driving_b)), S = cosine self-similarity of DINO's last keys.

    `vit_params` overrides DINO ViT-B/8's architecture (tests only: the published weights exist
    for ViT-B/8). `antialias` is off because the authors' torchvision (2023, < 0.17) resized
    tensors without antialiasing; torchvision ≥ 0.17 would antialias.
    """

    def __init__(
        self,
        pretrained: bool = True,
        size: int = 224,
        max_size: int | None = 480,
        layer: int = -1,
        antialias: bool = False,
        vit_params: dict | None = None,
    ):
        super().__init__()
        params = {**VIT_B8, **(vit_params or {})}
        self.vit = DinoVisionTransformer(**params)
        self.size, self.max_size, self.layer, self.antialias = size, max_size, layer, antialias
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), False)
        self.freeze(
            pretrained,
            "DINO ViT",
            params == VIT_B8,
            f"DINO weights exist for ViT-B/8 {VIT_B8} only, not {params}",
        )

    def published_weights(self) -> tuple[nn.Module, str, str, str]:
        return self.vit, "dino_vitb8", "DINO ViT-B/8", "the structure alignment loss"

    def self_similarity(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] → [B, T, T] (T = 785 for 224² and patch 8)."""
        shape = resized_shape(*images.shape[-2:], self.size, self.max_size)
        if shape != tuple(images.shape[-2:]):  # torchvision returns the image as is then
            images = F.interpolate(
                images, shape, mode="bilinear", align_corners=False, antialias=self.antialias
            )
        keys = self.vit((images - self.mean) / self.std, self.layer)
        return cosine_self_similarity(keys)

    def forward(self, generated: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        # all frames of a batch have one size, so one batched pass equals the per-sample loop
        with torch.no_grad():
            target = self.self_similarity(driving)
        similarity = self.self_similarity(generated)
        return (similarity - target).pow(2).mean(dim=(1, 2)).sum()


# --- keypoint semantics (SAM) -------------------------------------------------------------------

# segment_anything's build_sam.py configurations of the image encoder
SAM_VARIANTS = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
    "vit_l": {
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "global_attn_indexes": (5, 11, 17, 23),
    },
    "vit_h": {
        "embed_dim": 1280,
        "depth": 32,
        "num_heads": 16,
        "global_attn_indexes": (7, 15, 23, 31),
    },
}


def import_sam_modeling() -> types.ModuleType:
    """`segment_anything.modeling` (segment-anything 1.0) without running the package's
    __init__, which imports torchvision (through its automatic mask generator and transforms);
    the modeling subpackage needs only torch and numpy."""
    if "segment_anything.modeling" in sys.modules:
        return sys.modules["segment_anything.modeling"]
    if "segment_anything" in sys.modules:  # the real package is already imported
        return importlib.import_module("segment_anything.modeling")
    spec = importlib.util.find_spec("segment_anything")  # locates, does not execute
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "segment-anything is missing: pip install --no-deps segment-anything==1.0"
        )
    # a bare stand-in for the package lets the import system resolve the subpackage; it is
    # removed again so that a later `import segment_anything` runs the real __init__ (which then
    # reuses the modeling modules already loaded)
    stand_in = types.ModuleType("segment_anything")
    stand_in.__path__ = list(spec.submodule_search_locations)
    stand_in.__spec__ = spec
    sys.modules["segment_anything"] = stand_in
    try:
        return importlib.import_module("segment_anything.modeling")
    finally:
        if sys.modules.get("segment_anything") is stand_in:
            del sys.modules["segment_anything"]


def build_sam(
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn_indexes: tuple[int, ...],
    image_size: int = 1024,
) -> nn.Module:
    """An untrained `Sam` with segment_anything's `_build_sam` layout (its state_dict keys are
    those of the published checkpoints): patch 16, window 14, 256-d prompts, two-way decoder."""
    from functools import partial

    sam = import_sam_modeling()
    prompt_dim, patch = 256, 16
    if image_size % patch:
        raise ValueError(f"SAM's input size must be a multiple of {patch}, not {image_size}")
    return sam.Sam(
        image_encoder=sam.ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=num_heads,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(global_attn_indexes),
            window_size=14,
            out_chans=prompt_dim,
        ),
        prompt_encoder=sam.PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=sam.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sam.TwoWayTransformer(
                depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


class KeypointSemanticLoss(FrozenNetworkLoss):
    """L_KS = Σ_i (1 − IKE_s,i · IKE_d,i / max(‖IKE_s,i‖·‖IKE_d,i‖, ε)) (paper Eq. 8).

    NOT the authors' code (never published): implemented from the paper. The keypoint semantic
    extractor (Figure 4) is SAM's image encoder, prompt ("keypoint") encoder and the two-way
    transformer of its mask decoder. Choices the paper leaves open, made here:

    * every keypoint is a positive point prompt (label 1), in SAM's pixel frame: keypoints in
      [-1, 1] (align_corners=True) → pixel (x+1)/2·(W−1) of the frame → scaled by SAM's resize;
    * the decoder's tokens are SAM's own — IoU token, 4 mask tokens, the point token(s) and the
      padding point SAM adds without a box — and IKE_i is the transformer's output token of
      keypoint i (the mask upscaling and heads are not run);
    * `prompts="joint"` (default): all K keypoints of a frame form one prompt, one decoder pass
      per frame; `"single"`: each keypoint is its own prompt (IKE_i sees only keypoint i), which
      repeats the 64×64×256 image embedding K times through the decoder (K·B·4 MB per
      activation, several GB of activations at K = 50) — infeasible on the authors' 24 GB GPU
      at batch 8, so "joint" is the likelier reading;
    * `reduction="sum"` sums over the keypoints as Eq. 8 does and averages over the batch;
      "mean" averages over keypoints too (∈ [0, 2]).
    * SAM variant: not stated in the paper; `variant` "vit_b" (default, cheapest), "vit_l" or
      "vit_h".

    Cost: SAM's encoder (ViT-B: 93.7M parameters with prompt encoder and decoder) runs at 1024²
    (longest side resized to `image_size`, zero padding after SAM's pixel normalisation) on the
    source and driving frames, 2B images per step, under no_grad (frames get no gradient; the
    keypoints do, through the prompt encoder and decoder). Measured on 2 busy CPU cores, B = 2,
    K = 50: encoder 252 s for the 4 frames; decoder forward + backward 4 s ("joint") or 80 s and
    11 GB peak memory ("single").
    `sam_params` overrides the encoder configuration (tests only).
    """

    def __init__(
        self,
        variant: str = "vit_b",
        pretrained: bool = True,
        prompts: str = "joint",
        reduction: str = "sum",
        eps: float = 1e-8,
        image_size: int = 1024,
        sam_params: dict | None = None,
    ):
        super().__init__()
        if variant not in SAM_VARIANTS:
            raise ValueError(f"SAM variant {variant!r} not in {sorted(SAM_VARIANTS)}")
        if prompts not in ("joint", "single"):
            raise ValueError(f"prompts must be 'joint' or 'single', not {prompts!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")
        params = {**SAM_VARIANTS[variant], **(sam_params or {})}
        self.sam = build_sam(**params, image_size=image_size)
        self.variant, self.prompts, self.reduction, self.eps = variant, prompts, reduction, eps
        self.image_size = image_size
        self.freeze(
            pretrained,
            f"SAM {variant}",
            params == SAM_VARIANTS[variant] and image_size == 1024,
            f"SAM weights exist for the published {variant} at 1024² only",
        )

    def published_weights(self) -> tuple[nn.Module, str, str, str]:
        v = self.variant
        return self.sam, f"sam_{v}", f"SAM {v}", "the keypoint semantic loss"

    def _input_shape(self, height: int, width: int) -> tuple[int, int]:
        # segment_anything's ResizeLongestSide.get_preprocess_shape
        scale = self.image_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] → SAM's input: 0–255 RGB, longest side `image_size`
        (bilinear, antialiased, as SamPredictor.set_torch_image), normalised, padded."""
        shape = self._input_shape(*images.shape[-2:])
        x = F.interpolate(images * 255, shape, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.sam.pixel_mean) / self.sam.pixel_std
        return F.pad(x, (0, self.image_size - shape[1], 0, self.image_size - shape[0]))

    def to_sam_coordinates(self, keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """[-1, 1] (x, y; align_corners=True) → SAM's input-frame pixels (x, y)."""
        new_h, new_w = self._input_shape(height, width)
        size = keypoints.new_tensor([width - 1, height - 1])
        scale = keypoints.new_tensor([new_w / width, new_h / height])
        return (keypoints + 1) / 2 * size * scale

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """SAM's image embedding IE: [B, 256, image_size/16, image_size/16], without gradient."""
        with torch.no_grad():
            return self.sam.image_encoder(self.preprocess(images))

    def keypoint_embeddings(
        self, image_embeddings: torch.Tensor, coords: torch.Tensor
    ) -> torch.Tensor:
        """IKE [B, K, 256] from IE [B, 256, h, w] and SAM-frame keypoints [B, K, 2]."""
        b, k = coords.shape[:2]
        if self.prompts == "single":
            image_embeddings = image_embeddings.repeat_interleave(k, dim=0)
            coords = coords.reshape(b * k, 1, 2)
        labels = torch.ones(coords.shape[:2], device=coords.device)
        encoder, decoder = self.sam.prompt_encoder, self.sam.mask_decoder
        sparse, dense = encoder(points=(coords, labels), boxes=None, masks=None)
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(sparse.shape[0], -1, -1), sparse], dim=1)
        dense_pe = encoder.get_dense_pe().expand(sparse.shape[0], -1, -1, -1)
        hs, _ = decoder.transformer(image_embeddings + dense, dense_pe, tokens)
        start = output_tokens.shape[0]
        return hs[:, start : start + coords.shape[1]].reshape(b, k, -1)

    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
    ) -> torch.Tensor:
        """Frames [B, 3, H, W] in [0, 1] and their keypoints [B, K, 2] in [-1, 1]."""
        b, height, width = source.shape[0], *source.shape[-2:]
        embeddings = self.image_embeddings(torch.cat([source, driving]))
        coords = self.to_sam_coordinates(torch.cat([kp_source, kp_driving]), height, width)
        ike = self.keypoint_embeddings(embeddings, coords)
        ike_s, ike_d = ike[:b], ike[b:]
        norms = (ike_s.norm(dim=-1) * ike_d.norm(dim=-1)).clamp(min=self.eps)
        per_keypoint = 1 - (ike_s * ike_d).sum(-1) / norms
        if self.reduction == "sum":
            return per_keypoint.sum(1).mean()
        return per_keypoint.mean()
