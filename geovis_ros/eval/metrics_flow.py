"""Optical-flow metrics: end-point error (EPE) and KITTI 2015 Fl-all outlier rate.

Over the valid ground-truth pixels (the ``valid`` mask, e.g. KITTI's PNG flag or geovis_ros's
non-occluded mask, and gt finite):

- ``epe``: mean of ``|pred - gt|_2`` in pixels;
- ``fl_all``: **fraction** (in [0, 1], not a percentage) of outliers, a pixel being an outlier when its
  end-point error is > 3 px **and** > 5 % of ``|gt|`` (KITTI devkit); multiply by 100 for the "%"
  figure of the KITTI tables.

Missing predictions: the KITTI devkit scores a prediction at every valid ground-truth pixel (it fills
holes of a sparse submission before scoring). Here a non-finite prediction (NaN marks "no flow") is
filled with zero flow, i.e. scored as "no motion", and counted in ``n_pred_missing``; a method with
holes therefore pays for them instead of being scored on its easy pixels only.

Over a data set, :class:`FlowMetricsAccumulator` weights every pixel equally (KITTI's devkit sums the
outlier counts of all images; Sintel averages EPE over all pixels).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

OUTLIER_EPE_PX = 3.0
OUTLIER_RELATIVE = 0.05


def flow_metrics(gt: ArrayLike, pred: ArrayLike, valid: ArrayLike | None = None) -> dict[str, float]:
    """Flow errors of one image pair.

    Args:
        gt: (H, W, 2) ground-truth flow (u, v), pixels; NaN where unknown.
        pred: (H, W, 2) predicted flow, pixels; NaN where the method gives none (scored as zero flow).
        valid: optional (H, W) bool mask of ground-truth pixels to score (e.g. non-occluded).

    Returns:
        ``epe`` (px), ``fl_all`` (outlier fraction in [0, 1]), ``n_pixels`` (pixels scored) and
        ``n_pred_missing`` (scored pixels with a non-finite prediction). ``epe`` and ``fl_all`` are NaN
        when no pixel is valid.

    Raises:
        ValueError: shapes differ or are not (H, W, 2).

    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2), got ground truth of shape {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"flow fields differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
    mask = np.all(np.isfinite(gt), axis=-1)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != gt.shape[:2]:
            raise ValueError(f"valid mask is {valid.shape}, flow is {gt.shape[:2]}")
        mask &= valid.astype(bool)
    gt_px = gt[mask]
    pred_px = pred[mask]
    missing = ~np.all(np.isfinite(pred_px), axis=-1)
    pred_px[missing] = 0.0
    epe = np.linalg.norm(pred_px - gt_px, axis=-1)
    outliers = (epe > OUTLIER_EPE_PX) & (epe > OUTLIER_RELATIVE * np.linalg.norm(gt_px, axis=-1))
    return {
        "epe": float(epe.mean()) if epe.size else math.nan,
        "fl_all": float(outliers.mean()) if epe.size else math.nan,
        "n_pixels": int(epe.size),
        "n_pred_missing": int(missing.sum()),
    }


class FlowMetricsAccumulator:
    """Data-set flow metrics, every valid pixel of every image weighted equally."""

    def __init__(self) -> None:
        self.epe_sum = 0.0
        self.outliers = 0
        self.n_pixels = 0
        self.n_pred_missing = 0
        self.n_images = 0

    def add(self, gt: ArrayLike, pred: ArrayLike, valid: ArrayLike | None = None) -> dict[str, float]:
        """Score one pair (see :func:`flow_metrics`), add it to the totals, and return its metrics."""
        metrics = flow_metrics(gt, pred, valid)
        if metrics["n_pixels"]:
            self.epe_sum += metrics["epe"] * metrics["n_pixels"]
            self.outliers += round(metrics["fl_all"] * metrics["n_pixels"])
        self.n_pixels += int(metrics["n_pixels"])
        self.n_pred_missing += int(metrics["n_pred_missing"])
        self.n_images += 1
        return metrics

    def result(self) -> dict[str, float]:
        """Pixel-weighted ``epe``, ``fl_all`` (fraction), ``n_pixels``, ``n_pred_missing``, ``n_images``."""
        return {
            "epe": self.epe_sum / self.n_pixels if self.n_pixels else math.nan,
            "fl_all": self.outliers / self.n_pixels if self.n_pixels else math.nan,
            "n_pixels": self.n_pixels,
            "n_pred_missing": self.n_pred_missing,
            "n_images": self.n_images,
        }
