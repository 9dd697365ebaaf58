"""Where a training step's time goes, and what our perceptual loss saves over the reference.

The reference computes VGG19 features of the real image with autograd recording and detaches
them afterwards; we compute them under no_grad. Both variants run here on the same model,
batch and VGG layers, so the ratio is measured, not assumed; a further row shows what the
layers after the last non-zero perceptual weight would cost. Writes
results/bench/perceptual_loss.parquet.

    python benchmarks/perceptual_loss.py --preset fomm-synthetic --batch 8 --steps 5
    python benchmarks/perceptual_loss.py --preset fomm-vox256 --batch 2 --steps 2
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from animbench.models.registry import build, get_preset
from animbench.train.objectives import KeypointObjective


def _reference_perceptual(loss_module, prediction, real, num_slices: int):
    """The reference's formulation: real features computed with autograd, then detached."""
    pyramid_pred, pyramid_real = loss_module.pyramid(prediction), loss_module.pyramid(real)
    total = prediction.new_zeros(())
    for key in pyramid_pred:
        pred_features = loss_module.vgg(pyramid_pred[key], num_slices)
        real_features = loss_module.vgg(pyramid_real[key], num_slices)
        for weight, a, b in zip(loss_module.layer_weights, pred_features, real_features):
            total = total + weight * (a - b.detach()).abs().mean()
    return total


def _time(fn, steps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="fomm-synthetic")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="results/bench/perceptual_loss.parquet")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # offline VGG19 warning: timing is the same

    spec = get_preset(args.preset)
    size = spec["dataset_params"]["frame_shape"][0]
    model = build(spec)
    objective = KeypointObjective(model, spec["train_params"])
    source, driving = torch.rand(2, args.batch, 3, size, size).unbind(0)
    prediction = torch.rand(args.batch, 3, size, size, requires_grad=True)

    def model_forward():
        with torch.no_grad():
            model(source, driving)

    def perceptual_ours():
        objective.perceptual(prediction, driving).backward()

    slices = objective.perceptual.num_slices

    def perceptual_reference():
        _reference_perceptual(objective.perceptual, prediction, driving, slices).backward()

    def perceptual_all_slices():
        objective.perceptual.num_slices = 5  # what the paper's weights [10]*5 compute
        try:
            objective.perceptual(prediction, driving).backward()
        finally:
            objective.perceptual.num_slices = slices

    def full_step():
        losses, _ = objective.generator_losses(model, source, driving)
        sum(losses.values()).backward()

    rows = [
        ("model forward (no grad)", model_forward),
        ("perceptual fwd+bwd, reference (real features with autograd)", perceptual_reference),
        ("perceptual fwd+bwd, animbench (real features under no_grad)", perceptual_ours),
        ("perceptual fwd+bwd, animbench, all five VGG slices", perceptual_all_slices),
        ("full generator step fwd+bwd", full_step),
    ]
    records = []
    for name, fn in rows:
        seconds = _time(fn, args.steps)
        records.append(
            {
                "preset": args.preset,
                "batch": args.batch,
                "frame": size,
                "part": name,
                "seconds": seconds,
                "threads": torch.get_num_threads(),
                "device": "cpu",
                "torch": torch.__version__,
            }
        )
        print(f"{name:62s} {seconds * 1000:8.1f} ms")
    table = pd.DataFrame(records)
    ours, reference = table.seconds.iloc[2], table.seconds.iloc[1]
    print(f"perceptual loss, same layers: reference / animbench time = {reference / ours:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
