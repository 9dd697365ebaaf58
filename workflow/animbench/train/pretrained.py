"""Which pretrained weight files a training run needs, and what happens when one is missing.

A preset trained on random VGG19 / HRNet / DINO / SAM features is not the preset: so a missing
file stops the run at its start (one line naming the file and its URL), unless random
substitutes are explicitly allowed (`allow_random_weights`, the offline CI profile); then every
substitute is a *deviation*, recorded in the checkpoint and carried to the tables ("deviates").

Torch-free on purpose: the workflow (rules/common.smk) asks it which files a train job needs.
"""

from __future__ import annotations

from collections.abc import Mapping

from animbench import weights
from animbench.errors import DataError


def required_weights(spec: Mapping) -> dict[str, str]:
    """Weight names (animbench.weights.WEIGHTS) a resolved preset's training loads -> what for.

    VGG19 when any perceptual weight is non-zero; the ImageNet HRNet when MTIA's keypoint
    detector initialises from it (the Stem net loads HRNet-W32's first layers); DINO ViT-B/8 and
    SAM when CPABMM's structure / keypoint semantic weights are non-zero."""
    train = spec.get("train_params", {})
    loss_weights = train.get("loss_weights", {})
    needed: dict[str, str] = {}
    if any(loss_weights.get("perceptual") or []):
        needed["vgg19"] = "the perceptual loss"
    kp = spec.get("model_params", {}).get("kp_detector_params", {})
    if spec.get("model") == "mtia" and kp.get("pretrained"):
        backbone = kp.get("backbone", "hrnet_w32")
        needed["hrnet_w32" if backbone == "stem" else backbone] = "the keypoint detector's init"
    if spec.get("model") == "cpabmm":
        if loss_weights.get("structure"):
            needed["dino_vitb8"] = "the structure alignment loss"
        if loss_weights.get("keypoint_semantic"):
            variant = train.get("keypoint_semantic_params", {}).get("variant", "vit_b")
            needed[f"sam_{variant}"] = "the keypoint semantic loss"
    return needed


def check_weights(spec: Mapping, allow_random: bool) -> list[str]:
    """Make sure every file `spec` needs is available (fetching it unless ANIMBENCH_OFFLINE).

    Returns the deviations: one line per missing file when `allow_random` (the run then uses
    random weights in its place). Without `allow_random`, the first missing file raises a
    one-line DataError naming the file and its URL."""
    deviations = []
    for name, purpose in required_weights(spec).items():
        path, reason = weights.fetch(name)
        if path is not None:
            continue
        entry = weights.WEIGHTS[name]
        if not allow_random:
            raise DataError(
                f"weight file {entry.filename} ({purpose}) missing: download {entry.url} into "
                f"{weights.cache_dir()} (animbench weights fetch {name}), or pass "
                f"--allow-random-weights to train on random weights (its results deviate)"
            )
        deviations.append(f"random weights instead of {entry.filename} for {purpose} ({reason})")
    return deviations
