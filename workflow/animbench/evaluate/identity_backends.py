"""Identity embedders for AED: ``face-identity`` (VoxCeleb) and ``person-reid`` (TaiChi, TED).

AED is the squared Euclidean distance between the embeddings of a generated frame and its
ground truth, averaged over frames. Both networks are written here (no facenet-pytorch,
torchreid or torchvision); their state_dict layouts are the published files' layouts, so those
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
from collections import OrderedDict
from collections.abc import Iterable, Sequence
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

FACE_WEIGHTS = "facenet_vggface2"
REID_WEIGHTS = "reid_resnet50_market1501"
FACE_SIZE = (160, 160)  # H, W: facenet-pytorch's input size
REID_SIZE = (256, 128)  # H, W: torchreid's default test size
VGGFACE2_CLASSES = 8631  # the published file's logits layer (training identities)
MARKET1501_CLASSES = 751
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------------------------
# Inception-ResNet-v1, in facenet-pytorch's state_dict layout.

# (in, out, kernel, stride, padding) of one BasicConv2d
ConvSpec = tuple[int, int, int | tuple[int, int], int, int | tuple[int, int]]


def conv_bn_relu(spec: ConvSpec) -> nn.Sequential:
    """Conv (no bias: the BatchNorm shifts) + BatchNorm (TensorFlow's eps 0.001) + ReLU.

    Children named conv/bn/relu: facenet-pytorch's ``BasicConv2d`` keys (``conv.weight``, ...).
    """
    cin, cout, kernel, stride, padding = spec
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            bn=nn.BatchNorm2d(cout, eps=0.001, momentum=0.1),
            relu=nn.ReLU(),
        )
    )


def conv_chain(*specs: ConvSpec) -> nn.Module:
    """One conv_bn_relu as is, several in an nn.Sequential (indexed keys, as upstream)."""
    if len(specs) == 1:
        return conv_bn_relu(specs[0])
    return nn.Sequential(*(conv_bn_relu(spec) for spec in specs))


class Branches(nn.Module):
    """Parallel branches ``branch0``, ``branch1``, ... concatenated over channels."""

    def __init__(self, branches: Iterable[nn.Module]) -> None:
        super().__init__()
        self.count = 0
        for branch in branches:
            self.add_module(f"branch{self.count}", branch)
            self.count += 1

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.count)], 1)


class ScaledResidual(Branches):
    """Inception-ResNet block: x + scale · conv2d(branches(x)), then ReLU unless ``relu=False``.

    ``conv2d`` is a biased 1×1 convolution back to the input's channels; the small scale keeps
    the residual stack stable (Szegedy et al. 2016).
    """

    def __init__(
        self, branches: Iterable[nn.Module], mixed: int, channels: int, scale: float, relu: bool
    ) -> None:
        super().__init__(branches)
        self.conv2d = nn.Conv2d(mixed, channels, kernel_size=1)
        self.scale = scale
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        out = x + self.scale * self.conv2d(super().forward(x))
        return F.relu(out) if self.relu else out


def block35(scale: float = 0.17) -> ScaledResidual:
    """35×35 grid block (Inception-ResNet-A), 256 channels."""
    return ScaledResidual(
        [
            conv_chain((256, 32, 1, 1, 0)),
            conv_chain((256, 32, 1, 1, 0), (32, 32, 3, 1, 1)),
            conv_chain((256, 32, 1, 1, 0), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1)),
        ],
        mixed=96,
        channels=256,
        scale=scale,
        relu=True,
    )


def block17(scale: float = 0.10) -> ScaledResidual:
    """17×17 grid block (Inception-ResNet-B), 896 channels, factorised 7×7."""
    return ScaledResidual(
        [
            conv_chain((896, 128, 1, 1, 0)),
            conv_chain(
                (896, 128, 1, 1, 0), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0))
            ),
        ],
        mixed=256,
        channels=896,
        scale=scale,
        relu=True,
    )


def block8(scale: float = 0.20, relu: bool = True) -> ScaledResidual:
    """8×8 grid block (Inception-ResNet-C), 1792 channels, factorised 3×3."""
    return ScaledResidual(
        [
            conv_chain((1792, 192, 1, 1, 0)),
            conv_chain(
                (1792, 192, 1, 1, 0), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0))
            ),
        ],
        mixed=384,
        channels=1792,
        scale=scale,
        relu=relu,
    )


def mixed_6a() -> Branches:
    """Reduction 35→17: 384 + 256 convolved + 256 max-pooled = 896 channels."""
    return Branches(
        [
            conv_chain((256, 384, 3, 2, 0)),
            conv_chain((256, 192, 1, 1, 0), (192, 192, 3, 1, 1), (192, 256, 3, 2, 0)),
            nn.MaxPool2d(3, stride=2),
        ]
    )


def mixed_7a() -> Branches:
    """Reduction 17→8: 384 + 256 + 256 convolved + 896 max-pooled = 1792 channels."""
    return Branches(
        [
            conv_chain((896, 256, 1, 1, 0), (256, 384, 3, 2, 0)),
            conv_chain((896, 256, 1, 1, 0), (256, 256, 3, 2, 0)),
            conv_chain((896, 256, 1, 1, 0), (256, 256, 3, 1, 1), (256, 256, 3, 2, 0)),
            nn.MaxPool2d(3, stride=2),
        ]
    )


class InceptionResnetV1(nn.Module):
    """FaceNet Inception-ResNet-v1: standardised RGB [N, 3, 160, 160] -> unit 512-d embeddings.

    The state_dict is facenet-pytorch's ``InceptionResnetV1(pretrained='vggface2')`` one,
    including the 8631-way ``logits`` layer (unused here, present so that the published file
    loads key for key).
    """

    def __init__(self, num_classes: int = VGGFACE2_CLASSES, dropout: float = 0.6) -> None:
        super().__init__()
        self.conv2d_1a = conv_bn_relu((3, 32, 3, 2, 0))
        self.conv2d_2a = conv_bn_relu((32, 32, 3, 1, 0))
        self.conv2d_2b = conv_bn_relu((32, 64, 3, 1, 1))
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = conv_bn_relu((64, 80, 1, 1, 0))
        self.conv2d_4a = conv_bn_relu((80, 192, 3, 1, 0))
        self.conv2d_4b = conv_bn_relu((192, 256, 3, 2, 0))
        self.repeat_1 = nn.Sequential(*(block35() for _ in range(5)))
        self.mixed_6a = mixed_6a()
        self.repeat_2 = nn.Sequential(*(block17() for _ in range(10)))
        self.mixed_7a = mixed_7a()
        self.repeat_3 = nn.Sequential(*(block8() for _ in range(5)))
        self.block8 = block8(scale=1.0, relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)  # identity in eval mode; kept for the layout
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1)
        self.logits = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b"):
            x = getattr(self, name)(x)
        for name in ("conv2d_4a", "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2"):
            x = getattr(self, name)(x)
        x = self.block8(self.repeat_3(self.mixed_7a(x)))
        x = self.dropout(self.avgpool_1a(x).flatten(1))
        return F.normalize(self.last_bn(self.last_linear(x)), p=2, dim=1)


# ---------------------------------------------------------------------------------------------
# ResNet-50, in torchvision's / torchreid's state_dict layout.


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride, "ResNet v1.5"), 1×1 expand ×4, plus shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:  # projection shortcut when the shape changes
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def resnet_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage: the first block changes resolution/width, the others keep it."""
    layers = [Bottleneck(inplanes, planes, stride)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ReidResNet50(nn.Module):
    """ResNet-50 re-id network: normalised RGB [N, 3, 256, 128] -> 2048-d pooled features.

    Keys: torchvision's resnet50 without ``fc``, plus torchreid's ``classifier`` (751 Market-1501
    identities, unused here: torchreid's eval-mode output is the pooled feature too).
    """

    def __init__(self, num_classes: int = MARKET1501_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = resnet_stage(64, 64, 3, stride=1)
        self.layer2 = resnet_stage(256, 128, 4, stride=2)
        self.layer3 = resnet_stage(512, 256, 6, stride=2)
        self.layer4 = resnet_stage(1024, 512, 3, stride=2)  # torchreid's resnet50: last_stride 2
        self.classifier = nn.Linear(512 * Bottleneck.expansion, num_classes)
        # torchreid's initialisation (only matters for random-weight tests): He fan-out convs,
        # unit BatchNorm, small classifier
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


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
    network, the weights entry and the preprocessing."""

    weights_name: str
    base_version: str
    input_size: tuple[int, int]  # H, W
    dim: int  # embedding size

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
        self.network = self.build_network()
        if weights is None and pretrained:
            weights = resolve_weights(self.weights_name)
        if weights is None:  # random initialisation: tests only, and the version says so
            self.version = f"{self.base_version}+random-init"
            self.weights_sha256 = None
        else:
            self.load(weights)
            self.version = self.base_version
            self.weights_sha256 = sha256_file(weights)
        self.network.requires_grad_(False).eval().to(self.device)

    @abstractmethod
    def build_network(self) -> nn.Module:
        """The network, randomly initialised."""

    @abstractmethod
    def load(self, path: str | Path) -> None:
        """Load the published weight file into `self.network`."""

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

    def build_network(self) -> nn.Module:
        return InceptionResnetV1()

    def load(self, path: str | Path) -> None:
        load_weights(self.network, path, optional=("logits.",))

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

    def build_network(self) -> nn.Module:
        return ReidResNet50()

    def load(self, path: str | Path) -> None:
        load_weights(self.network, path, optional=("classifier.",), allow_extra=True)

    def normalise(self, pixels: Tensor) -> Tensor:
        mean = pixels.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = pixels.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (pixels / 255.0 - mean) / std  # ToTensor's [0, 1], then ImageNet statistics
