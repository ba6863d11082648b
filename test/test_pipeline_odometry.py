"""Monocular odometry stage: direct tracking, the classical baseline, failure handling, scale, API."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_pipeline_odometry_helpers import exact_depth, rendered, rendered_with_jump

from geovis_ros.apps.stage_benchmarks import run_odometry
from geovis_ros.eval.metrics_traj import ate
from geovis_ros.eval.simulated_depth import network_like_depth
from geovis_ros.frame import DepthResult, Frame, OdometryResult, TrackingState
from geovis_ros.geometry.se3 import invert, orthonormalized, rotation_angle, se3_log
from geovis_ros.pipeline.keyframe_feed import KeyframeFeed
from geovis_ros.slam.backend.slam_backend import BackendConfig, SlamBackend
from geovis_ros.slam.frontend.config import OdometryConfig, TrackingConfig
from geovis_ros.slam.frontend.estimate import TrackingFailure
from geovis_ros.slam.frontend.odometry import KeyframeEventKind, OdometryStage
from geovis_ros.slam.frontend.pyramid import ImagePyramid
from geovis_ros.slam.frontend.tracking import DirectTracker, TrackingReference

DIRECT = OdometryConfig()
FEATURES = OdometryConfig(method="features", fusion=dataclasses.replace(DIRECT.fusion, enabled=False))


def _run(config: OdometryConfig, seq, depth_mode: str = "exact", seed: int = 0, use_flow: bool = False,
         frames=None) -> list[OdometryResult]:
    stage = OdometryStage(config)
    rng = np.random.default_rng(seed)
    results = []
    for index in (range(len(seq.rgb)) if frames is None else frames):
        if depth_mode == "exact":
            depth = exact_depth(seq.depth[index], seq.intrinsics)
        else:
            noisy, std = network_like_depth(seq.depth[index], rng)
            depth = DepthResult(noisy, std, seq.intrinsics)
        results.append(stage(seq.frame(index), depth, seq.flow_into(index) if use_flow else None))
    return results


def _ate_fraction(seq, results) -> float:
    poses = np.stack([r.pose for r in results])
    return ate(seq.poses[: len(results)], poses, "se3")["ate_rmse_m"] / seq.path_length()


# --- tracking accuracy ------------------------------------------------------------------------


def _track_from_identity(target: int):
    seq = rendered()
    cfg = TrackingConfig()
    reference = TrackingReference(ImagePyramid.build(seq.rgb[0], seq.intrinsics, cfg), cfg, np.random.default_rng(0))
    depth = seq.depth[0]
    reference.set_depth((1.0 / depth).astype(np.float32), ((0.01 / depth) ** 2).astype(np.float32))
    truth = invert(seq.poses[target]) @ seq.poses[0]
    estimate = DirectTracker(cfg).track(reference, ImagePyramid.build(seq.rgb[target], seq.intrinsics, cfg), np.eye(4))
    return estimate, se3_log(estimate.pose_current_keyframe @ invert(truth))


@pytest.mark.parametrize("target", [2, 4, 6])
def test_direct_tracker_recovers_relative_pose_with_exact_depth(target):
    estimate, error = _track_from_identity(target)
    assert estimate.success, estimate.failure
    assert np.linalg.norm(error[:3]) < 0.004  # metres, for 5-20 cm of motion at 1-4 m
    assert np.degrees(np.linalg.norm(error[3:])) < 0.15
    assert estimate.inlier_ratio > 0.8
    assert np.all(np.linalg.eigvalsh(estimate.covariance) > 0)


@pytest.mark.parametrize("target", [8, 11, 14])
def test_direct_tracker_never_reports_a_wrong_pose_as_success(target):
    """Far outside the convergence basin (20-40 cm, 10-18 degrees from the guess): fail or be right."""
    estimate, error = _track_from_identity(target)
    assert not estimate.success or np.linalg.norm(error[:3]) < 0.01


def test_stage_with_exact_depth_follows_ground_truth():
    seq = rendered()
    results = _run(DIRECT, seq)
    assert results[0].state is TrackingState.INITIALIZING
    assert all(r.state is TrackingState.TRACKING for r in results[1:])
    assert _ate_fraction(seq, results) < 0.006
    assert all(r.is_metric for r in results)


def test_stage_with_network_like_depth_stays_within_loose_bounds():
    seq = rendered()
    results = _run(DIRECT, seq, depth_mode="network")
    assert all(r.state is TrackingState.TRACKING for r in results[1:])
    assert _ate_fraction(seq, results) < 0.03
    for result in results:
        assert result.pose.shape == (4, 4) and result.covariance.shape == (6, 6) and result.velocity.shape == (6,)
        assert np.all(np.isfinite(result.pose)) and 0.0 <= result.scale_confidence <= 1.0
        assert np.allclose(result.covariance, result.covariance.T)
    assert results[-1].scale_confidence > results[1].scale_confidence  # the scale average tightens


def test_driving_sequence_is_tracked():
    seq = rendered("street", "driving", frames=20)
    results = _run(DIRECT, seq, depth_mode="network")
    assert sum(r.state is TrackingState.LOST for r in results) == 0
    assert _ate_fraction(seq, results) < 0.03


def test_pose_prior_replaces_constant_velocity():
    seq = rendered()
    stage = OdometryStage(DIRECT)
    for index in range(len(seq.rgb)):
        prior = invert(seq.poses[index - 1]) @ seq.poses[index] if index else None
        result = stage(seq.frame(index), exact_depth(seq.depth[index], seq.intrinsics), pose_prior=prior)
    assert result.state is TrackingState.TRACKING
    assert np.linalg.norm(result.pose[:3, 3] - seq.poses[-1][:3, 3]) < 0.02


def test_moving_objects_are_tolerated():
    seq = rendered("room", "handheld", frames=120, seed=3, moving_objects=3)
    results = _run(DIRECT, seq)
    assert sum(r.state is TrackingState.LOST for r in results) <= 3
    assert _ate_fraction(seq, results) < 0.03


def test_outlier_cells_exclude_a_region_and_readmit_it():
    seq = rendered()
    cfg = TrackingConfig()
    k = seq.intrinsics
    reference = TrackingReference(ImagePyramid.build(seq.rgb[0], k, cfg), cfg, np.random.default_rng(0))
    reference.set_depth((1.0 / seq.depth[0]).astype(np.float32), np.full_like(seq.depth[0], 1e-4))
    points = reference.levels[0]
    left = k.fx * points.points[:, 0] / points.points[:, 2] + k.cx < k.width / 2  # a "moving object"
    reference.update_outlier_cells(points.cell, left)
    usable = reference.usable(0)
    assert np.mean(usable[left]) < 0.1 and usable[~left].all()
    reference.update_outlier_cells(points.cell, np.zeros(points.cell.size, bool))  # it left again
    assert reference.usable(0).all() and reference.usable(2).all()


# --- classical baseline -----------------------------------------------------------------------


def test_direct_beats_the_feature_baseline_on_a_loop():
    """Regression guard of the 'direct at least 2x better than the baseline' figure (shorter, looser)."""
    seq = rendered("room", "loop", frames=40)
    direct = _ate_fraction(seq, _run(DIRECT, seq, depth_mode="network"))
    features = _ate_fraction(seq, _run(FEATURES, seq, depth_mode="network"))
    assert direct < 0.015
    assert direct < features


@pytest.mark.parametrize("use_flow", [False, True])
def test_feature_baseline_produces_a_trajectory(use_flow):
    seq = rendered()
    results = _run(FEATURES, seq, depth_mode="network", use_flow=use_flow)
    assert sum(r.state is TrackingState.LOST for r in results) == 0
    assert _ate_fraction(seq, results) < 0.05
    assert all(np.isfinite(r.residual) for r in results[1:])


# --- failure handling -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["direct", "features"])
def test_black_frames_are_lost_then_tracking_recovers(method):
    seq = rendered()
    config = DIRECT if method == "direct" else FEATURES
    stage = OdometryStage(config)
    states = []
    for index in range(len(seq.rgb)):
        frame = seq.frame(index)
        if 10 <= index < 13:
            frame = Frame(frame.stamp_ns, np.zeros_like(frame.image), frame.intrinsics)
        states.append(stage(frame, exact_depth(seq.depth[index], seq.intrinsics)).state)
    assert states[10:13] == [TrackingState.LOST] * 3
    assert states[13] is TrackingState.RELOCALIZED
    assert all(s is TrackingState.TRACKING for s in states[14:])


def test_direct_tracker_reports_a_textureless_frame_as_a_typed_failure():
    seq = rendered(frames=2)
    cfg = TrackingConfig()
    reference = TrackingReference(ImagePyramid.build(seq.rgb[0], seq.intrinsics, cfg), cfg, np.random.default_rng(0))
    black = ImagePyramid.build(np.zeros_like(seq.rgb[1]), seq.intrinsics, cfg)
    estimate = DirectTracker(cfg).track(reference, black, np.eye(4))
    assert not estimate.success and estimate.failure is TrackingFailure.TEXTURELESS
    assert estimate.failure.value == "textureless frame"


def test_frozen_camera_does_not_drift():
    seq = rendered()
    stage = OdometryStage(DIRECT)
    depth = exact_depth(seq.depth[5], seq.intrinsics)
    results = [stage(Frame(1_000 + i * 33_000_000, seq.rgb[5], seq.intrinsics), depth) for i in range(15)]
    assert all(r.state is TrackingState.TRACKING for r in results[1:])
    assert {r.keyframe_id for r in results} == {0}
    for result in results:
        assert np.linalg.norm(result.pose[:3, 3]) < 1e-4
        assert rotation_angle(result.pose[:3, :3]) < 1e-4
        assert np.linalg.norm(result.velocity) < 1e-2


def test_sudden_90_degree_turn_is_lost_then_relocalized():
    seq = rendered_with_jump(frames=20, jump_at=10)
    stage = OdometryStage(DIRECT)
    results = [stage(seq.frame(i), exact_depth(seq.depth[i], seq.intrinsics)) for i in range(len(seq.rgb))]
    states = [r.state for r in results]
    assert all(s is TrackingState.TRACKING for s in states[1:10])
    assert states[10] is TrackingState.LOST
    assert np.trace(results[10].covariance) > 100 * np.trace(results[9].covariance)
    assert states[11] is TrackingState.RELOCALIZED
    assert all(s is TrackingState.TRACKING for s in states[12:])
    assert results[11].keyframe_id == results[10].keyframe_id + 1  # a fresh keyframe from the lost frame
    # After the loss the motion is tracked again (relative to the re-initialised keyframe).
    truth = invert(seq.poses[10]) @ seq.poses[-1]
    estimate = invert(results[10].pose) @ results[-1].pose
    assert np.linalg.norm(truth[:3, 3] - estimate[:3, 3]) < 0.02


def test_nan_depth_frame_is_survived():
    seq = rendered()
    stage = OdometryStage(DIRECT)
    results = []
    for index in range(len(seq.rgb)):
        depth = seq.depth[index] if index not in (6, 7) else np.full_like(seq.depth[index], np.nan)
        results.append(stage(seq.frame(index), exact_depth(depth, seq.intrinsics)))
    assert all(r.state is TrackingState.TRACKING for r in results[1:])
    assert _ate_fraction(seq, results) < 0.006


def test_nan_depth_on_the_first_frames_delays_initialization():
    seq = rendered()
    stage = OdometryStage(DIRECT)
    nan_depth = exact_depth(np.full_like(seq.depth[0], np.nan), seq.intrinsics)
    first = stage(seq.frame(0), nan_depth)
    assert first.state is TrackingState.INITIALIZING and first.keyframe_id == -1 and stage.keyframe is None
    second = stage(seq.frame(1), exact_depth(seq.depth[1], seq.intrinsics))
    assert second.state is TrackingState.INITIALIZING and second.keyframe_id == 0
    assert stage(seq.frame(2), exact_depth(seq.depth[2], seq.intrinsics)).state is TrackingState.TRACKING


# --- scale ------------------------------------------------------------------------------------


def test_relative_depth_gives_a_consistent_trajectory_up_to_scale():
    seq = rendered(frames=30)
    stage = OdometryStage(DIRECT)
    results = []
    for index in range(len(seq.rgb)):
        relative = (seq.depth[index] * 0.37).astype(np.float32)  # unknown global scale
        results.append(stage(seq.frame(index), DepthResult(relative, relative * 0.02, seq.intrinsics,
                                                           is_metric=False)))
    assert not any(r.is_metric for r in results)
    assert all(r.state is TrackingState.TRACKING for r in results[1:])
    poses = np.stack([r.pose for r in results])
    aligned = ate(seq.poses, poses, "sim3")
    assert aligned["aligned_scale"] == pytest.approx(1 / 0.37, rel=0.05)
    assert aligned["ate_rmse_m"] / seq.path_length() < 0.01
    assert results[-1].keyframe_id >= 2  # the scale was carried across keyframes
    assert results[-1].scale_confidence < results[1].scale_confidence


# --- API --------------------------------------------------------------------------------------


def test_keyframe_events_and_snapshot():
    seq = rendered()
    events = []
    stage = OdometryStage(DIRECT, on_keyframe=events.append)
    rng = np.random.default_rng(0)
    for index in range(len(seq.rgb)):
        stage(seq.frame(index), DepthResult(*network_like_depth(seq.depth[index], rng), seq.intrinsics))
    kinds = [(e.kind, e.keyframe.id) for e in events]
    assert kinds[0] == (KeyframeEventKind.CREATED, 0)
    assert kinds[1:3] == [(KeyframeEventKind.FINALIZED, 0), (KeyframeEventKind.CREATED, 1)]
    second = events[2].keyframe
    assert second.parent_id == 0 and not second.after_loss
    assert np.allclose(events[1].keyframe.pose @ second.pose_parent_keyframe, second.pose, atol=1e-9)
    assert int(np.count_nonzero(second.observations)) > 0  # seeded by the previous keyframe's stereo
    snapshot = stage.keyframe
    assert snapshot is not None and snapshot.id == events[-1].keyframe.id
    assert snapshot.image.shape == seq.rgb[0].shape and snapshot.inverse_depth.shape == seq.depth[0].shape
    assert snapshot.confident_mask(0.1).any()
    snapshot.inverse_depth[:] = 0  # a copy: the stage is unaffected
    assert np.isfinite(stage.keyframe.depth).any()


def test_keyframe_feed_hands_each_finished_keyframe_to_the_backend_once():
    seq = rendered(frames=16)
    stage = OdometryStage(DIRECT)
    handed = []
    feed = KeyframeFeed(stage, SlamBackend(BackendConfig(loop=None)), handed.append)
    finalized = []
    stage.add_keyframe_listener(lambda e: finalized.append(e.keyframe.id) if e.kind is KeyframeEventKind.FINALIZED
                                else None)
    for index in range(len(seq.rgb)):
        stage(seq.frame(index), exact_depth(seq.depth[index], seq.intrinsics))
        pending = len(finalized) - len(handed)
        assert feed.flush() == pending and feed.flush() == 0  # each keyframe once
        assert [k.id for k in handed] == finalized
    assert finalized, "the sequence should finish at least one keyframe"
    assert feed.flush(include_active=True) == 1 and feed.flush(include_active=True) == 0
    assert [k.id for k in handed] == [*finalized, stage.keyframe.id]
    assert feed.backend.keyframe_count == len(handed) and feed.loops == 0


def test_reset_starts_a_new_odometry_frame():
    seq = rendered()
    stage = OdometryStage(DIRECT)
    for index in range(5):
        stage(seq.frame(index), exact_depth(seq.depth[index], seq.intrinsics))
    stage.reset()
    assert stage.keyframe is None
    result = stage(seq.frame(5), exact_depth(seq.depth[5], seq.intrinsics))
    assert result.state is TrackingState.INITIALIZING and np.allclose(result.pose, np.eye(4))


def test_bad_inputs_raise_clear_errors():
    seq = rendered()
    stage = OdometryStage(DIRECT)
    frame, depth = seq.frame(0), exact_depth(seq.depth[0], seq.intrinsics)
    with pytest.raises(ValueError, match="depth is"):
        stage(frame, exact_depth(seq.depth[0][:, :-1], seq.intrinsics))
    with pytest.raises(ValueError, match="pose_prior"):
        stage(frame, depth, pose_prior=np.eye(3))
    with pytest.raises(TypeError, match="Frame"):
        stage(seq.rgb[0], depth)
    with pytest.raises(TypeError, match="OdometryConfig"):
        OdometryStage({"method": "direct"})
    with pytest.raises(ValueError, match="method"):
        OdometryConfig(method="orb-slam")
    with pytest.raises(ValueError, match="min_inlier_ratio"):
        TrackingConfig(min_inlier_ratio=2.0)
    with pytest.raises(ValueError, match="tracking"):
        OdometryConfig(tracking=None)
    # A non-finite pose prior is bad content, not a bad call: it is ignored.
    assert stage(frame, depth, pose_prior=np.full((4, 4), np.nan)).state is TrackingState.INITIALIZING


def test_run_odometry_times_every_frame():
    seq = rendered(frames=8, width=80, height=60)
    inputs = ((seq.frame(i), exact_depth(seq.depth[i], seq.intrinsics), None) for i in range(8))
    bench = run_odometry(DIRECT, inputs)
    assert bench.poses.shape == (8, 4, 4) and bench.milliseconds.shape == (8,)
    assert np.all(bench.milliseconds > 0) and bench.keyframes >= 1
    assert bench.summary()["frames"] == 8


def test_orthonormalized_projects_onto_rotations():
    pose = np.eye(4)
    pose[:3, :3] += 1e-3 * np.arange(9).reshape(3, 3)
    fixed = orthonormalized(pose)
    assert np.allclose(fixed[:3, :3] @ fixed[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(fixed[:3, :3]) == pytest.approx(1.0)
