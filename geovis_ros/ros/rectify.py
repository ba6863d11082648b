"""Undistortion of camera images described by a CameraInfo (what image_proc's rectify does, in numpy/cv2).

:class:`Rectifier` is built once per calibration: it computes the cv2 remap tables for the
``plumb_bob``, ``rational_polynomial`` (cv2's 5/8-coefficient model) or ``equidistant``
(cv2.fisheye) model and then only remaps. The rectified image has the pinhole matrix of the
CameraInfo's P (the projection a calibrated driver publishes for its rectified image) when P is
set, else K, no distortion, and the same size. A calibration without distortion (empty or all-zero
D) needs nothing: :attr:`Rectifier.identity` is True and :meth:`Rectifier.apply` returns its input.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.ros.camera_info import CameraCalibration
from geovis_ros.ros.errors import ConversionError

RECTIFIABLE_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
# The distortion model published with rectified images (coefficients all zero).
RECTIFIED_MODEL = "plumb_bob"


def rectified_calibration(intrinsics: Intrinsics) -> CameraCalibration:
    """The calibration of a rectified image: ``intrinsics``, plumb_bob, D all zero."""
    return CameraCalibration(intrinsics, RECTIFIED_MODEL, (0.0,) * 5)


class Rectifier:
    """Undistorts images of one calibration; the remap tables are computed once, here.

    Args:
        calibration: the camera's K, distortion model and D (pixels; D dimensionless).
        projection: the CameraInfo's P (12 numbers, row-major 3x4); its left 3x3 becomes the
            rectified pinhole matrix when it is a valid one (fx, fy > 0), else K is kept.

    Raises:
        ConversionError: non-zero D of a model that is not one of :data:`RECTIFIABLE_MODELS`.

    """

    def __init__(self, calibration: CameraCalibration, projection: Sequence[float] = ()) -> None:
        self.source = calibration
        self.identity = not any(calibration.d)
        intrinsics = calibration.intrinsics
        new = _pinhole_of_projection(projection, intrinsics) if not self.identity else intrinsics
        self.calibration = rectified_calibration(new)
        self._maps: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
        if self.identity:
            return
        model = calibration.distortion_model
        if model not in RECTIFIABLE_MODELS:
            raise ConversionError(
                f"distortion_model {model!r} cannot be rectified (supported: {', '.join(RECTIFIABLE_MODELS)})")
        size = (intrinsics.width, intrinsics.height)
        k = intrinsics.matrix.astype(np.float64)
        d = np.asarray(calibration.d, np.float64)
        if model == "equidistant":
            map_x, map_y = cv2.fisheye.initUndistortRectifyMap(k, d, np.eye(3), new.matrix, size, cv2.CV_32FC1)
        else:
            map_x, map_y = cv2.initUndistortRectifyMap(k, d, np.eye(3), new.matrix, size, cv2.CV_32FC1)
        self._maps = (np.asarray(map_x, np.float32), np.asarray(map_y, np.float32))

    @property
    def intrinsics(self) -> Intrinsics:
        """Pinhole intrinsics of the rectified images."""
        return self.calibration.intrinsics

    def apply(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """The rectified ``image`` (H, W[, C]) uint8, bilinear; pixels from outside the input are 0."""
        if self._maps is None:
            return image
        return np.asarray(cv2.remap(image, *self._maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))


def _pinhole_of_projection(projection: Sequence[float], fallback: Intrinsics) -> Intrinsics:
    """Intrinsics of P's left 3x3 when it is a pinhole matrix with fx, fy > 0, else ``fallback``."""
    p = np.asarray(projection, np.float64)
    if p.size != 12 or not np.all(np.isfinite(p)):
        return fallback
    p = p.reshape(3, 4)
    fx, fy, cx, cy = p[0, 0], p[1, 1], p[0, 2], p[1, 2]
    if fx <= 0 or fy <= 0 or p[2, 2] != 1.0:
        return fallback
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), fallback.width, fallback.height)
