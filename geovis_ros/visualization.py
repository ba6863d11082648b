"""False-colour images of flow and depth with numpy only (no matplotlib), for plots and ROS topics.

- :func:`flow_to_color`: the Middlebury flow colour coding (Baker et al., IJCV 2011): hue = direction
  on a 55-colour wheel (red, yellow, green, cyan, blue, magenta), saturation = magnitude; zero flow is
  white, flow of ``max_flow`` pixels fully saturated, longer flow darkened.
- :func:`depth_to_color`: near = bright yellow, far = dark purple (a fire palette defined here),
  invalid pixels black.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.geometry.camera import Intrinsics

# Middlebury wheel: hue segments between the six primaries, with their number of colour steps.
_WHEEL_PRIMARIES = np.array(
    [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [1, 0, 0]], dtype=np.float64
)
_WHEEL_STEPS = (15, 6, 4, 11, 13, 6)  # red->yellow, yellow->green, ..., magenta->red

# Fire palette control points (position in [0, 1] from far to near, RGB in [0, 1]).
_DEPTH_PALETTE_POSITIONS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_DEPTH_PALETTE_COLORS = np.array(
    [[0.06, 0.02, 0.16], [0.36, 0.06, 0.45], [0.76, 0.20, 0.36], [0.98, 0.55, 0.10], [0.99, 0.98, 0.64]]
)


def _color_wheel() -> NDArray[np.float64]:
    """(55, 3) RGB in [0, 1]: the Middlebury hue wheel, linear ramps between the primaries."""
    segments = [
        start + (end - start) * (np.arange(steps)[:, None] / steps)
        for start, end, steps in zip(_WHEEL_PRIMARIES[:-1], _WHEEL_PRIMARIES[1:], _WHEEL_STEPS, strict=True)
    ]
    return np.concatenate(segments, axis=0)


def _depth_lut() -> NDArray[np.uint8]:
    """(256, 3) uint8 RGB: the fire palette sampled from far (index 0) to near (index 255)."""
    samples = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(samples, _DEPTH_PALETTE_POSITIONS, _DEPTH_PALETTE_COLORS[:, c]) for c in range(3)]
    return np.round(255.0 * np.stack(channels, axis=-1)).astype(np.uint8)


COLOR_WHEEL: NDArray[np.float64] = _color_wheel()
DEPTH_LUT: NDArray[np.uint8] = _depth_lut()


def flow_to_color(flow: ArrayLike, max_flow: float | None = None) -> NDArray[np.uint8]:
    """Middlebury colour image of a flow field.

    Args:
        flow: (H, W, 2) flow (u, v) in pixels; non-finite pixels are drawn black.
        max_flow: magnitude (pixels) drawn fully saturated; None uses the largest finite magnitude.
            Longer vectors are drawn darker (value 0.75).

    Returns:
        (H, W, 3) uint8 RGB.

    """
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {flow.shape}")
    finite = np.all(np.isfinite(flow), axis=-1)
    u = np.where(finite, flow[..., 0], 0.0)
    v = np.where(finite, flow[..., 1], 0.0)
    magnitude = np.hypot(u, v)
    if max_flow is None:
        max_flow = float(magnitude.max()) if magnitude.size else 0.0
    if max_flow < 0:
        raise ValueError(f"max_flow must be >= 0, got {max_flow}")
    radius = magnitude / max(max_flow, np.finfo(np.float64).eps)
    n_colors = COLOR_WHEEL.shape[0]
    position = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0 * (n_colors - 1)
    index0 = np.floor(position).astype(np.int64)
    index1 = (index0 + 1) % n_colors
    weight = (position - index0)[..., None]
    hue = (1.0 - weight) * COLOR_WHEEL[index0] + weight * COLOR_WHEEL[index1]
    inside = (radius <= 1.0)[..., None]
    color = np.where(inside, 1.0 - radius[..., None] * (1.0 - hue), 0.75 * hue)
    color[~finite] = 0.0
    return np.floor(255.0 * color).astype(np.uint8)


def depth_to_color(depth: ArrayLike, min_depth: float, max_depth: float) -> NDArray[np.uint8]:
    """Colour image of a depth map, linear in depth between ``min_depth`` (bright) and ``max_depth`` (dark).

    Args:
        depth: (H, W) metres; NaN, inf and values <= 0 are invalid and drawn black.
        min_depth: depth drawn brightest, metres (nearer depths are clipped to it).
        max_depth: depth drawn darkest, metres (farther depths are clipped to it).

    Returns:
        (H, W, 3) uint8 RGB.

    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    if not max_depth > min_depth:
        raise ValueError(f"need max_depth > min_depth, got {min_depth} and {max_depth}")
    valid = np.isfinite(depth) & (depth > 0)
    nearness = np.clip((max_depth - np.where(valid, depth, max_depth)) / (max_depth - min_depth), 0.0, 1.0)
    image = DEPTH_LUT[np.round(nearness * 255).astype(np.int64)]
    image[~valid] = 0
    return image

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
