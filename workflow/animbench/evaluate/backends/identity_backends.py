"""Identity embedders for AED: ``face-identity`` (VoxCeleb) and ``person-reid`` (TaiChi, TED).

AED is the squared Euclidean distance between the embeddings of a generated frame and its
ground truth, averaged over frames. Both networks are written in this package
(networks/inception_resnet.py, networks/resnet.py; no facenet-pytorch, torchreid or
torchvision); their state_dict layouts are the published files' layouts, so those
files load directly through the weight cache (``animbench.weights.fetch``, sha256-checked when
pinned). A missing file stops with a DataError naming the file and its URL; weights are never
random unless ``pretrained=False`` is asked for (tests), which the ``version`` then says.

``face-identity``: FaceNet Inception-ResNet-v1 trained on VGGFace2 (David Sandberg's 20180402-
114759 model as ported by facenet-pytorch, ``InceptionResnetV1(pretrained='vggface2')``).
Input: the whole uint8 RGB frame (no face detection or crop: the papers fed their face network
the whole frame too), resized to 160×160 (bilinear, antialiased), standardised with facenet's
``fixed_image_standardization`` (x − 127.5) / 128. Embedding: the 512-d output of ``last_bn``,
L2-normalised, so squared distances lie in [0, 4]. The papers (FOMM/MRAA/TPSMM, via
pose-evaluation; reference-data-and-metrics.md §3.4) used OpenFace nn4.small2.v1 instead: a
128-d L2-normalised embedding of the whole frame converted to BGR and resized to 96×96 with
skimage (float [0, 1]). Different network, training set, dimension and resolution.

``person-reid``: ResNet-50 trained for person re-identification on Market-1501 (torchreid's
model zoo ``resnet50_market1501.pt``: 751 training identities, the architecture family and
training set of the papers' layumi ``ft_net``). Input: the whole frame resized to 256×128 (H×W,
bilinear, antialiased: torchreid's test transform, which resizes with PIL bilinear), scaled to
[0, 1] and normalised with the ImageNet mean/std; network in eval mode. Embedding: the 2048-d
global-average-pooled feature, not normalised (as ``ft_net``'s). The papers (§3.6) resized to
288×144 bicubic, divided by 255 twice (an extra ``Normalize(0, 255)`` after ``ToTensor``) and
never put the network in eval mode, so its BatchNorm used each single frame's statistics; that
largely cancels the double scaling, and is not reproduced here.

AED from these backends is therefore protocol-compatible (same distance, same frame averaging)
but not comparable with the papers' published numbers; ``name``, ``version`` and
``weights_sha256`` go into every metric row.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from animbench import weights
from animbench.downloads import sha256_file
from animbench.errors import DataError
from animbench.evaluate.detectors import (
    IdentityEmbedder,
    _check_frames,
    register_identity_embedder,
)
from animbench.networks.inception_resnet import InceptionResnetV1
from animbench.networks.resnet import ReidResNet50

FACE_WEIGHTS = "facenet_vggface2"
REID_WEIGHTS = "reid_resnet50_market1501"
FACE_SIZE = (160, 160)  # H, W: facenet-pytorch's input size
REID_SIZE = (256, 128)  # H, W: torchreid's default test size
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------------------------
# Weight files.


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint: a plain state_dict or ``{"state_dict": ...}`` (torchreid's
    ``save_checkpoint``), keys with or without DataParallel's ``module.`` prefix."""
    try:
        # torchreid checkpoints may hold numpy scalars (rank-1 accuracy) beside the tensors
        with torch.serialization.safe_globals(_NUMPY_SCALARS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: weight file not found") from None
    except Exception as exc:  # unpickling errors come in many types
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a state_dict, got {type(payload).__name__}")
    return {
        key.removeprefix("module."): value
        for key, value in payload.items()
        if isinstance(value, Tensor)
    }


def _numpy_scalars() -> list:
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed np.core
    scalar = core.multiarray.scalar
    return [scalar, np.dtype, *(type(np.dtype(t)) for t in ("float64", "float32", "int64"))]


_NUMPY_SCALARS = _numpy_scalars()


def load_weights(
    model: nn.Module,
    path: str | Path,
    *,
    optional: Sequence[str] = (),
    allow_extra: bool = False,
) -> None:
    """Load a checkpoint into ``model``; a DataError names the file and the keys at fault.

    Keys starting with a prefix in ``optional`` (classification heads) may be absent, as may
    BatchNorm's ``num_batches_tracked`` (older files). ``allow_extra`` ignores keys the model
    lacks (torchreid files may carry extra heads); otherwise they are an error too.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [
        key
        for key in expected
        if key not in state
        and not key.endswith("num_batches_tracked")
        and not key.startswith(tuple(optional))
    ]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} weights missing, e.g. {', '.join(missing[:5])} "
            f"(not a {type(model).__name__} checkpoint?)"
        )
    extra = [key for key in state if key not in expected]
    if extra and not allow_extra:
        raise DataError(f"{path}: unexpected weights {', '.join(extra[:5])}")
    wrong = [
        key for key, value in expected.items() if key in state and state[key].shape != value.shape
    ]
    required = [key for key in wrong if not key.startswith(tuple(optional))]
    if required:
        shapes = (f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in required)
        raise DataError(f"{path}: weights of the wrong shape: {'; '.join(list(shapes)[:5])}")
    # an optional head of another size (another training set's classes) is left out
    usable = {k: v for k, v in state.items() if k in expected and k not in wrong}
    model.load_state_dict(usable, strict=False)


def resolve_weights(name: str) -> Path:
    """The cached weight file ``name`` (fetched if allowed); a DataError names file and URL."""
    entry = weights.WEIGHTS[name]
    path, reason = weights.fetch(name)
    if path is None:
        raise DataError(
            f"identity weights {entry.filename} missing ({entry.url}): {reason}; "
            f"put the file in {weights.cache_dir()}"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Embedders.


class _NetworkEmbedder(IdentityEmbedder):
    """Runs a frozen network over frames in chunks of ``batch_size``; subclasses set the
    network, the weights entry, which of its keys the weights may lack or add, and the
    preprocessing."""

    weights_name: str
    base_version: str
    input_size: tuple[int, int]  # H, W
    dim: int  # embedding size
    network_class: type[nn.Module]  # built with no arguments, randomly initialised
    optional_keys: tuple[str, ...] = ()  # key prefixes the weights file may lack (load_weights)
    extra_keys: bool = False  # whether the weights file may hold keys the network has not

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        weights: str | Path | None = None,
        pretrained: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.network = self.network_class()
        if weights is None and pretrained:
            weights = resolve_weights(self.weights_name)
        if weights is None:  # random initialisation: tests only, and the version says so
            self.version = f"{self.base_version}+random-init"
            self.weights_sha256 = None
        else:
            load_weights(
                self.network, weights, optional=self.optional_keys, allow_extra=self.extra_keys
            )
            self.version = self.base_version
            self.weights_sha256 = sha256_file(weights)
        self.network.requires_grad_(False).eval().to(self.device)

    @abstractmethod
    def normalise(self, pixels: Tensor) -> Tensor:
        """Resized float pixels in [0, 255] -> the network's input."""

    def preprocess(self, frames: np.ndarray) -> Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, 3, h, w] on the device."""
        pixels = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        # antialias: whole frames shrink 1.6–3×, and plain bilinear would alias (PIL, which
        # torchreid's transform uses, filters too)
        pixels = F.interpolate(
            pixels, size=self.input_size, mode="bilinear", align_corners=False, antialias=True
        )
        return self.normalise(pixels)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        frames = np.ascontiguousarray(_check_frames(frames))
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                inputs = self.preprocess(frames[start : start + self.batch_size])
                chunks.append(self.network(inputs).float().cpu())
        if not chunks:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(chunks).numpy()


@register_identity_embedder("face-identity")
class FaceIdentityEmbedder(_NetworkEmbedder):
    """FaceNet (Inception-ResNet-v1, VGGFace2): unit 512-d embeddings of whole frames.

    ``weights``: a state_dict file in facenet-pytorch's layout; None fetches the published one.
    The ``logits`` keys may be absent (they are not used); any other missing key is an error.
    """

    weights_name = FACE_WEIGHTS
    base_version = "facenet-vggface2-20180402"
    input_size = FACE_SIZE
    dim = 512
    network_class = InceptionResnetV1
    optional_keys = ("logits.",)

    def normalise(self, pixels: Tensor) -> Tensor:
        return (pixels - 127.5) / 128.0  # facenet's fixed_image_standardization


@register_identity_embedder("person-reid")
class PersonReidEmbedder(_NetworkEmbedder):
    """ResNet-50 re-id (torchreid, Market-1501): 2048-d pooled features of whole frames.

    ``weights``: a torchreid checkpoint (plain state_dict or ``{"state_dict": ...}``, keys
    optionally ``module.``-prefixed); None fetches the model-zoo file. Extra keys (the
    classifier, other heads) are ignored; a missing backbone key is an error.
    """

    weights_name = REID_WEIGHTS
    base_version = "torchreid-resnet50-market1501"
    input_size = REID_SIZE
    dim = 2048
    network_class = ReidResNet50
    optional_keys = ("classifier.",)
    extra_keys = True

    def normalise(self, pixels: Tensor) -> Tensor:
        mean = pixels.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = pixels.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (pixels / 255.0 - mean) / std  # ToTensor's [0, 1], then ImageNet statistics
