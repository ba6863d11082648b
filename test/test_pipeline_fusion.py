"""CNN-SLAM keyframe fusion: epipolar stereo, Bayesian inverse-depth fusion, bias field, hand-over, scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_pipeline_odometry_helpers import abs_rel, rendered

from geovis_ros.eval.simulated_depth import network_like_depth
from geovis_ros.frame import DepthResult
from geovis_ros.geometry.se3 import invert, make_pose, so3_exp
from geovis_ros.slam.frontend.config import FusionConfig, KeyframeConfig, OdometryConfig, TrackingConfig
from geovis_ros.slam.frontend.keyframes import (
    ActiveKeyframe,
    align_prior_to_reference,
    epipolar_stereo,
    estimate_bias_field,
    inverse_depth_prior,
    keyframe_switch_reason,
)
from geovis_ros.slam.frontend.odometry import KeyframeEventKind, MetricScaleFilter, OdometryStage
from geovis_ros.slam.frontend.pyramid import ImagePyramid

TRACKING = TrackingConfig()
FUSION = FusionConfig()


def _keyframe(seq, index: int, depth, std) -> ActiveKeyframe:
    rho, var = inverse_depth_prior(depth, std, FUSION)
    pyramid = ImagePyramid.build(seq.rgb[index], seq.intrinsics, TRACKING)
    return ActiveKeyframe(0, int(seq.stamps_ns[index]), seq.rgb[index], pyramid, rho, var, seq.poses[index],
                          np.zeros((6, 6)), True, TRACKING, FUSION, np.random.default_rng(0))


def test_inverse_depth_prior_converts_and_rejects_invalid():
    depth = np.array([[2.0, np.nan, 0.01, 500.0]], np.float32)
    std = np.array([[0.2, 0.1, 0.1, 1.0]], np.float32)
    rho, var = inverse_depth_prior(depth, std, FUSION)
    assert rho[0, 0] == pytest.approx(0.5)
    assert var[0, 0] == pytest.approx((0.2 * 0.25) ** 2)
    assert np.all(np.isnan(rho[0, 1:])) and np.all(np.isnan(var[0, 1:]))


def test_epipolar_stereo_measures_exact_inverse_depth():
    seq = rendered()
    depth = seq.depth[0]
    keyframe = ImagePyramid.build(seq.rgb[0], seq.intrinsics, TRACKING)
    current = ImagePyramid.build(seq.rgb[8], seq.intrinsics, TRACKING)
    pose_current_keyframe = invert(seq.poses[8]) @ seq.poses[0]
    magnitude = np.hypot(keyframe.grad_x[0], keyframe.grad_y[0])
    magnitude[:5], magnitude[-5:], magnitude[:, :5], magnitude[:, -5:] = 0, 0, 0, 0
    index = np.flatnonzero(magnitude > 10.0)
    truth = 1.0 / depth.reshape(-1)[index]
    prior = truth * 1.1  # 10 % too close
    obs = epipolar_stereo(keyframe, current, pose_current_keyframe, (1.0, 0.0), index, prior,
                          (0.1 * prior) ** 2, FUSION, TRACKING.intensity_noise)
    assert obs.index.size > 0.3 * index.size
    measured_truth = 1.0 / depth.reshape(-1)[obs.index]
    relative = np.abs(obs.inverse_depth - measured_truth) / measured_truth
    assert np.median(relative) < 0.03  # far better than the 10 % prior
    assert np.all(obs.variance > 0)


def test_bias_field_recovers_a_constant_offset_where_observed():
    ratio = np.full((60, 80), 0.2, np.float32)
    weight = np.zeros((60, 80), np.float32)
    weight[::3, ::3] = 400.0  # sparse observations, log std 0.05 each
    field = estimate_bias_field(ratio, weight, sigma_px=8.0, prior_std=0.15)
    assert field.shape == (60, 80)
    assert np.all(np.abs(field[10:-10, 10:-10] - 0.2) < 0.01)
    empty = estimate_bias_field(ratio, np.zeros_like(weight), sigma_px=8.0, prior_std=0.15)
    assert np.all(empty == 0.0)


def test_align_prior_recovers_scale_and_shift():
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.2, 1.0, (40, 50)).astype(np.float32)
    relative = (truth - 0.05) / 2.5  # truth = 2.5 * relative + 0.05
    relative[::7, ::7] = 5.0  # gross outliers
    scale, shift, used = align_prior_to_reference(relative, truth, fit_shift=True, min_points=30)
    assert scale == pytest.approx(2.5, rel=1e-3) and shift == pytest.approx(0.05, abs=1e-3)
    assert used < truth.size
    scale_only, shift_only, _ = align_prior_to_reference(truth / 1.3, truth, fit_shift=False, min_points=30)
    assert scale_only == pytest.approx(1.3, rel=1e-4) and shift_only == 0.0
    assert align_prior_to_reference(truth[:2, :2], truth[:2, :2], fit_shift=False, min_points=30) is None


def test_keyframe_switch_reasons():
    cfg = KeyframeConfig(max_baseline_ratio=0.1, min_overlap=0.7, max_rotation_deg=10.0)
    assert keyframe_switch_reason(np.eye(4), 2.0, 1.0, cfg) == ""
    assert keyframe_switch_reason(make_pose(np.eye(3), [0.3, 0, 0]), 2.0, 1.0, cfg) == "baseline"
    assert keyframe_switch_reason(make_pose(so3_exp([0, 0.3, 0]), [0, 0, 0]), 2.0, 1.0, cfg) == "rotation"
    assert keyframe_switch_reason(np.eye(4), 2.0, 0.5, cfg) == "overlap"


def test_fusion_with_known_poses_beats_the_network_depth_by_30_percent():
    seq = rendered()
    rng = np.random.default_rng(7)
    depth, std = network_like_depth(seq.depth[0], rng)
    keyframe = _keyframe(seq, 0, depth, std)
    before = abs_rel(depth, seq.depth[0])
    for index in range(1, 12):
        current = ImagePyramid.build(seq.rgb[index], seq.intrinsics, TRACKING)
        keyframe.fuse(current, invert(seq.poses[index]) @ seq.poses[0], (1.0, 0.0))
    snapshot = keyframe.snapshot()
    after = abs_rel(snapshot.depth, seq.depth[0])
    assert after < 0.7 * before, (before, after)
    assert int(np.count_nonzero(snapshot.observations)) > 0
    # Where stereo measured, the fused depth is at least as good as the prior there.
    measured = snapshot.observations > 0
    assert abs_rel(np.where(measured, snapshot.depth, np.nan), seq.depth[0]) < 0.7 * abs_rel(
        np.where(measured, depth, np.nan), seq.depth[0])


def test_stage_fused_keyframes_beat_the_network_depth_by_30_percent():
    """Full stage (estimated poses, metric scale filter): finalized keyframes vs their network depth."""
    seq = rendered(frames=30)
    rng = np.random.default_rng(11)
    finalized = []
    stage = OdometryStage(OdometryConfig(), on_keyframe=lambda e: finalized.append(e.keyframe)
                          if e.kind is KeyframeEventKind.FINALIZED else None)
    network = {}
    for index in range(len(seq.rgb)):
        depth, std = network_like_depth(seq.depth[index], rng)
        network[int(seq.stamps_ns[index])] = (depth, seq.depth[index])
        stage(seq.frame(index), DepthResult(depth, std, seq.intrinsics))
    assert finalized, "no keyframe was finalized"
    before = np.mean([abs_rel(*network[k.stamp_ns]) for k in finalized])
    after = np.mean([abs_rel(k.depth, network[k.stamp_ns][1]) for k in finalized])
    assert after < 0.7 * before, (before, after)


def test_propagated_depth_lands_where_the_surface_is():
    seq = rendered()
    depth, std = network_like_depth(seq.depth[0], np.random.default_rng(2))
    keyframe = _keyframe(seq, 0, depth, std)
    for index in range(1, 6):
        current = ImagePyramid.build(seq.rgb[index], seq.intrinsics, TRACKING)
        keyframe.fuse(current, invert(seq.poses[index]) @ seq.poses[0], (1.0, 0.0))
    target = 6
    rho, var = keyframe.propagate(invert(seq.poses[target]) @ seq.poses[0], seq.intrinsics)
    landed = np.isfinite(rho)
    assert np.count_nonzero(landed) > 100
    assert np.all(var[landed] > 0)
    truth = 1.0 / seq.depth[target][landed]
    assert np.median(np.abs(rho[landed] - truth) / truth) < 0.04


def test_metric_scale_filter_averages_per_frame_scale_errors():
    rng = np.random.default_rng(0)
    scale_filter = MetricScaleFilter(window=1000)
    scale_filter.start()
    odometry_log_scale = 0.08  # the first keyframe's network depth was 8 % too far
    for _ in range(200):
        network_log_scale = rng.normal(0.0, 0.05)
        factor = scale_filter.update(odometry_log_scale - network_log_scale)
        odometry_log_scale += math.log(factor)
    assert abs(odometry_log_scale) < 0.015
    assert scale_filter.log_std < 0.01


def test_fusion_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_depth"):
        FusionConfig(min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match="search_radius_px"):
        FusionConfig(search_radius_px=0)
    with pytest.raises(ValueError, match="min_overlap"):
        KeyframeConfig(min_overlap=1.5)
