"""What people see: the coloured depth image and the keyframe frustums (ROS-free; nodes and bags draw them)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from geovis_ros.eval.colorize import depth_to_color
from geovis_ros.geometry.camera import Intrinsics

# The coloured depth spans these percentiles of each frame's valid depth.
COLOR_DEPTH_PERCENTILES = (2.0, 98.0)
# Depth (metres) at which a keyframe frustum's image rectangle is drawn.
FRUSTUM_DEPTH_M = 0.15


def colored_depth(depth: NDArray[np.floating]) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB of a depth map (H, W) in metres: near bright, over its 2nd-98th percentile.

    Invalid pixels (NaN, <= 0) are black; an image without valid depth is all black.
    """
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        return np.zeros((*depth.shape, 3), np.uint8)
    near, far = (float(v) for v in np.percentile(valid, COLOR_DEPTH_PERCENTILES))
    return depth_to_color(depth, near, max(far, near * 1.001 + 1e-6))


def frustum_lines(poses: NDArray[np.floating], intrinsics: Intrinsics,
                  depth_m: float = FRUSTUM_DEPTH_M) -> NDArray[np.float64]:
    """Line segments of camera frustums as point pairs: (K * 16, 3) float64 metres in the poses' frame.

    For each pose (K, 4, 4) ``T_odom_camera``, 8 segments (16 points): the optical centre to the
    four image corners back-projected to ``depth_m``, and the rectangle joining those corners.
    """
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    w, h = intrinsics.width - 1, intrinsics.height - 1
    u = np.array([0.0, w, w, 0.0])
    v = np.array([0.0, 0.0, h, h])
    corners = np.column_stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy,
                               np.ones(4)]) * depth_m
    rays = np.stack([np.zeros((4, 3)), corners], axis=1)
    edges = np.stack([corners, np.roll(corners, -1, axis=0)], axis=1)
    segments = np.concatenate([rays, edges]).reshape(-1, 3)  # (16, 3) camera frame
    world = np.einsum("kij,nj->kni", poses[:, :3, :3], segments) + poses[:, None, :3, 3]
    return world.reshape(-1, 3)
