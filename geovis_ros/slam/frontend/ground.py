"""The ground plane under a forward-looking camera, found robustly in the lower image: metric scale from its height.

A camera mounted at a known height ``h`` above a flat ground sees the ground in the lower part of
its image. The odometry's depth (a keyframe's fused depth, in odometry units) back-projected there
gives 3-D points; a RANSAC plane among them whose normal is close to the camera's "down" axis
(+y in the OpenCV optical frame) is the ground, and its distance from the camera centre
``h_odom`` says how many odometry units one metre is: ``scale = h / h_odom``. Points on other
surfaces (cars, walls, kerbs) are outliers of the plane or have normals far from vertical and are
rejected.

Frames: points are in the camera frame (x right, y down, z forward), in the depth's units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.slam.frontend.config import GroundConfig


@dataclass(frozen=True)
class GroundPlane:
    """A plane ``normal . X = height`` in the camera frame.

    Attributes:
        normal: (3,) float64 unit normal pointing down (away from the camera, +y-ish).
        height: distance of the camera centre from the plane, in the depth's units (> 0).
        inliers: number of points within the inlier band.
        inlier_ratio: inliers / points tried.
        tilt_deg: angle between ``normal`` and the camera's +y axis, degrees.

    """

    normal: NDArray[np.float64]
    height: float
    inliers: int
    inlier_ratio: float
    tilt_deg: float


def in_ground_region(pixels: NDArray[np.floating], width: int, height: int, config: GroundConfig) -> NDArray[np.bool_]:
    """(N,) bool: which pixel positions (N, 2) (u, v) lie in the region searched for the ground.

    The region is the image below ``config.min_row_fraction`` of its height, in the central
    ``config.column_fraction`` of its width (``width`` x ``height`` pixels).
    """
    margin = 0.5 * (1.0 - config.column_fraction) * width
    return (pixels[:, 1] >= config.min_row_fraction * height) & (pixels[:, 0] >= margin) & (
        pixels[:, 0] <= width - margin)


def ground_candidates(
    inverse_depth: NDArray[np.floating], intrinsics: Intrinsics, config: GroundConfig,
) -> NDArray[np.float64]:
    """3-D points (N, 3) float64, camera frame, of the valid depth pixels in the lower image region.

    Args:
        inverse_depth: (H, W) inverse depth (1 / depth units), NaN where invalid.
        intrinsics: intrinsics of ``inverse_depth``.
        config: the region (``min_row_fraction`` of the height down to the bottom, the central
            ``column_fraction`` of the width), the pixel stride and the farthest depth used
            (``max_depth_ratio`` times the median depth of the region).

    """
    height, width = inverse_depth.shape
    rows, cols = np.mgrid[0:height:config.stride, 0:width:config.stride]
    u, v = cols.reshape(-1).astype(np.float64), rows.reshape(-1).astype(np.float64)
    rho = np.asarray(inverse_depth, dtype=np.float64)[rows.reshape(-1), cols.reshape(-1)]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(rho) & (rho > 0) & in_ground_region(np.stack([u, v], axis=1), width, height, config)
    if not np.any(valid):
        return np.zeros((0, 3))
    z, u, v = 1.0 / rho[valid], u[valid], v[valid]
    points = np.stack([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], axis=1)
    return near_points(points, config)


def near_points(points: NDArray[np.float64], config: GroundConfig) -> NDArray[np.float64]:
    """The points (N, 3) no farther than ``config.max_depth_ratio`` times their median depth."""
    if points.shape[0] == 0:
        return points
    return points[points[:, 2] <= config.max_depth_ratio * float(np.median(points[:, 2]))]


def fit_ground_plane(
    points: NDArray[np.float64], config: GroundConfig, rng: np.random.Generator,
) -> GroundPlane | None:
    """RANSAC plane among ``points`` (N, 3) (camera frame) with a near-vertical normal, refined on its inliers.

    A hypothesis (3 random points) counts when its normal is within ``config.max_tilt_deg`` of +y
    and the camera is above it; inliers are points within ``config.inlier_band`` times the
    hypothesis' height of the plane (the band is relative, so it does not depend on the unknown
    scale). The ground is the lowest surface: a hypothesis scores its inliers minus twice the
    points below its band (a car's bonnet or a kerb has the road below it). The best hypothesis
    is refined by a least-squares plane (SVD) on its inliers.

    Returns:
        The plane, or None with fewer than ``config.min_points`` points or inliers, or an inlier
        ratio below ``config.min_inlier_ratio``.

    """
    count = points.shape[0]
    if count < config.min_points:
        return None
    cos_tilt = math.cos(math.radians(config.max_tilt_deg))
    samples = rng.integers(0, count, size=(config.ransac_iterations, 3))
    p0, p1, p2 = points[samples[:, 0]], points[samples[:, 1]], points[samples[:, 2]]
    normals = np.cross(p1 - p0, p2 - p0)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals = normals[ok] / norms[ok, None]
    normals *= np.where(normals[:, 1:2] < 0, -1.0, 1.0)  # point down (+y)
    heights = np.einsum("ij,ij->i", normals, p0[ok])
    keep = (normals[:, 1] >= cos_tilt) & (heights > 0)
    normals, heights = normals[keep], heights[keep]
    if heights.size == 0:
        return None
    signed = points @ normals.T - heights[None, :]  # (N, hypotheses), > 0 below the plane
    band = config.inlier_band * heights[None, :]
    distances = np.abs(signed)
    support = np.count_nonzero(distances <= band, axis=0) - 2 * np.count_nonzero(signed > band, axis=0)
    best = int(np.argmax(support))
    inliers = distances[:, best] <= config.inlier_band * heights[best]
    for _ in range(2):  # least-squares refinement, re-selecting the inliers once
        if np.count_nonzero(inliers) < config.min_points:
            return None
        chosen = points[inliers]
        centroid = chosen.mean(axis=0)
        _, _, vt = np.linalg.svd(chosen - centroid, full_matrices=False)
        normal = vt[2] * (1.0 if vt[2][1] >= 0 else -1.0)
        height = float(normal @ centroid)
        if not height > 0:
            return None
        inliers = np.abs(points @ normal - height) <= config.inlier_band * height
    inlier_count = int(np.count_nonzero(inliers))
    ratio = inlier_count / count
    tilt = math.degrees(math.acos(min(1.0, float(normal[1]))))
    if inlier_count < config.min_points or ratio < config.min_inlier_ratio or tilt > config.max_tilt_deg:
        return None
    return GroundPlane(normal=normal, height=height, inliers=inlier_count, inlier_ratio=ratio, tilt_deg=tilt)
