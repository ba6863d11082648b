"""Grey image pyramids with gradients, and bilinear sampling: the image side of the SLAM front end.

Shared by the direct tracker, the feature tracker and keyframe fusion (and the loop detector's
photometric refinement). Images are grey levels 0-255 (float32); pixel (u, v) = (column, row) with
the centre of the top-left pixel at (0, 0); level l of a pyramid averages 2^l x 2^l pixel blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.slam.frontend.config import TrackingConfig

_REMAP_ROW = 4096  # cv2.remap maps must stay under 32767 per side


def rgb_to_gray(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Grey image (H, W) uint8 of an (H, W, 3) uint8 RGB image (ITU-R BT.601 weights)."""
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), dtype=np.uint8)


def pyramid_level_count(width: int, height: int, max_levels: int, min_level_size: int) -> int:
    """Number of pyramid levels (>= 1) whose short side stays >= ``min_level_size`` pixels."""
    levels = 1
    while levels < max_levels and (min(width, height) >> levels) >= min_level_size:
        levels += 1
    return levels


def half_intrinsics(intrinsics: Intrinsics) -> Intrinsics:
    """Intrinsics after averaging 2x2 pixel blocks (odd last row/column dropped)."""
    return Intrinsics(
        intrinsics.fx / 2.0, intrinsics.fy / 2.0, (intrinsics.cx + 0.5) / 2.0 - 0.5,
        (intrinsics.cy + 0.5) / 2.0 - 0.5, intrinsics.width // 2, intrinsics.height // 2,
    )


@dataclass(frozen=True)
class ImagePyramid:
    """Grey image pyramid of one frame with Sobel gradients.

    Attributes:
        gray_u8: (H, W) uint8 grey image at the input resolution.
        gray: per level (H_l, W_l) float32 grey levels 0-255; level 0 is the input resolution and
            level l averages 2^l x 2^l blocks.
        grad_x, grad_y: per level (H_l, W_l) float32 intensity gradients, grey levels per pixel.
        intrinsics: per level intrinsics.
        texture_fraction: fraction of level-0 pixels whose gradient magnitude reaches the
            ``min_gradient`` the pyramid was built with.

    """

    gray_u8: NDArray[np.uint8]
    gray: tuple[NDArray[np.float32], ...]
    grad_x: tuple[NDArray[np.float32], ...]
    grad_y: tuple[NDArray[np.float32], ...]
    intrinsics: tuple[Intrinsics, ...]
    texture_fraction: float

    @classmethod
    def build(cls, image: NDArray[np.uint8], intrinsics: Intrinsics, config: TrackingConfig) -> ImagePyramid:
        """Pyramid of an (H, W, 3) uint8 RGB image with ``config.pyramid_levels`` levels at most."""
        gray_u8 = rgb_to_gray(image)
        levels = pyramid_level_count(intrinsics.width, intrinsics.height, config.pyramid_levels,
                                     config.min_level_size)
        grays = [gray_u8.astype(np.float32)]
        intrinsics_levels = [intrinsics]
        for _ in range(1, levels):
            previous, k = grays[-1], intrinsics_levels[-1]
            half = half_intrinsics(k)
            cropped = previous[: 2 * half.height, : 2 * half.width]
            grays.append(np.asarray(cv2.resize(cropped, (half.width, half.height), interpolation=cv2.INTER_AREA),
                                    dtype=np.float32))
            intrinsics_levels.append(half)
        grad_x = tuple(np.asarray(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, scale=0.125), np.float32) for g in grays)
        grad_y = tuple(np.asarray(cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, scale=0.125), np.float32) for g in grays)
        magnitude_sq = grad_x[0] ** 2 + grad_y[0] ** 2
        texture = float(np.count_nonzero(magnitude_sq >= max(config.min_gradient, 1e-3) ** 2)) / magnitude_sq.size
        return cls(gray_u8, tuple(grays), grad_x, grad_y, tuple(intrinsics_levels), texture)

    @property
    def levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.gray)


def sample_bilinear(
    image: NDArray[np.float32], u: NDArray[np.floating], v: NDArray[np.floating]
) -> NDArray[np.float32]:
    """Bilinear samples of an (H, W) float32 image at pixel positions u, v (same shape, any float dtype).

    Returns float32 samples shaped like ``u``: NaN where (u, v) is NaN or not inside
    [0, W-1) x [0, H-1) (both interpolation neighbours must exist), or where it touches a NaN
    pixel of ``image`` (so NaN-marked invalid maps stay invalid).
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    shape = np.shape(u)
    count = int(np.prod(shape))
    if count == 0:
        return np.zeros(shape, np.float32)
    # cv2.remap needs maps under 32767 per side: lay the points out in rows of _REMAP_ROW.
    columns = min(count, _REMAP_ROW)
    rows = -(-count // columns)
    map_u = np.full(rows * columns, np.nan, np.float32)
    map_v = np.full(rows * columns, np.nan, np.float32)
    map_u[:count] = np.ravel(u)
    map_v[:count] = np.ravel(v)
    values = cv2.remap(
        image, map_u.reshape(rows, columns), map_v.reshape(rows, columns), cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"),
    )
    return np.asarray(values, dtype=np.float32).reshape(-1)[:count].reshape(shape)

