"""Flow metrics (EPE, KITTI Fl-all) on hand-computed cases, and the numpy colour codings."""

import math

import numpy as np
import pytest

from geovis_ros.eval.metrics_flow import FlowMetricsAccumulator, flow_metrics
from geovis_ros.visualization import COLOR_WHEEL, DEPTH_LUT, depth_to_color, flow_to_color

GT = np.array([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 4.0], [100.0, 0.0]]])
# End-point errors 1, 4, 4, 4; outliers need EPE > 3 px AND > 5 % of |gt|: pixels 2 and 3 only
# (pixel 4: 4 px < 5 % of 100 px).
PRED = np.array([[[1.0, 0.0], [10.0, 4.0]], [[0.0, 0.0], [96.0, 0.0]]])


def test_hand_computed_epe_and_fl_all():
    m = flow_metrics(GT, PRED)
    assert m["epe"] == pytest.approx(13 / 4)
    assert m["fl_all"] == pytest.approx(0.5)
    assert m["n_pixels"] == 4 and m["n_pred_missing"] == 0


def test_valid_mask_and_nan_ground_truth_exclude_pixels():
    valid = np.array([[True, False], [True, True]])
    gt = GT.copy()
    gt[1, 0] = np.nan
    m = flow_metrics(gt, PRED, valid)
    assert m["n_pixels"] == 2  # pixel (0, 1) masked, (1, 0) unknown
    assert m["epe"] == pytest.approx((1 + 4) / 2) and m["fl_all"] == 0.0
    assert math.isnan(flow_metrics(np.full((2, 2, 2), np.nan), PRED)["epe"])


def test_missing_prediction_is_scored_as_zero_flow():
    pred = PRED.copy()
    pred[0, 1] = [np.nan, 0.0]
    m = flow_metrics(GT, pred)
    assert m["n_pred_missing"] == 1
    assert m["epe"] == pytest.approx((1 + 10 + 4 + 4) / 4)
    assert m["fl_all"] == pytest.approx(0.5)


def test_accumulator_weights_every_pixel_equally():
    accumulator = FlowMetricsAccumulator()
    accumulator.add(GT, PRED)
    accumulator.add(np.zeros((1, 2, 2)), np.array([[[0.0, 0.0], [0.0, 10.0]]]))  # EPE 0 and 10, 1 outlier
    result = accumulator.result()
    assert result["epe"] == pytest.approx((13 + 10) / 6)
    assert result["fl_all"] == pytest.approx(3 / 6)
    assert result["n_pixels"] == 6 and result["n_images"] == 2


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        flow_metrics(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        flow_metrics(np.zeros((4, 4, 2)), np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match="valid mask"):
        flow_metrics(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)), np.ones((3, 3), bool))


# ------------------------------------------------------------------------------ colour coding


def test_middlebury_wheel_has_55_colours_starting_at_red():
    assert COLOR_WHEEL.shape == (55, 3)
    np.testing.assert_array_equal(COLOR_WHEEL[0], [1, 0, 0])
    np.testing.assert_array_equal(COLOR_WHEEL[15], [1, 1, 0])  # after the 15 red->yellow steps


def test_flow_colours_follow_the_middlebury_convention():
    vectors = [[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, -1.0], [np.nan, 0.0], [2.0, 0.0], [0.0, 1.0]]
    flow = np.array([vectors])
    image = flow_to_color(flow, max_flow=1.0)
    assert image.dtype == np.uint8 and image.shape == (1, 7, 3)
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])  # no motion: white
    right, left, up, down = (image[0, i].astype(int) for i in (1, 2, 3, 6))
    assert right[0] == 255 and right[1] < 40 and right[2] < 60  # rightwards: red
    assert left[0] < 40 and left[1] > 200 and left[2] > 200  # leftwards: cyan
    assert up[2] > 200 and up[1] < 40  # upwards (v < 0, image y points down): blue-magenta
    assert down[0] > 200 and down[1] > 150 and down[2] < 40  # downwards: yellow
    np.testing.assert_array_equal(image[0, 4], [0, 0, 0])  # unknown: black
    assert image[0, 5].max() <= 0.75 * 255 + 1  # beyond max_flow: darkened
    auto = flow_to_color(flow)  # max_flow = largest magnitude (2): the unit vector is half saturated
    assert auto[0, 1, 1] > 100
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        flow_to_color(np.zeros((3, 3)))


def test_depth_colours_near_bright_far_dark_invalid_black():
    depth = np.array([[1.0, 5.0, 10.0, np.nan, 0.0, 50.0]])
    image = depth_to_color(depth, 1.0, 10.0)
    assert image.shape == (1, 6, 3) and image.dtype == np.uint8
    brightness = image[0].astype(int).sum(axis=1)
    assert brightness[0] > brightness[1] > brightness[2] > 0
    np.testing.assert_array_equal(image[0, 0], DEPTH_LUT[255])
    np.testing.assert_array_equal(image[0, 3], [0, 0, 0])
    np.testing.assert_array_equal(image[0, 4], [0, 0, 0])
    np.testing.assert_array_equal(image[0, 5], DEPTH_LUT[0])  # beyond max: clipped
    with pytest.raises(ValueError, match="max_depth > min_depth"):
        depth_to_color(depth, 5.0, 5.0)
