"""Rectification of plumb_bob, rational_polynomial and equidistant images against cv2's own point undistortion."""

import time

import cv2
import numpy as np
import pytest

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.ros.camera_info import CameraCalibration
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.rectify import Rectifier

K = Intrinsics(300.0, 310.0, 159.5, 119.5, 320, 240)
MODELS = {
    "plumb_bob": (-0.28, 0.07, 0.001, -0.0005, 0.0),
    "rational_polynomial": (-0.3, 0.1, 0.001, 0.0, 0.0, 0.02, 0.01, 0.0),
    "equidistant": (-0.02, 0.01, -0.003, 0.0005),
}


def dot_image(u, v, size=(240, 320)):
    """A black image with one bright 3x3 dot centred on integer pixel (u, v)."""
    image = np.zeros((*size, 3), np.uint8)
    image[v - 1:v + 2, u - 1:u + 2] = 255
    return image


def centroid(image):
    ys, xs = np.nonzero(image[..., 0].astype(float) > 40)
    weights = image[ys, xs, 0].astype(float)
    return np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_distorted_point_lands_where_the_lens_model_says(model):
    d = np.array(MODELS[model])
    rectifier = Rectifier(CameraCalibration(K, model, tuple(d)))
    assert not rectifier.identity
    assert rectifier.calibration.d == (0.0,) * 5 and rectifier.calibration.distortion_model == "plumb_bob"
    checked = 0
    for u, v in ((40, 30), (280, 200), (160, 120), (60, 210), (100, 80), (230, 170)):
        point = np.array([[[u, v]]], np.float64)
        if model == "equidistant":
            ideal = cv2.fisheye.undistortPoints(point, K.matrix, d, P=K.matrix)[0, 0]
        else:
            ideal = cv2.undistortPoints(point, K.matrix, d, P=K.matrix)[0, 0]
        if not (2 <= ideal[0] < 318 and 2 <= ideal[1] < 238):
            continue
        np.testing.assert_allclose(centroid(rectifier.apply(dot_image(u, v))), ideal, atol=0.35)
        checked += 1
    assert checked >= 4


def test_rectified_intrinsics_come_from_p_when_it_is_set():
    p = [250.0, 0.0, 150.0, 0.0, 0.0, 255.0, 110.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    rectifier = Rectifier(CameraCalibration(K, "plumb_bob", MODELS["plumb_bob"]), p)
    assert rectifier.intrinsics == Intrinsics(250.0, 255.0, 150.0, 110.0, 320, 240)
    assert Rectifier(CameraCalibration(K, "plumb_bob", MODELS["plumb_bob"]), [0.0] * 12).intrinsics == K


def test_no_distortion_costs_nothing():
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for calibration in (CameraCalibration(K), CameraCalibration(K, "plumb_bob", (0.0,) * 5),
                        CameraCalibration(K, "equidistant", (0.0,) * 4)):
        rectifier = Rectifier(calibration, [1.0] * 12)
        assert rectifier.identity and rectifier.intrinsics == K
        started = time.perf_counter()
        assert rectifier.apply(image) is image  # the very same array: no copy, no remap
        assert time.perf_counter() - started < 1e-3


def test_unknown_model_with_distortion_is_refused():
    with pytest.raises(ConversionError, match="cannot be rectified"):
        Rectifier(CameraCalibration(K, "fov", (0.9,)))
