"""What a frame-to-keyframe tracker returns: :class:`TrackingEstimate`, and :class:`TrackingFailure` when it failed.

Shared by the direct tracker (:mod:`geovis_ros.slam.frontend.tracking`) and the feature tracker
(:mod:`geovis_ros.slam.frontend.features`), so the odometry stage can use either. Poses are 4x4
float64 ``T_a_b``; covariances are over the left perturbation of T_keyframe_current in the
keyframe frame (metres, radians).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


class TrackingFailure(enum.Enum):
    """Why a frame was not tracked (``TrackingEstimate.failure``); the value is the text for logs.

    Direct and feature tracking share the divergence and inlier-ratio members. After a failed
    direct alignment the measured quantity is in the estimate's fields (``point_count``,
    ``inlier_ratio``, ``residual``, ``brightness``); the feature tracker leaves them at the defaults.
    """

    NON_FINITE_GUESS = "non-finite initial guess"
    TEXTURELESS = "textureless frame"
    TOO_FEW_KEYFRAME_POINTS = "too few keyframe points with depth"
    DIVERGED_NON_FINITE = "diverged (non-finite)"
    TOO_FEW_VISIBLE_POINTS = "too few visible points"
    DIVERGED_TRANSLATION = "diverged (translation)"
    DIVERGED_ROTATION = "diverged (rotation)"
    LOW_INLIER_RATIO = "low inlier ratio"
    HIGH_RESIDUAL = "high residual"
    IMPLAUSIBLE_GAIN = "implausible brightness gain"
    TOO_FEW_KEYFRAME_CORNERS = "too few keyframe corners"
    TOO_FEW_FOLLOWED_CORNERS = "too few followed corners"
    PNP_FAILED = "PnP failed"
    TOO_FEW_PNP_INLIERS = "too few PnP inliers"
    NOT_TRACKED = "not tracked"  # placeholder before any tracking attempt
    INITIALIZING = "initializing"  # no keyframe to track against yet


@dataclass(frozen=True)
class TrackingEstimate:
    """Result of aligning one frame to a keyframe.

    Attributes:
        pose_current_keyframe: (4, 4) float64 T_current_keyframe.
        covariance: (6, 6) float64 covariance of the left perturbation of T_keyframe_current, in
            the keyframe frame (metres, radians).
        success: False when tracking failed (see ``failure``).
        failure: why it failed (None on success).
        residual: robust RMS residual (grey levels for direct, pixels for features).
        inlier_ratio: fraction of usable points/correspondences accepted as inliers.
        visible_ratio: fraction of the keyframe's tracked points seen inside the current frame.
        point_count: usable points / correspondences at the finest level.
        brightness: (gain, offset) mapping keyframe to current intensities.
        iterations: total solver iterations.
        projected: (M, 2) float64 positions in the current frame of the visible finest-level points
            (direct tracking only; empty for the feature tracker).
        persistent_outlier: (M,) bool, True where that point is an outlier again in a cell excluded
            by the previous frame (a moving object rather than a one-frame glitch).
        triangulated: (K, 3) float64 points triangulated from the two views (keyframe frame,
            odometry units; feature tracking with enough parallax only, else empty).
        triangulated_pixels: (K, 2) float64 their keyframe pixel positions (u, v).

    """

    pose_current_keyframe: NDArray[np.float64]
    covariance: NDArray[np.float64]
    success: bool
    failure: TrackingFailure | None = None
    residual: float = float("nan")
    inlier_ratio: float = 0.0
    visible_ratio: float = 0.0
    point_count: int = 0
    brightness: tuple[float, float] = (1.0, 0.0)
    iterations: int = 0
    projected: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))
    persistent_outlier: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    triangulated: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)))
    triangulated_pixels: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))


def failed_estimate(pose_current_keyframe: NDArray[np.float64], reason: TrackingFailure) -> TrackingEstimate:
    """A failed estimate at the given pose with an unusable (huge) covariance."""
    return TrackingEstimate(np.asarray(pose_current_keyframe, dtype=np.float64).copy(), np.eye(6) * 1e6,
                            success=False, failure=reason)
