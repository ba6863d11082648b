"""Simulated monocular-network depth: exact depth corrupted the way CNN depth predictions are wrong.

Benchmarks of odometry and depth fusion need a depth input with realistic errors, without depending
on how well a particular network happens to be trained. Single-image depth networks are rarely
wrong pixel by pixel at random; their errors are mostly

- **smooth and multiplicative**: whole regions (a wall, the floor, a car) come out a few percent
  too near or too far, so the relative error is a low-frequency field over the image;
- **per image, a global scale error**: the metric scale a network infers from context varies from
  frame to frame by a few percent;
- **plus fine noise**: slightly spatially correlated, a few percent of depth.

:func:`network_like_depth` applies the three in the log domain
``predicted = depth * exp(field + noise) * scale`` and returns the standard deviation a
well-calibrated network would report with it. With the default strengths the AbsRel of the result
is about 0.08, close to a small self-supervised network on in-domain images.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray

BIAS_GRID = (3, 4)
"""(rows, columns) of the random grid the smooth bias field is interpolated from."""


def network_like_depth(
    depth: NDArray[np.floating],
    rng: np.random.Generator,
    bias_std: float = 0.1,
    noise_std: float = 0.04,
    scale_std: float = 0.05,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Exact depth corrupted like a monocular depth network's prediction, and the std it would report.

    Errors are multiplicative (log domain): a smooth random field (bicubic upsampling of a
    :data:`BIAS_GRID` grid of normal samples, std ``bias_std``), per-pixel noise of std
    ``2 * noise_std`` blurred with a 1-pixel Gaussian (about ``0.56 * noise_std`` after the blur,
    correlated over a few pixels) and a per-image scale error (std ``scale_std``). Invalid pixels
    (NaN) stay NaN.

    Args:
        depth: (H, W) exact depth, metres, NaN where invalid.
        rng: random generator; the result is a deterministic function of its state.
        bias_std: standard deviation of the smooth log-depth bias field.
        noise_std: standard deviation of the fine log-depth noise.
        scale_std: standard deviation of the per-image log-scale error.

    Returns:
        ``(predicted, std)``: (H, W) float32 metres each; ``std`` is the claimed relative standard
        deviation ``sqrt(bias_std^2 + noise_std^2 + scale_std^2)`` times the predicted depth (a
        little larger than the true error, as a cautious network's would be).

    Raises:
        ValueError: ``depth`` is not a 2-D map of at least 2x2 pixels, or a strength is negative
            or not finite.

    """
    depth = np.asarray(depth)
    if depth.ndim != 2 or min(depth.shape) < 2:
        raise ValueError(f"depth must be an (H, W) map of at least 2x2 pixels, got shape {depth.shape}")
    for name, value in (("bias_std", bias_std), ("noise_std", noise_std), ("scale_std", scale_std)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    height, width = depth.shape
    field = cv2.resize(rng.normal(0.0, bias_std, BIAS_GRID).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    noise = cv2.GaussianBlur(rng.normal(0.0, 2.0 * noise_std, (height, width)).astype(np.float32), (0, 0), 1.0)
    scale = float(np.exp(rng.normal(0.0, scale_std)))
    predicted = (depth * np.exp(field + noise) * scale).astype(np.float32)
    std = (predicted * math.sqrt(bias_std**2 + noise_std**2 + scale_std**2)).astype(np.float32)
    return predicted, std


RELATIVE_SCALE_RANGE = (0.5, 2.0)
"""Range of the per-frame scale of :func:`relative_inverse_depth` (log-uniform)."""
RELATIVE_SHIFT_RANGE = (-0.2, 1.0)
"""Range of its per-frame shift, as a fraction of the scaled median inverse depth (uniform)."""


def relative_inverse_depth(
    depth: NDArray[np.floating], rng: np.random.Generator, bias_std: float = 0.05, noise_std: float = 0.02,
) -> tuple[NDArray[np.float32], NDArray[np.float32], float, float]:
    """Exact depth turned into what an affine-invariant relative depth network (MiDaS, Depth Anything) gives.

    The depth is first corrupted by :func:`network_like_depth` (smooth field ``bias_std`` and fine
    noise ``noise_std``, no scale error), then its inverse becomes ``a / depth + b`` with a random
    scale ``a`` in :data:`RELATIVE_SCALE_RANGE` (log-uniform) and a random shift ``b``
    (:data:`RELATIVE_SHIFT_RANGE` times ``a`` times the median inverse depth), new every call.

    Args:
        depth: (H, W) exact depth, metres, NaN where invalid.
        rng: random generator; the result is a deterministic function of its state.
        bias_std: standard deviation of the smooth log-depth error (:func:`network_like_depth`).
        noise_std: standard deviation of the fine log-depth noise.

    Returns:
        ``(relative_depth, std, a, b)``: (H, W) float32 ``1 / (a / depth' + b)`` (NaN where
        invalid or not positive), a claimed std of 10 % of it, and the scale and shift drawn.

    """
    noisy, _ = network_like_depth(depth, rng, bias_std=bias_std, noise_std=noise_std, scale_std=0.0)
    low, high = RELATIVE_SCALE_RANGE
    scale = float(np.exp(rng.uniform(math.log(low), math.log(high))))
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(noisy > 0, 1.0 / noisy, np.nan)
        median = float(np.nanmedian(inverse)) if np.any(np.isfinite(inverse)) else 1.0
        shift = scale * float(rng.uniform(*RELATIVE_SHIFT_RANGE)) * median
        relative = scale * inverse + shift
        out = np.where(relative > 0, 1.0 / relative, np.nan).astype(np.float32)
    return out, (0.1 * out).astype(np.float32), scale, shift
