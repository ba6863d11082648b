"""sensor_msgs/CameraInfo <-> CameraCalibration, on real rclpy message classes."""

import math

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest
from std_msgs.msg import Header

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.ros.camera_info import (
    CameraCalibration,
    calibration_from_camera_info,
    camera_info_from_calibration,
    check_camera_info_matches_image,
)
from geovis_ros.ros.errors import ConversionError

INTRINSICS = Intrinsics(fx=52.5, fy=51.0, cx=31.7, cy=23.2, width=64, height=48)
PLUMB_BOB = (-0.12, 0.034, 0.001, -0.0007, 0.0)
CALIBRATION = CameraCalibration(INTRINSICS, "plumb_bob", PLUMB_BOB)


def test_camera_info_round_trip():
    header = Header(frame_id="camera_optical")
    msg = camera_info_from_calibration(CALIBRATION, header)
    assert (msg.width, msg.height, msg.header.frame_id) == (64, 48, "camera_optical")
    np.testing.assert_array_equal(msg.k.reshape(3, 3), INTRINSICS.matrix)
    np.testing.assert_array_equal(msg.r.reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(msg.p.reshape(3, 4), np.hstack([INTRINSICS.matrix, np.zeros((3, 1))]))
    assert list(msg.d) == list(PLUMB_BOB)
    assert calibration_from_camera_info(msg) == CALIBRATION


@pytest.mark.parametrize(
    ("model", "coefficients"),
    [
        ("rational_polynomial", tuple(range(8))),
        ("equidistant", (0.1, -0.01, 0.002, 0.0)),
        ("plumb_bob", ()),
        ("my_lab_model", (1.0, 2.0)),
    ],
)
def test_other_distortion_models_round_trip(model, coefficients):
    calibration = CameraCalibration(INTRINSICS, model, coefficients)
    assert calibration_from_camera_info(camera_info_from_calibration(calibration)) == calibration


def test_resize_scales_intrinsics_and_keeps_distortion():
    resized = CALIBRATION.resized(32, 24)
    assert resized.intrinsics == INTRINSICS.resized(32, 24)
    assert resized.intrinsics.fx == pytest.approx(INTRINSICS.fx / 2)
    assert (resized.distortion_model, resized.d) == (CALIBRATION.distortion_model, CALIBRATION.d)
    msg = camera_info_from_calibration(resized)
    assert (msg.width, msg.height) == (32, 24)
    assert calibration_from_camera_info(msg) == resized


def test_size_check_against_image():
    info = camera_info_from_calibration(CALIBRATION)
    check_camera_info_matches_image(info, Image(width=64, height=48))
    with pytest.raises(ConversionError, match="width/height 64x48 does not match Image width/height 32x24"):
        check_camera_info_matches_image(info, Image(width=32, height=24))


def info_with(**changes) -> CameraInfo:
    msg = camera_info_from_calibration(CALIBRATION)
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


def k_with(index: int, value: float) -> np.ndarray:
    k = INTRINSICS.matrix.ravel().copy()
    k[index] = value
    return k


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (info_with(k=k_with(0, math.nan)), "k must be finite"),
        (info_with(k=k_with(2, math.inf)), "k must be finite"),
        (info_with(k=k_with(0, 0.0)), "k focal lengths"),
        (info_with(k=k_with(4, -5.0)), "k focal lengths"),
        (info_with(k=np.zeros(9)), "k is all zeros"),
        (info_with(k=k_with(1, 0.5)), "k is not a pinhole matrix"),
        (info_with(k=k_with(8, 2.0)), "k is not a pinhole matrix"),
        (info_with(width=0), "width/height"),
        (info_with(height=0), "width/height"),
        (info_with(d=[math.nan, 0.0, 0.0, 0.0, 0.0]), "d must be finite"),
        (info_with(d=[0.1, 0.2]), "d has 2 coefficients"),
        (info_with(binning_x=2), "binning"),
        (info_with(roi=RegionOfInterest(x_offset=4, y_offset=0, width=32, height=24)), "roi"),
    ],
    ids=[
        "nan-fx",
        "inf-cx",
        "zero-fx",
        "negative-fy",
        "uncalibrated",
        "skew",
        "k22",
        "zero-width",
        "zero-height",
        "nan-d",
        "short-d",
        "binning",
        "roi",
    ],
)
def test_invalid_camera_info_raises_naming_the_field(msg, field):
    with pytest.raises(ConversionError, match=field):
        calibration_from_camera_info(msg)


def test_full_frame_roi_is_accepted():
    msg = info_with(
        roi=RegionOfInterest(x_offset=0, y_offset=0, width=64, height=48), binning_x=1, binning_y=1
    )
    assert calibration_from_camera_info(msg) == CALIBRATION
