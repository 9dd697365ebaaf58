"""Keypoint helpers shared by the models and animation: FOMM's adapt-movement scale."""

from __future__ import annotations

import warnings

import numpy as np
import torch

# where a keypoint dict holds positions (FOMM/TPSMM "value", MRAA "shift")
POSITION_KEYS = ("value", "shift")


def _hull_area(points: torch.Tensor) -> float:
    from scipy.spatial import ConvexHull

    return float(ConvexHull(points.detach().cpu().double().numpy()).volume)


def movement_scale(kp_source: dict, kp_driving_initial: dict) -> float:
    """FOMM's adapt_movement_scale: √area(hull(kp_s)) / √area(hull(kp_d0)) (first sample)."""
    key = next(k for k in POSITION_KEYS if k in kp_source)
    try:
        source = _hull_area(kp_source[key][0])
        driving = _hull_area(kp_driving_initial[key][0])
    except Exception as exc:  # scipy's QhullError for collinear / coincident keypoints
        warnings.warn(
            f"adapt scale: convex hull of the keypoints failed ({type(exc).__name__}); "
            "using scale 1",
            stacklevel=2,
        )
        return 1.0
    if driving <= 0:
        return 1.0
    return float(np.sqrt(source) / np.sqrt(driving))
