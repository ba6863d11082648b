"""Depth metrics of Eigen et al. (NeurIPS 2014) as computed by monodepth2's ``evaluate_depth.py``.

Per image, over the valid pixels (ground truth finite and ``min_depth < gt < max_depth``, the strict
bounds monodepth2 uses):

- optional median scaling (monocular protocol): ``pred *= median(gt) / median(pred)``;
- the prediction is clipped to ``[min_depth, max_depth]``;
- ``abs_rel = mean(|gt - pred| / gt)``, ``sq_rel = mean((gt - pred)^2 / gt)``,
  ``rmse = sqrt(mean((gt - pred)^2))`` (metres), ``rmse_log = sqrt(mean((ln gt - ln pred)^2))``,
  ``a{k} = mean(max(gt / pred, pred / gt) < 1.25^k)`` for k = 1, 2, 3 (fractions in [0, 1]).

Pixels where the prediction is not finite (NaN marks "no depth" in geovis_ros) are left out of the
metrics and counted: ``pred_coverage`` is the fraction of valid ground-truth pixels that have a finite
prediction (1.0 for a dense network), so a sparse method cannot hide its holes.

Over a data set, :class:`DepthMetricsAccumulator` averages the per-image metrics with equal weight per
image, as monodepth2 (and the KITTI Eigen-split tables) do; ``n_pixels`` is the total pixel count and,
with median scaling, ``scale`` is the median of the per-image ratios (``scale_std`` their std).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

METRIC_KEYS: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def depth_metrics(
    gt: ArrayLike,
    pred: ArrayLike,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    median_scaling: bool = False,
) -> dict[str, float]:
    """Depth errors of one image.

    Args:
        gt: (H, W) ground-truth depth, metres; NaN, inf, 0 or out-of-range mark invalid pixels.
        pred: (H, W) predicted depth, metres; NaN/inf where the method gives none.
        min_depth: scored ground truth is deeper than this, metres (monodepth2 KITTI: 1e-3).
        max_depth: scored ground truth is nearer than this, metres (monodepth2 KITTI: 80).
        median_scaling: rescale the prediction by ``median(gt) / median(pred)`` first.

    Returns:
        ``abs_rel``, ``sq_rel``, ``rmse`` (m), ``rmse_log``, ``a1``, ``a2``, ``a3`` (fractions),
        ``n_pixels`` (pixels scored), ``n_gt_valid`` (valid ground-truth pixels), ``pred_coverage``
        (``n_pixels / n_gt_valid``) and, with median scaling, ``scale`` (the applied ratio). The
        metrics are NaN when no pixel can be scored.

    Raises:
        ValueError: shapes differ, the depth range is empty, or median scaling meets a median
            prediction <= 0.

    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"depth maps differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}")
    with np.errstate(invalid="ignore"):
        gt_valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    scored = gt_valid & np.isfinite(pred)
    n_valid = int(gt_valid.sum())
    gt_px = gt[scored]
    pred_px = pred[scored]
    result: dict[str, float] = {}
    if median_scaling:
        ratio = math.nan
        if gt_px.size:
            median_pred = float(np.median(pred_px))
            if median_pred <= 0:
                raise ValueError(f"cannot median-scale: the median prediction is {median_pred} (must be > 0)")
            ratio = float(np.median(gt_px)) / median_pred
        pred_px = pred_px * ratio
        result["scale"] = ratio
    pred_px = np.clip(pred_px, min_depth, max_depth)
    if gt_px.size:
        ratio_max = np.maximum(gt_px / pred_px, pred_px / gt_px)
        squared = (gt_px - pred_px) ** 2
        result.update(
            abs_rel=float(np.mean(np.abs(gt_px - pred_px) / gt_px)),
            sq_rel=float(np.mean(squared / gt_px)),
            rmse=float(np.sqrt(np.mean(squared))),
            rmse_log=float(np.sqrt(np.mean((np.log(gt_px) - np.log(pred_px)) ** 2))),
            a1=float(np.mean(ratio_max < 1.25)),
            a2=float(np.mean(ratio_max < 1.25**2)),
            a3=float(np.mean(ratio_max < 1.25**3)),
        )
    else:
        result.update(dict.fromkeys(METRIC_KEYS, math.nan))
    result["n_pixels"] = int(gt_px.size)
    result["n_gt_valid"] = n_valid
    result["pred_coverage"] = gt_px.size / n_valid if n_valid else math.nan
    return result


class DepthMetricsAccumulator:
    """Data-set depth metrics: per-image metrics averaged with equal weight per image (monodepth2).

    Images with no scorable pixel are counted in ``n_images_empty`` and left out of the means.
    """

    def __init__(
        self, min_depth: float = 1e-3, max_depth: float = 80.0, median_scaling: bool = False
    ) -> None:
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.median_scaling = median_scaling
        self.per_image: list[dict[str, float]] = []

    def add(self, gt: ArrayLike, pred: ArrayLike) -> dict[str, float]:
        """Score one image (see :func:`depth_metrics`), remember it, and return its metrics."""
        metrics = depth_metrics(gt, pred, self.min_depth, self.max_depth, self.median_scaling)
        self.per_image.append(metrics)
        return metrics

    def result(self) -> dict[str, float]:
        """Mean metrics over the scored images, and counts.

        Also ``n_pixels``, ``n_images``, ``n_images_empty``, ``pred_coverage`` (over all images,
        pixel-weighted) and, with median scaling, ``scale`` and ``scale_std``.
        """
        scored = [m for m in self.per_image if m["n_pixels"] > 0]
        out: dict[str, float] = {
            key: float(np.mean([m[key] for m in scored])) if scored else math.nan for key in METRIC_KEYS
        }
        n_pixels = sum(int(m["n_pixels"]) for m in scored)
        n_valid = sum(int(m["n_gt_valid"]) for m in self.per_image)
        out.update(
            n_pixels=n_pixels,
            n_images=len(scored),
            n_images_empty=len(self.per_image) - len(scored),
            pred_coverage=n_pixels / n_valid if n_valid else math.nan,
        )
        if self.median_scaling:
            ratios = [m["scale"] for m in scored]
            out["scale"] = float(np.median(ratios)) if ratios else math.nan
            out["scale_std"] = float(np.std(ratios)) if ratios else math.nan
        return out
