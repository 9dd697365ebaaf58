"""The AED identity embedders (face-identity, person-reid) on randomly initialised weights.

No published weight file is reachable from tests: the layouts are checked against the
published ones (facenet-pytorch's InceptionResnetV1, torchvision's resnet50) by parameter count
and named key shapes, and the file loaders by round-tripping files saved from random models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from animbench import weights
from animbench.errors import DataError
from animbench.evaluate.backends.identity_backends import (
    FACE_WEIGHTS,
    REID_WEIGHTS,
    FaceIdentityEmbedder,
    PersonReidEmbedder,
)
from animbench.evaluate.detectors import available_identity_embedders, get_identity_embedder
from animbench.networks.inception_resnet import InceptionResnetV1
from animbench.networks.resnet import ReidResNet50

SIZE = 64


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Three unlike uint8 frames [3, 64, 64, 3]: noise, a colour gradient, dark noise."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, SIZE)
    frames[1] = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None], 128), -1).astype(np.uint8)
    frames[2] //= 4
    return frames


@pytest.fixture(scope="module")
def face() -> FaceIdentityEmbedder:
    torch.manual_seed(0)
    return FaceIdentityEmbedder(pretrained=False, batch_size=2)


@pytest.fixture(scope="module")
def reid() -> PersonReidEmbedder:
    torch.manual_seed(0)
    return PersonReidEmbedder(pretrained=False, batch_size=2)


def _parameters(module: torch.nn.Module, skip: str = "") -> int:
    return sum(p.numel() for k, p in module.named_parameters() if not (skip and k.startswith(skip)))


def test_face_network_has_facenet_pytorch_layout():
    net = InceptionResnetV1()
    # facenet-pytorch InceptionResnetV1(pretrained='vggface2'), logits (8631 classes) included
    assert _parameters(net) == 27_910_327
    state = net.state_dict()
    shapes = {
        "conv2d_1a.conv.weight": (32, 3, 3, 3),
        "conv2d_4b.bn.running_var": (256,),
        "repeat_1.4.branch2.2.conv.weight": (32, 32, 3, 3),
        "repeat_1.0.conv2d.bias": (256,),
        "mixed_6a.branch0.conv.weight": (384, 256, 3, 3),
        "repeat_2.9.branch1.1.conv.weight": (128, 128, 1, 7),
        "repeat_2.9.branch1.2.conv.weight": (128, 128, 7, 1),
        "mixed_7a.branch2.2.conv.weight": (256, 256, 3, 3),
        "repeat_3.4.branch1.1.conv.weight": (192, 192, 1, 3),
        "block8.conv2d.weight": (1792, 384, 1, 1),
        "last_linear.weight": (512, 1792),
        "last_bn.running_mean": (512,),
        "logits.weight": (8631, 512),
        "logits.bias": (8631,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "last_linear.bias" not in state
    assert "mixed_6a.branch2.weight" not in state  # max-pool branch: no parameters
    bn = net.conv2d_2a.bn
    assert bn.eps == 0.001 and bn.momentum == 0.1 and net.conv2d_2a.conv.bias is None
    assert [block.scale for block in net.repeat_1] == [0.17] * 5
    assert [block.scale for block in net.repeat_2] == [0.10] * 10
    assert [block.scale for block in net.repeat_3] == [0.20] * 5
    assert not net.block8.relu and all(block.relu for block in net.repeat_3)


def test_reid_network_has_torchvision_resnet50_layout():
    net = ReidResNet50()
    assert _parameters(net, skip="classifier.") == 23_508_032  # torchvision resnet50 minus fc
    state = net.state_dict()
    assert tuple(state["classifier.weight"].shape) == (751, 2048)
    assert tuple(state["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(state["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert tuple(state["layer3.0.conv2.weight"].shape) == (256, 256, 3, 3)
    assert net.layer3[0].conv2.stride == (2, 2)  # stride on the 3×3 (torchvision's v1.5)
    assert "layer1.1.downsample.0.weight" not in state
    assert len(net.layer3) == 6


@pytest.mark.parametrize("which, dim", [("face", 512), ("reid", 2048)])
def test_embeddings_batched_equal_frame_by_frame(request, frames, which, dim):
    embedder = request.getfixturevalue(which)
    batch = embedder.embed(frames)  # batch_size 2 < 3 frames: two chunks
    assert batch.shape == (3, dim) and batch.dtype == np.float32
    assert np.isfinite(batch).all()
    single = np.concatenate([embedder.embed(frame) for frame in frames])  # [H, W, 3] each
    scale = max(1.0, float(np.abs(batch).max()))
    np.testing.assert_allclose(batch, single, rtol=1e-4, atol=1e-5 * scale)
    distances = ((batch[:, None] - batch[None]) ** 2).sum(-1)
    assert (distances[~np.eye(3, dtype=bool)] > 1e-5 * scale**2).all()  # different images
    assert embedder.embed(frames[:0]).shape == (0, dim)


def test_face_embeddings_are_unit_vectors(face, frames):
    norms = np.linalg.norm(face.embed(frames), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_reid_embedding_is_not_normalised(reid, frames):
    # the raw pooled feature (ReLU outputs, so non-negative), as the papers' ft_net feature
    embedding = reid.embed(frames)
    assert (embedding >= 0).all()
    assert not np.allclose(np.linalg.norm(embedding, axis=1), 1.0)


def test_preprocessing_resizes_whole_frame(face, reid):
    frame = np.full((1, 90, 50, 3), 255, np.uint8)
    assert tuple(face.preprocess(frame).shape) == (1, 3, 160, 160)
    torch.testing.assert_close(face.preprocess(frame), torch.full((1, 3, 160, 160), 127.5 / 128))
    inputs = reid.preprocess(frame)
    assert tuple(inputs.shape) == (1, 3, 256, 128)
    white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(inputs[0, :, 100, 60], white)


def test_rejects_non_uint8(face):
    with pytest.raises(ValueError, match="uint8"):
        face.embed(np.zeros((1, 8, 8, 3), np.float32))


def test_face_weights_round_trip(face, frames, tmp_path):
    path = tmp_path / "facenet.pt"
    torch.save(face.network.state_dict(), path)
    loaded = FaceIdentityEmbedder(weights=path, batch_size=3)
    np.testing.assert_allclose(loaded.embed(frames), face.embed(frames), atol=1e-6)
    assert loaded.version == "facenet-vggface2-20180402"
    assert face.version.endswith("+random-init") and face.weights_sha256 is None
    assert loaded.weights_sha256 is not None and len(loaded.weights_sha256) == 64
    # the logits layer is optional; the backbone is not
    state = {k: v for k, v in face.network.state_dict().items() if not k.startswith("logits")}
    torch.save(state, path)
    FaceIdentityEmbedder(weights=path)
    del state["repeat_2.3.conv2d.weight"]
    torch.save(state, path)
    with pytest.raises(DataError, match=r"facenet\.pt.*repeat_2\.3\.conv2d\.weight"):
        FaceIdentityEmbedder(weights=path)


@pytest.mark.parametrize("layout", ["plain", "state_dict", "module"])
def test_reid_weights_round_trip(reid, frames, tmp_path, layout):
    state = reid.network.state_dict()
    if layout == "module":  # DataParallel, inside torchreid's checkpoint dict
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 60}
    elif layout == "state_dict":
        state = {"state_dict": state, "rank1": np.float64(0.88)}  # numpy scalar beside it
    path = tmp_path / "resnet50_market1501.pt"
    torch.save(state, path)
    loaded = PersonReidEmbedder(weights=path, batch_size=3)
    np.testing.assert_allclose(loaded.embed(frames), reid.embed(frames), rtol=1e-5, atol=1e-5)


def test_reid_weights_extra_keys_ok_missing_backbone_fails(reid, tmp_path):
    path = tmp_path / "reid.pt"
    state = dict(reid.network.state_dict())
    state["classifier.weight"] = torch.zeros(1041, 2048)  # another training set's head
    state["classifier.bias"] = torch.zeros(1041)
    state["fc.0.weight"] = torch.zeros(512, 2048)
    torch.save(state, path)
    PersonReidEmbedder(weights=path)
    del state["layer2.1.bn2.running_mean"], state["conv1.weight"]
    torch.save(state, path)
    with pytest.raises(DataError, match=r"reid\.pt.*conv1\.weight.*layer2\.1\.bn2\.running_mean"):
        PersonReidEmbedder(weights=path)


@pytest.mark.parametrize(
    "cls, name", [(FaceIdentityEmbedder, FACE_WEIGHTS), (PersonReidEmbedder, REID_WEIGHTS)]
)
def test_missing_weights_name_file_and_url(cls, name, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ANIMBENCH_OFFLINE", "1")
    entry = weights.WEIGHTS[name]
    with pytest.raises(DataError) as error:
        cls()
    assert entry.filename in str(error.value) and entry.url in str(error.value)


def test_cached_reid_file_is_used_unpinned(reid, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = Path(tmp_path / "weights" / "resnet50_market1501.pt")
    path.parent.mkdir()
    torch.save(reid.network.state_dict(), path)
    with pytest.warns(UserWarning, match="UNPINNED"):
        loaded = get_identity_embedder("person-reid", batch_size=4)
    assert loaded.version == "torchreid-resnet50-market1501" and loaded.weights_sha256


def test_registry(frames):
    assert {"face-identity", "person-reid"} <= set(available_identity_embedders())
    torch.manual_seed(1)
    embedder = get_identity_embedder("face-identity", pretrained=False, batch_size=8)
    assert isinstance(embedder, FaceIdentityEmbedder) and embedder.name == "face-identity"
    assert embedder.embed(frames[:1]).shape == (1, 512)
    assert PersonReidEmbedder.name == "person-reid"
