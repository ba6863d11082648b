"""Pinhole camera model: intrinsics, resizing, back-projection, projection, rigid flow.

Pixel convention: pixel (u, v) = (column, row); the centre of the top-left pixel is (0, 0).
Camera frame: OpenCV optical (x right, y down, z forward), metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geovis_ros.errors import GeovisError


class CameraModelError(GeovisError, ValueError):
    """Invalid intrinsics (non-finite, non-positive focal length, bad size)."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}
        for name, value in values.items():
            if not math.isfinite(value):
                raise CameraModelError(f"intrinsics {name} must be finite, got {value}")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraModelError(f"focal lengths must be > 0, got fx={self.fx}, fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise CameraModelError(f"image size must be > 0, got {self.width}x{self.height}")

    @classmethod
    def from_matrix(cls, k: NDArray[np.floating], width: int, height: int) -> Intrinsics:
        """Intrinsics from a 3x3 camera matrix K."""
        k = np.asarray(k, dtype=np.float64).reshape(3, 3)
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(width), int(height))

    @property
    def matrix(self) -> NDArray[np.float64]:
        """The 3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def resized(self, width: int, height: int) -> Intrinsics:
        """Intrinsics of the same camera after resizing the image to ``width`` x ``height``.

        Uses the pixel-centre convention of cv2.resize / align_corners=False:
        u' = (u + 0.5) * sx - 0.5.
        """
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
            int(width), int(height),
        )


MIN_FOV_DEG = 5.0
"""Narrowest plausible field of view, degrees, on either image axis."""
MAX_FOV_DEG = 200.0
"""Widest plausible field of view, degrees, of a lens whose angle grows with the image radius (fisheye)."""
MAX_PINHOLE_FOV_DEG = 170.0
"""Widest plausible field of view of a pinhole (rectilinear) image, which tends to 180 degrees as f -> 0."""
ANGLE_LINEAR_MODELS = frozenset({"equidistant", "fisheye", "kannala_brandt"})
"""Distortion models whose K maps angle, not its tangent, to pixels (theta = r / f)."""


def field_of_view_deg(k: Intrinsics, distortion_model: str = "plumb_bob") -> tuple[float, float]:
    """(horizontal, vertical) field of view in degrees across the image edges, from the principal point.

    Pinhole models: ``atan((c + 0.5) / f) + atan((size - 0.5 - c) / f)`` per axis; the models in
    :data:`ANGLE_LINEAR_MODELS`: ``size / f`` radians.
    """
    def span(c: float, f: float, size: int) -> float:
        if distortion_model in ANGLE_LINEAR_MODELS:
            return math.degrees(size / f)
        return math.degrees(math.atan2(c + 0.5, f) + math.atan2(size - 0.5 - c, f))

    return span(k.cx, k.fx, k.width), span(k.cy, k.fy, k.height)


def check_plausible_intrinsics(k: Intrinsics, distortion_model: str = "plumb_bob") -> None:
    """Raise CameraModelError (one line) unless ``k`` describes a camera that can exist.

    Checked: finite, positive focal lengths; the principal point inside the image (pixel edges
    included: -0.5 <= c <= size - 0.5); a field of view (:func:`field_of_view_deg`) on each axis
    of at least :data:`MIN_FOV_DEG` and at most :data:`MAX_PINHOLE_FOV_DEG` (pinhole models) or
    :data:`MAX_FOV_DEG` (:data:`ANGLE_LINEAR_MODELS`). ``distortion_model`` is the sensor_msgs name.
    The Intrinsics constructor stays permissive (resizing and tests build unusual ones); call this
    where intrinsics come from outside (camera_info, calibration files).
    """
    for name, f in (("fx", k.fx), ("fy", k.fy)):
        if not (math.isfinite(f) and f > 0):
            raise CameraModelError(f"implausible intrinsics: {name} = {f} must be a finite positive focal length")
    for name, c, size in (("cx", k.cx, k.width), ("cy", k.cy, k.height)):
        if not -0.5 <= c <= size - 0.5:
            raise CameraModelError(
                f"implausible intrinsics: principal point {name} = {c:g} is outside the {k.width}x{k.height} image")
    widest = MAX_FOV_DEG if distortion_model in ANGLE_LINEAR_MODELS else MAX_PINHOLE_FOV_DEG
    for axis, fov in zip(("horizontal", "vertical"), field_of_view_deg(k, distortion_model), strict=True):
        if not MIN_FOV_DEG <= fov <= widest:
            raise CameraModelError(
                f"implausible intrinsics: {axis} field of view {fov:.4g} deg (fx={k.fx:g}, fy={k.fy:g} on "
                f"{k.width}x{k.height}) is outside {MIN_FOV_DEG:g}..{widest:g} deg")


def pixel_grid(height: int, width: int) -> NDArray[np.float32]:
    """Pixel coordinates (H, W, 2) float32 holding (u, v) per pixel."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([u, v], axis=-1)


def backproject(depth: NDArray[np.floating], k: Intrinsics) -> NDArray[np.float32]:
    """Camera-frame points (H, W, 3) float32, metres, from a depth map (H, W) in metres.

    Depth is the z coordinate (not the ray length); NaN depth gives NaN points.
    """
    h, w = depth.shape
    grid = pixel_grid(h, w)
    z = depth.astype(np.float32)
    x = (grid[..., 0] - k.cx) / k.fx * z
    y = (grid[..., 1] - k.cy) / k.fy * z
    return np.stack([x, y, z], axis=-1)


def project(points: NDArray[np.floating], k: Intrinsics) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Project camera-frame points (..., 3) in metres to pixels (..., 2) and depth (...).

    Points with z <= 0 project to NaN pixels.
    """
    pts = np.asarray(points, dtype=np.float32)
    z = pts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_z = np.where(z > 0, z, np.nan)
        u = k.fx * pts[..., 0] / safe_z + k.cx
        v = k.fy * pts[..., 1] / safe_z + k.cy
    return np.stack([u, v], axis=-1).astype(np.float32), z


def transform_points(pose: NDArray[np.floating], points: NDArray[np.floating]) -> NDArray[np.float32]:
    """Apply a 4x4 pose T_a_b to points (..., 3) in frame b; returns points in frame a."""
    pose = np.asarray(pose, dtype=np.float32)
    return (points @ pose[:3, :3].T + pose[:3, 3]).astype(np.float32)


def rigid_flow(
    depth: NDArray[np.floating], k: Intrinsics, pose_next_from_this: NDArray[np.floating]
) -> NDArray[np.float32]:
    """Optical flow (H, W, 2) float32, pixels, induced by camera motion on a static scene.

    ``depth`` (H, W) metres is frame t's depth; ``pose_next_from_this`` is T_{t+1}_t, mapping
    frame-t camera points into frame t+1. Pixels with invalid depth or that land behind the
    camera get NaN flow.
    """
    points = transform_points(pose_next_from_this, backproject(depth, k))
    uv, _ = project(points, k)
    return uv - pixel_grid(*depth.shape)
