"""Depth metrics: hand-computed values, the monodepth2 protocol (masking, median scaling, clipping)."""

import math

import numpy as np
import pytest

from geovis_ros.eval.metrics_depth import DepthMetricsAccumulator, depth_metrics
from geovis_ros.eval.simulated_depth import relative_inverse_depth


def test_hand_computed_case():
    gt = np.array([[1.0, 2.0], [4.0, 10.0]])
    pred = np.array([[1.1, 1.5], [4.0, 20.0]])
    m = depth_metrics(gt, pred)
    assert m["abs_rel"] == pytest.approx((0.1 / 1 + 0.5 / 2 + 0 + 10 / 10) / 4)  # 0.3375
    assert m["sq_rel"] == pytest.approx((0.01 / 1 + 0.25 / 2 + 0 + 100 / 10) / 4)  # 2.53375
    assert m["rmse"] == pytest.approx(math.sqrt((0.01 + 0.25 + 0 + 100) / 4))
    logs = [math.log(1 / 1.1), math.log(2 / 1.5), 0.0, math.log(10 / 20)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in logs) / 4))
    # max(gt/pred, pred/gt) = 1.1, 1.333, 1, 2 against 1.25, 1.5625, 1.953
    assert (m["a1"], m["a2"], m["a3"]) == (0.5, 0.75, 0.75)
    assert m["n_pixels"] == 4 and m["pred_coverage"] == 1.0
    assert "scale" not in m


def test_invalid_ground_truth_is_masked_with_monodepth2_strict_bounds():
    gt = np.array([np.nan, 0.0, 0.05, 80.0, 2.0, np.inf])
    pred = np.full(6, 2.0)
    m = depth_metrics(gt, pred, min_depth=0.05, max_depth=80.0)
    assert m["n_pixels"] == 1  # only 2.0: NaN, 0, == min, == max and inf are excluded
    assert m["abs_rel"] == 0.0 and m["a1"] == 1.0


def test_prediction_is_clipped_to_the_depth_range():
    m = depth_metrics(np.array([40.0, 1.0]), np.array([100.0, 0.0]), min_depth=0.5, max_depth=80.0)
    assert m["abs_rel"] == pytest.approx((40 / 40 + 0.5 / 1) / 2)  # pred -> 80 and 0.5


def test_median_scaling_removes_a_global_scale():
    gt = np.array([1.0, 2.0, 3.0, 5.0])
    m = depth_metrics(gt, gt * 2.0, median_scaling=True)
    assert m["scale"] == pytest.approx(0.5)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-15) and m["a1"] == 1.0
    unscaled = depth_metrics(gt, gt * 2.0)
    assert unscaled["abs_rel"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="median prediction"):
        depth_metrics(gt, np.zeros(4), median_scaling=True)


def test_missing_predictions_are_left_out_and_reported_as_coverage():
    gt = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.0, np.nan, 3.3, np.inf])
    m = depth_metrics(gt, pred)
    assert m["n_pixels"] == 2 and m["n_gt_valid"] == 4 and m["pred_coverage"] == 0.5
    assert m["abs_rel"] == pytest.approx(0.05)
    empty = depth_metrics(gt, np.full(4, np.nan))
    assert empty["n_pixels"] == 0 and math.isnan(empty["abs_rel"]) and empty["pred_coverage"] == 0.0


def test_monodepth2_reference_on_random_maps():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 90.0, size=(48, 64))
    gt[rng.random(gt.shape) < 0.3] = 0.0
    pred = gt * rng.uniform(0.7, 1.4, size=gt.shape) + rng.normal(scale=0.5, size=gt.shape)
    # monodepth2 evaluate_depth.py / compute_errors, written out:
    mask = (gt > 1e-3) & (gt < 80.0)
    g, p = gt[mask], pred[mask].copy()
    p *= np.median(g) / np.median(p)
    p = np.clip(p, 1e-3, 80.0)
    thresh = np.maximum(g / p, p / g)
    reference = {
        "abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)), "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "a1": np.mean(thresh < 1.25), "a2": np.mean(thresh < 1.25**2), "a3": np.mean(thresh < 1.25**3),
    }
    ours = depth_metrics(gt, pred, median_scaling=True)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, rel=1e-12), key


def test_accumulator_averages_per_image_like_monodepth2():
    accumulator = DepthMetricsAccumulator(median_scaling=True)
    accumulator.add(np.ones((2, 2)), np.full((2, 2), 2.0))  # scale 0.5, abs_rel 0
    accumulator.add(np.array([[1.0, 1.0, 1.0, 1.0]]), np.array([[1.0, 1.0, 1.0, 2.0]]))  # abs_rel 0.25
    accumulator.add(np.zeros((2, 2)), np.ones((2, 2)))  # no valid ground truth: not averaged
    result = accumulator.result()
    assert result["abs_rel"] == pytest.approx(0.125)  # per-image mean, not pixel mean
    assert result["n_pixels"] == 8 and result["n_images"] == 2 and result["n_images_empty"] == 1
    assert result["scale"] == pytest.approx(0.75) and result["scale_std"] == pytest.approx(0.25)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        depth_metrics(np.ones((4, 5)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        depth_metrics(np.ones(3), np.ones(3), min_depth=10.0, max_depth=1.0)


def test_simulated_relative_depth_is_affine_in_inverse_depth():
    depth = np.linspace(0.5, 5.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    relative, std, scale, shift = relative_inverse_depth(depth, np.random.default_rng(1), bias_std=0.0, noise_std=0.0)
    assert 0.5 <= scale <= 2.0
    np.testing.assert_allclose(1.0 / relative, scale / depth + shift, rtol=1e-4)  # a / depth + b
    np.testing.assert_allclose(std, 0.1 * relative, rtol=1e-6)
