"""``sensor_msgs/CameraInfo`` <-> :class:`CameraCalibration` (pinhole intrinsics + distortion).

Only monocular, full-frame calibrations are converted: binning and region of interest must
be unset (they are refused, not ignored). Written CameraInfo messages have R = identity and
P = [K | 0], the form a monocular camera driver publishes. Messages are rclpy or rosbags
messages alike (:mod:`geovis_ros.ros.messages`), ROS 1 ones (fields ``D``, ``K``) included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.messages import CAMERA_INFO, HEADER, RCLPY, Message, MessageFactory

# Number of distortion coefficients of the models in sensor_msgs/distortion_models.
DISTORTION_COEFFICIENT_COUNTS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
# |K[0, 1]| above this many times fx is a skew that Intrinsics cannot represent.
_MAX_RELATIVE_SKEW = 1e-9


@dataclass(frozen=True)
class CameraCalibration:
    """A camera's pinhole intrinsics (pixels) and lens distortion, as in a CameraInfo.

    ``distortion_model`` is a sensor_msgs model name ("plumb_bob", "rational_polynomial",
    "equidistant"; others are carried as they are) and ``d`` its coefficients, which are
    dimensionless (normalised image coordinates); empty ``d`` means no distortion.
    """

    intrinsics: Intrinsics
    distortion_model: str = "plumb_bob"
    d: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        coefficients = tuple(float(value) for value in self.d)
        object.__setattr__(self, "d", coefficients)
        if not all(math.isfinite(value) for value in coefficients):
            raise ConversionError(f"CameraInfo.d must be finite, got {coefficients}")
        expected = DISTORTION_COEFFICIENT_COUNTS.get(self.distortion_model)
        if coefficients and expected is not None and len(coefficients) != expected:
            raise ConversionError(
                f"CameraInfo.d has {len(coefficients)} coefficients; "
                f"distortion_model {self.distortion_model!r} takes {expected}"
            )

    def resized(self, width: int, height: int) -> CameraCalibration:
        """The calibration of the same camera after resizing its images to ``width`` x ``height``.

        Intrinsics scale (:meth:`Intrinsics.resized`); distortion coefficients act on
        normalised coordinates and stay the same.
        """
        return replace(self, intrinsics=self.intrinsics.resized(width, height))


def calibration_from_camera_info(
    msg: Message, unset_size: tuple[int, int] | None = None
) -> CameraCalibration:
    """The calibration in a CameraInfo; ConversionError names the invalid field.

    Checks: width/height > 0; K finite, not all zero (uncalibrated), a pinhole matrix
    (no skew, last row 0 0 1) with fx, fy > 0; D finite and as long as the model needs;
    binning and ROI unset. ``unset_size`` (width, height) in pixels, when given, is taken for a
    message whose width and height are 0 (left unset by some ROS 1 drivers).
    """
    width, height = int(msg.width), int(msg.height)
    if width == 0 and height == 0 and unset_size is not None:
        width, height = unset_size
    if width == 0 or height == 0:
        raise ConversionError(f"CameraInfo width/height must be > 0, got {width}x{height}")
    ros1 = not hasattr(msg, "k")
    k = np.asarray(msg.K if ros1 else msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise ConversionError(f"CameraInfo.k must be finite, got {k.ravel().tolist()}")
    if not np.any(k):
        raise ConversionError("CameraInfo.k is all zeros: the camera is not calibrated")
    fx, fy = k[0, 0], k[1, 1]
    if fx <= 0 or fy <= 0:
        raise ConversionError(f"CameraInfo.k focal lengths must be > 0, got fx={fx}, fy={fy}")
    if abs(k[0, 1]) > _MAX_RELATIVE_SKEW * fx or k[1, 0] != 0 or not np.array_equal(k[2], [0.0, 0.0, 1.0]):
        raise ConversionError(f"CameraInfo.k is not a pinhole matrix without skew, got {k.ravel().tolist()}")
    if msg.binning_x > 1 or msg.binning_y > 1:
        raise ConversionError(
            f"CameraInfo binning_x/binning_y {msg.binning_x}/{msg.binning_y} is not supported "
            "(must be 0 or 1)"
        )
    roi = msg.roi
    full_frame = (roi.x_offset, roi.y_offset) == (0, 0) and (roi.width, roi.height) in (
        (0, 0),
        (width, height),
    )
    if not full_frame:
        raise ConversionError(
            f"CameraInfo.roi {roi.width}x{roi.height}+{roi.x_offset}+{roi.y_offset} is not supported "
            "(only full-frame calibrations)"
        )
    intrinsics = Intrinsics(float(fx), float(fy), float(k[0, 2]), float(k[1, 2]), width, height)
    return CameraCalibration(intrinsics, msg.distortion_model, tuple(msg.D if ros1 else msg.d))


def camera_info_from_calibration(
    calibration: CameraCalibration, header: Message | None = None, factory: MessageFactory = RCLPY
) -> Message:
    """A monocular CameraInfo (R = identity, P = [K | 0], no binning or ROI) of a calibration.

    ``factory`` makes the message (rclpy by default, or rosbags).
    """
    intrinsics = calibration.intrinsics
    k = intrinsics.matrix
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    return factory.new(
        CAMERA_INFO,
        header=header if header is not None else factory.new(HEADER),
        width=intrinsics.width,
        height=intrinsics.height,
        distortion_model=calibration.distortion_model,
        d=list(calibration.d),
        k=k.ravel(),
        r=np.eye(3).ravel(),
        p=projection.ravel(),
    )


def check_camera_info_matches_image(info: Message, image: Message) -> None:
    """Raise ConversionError naming width/height when a CameraInfo and an Image differ in size."""
    if (info.width, info.height) != (image.width, image.height):
        raise ConversionError(
            f"CameraInfo width/height {info.width}x{info.height} does not match "
            f"Image width/height {image.width}x{image.height}"
        )
