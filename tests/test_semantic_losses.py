"""CPABMM's DINO structure alignment loss and SAM keypoint semantic loss, and their weight files.

The networks are the real classes; most tests use narrow encoders (the shape logic is the same),
and no test touches the network (an empty cache under tmp_path, urlopen disabled)."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import offline_weights

from animbench import weights
from animbench.errors import DataError
from animbench.networks.vit import DinoVisionTransformer, cosine_self_similarity
from animbench.train.semantic_losses import (
    KeypointSemanticLoss,
    StructureAlignmentLoss,
    import_sam_modeling,
    resized_shape,
)

TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}  # patch 8 as DINO ViT-B/8
TINY_SAM = {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,)}


def _images(seed: int, batch: int = 2, size: int = 64) -> torch.Tensor:
    """Smooth random images in [0, 1] (structure at several scales, not only pixel noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _tiny_structure_loss(**kwargs) -> StructureAlignmentLoss:
    torch.manual_seed(0)
    return StructureAlignmentLoss(pretrained=False, vit_params=TINY_VIT, **kwargs)


def _tiny_ks_loss(**kwargs) -> KeypointSemanticLoss:
    torch.manual_seed(0)
    return KeypointSemanticLoss(pretrained=False, image_size=64, sam_params=TINY_SAM, **kwargs)


# --- DINO ViT ---------------------------------------------------------------------------------


def _dino_vitb8_layout() -> dict[str, tuple[int, ...]]:
    """The state_dict of torch.hub 'dino_vitb8' (DINO's vision_transformer.vit_base, patch 8,
    head = Identity): names and shapes."""
    d, hidden = 768, 3072
    layout = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 785, d),
        "patch_embed.proj.weight": (d, 3, 8, 8),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(12):
        b = f"blocks.{i}."
        layout |= {
            b + "norm1.weight": (d,),
            b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d),
            b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d),
            b + "attn.proj.bias": (d,),
            b + "norm2.weight": (d,),
            b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (hidden, d),
            b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (d, hidden),
            b + "mlp.fc2.bias": (d,),
        }
    return layout | {"norm.weight": (d,), "norm.bias": (d,)}


def test_full_size_vit_b8_has_dino_layout_and_parameter_count():
    model = DinoVisionTransformer()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _dino_vitb8_layout()
    assert sum(p.numel() for p in model.parameters()) == 85_807_872  # 85.8M


def _dino_reference_keys(model: DinoVisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """DINO's own computation (explicit softmax attention, its w/h naming and positional
    interpolation), written out independently: keys of the last block [B, N, D]."""
    b, _, w, h = x.shape  # DINO calls dim 2 "w"
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls_token.expand(b, -1, -1), tokens], dim=1)
    n = model.pos_embed.shape[1] - 1
    dim = tokens.shape[-1]
    w0, h0 = w // model.patch_size + 0.1, h // model.patch_size + 0.1
    patch_pos = F.interpolate(
        model.pos_embed[:, 1:]
        .reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim)
        .permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
        mode="bicubic",
    )
    pos = torch.cat([model.pos_embed[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)], 1)
    if tokens.shape[1] - 1 == n and w == h:  # DINO's shortcut: the stored grid as is
        pos = model.pos_embed
    tokens = tokens + pos
    for i, blk in enumerate(model.blocks):
        heads = blk.attn.num_heads
        qkv = blk.attn.qkv(blk.norm1(tokens))
        qkv = qkv.reshape(b, tokens.shape[1], 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        if i == len(model.blocks) - 1:  # splice-vit: keys [h, t, d] → [t, h·d]
            return qkv[1].transpose(1, 2).reshape(b, tokens.shape[1], dim)
        attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * (dim // heads) ** -0.5).softmax(-1)
        y = (attn @ qkv[2]).transpose(1, 2).reshape(b, tokens.shape[1], dim)
        tokens = tokens + blk.attn.proj(y)
        tokens = tokens + blk.mlp(blk.norm2(tokens))
    raise AssertionError


@pytest.mark.parametrize("shape", [(224, 224), (224, 280), (96, 64)])
def test_keys_equal_dino_computation(shape):
    torch.manual_seed(0)
    model = DinoVisionTransformer(**TINY_VIT).eval()
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        keys = model(x)
        expected = _dino_reference_keys(model, x)
    assert keys.shape == (2, 1 + (shape[0] // 8) * (shape[1] // 8), 32)
    torch.testing.assert_close(keys, expected, rtol=1e-4, atol=1e-5)


def test_resize_follows_torchvision_resize_with_max_size():
    assert resized_shape(256, 256, 224, 480) == (224, 224)
    assert resized_shape(384, 384, 224, 480) == (224, 224)
    assert resized_shape(256, 320, 224, 480) == (224, 280)
    assert resized_shape(100, 400, 224, 480) == (120, 480)  # long side capped
    assert resized_shape(400, 100, 224, 480) == (480, 120)


# --- structure alignment loss -----------------------------------------------------------------


def test_self_similarity_is_785_square_symmetric_with_unit_diagonal():
    loss = _tiny_structure_loss()
    with torch.no_grad():
        sim = loss.self_similarity(_images(0))
    assert sim.shape == (2, 785, 785)  # 28×28 patches of 8 at 224² + [CLS]
    torch.testing.assert_close(sim, sim.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(2, 785))
    assert sim.abs().max() <= 1 + 1e-5
    # the clamp keeps a zero vector finite
    assert torch.isfinite(cosine_self_similarity(torch.zeros(1, 3, 4))).all()


def test_structure_loss_zero_for_identical_positive_for_shifted():
    loss = _tiny_structure_loss()
    images = _images(1)
    with torch.no_grad():
        assert loss(images, images.clone()).item() == pytest.approx(0.0, abs=1e-10)
        shifted = torch.roll(images, shifts=(8, 16), dims=(2, 3))
        assert loss(shifted, images).item() > 1e-4


def test_structure_loss_is_a_sum_over_samples():
    loss = _tiny_structure_loss()
    a, b = _images(2), _images(3)
    with torch.no_grad():
        per_sample = [loss(a[i : i + 1], b[i : i + 1]) for i in range(2)]
        torch.testing.assert_close(loss(a, b), sum(per_sample))


def test_structure_loss_gradient_reaches_generated_only():
    loss = _tiny_structure_loss()
    generated = _images(4).requires_grad_(True)
    driving = _images(5).requires_grad_(True)
    loss.train()
    assert not loss.training  # frozen: never in training mode
    loss(generated, driving).backward()
    assert generated.grad is not None and generated.grad.abs().sum() > 0
    assert driving.grad is None
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())


def test_structure_loss_pretrained_only_for_vit_b8():
    with pytest.raises(ValueError, match="ViT-B/8"):
        StructureAlignmentLoss(pretrained=True, vit_params=TINY_VIT)


# --- SAM keypoint semantic loss ---------------------------------------------------------------


def test_sam_modeling_imports_without_torchvision():
    modeling = import_sam_modeling()
    assert hasattr(modeling, "TwoWayTransformer")
    package = sys.modules.get("segment_anything")
    assert package is None or hasattr(package, "__file__")  # no stand-in left behind


def _keypoints(seed: int, batch: int = 2, k: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, k, 2, generator=g) * 1.8 - 0.9


@pytest.mark.parametrize("prompts", ["joint", "single"])
def test_ks_loss_zero_for_identical_frames_and_keypoints(prompts):
    loss = _tiny_ks_loss(prompts=prompts)
    images, kp = _images(0, size=48), _keypoints(0)
    with torch.no_grad():
        assert loss(images, images.clone(), kp, kp.clone()).item() == pytest.approx(0, abs=1e-5)


@pytest.mark.parametrize("prompts", ["joint", "single"])
def test_ks_loss_range_and_gradient_to_keypoints(prompts):
    k = 6
    loss_sum, loss_mean = (
        _tiny_ks_loss(prompts=prompts),
        _tiny_ks_loss(reduction="mean", prompts=prompts),
    )
    source, driving = _images(1, size=48), _images(2, size=48)
    kp_s = _keypoints(1).requires_grad_(True)
    kp_d = _keypoints(2).requires_grad_(True)
    mean = loss_mean(source, driving, kp_s, kp_d)
    assert 0 < mean.item() <= 2
    total = loss_sum(source, driving, kp_s, kp_d)
    torch.testing.assert_close(total, mean * k)  # Eq. 8 sums over the keypoints
    total.backward()
    assert kp_s.grad.abs().sum() > 0 and kp_d.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss_sum.parameters())


def test_ike_is_sams_decoder_output_token():
    """Joint prompts: IKE equals the point tokens that SAM's own MaskDecoder computes for the
    same image embedding and point prompt (captured from its transformer)."""
    loss = _tiny_ks_loss()
    sam = loss.sam
    with torch.no_grad():
        embedding = loss.image_embeddings(_images(3, batch=1, size=48))
        coords = loss.to_sam_coordinates(_keypoints(3, batch=1), 48, 48)
        ike = loss.keypoint_embeddings(embedding, coords)
        captured = []
        hook = sam.mask_decoder.transformer.register_forward_hook(
            lambda module, args, out: captured.append(out[0])  # returns None: output unchanged
        )
        sparse, dense = sam.prompt_encoder(
            points=(coords, torch.ones(coords.shape[:2])), boxes=None, masks=None
        )
        sam.mask_decoder(embedding, sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
        hook.remove()
    assert ike.shape == (1, 6, 256)
    torch.testing.assert_close(ike, captured[0][:, 5:11])


def test_single_prompts_keep_keypoints_independent():
    single, joint = _tiny_ks_loss(prompts="single"), _tiny_ks_loss(prompts="joint")
    embedding = single.image_embeddings(_images(4, batch=1, size=48))
    kp = _keypoints(4, batch=1)
    moved = kp.clone()
    moved[0, 0] = -moved[0, 0]
    with torch.no_grad():
        for loss, same in ((single, True), (joint, False)):
            a = loss.keypoint_embeddings(embedding, loss.to_sam_coordinates(kp, 48, 48))
            b = loss.keypoint_embeddings(embedding, loss.to_sam_coordinates(moved, 48, 48))
            assert torch.allclose(a[:, 1:], b[:, 1:], atol=1e-6) is same
            assert not torch.allclose(a[:, 0], b[:, 0])


def test_keypoints_map_to_sam_pixels():
    loss = _tiny_ks_loss()
    loss.image_size = 1024  # only the geometry is used here
    corners = torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]])
    # 256² → 1024²: pixel centres 0 … 255 scaled by 4 (segment_anything's apply_coords)
    torch.testing.assert_close(
        loss.to_sam_coordinates(corners, 256, 256),
        torch.tensor([[[0.0, 0.0], [1020.0, 1020.0], [510.0, 510.0]]]),
    )
    # 256×384 (H×W) → 683×1024
    assert loss._input_shape(256, 384) == (683, 1024)
    torch.testing.assert_close(
        loss.to_sam_coordinates(torch.tensor([[[1.0, 1.0]]]), 256, 384),
        torch.tensor([[[383 * 1024 / 384, 255 * 683 / 256]]]),
    )


def test_sam_preprocess_resizes_normalises_and_pads():
    loss = _tiny_ks_loss()
    x = loss.preprocess(torch.ones(1, 3, 24, 48))  # → 32×64, padded to 64×64
    assert x.shape == (1, 3, 64, 64)
    white = (255 - loss.sam.pixel_mean) / loss.sam.pixel_std
    torch.testing.assert_close(x[0, :, :32], white.expand(3, 32, 64))
    assert (x[0, :, 32:] == 0).all()


def test_ks_loss_options_are_checked():
    with pytest.raises(ValueError, match="variant"):
        KeypointSemanticLoss(variant="vit_x", pretrained=False)
    with pytest.raises(ValueError, match="prompts"):
        KeypointSemanticLoss(prompts="pairs", pretrained=False)
    with pytest.raises(ValueError, match="published"):
        KeypointSemanticLoss(pretrained=True, image_size=64, sam_params=TINY_SAM)


# --- weight files -----------------------------------------------------------------------------


def test_weight_entries():
    dino = weights.WEIGHTS["dino_vitb8"]
    assert dino.sha256_prefix is None  # no published digest: unpinned
    assert dino.url == (
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"
    )
    sam = weights.WEIGHTS["sam_vit_b"]
    assert sam.filename == "sam_vit_b_01ec64.pth" and len(sam.sha256_prefix) == 64
    assert {"sam_vit_l", "sam_vit_h"} <= set(weights.WEIGHTS)


def test_unpinned_file_is_accepted_with_its_sha256(tmp_path, monkeypatch):
    from animbench.downloads import sha256_file

    entry = weights.WeightFile("tiny", "https://example.invalid/tiny.pth", None)
    monkeypatch.setitem(weights.WEIGHTS, "tiny", entry)
    with offline_weights(tmp_path):
        assert weights.fetch("tiny")[0] is None  # absent and offline: no file, no error
        path = weights.cache_dir() / "tiny.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        with pytest.warns(UserWarning, match=f"UNPINNED.*{sha256_file(path)}"):
            assert weights.fetch("tiny") == (path, "cached")


def test_pinned_file_with_wrong_digest_is_refused(tmp_path):
    with offline_weights(tmp_path):
        path = weights.cache_dir() / "sam_vit_b_01ec64.pth"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not SAM")
        with pytest.raises(DataError, match="sam_vit_b_01ec64.pth"):
            weights.fetch("sam_vit_b")


def test_missing_weights_fall_back_with_a_note(tmp_path, monkeypatch):
    built, tiny = [], _tiny_ks_loss().sam
    monkeypatch.setattr(  # skip the 90M-parameter build
        "animbench.train.semantic_losses.build_sam", lambda **kw: built.append(kw) or tiny
    )
    with offline_weights(tmp_path):
        with pytest.warns(UserWarning, match="dino_vitbase8_pretrain.pth"):
            structure = StructureAlignmentLoss(pretrained=True)
        with pytest.warns(UserWarning, match="sam_vit_b_01ec64.pth"):
            semantic = KeypointSemanticLoss(pretrained=True)
    assert built[0]["embed_dim"] == 768 and built[0]["image_size"] == 1024
    for loss in (structure, semantic):
        assert not loss.pretrained and "randomly initialised" in loss.weights_note
    assert "dino_vitbase8_pretrain.pth" in structure.weights_note
    assert "sam_vit_b_01ec64.pth" in semantic.weights_note


@pytest.mark.slow  # writes, hashes and loads a 343 MB file (≈10 s)
def test_dino_file_loads_strictly_from_the_cache(tmp_path):
    torch.manual_seed(1)
    published = DinoVisionTransformer()
    with offline_weights(tmp_path):
        path = weights.cache_dir() / "dino_vitbase8_pretrain.pth"
        path.parent.mkdir(parents=True)
        torch.save(published.state_dict(), path)
        with pytest.warns(UserWarning, match="UNPINNED"):
            loss = StructureAlignmentLoss(pretrained=True)
    assert loss.pretrained and str(path) in loss.weights_note
    torch.testing.assert_close(loss.vit.pos_embed, published.pos_embed)
    torch.testing.assert_close(
        loss.vit.blocks[11].attn.qkv.weight, published.blocks[11].attn.qkv.weight
    )
