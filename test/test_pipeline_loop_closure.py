"""Loop detection (retrieval + verification) and the keyframe back end on a synthetic loop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import invert, rotation_angle, se3_exp, se3_log
from geovis_ros.slam.backend.loop_detection import (
    LoopClosure,
    LoopClosureConfig,
    LoopClosureConfigError,
    LoopDetector,
    global_descriptor,
    pnp_information,
    sample_smooth_depth,
)
from geovis_ros.slam.backend.mapping import KeyframeMapConfig, VoxelMapConfig
from geovis_ros.slam.backend.pose_graph import PoseGraphError
from geovis_ros.slam.backend.slam_backend import BackendConfig, SlamBackend
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

# A lap around a cluttered table in 60 frames; keyframes every 2nd frame (30 keyframes, ~4 cm
# apart), so the last keyframe is one step before the first.
LOOP = SynthConfig(scene="tabletop", trajectory="loop", frames=60, width=128, height=96, seed=3)
KEYFRAME_STEP = 2
SMALL_IMAGE_LOOP = LoopClosureConfig(recent_keyframes_excluded=8, min_inliers=15)
GT_DEPTH_RELATIVE_STD = 0.01  # what ground-truth depth claims: trusted, not exact


@pytest.fixture(scope="module")
def keyframes():
    return list(render_sequence(LOOP, with_flow=False))[::KEYFRAME_STEP]


def _drifting_odometry(frames, bias: np.ndarray) -> list[np.ndarray]:
    """Ground-truth relative motion with a constant bias added at every step (odometry drift)."""
    poses = [frames[0].pose.copy()]
    for previous, current in zip(frames[:-1], frames[1:], strict=True):
        poses.append(poses[-1] @ invert(previous.pose) @ current.pose @ bias)
    return poses


def test_global_descriptor_ignores_gain_and_offset() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (48, 64, 3), dtype=np.uint8)
    brighter = np.clip(image.astype(np.float32) * 1.1 + 10, 0, 255).astype(np.uint8)
    a, b = global_descriptor(image), global_descriptor(brighter)
    assert a.shape == (32 * 24,) and a.dtype == np.float32
    assert float(a @ b) > 0.99
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert not np.any(global_descriptor(np.full((48, 64, 3), 7, np.uint8)))


def test_pnp_information_matches_numerical_projection_jacobian() -> None:
    k = Intrinsics(100.0, 110.0, 32.0, 24.0, 64, 48)
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.uniform(-1, 1, (5, 2)), rng.uniform(2, 4, (5, 1))], axis=1)
    def pixels(delta: np.ndarray) -> np.ndarray:
        # Right perturbation of the camera pose moves camera-frame points by exp(-delta).
        moved = points @ invert(se3_exp(delta))[:3, :3].T + invert(se3_exp(delta))[:3, 3]
        return np.stack([k.fx * moved[:, 0] / moved[:, 2] + k.cx, k.fy * moved[:, 1] / moved[:, 2] + k.cy], 1)

    jacobians = []
    for axis in range(6):
        step = np.zeros(6)
        step[axis] = 1e-6
        jacobians.append(((pixels(step) - pixels(-step)) / 2e-6).reshape(-1))
    jacobian = np.stack(jacobians, axis=1)
    expected = jacobian.T @ jacobian / 0.5**2
    np.testing.assert_allclose(pnp_information(points, k, 0.5), expected, rtol=1e-5, atol=1e-3)


def test_sample_smooth_depth_interpolates_and_rejects_edges() -> None:
    depth = np.tile(np.linspace(1.0, 1.3, 8, dtype=np.float32), (6, 1))
    depth[:, 6:] = 5.0  # occlusion boundary between columns 5 and 6
    depth[0, 0] = np.nan
    uv = np.array([[2.5, 2.0], [5.5, 3.0], [0.2, 0.2], [7.5, 1.0], [-1.0, 2.0]])
    z = sample_smooth_depth(depth, uv, max_relative_step=0.05)
    np.testing.assert_allclose(z[0], 1.0 + 2.5 * 0.3 / 7, rtol=1e-5)
    assert np.all(np.isnan(z[1:]))


def test_detector_verifies_revisits_with_accurate_relative_poses(keyframes) -> None:
    detector = LoopDetector(SMALL_IMAGE_LOOP)
    last = keyframes[-1]
    for index, frame in enumerate(keyframes[:-8]):
        detector.add_keyframe(index, frame.rgb, frame.depth, frame.intrinsics)
    loops = detector.add_keyframe(99, last.rgb, last.depth, last.intrinsics)
    assert 0 in [loop.match_id for loop in loops]  # back at the start of the lap
    for loop in loops:
        truth = invert(keyframes[loop.match_id].pose) @ last.pose
        error = se3_log(invert(truth) @ loop.pose_match_query)
        assert np.linalg.norm(error[:3]) < 0.02 and np.degrees(np.linalg.norm(error[3:])) < 1.5
        assert loop.inliers >= 15 and loop.query_id == 99
        assert np.all(np.linalg.eigvalsh(loop.information) > 0)
    assert [loop.inliers for loop in loops] == sorted((loop.inliers for loop in loops), reverse=True)


def test_photometric_refinement_makes_loop_poses_more_accurate_than_pnp(keyframes) -> None:
    # Exact depth: what is left of the PnP error is keypoint noise, which dense alignment averages away.
    def loop_errors(config: LoopClosureConfig) -> list[tuple[float, float]]:
        detector = LoopDetector(config)
        for index, frame in enumerate(keyframes[:-8]):
            detector.add_keyframe(index, frame.rgb, frame.depth, frame.intrinsics)
        loops = detector.add_keyframe(99, keyframes[-1].rgb, keyframes[-1].depth, keyframes[-1].intrinsics)
        assert loops
        errors = []
        for loop in sorted(loops, key=lambda loop: loop.match_id):
            error = se3_log(invert(invert(keyframes[loop.match_id].pose) @ keyframes[-1].pose) @ loop.pose_match_query)
            errors.append((float(np.linalg.norm(error[:3])), float(np.degrees(np.linalg.norm(error[3:])))))
        return errors

    refined = np.array(loop_errors(SMALL_IMAGE_LOOP))
    pnp_only = np.array(loop_errors(replace(SMALL_IMAGE_LOOP, photometric=None)))
    assert refined.shape == pnp_only.shape
    assert np.all(refined[:, 0] < 0.0015) and np.all(refined[:, 1] < 0.05), refined
    assert refined[:, 0].mean() < 0.5 * pnp_only[:, 0].mean(), (refined, pnp_only)


def test_detector_ignores_recent_keyframes(keyframes) -> None:
    detector = LoopDetector(SMALL_IMAGE_LOOP)
    for index in range(5):  # the same view again and again: too recent to be a loop
        frame = keyframes[0]
        assert detector.add_keyframe(index, frame.rgb, frame.depth, frame.intrinsics) == []


def test_detector_database_is_bounded(keyframes) -> None:
    config = LoopClosureConfig(recent_keyframes_excluded=3, max_database_size=6)
    detector = LoopDetector(config)
    for index, frame in enumerate(keyframes[:15]):
        detector.add_keyframe(index, frame.rgb, frame.depth, frame.intrinsics)
        assert len(detector) <= 6


def test_dense_keyframes_for_the_refinement_are_stored_at_most_dense_max_width_wide(keyframes) -> None:
    frame = keyframes[0]  # 128x96
    detector = LoopDetector(replace(SMALL_IMAGE_LOOP, dense_max_width=50))
    detector.add_keyframe(0, frame.rgb, frame.depth, frame.intrinsics)
    dense = detector._entries[0].dense
    assert dense.gray.shape == dense.inverse_depth.shape == (24, 32)  # 1/4: the first power of 2 within 50 px
    assert (dense.intrinsics.width, dense.intrinsics.height) == (32, 24)
    assert dense.intrinsics.fx == pytest.approx(frame.intrinsics.fx / 4)
    with pytest.raises(ValueError, match="dense_max_width"):
        LoopClosureConfig(dense_max_width=0)


def test_dense_inverse_depth_is_sampled_at_the_stored_pixel_centres(keyframes) -> None:
    # A depth ramp along u: each stored pixel must hold the depth at its own centre, where the
    # stored intrinsics and the area-averaged image put it (source u = 4 j + 1.5 at 1/4 size).
    frame = keyframes[0]  # 128x96
    columns = np.arange(frame.intrinsics.width, dtype=np.float32)
    depth = np.broadcast_to(1.0 + 0.01 * columns, frame.depth.shape).astype(np.float32)
    detector = LoopDetector(replace(SMALL_IMAGE_LOOP, dense_max_width=50))
    detector.add_keyframe(0, frame.rgb, depth, frame.intrinsics)
    dense = detector._entries[0].dense
    stored_depth = 1.0 / dense.inverse_depth.astype(np.float64)
    centre_u = (np.arange(dense.intrinsics.width) + 0.5) * 4 - 0.5
    np.testing.assert_allclose(stored_depth, np.broadcast_to(1.0 + 0.01 * centre_u, stored_depth.shape),
                               atol=0.01 * 0.5 + 2e-3)


def test_backend_loop_closure_shrinks_end_point_drift_five_fold(keyframes) -> None:
    # Drift of about 1 % of the path: 0.7 mm and 0.27 degrees per ~3 cm keyframe step.
    bias = se3_exp([0.0006, 0.0003, 0.0, 0.0, 0.0045, 0.001])
    odometry = _drifting_odometry(keyframes, bias)
    backend = SlamBackend(BackendConfig(loop=SMALL_IMAGE_LOOP))
    updates = [
        backend.add_keyframe(index, pose, frame.rgb, frame.depth, GT_DEPTH_RELATIVE_STD * frame.depth, frame.intrinsics)
        for index, (frame, pose) in enumerate(zip(keyframes, odometry, strict=True))
    ]
    closing = [u for u in updates if u.loops]
    assert closing and closing[-1].optimization is not None and closing[-1].optimization.converged
    last = len(keyframes) - 1
    truth_end = keyframes[-1].pose
    drift_before = np.linalg.norm(odometry[-1][:3, 3] - truth_end[:3, 3])
    drift_after = np.linalg.norm(backend.keyframe_poses()[last][:3, 3] - truth_end[:3, 3])
    assert drift_before > 0.005
    assert drift_after * 5.0 <= drift_before, (drift_before, drift_after)
    # A tracked frame is moved with its keyframe; correction() is the map <- odom transform.
    np.testing.assert_allclose(backend.correct(odometry[-1], last), backend.keyframe_poses()[last], atol=1e-9)
    np.testing.assert_allclose(backend.correction() @ odometry[-1], backend.keyframe_poses()[last], atol=1e-9)
    assert rotation_angle(backend.correction()[:3, :3]) > 0.0
    assert len(backend.map) > 0 and backend.map_cloud().frame_id == "odom"


def test_backend_without_loop_closure_keeps_odometry_and_bounds_the_map(keyframes) -> None:
    config = BackendConfig(
        loop=None, map=KeyframeMapConfig(map=VoxelMapConfig(voxel_size_m=0.01, max_points=700), max_keyframes=5)
    )
    backend = SlamBackend(config)
    odometry = _drifting_odometry(keyframes, se3_exp([0.01, 0, 0, 0, 0, 0]))
    for index, (frame, pose) in enumerate(zip(keyframes, odometry, strict=True)):
        update = backend.add_keyframe(index, pose, frame.rgb, frame.depth, None, frame.intrinsics)
        assert update.loops == () and update.optimization is None
        assert len(backend.map) <= 700
    for index, pose in backend.keyframe_poses().items():
        np.testing.assert_allclose(pose, odometry[index], atol=1e-9)
    np.testing.assert_allclose(backend.correction(), np.eye(4), atol=1e-9)
    backend.reset()
    assert backend.keyframe_count == 0 and len(backend.map) == 0


def test_backend_rejects_bad_input(keyframes) -> None:
    backend = SlamBackend(BackendConfig(loop=SMALL_IMAGE_LOOP))
    frame = keyframes[0]
    backend.add_keyframe(0, frame.pose, frame.rgb, frame.depth, None, frame.intrinsics)
    with pytest.raises(ValueError, match="already added"):
        backend.add_keyframe(0, frame.pose, frame.rgb, frame.depth, None, frame.intrinsics)
    with pytest.raises(ValueError, match="6x6"):
        backend.add_keyframe(1, frame.pose, frame.rgb, frame.depth, None, frame.intrinsics, np.eye(3))
    with pytest.raises(ValueError, match="must match"):
        LoopDetector().add_keyframe(0, frame.rgb, frame.depth[:-1], frame.intrinsics)
    with pytest.raises(KeyError, match="unknown keyframe"):
        backend.correct(np.eye(4), 42)
    with pytest.raises(LoopClosureConfigError, match="min_inliers"):
        LoopClosureConfig(min_inliers=2)
    with pytest.raises(LoopClosureConfigError, match="depth_bias_std"):
        LoopClosureConfig(depth_bias_std=-0.1)
    with pytest.raises(LoopClosureConfigError, match="odometry_rotation_drift"):
        BackendConfig(loop=None, odometry_rotation_drift=-0.05)


def test_odometry_information_converts_left_covariance_to_the_graph_convention() -> None:
    backend = SlamBackend(BackendConfig(loop=None, odometry_sigma=(1e-6, 1e-6), odometry_drift=(0.0, 0.0),
                                        odometry_rotation_drift=0.0))
    relative = se3_exp([0.3, -0.1, 0.2, 0.1, 0.4, -0.2])  # T_previous_keyframe
    covariance = np.diag([1e-4, 4e-4, 9e-4, 1e-5, 2e-5, 3e-5])  # left perturbation, previous frame
    information = backend.odometry_information(relative, covariance)
    # A left perturbation exp(d) T is the right perturbation T exp(A d), A from conjugation.
    conjugation = np.stack(
        [se3_log(invert(relative) @ se3_exp(1e-6 * axis) @ relative) / 1e-6 for axis in np.eye(6)], axis=1
    )
    expected = conjugation @ covariance @ conjugation.T
    np.testing.assert_allclose(np.linalg.inv(information), expected, rtol=1e-4, atol=1e-10)
    drift_model = backend.odometry_information(relative, None)
    assert np.allclose(drift_model, np.diag(np.diag(drift_model))) and np.all(np.diag(drift_model) > 0)


def test_odometry_information_adds_the_drift_model_to_the_tracking_covariance() -> None:
    # Tracking covariances only hold image noise; the drift per metre and per radian is added on top.
    config = BackendConfig(loop=None, odometry_sigma=(0.001, 0.002), odometry_drift=(0.02, 0.01),
                           odometry_rotation_drift=0.05)
    backend = SlamBackend(config)
    relative = se3_exp([0.3, -0.1, 0.2, 0.1, 0.4, -0.2])
    distance, angle = np.linalg.norm(relative[:3, 3]), rotation_angle(relative[:3, :3])
    sigma_t, sigma_r = 0.001 + 0.02 * distance, 0.002 + 0.01 * distance + 0.05 * angle
    drift = np.diag([sigma_t**2] * 3 + [sigma_r**2] * 3)
    np.testing.assert_allclose(np.linalg.inv(backend.odometry_information(relative, None)), drift, rtol=1e-9)
    covariance = np.diag([1e-4, 4e-4, 9e-4, 1e-5, 2e-5, 3e-5])
    tracking_only = SlamBackend(BackendConfig(loop=None, odometry_sigma=(0.0, 0.0), odometry_drift=(0.0, 0.0),
                                              odometry_rotation_drift=0.0))
    expected = np.linalg.inv(tracking_only.odometry_information(relative, covariance)) + drift
    np.testing.assert_allclose(np.linalg.inv(backend.odometry_information(relative, covariance)), expected,
                               rtol=1e-6, atol=1e-12)


def test_backend_repairs_slightly_non_orthonormal_poses_and_refuses_broken_ones(keyframes) -> None:
    backend = SlamBackend(BackendConfig(loop=None))
    frame = keyframes[0]
    pose = frame.pose.copy()
    pose[:3, :3] *= 1.0 + 1e-7
    backend.add_keyframe(0, pose, frame.rgb, frame.depth, None, frame.intrinsics)
    repaired = backend.keyframe_poses()[0][:3, :3]
    np.testing.assert_allclose(repaired @ repaired.T, np.eye(3), atol=1e-12)
    broken = frame.pose.copy()
    broken[:3, :3] *= 1.1
    with pytest.raises(PoseGraphError, match="not orthonormal"):
        backend.add_keyframe(1, broken, frame.rgb, frame.depth, None, frame.intrinsics)


class _ScriptedDetector:
    """Stands in for LoopDetector: 'verifies' the given loops when keyframe ``query_id`` arrives."""

    def __init__(self, query_id: int, loops: list[LoopClosure]) -> None:
        self.query_id, self.loops = query_id, loops

    def add_keyframe(self, keyframe_id: int, *_: object) -> list[LoopClosure]:
        return self.loops if keyframe_id == self.query_id else []


def test_backend_gate_rejects_a_loop_the_odometry_cannot_explain_and_keeps_a_drifted_real_one() -> None:
    # A straight 20 m drive in 0.5 m keyframe steps (like street/driving), odometry drifting 1 % of
    # the path plus 0.1 degrees of yaw per step; tiny blank images (the detector is scripted).
    intrinsics = Intrinsics(fx=20.0, fy=20.0, cx=8.0, cy=6.0, width=16, height=12)
    rgb, depth = np.zeros((12, 16, 3), np.uint8), np.full((12, 16), 5.0, np.float32)
    truth = [se3_exp([0.0, 0.0, 0.5 * i, 0.0, 0.0, 0.0]) for i in range(41)]
    step_with_drift = truth[1] @ se3_exp([0.003, 0.0, 0.005, 0.0, np.radians(0.1), 0.0])
    odometry = [np.linalg.matrix_power(step_with_drift, i) for i in range(len(truth))]
    last = len(truth) - 1
    information = np.diag([1e4] * 3 + [1e5] * 3)
    correct = LoopClosure(last, 0, invert(truth[0]) @ truth[last], information, 60, 0.8, 0.9)
    # Repeated texture: the view at the end looks like the start, PnP says "one step ahead of it".
    wrong = LoopClosure(last, 0, truth[1], information, 40, 0.6, 0.9)

    backend = SlamBackend(BackendConfig(loop=SMALL_IMAGE_LOOP))
    backend.detector = _ScriptedDetector(last, [correct, wrong])  # type: ignore[assignment]
    updates = [backend.add_keyframe(i, pose, rgb, depth, None, intrinsics) for i, pose in enumerate(odometry)]

    assert backend.loop_consistency(correct) <= 22.46 < backend.loop_consistency(wrong)
    assert updates[-1].loops == (correct,) and updates[-1].rejected_loops == (wrong,)
    drift_before = np.linalg.norm(odometry[last][:3, 3] - truth[last][:3, 3])
    drift_after = np.linalg.norm(backend.keyframe_poses()[last][:3, 3] - truth[last][:3, 3])
    assert drift_before > 0.2 and drift_after * 5.0 <= drift_before, (drift_before, drift_after)

    # Without the gate the wrong loop enters the graph (what street/driving suffered).
    ungated = SlamBackend(BackendConfig(loop=SMALL_IMAGE_LOOP, loop_gate_chi2=None))
    ungated.detector = _ScriptedDetector(last, [wrong])  # type: ignore[assignment]
    ungated_updates = [ungated.add_keyframe(i, pose, rgb, depth, None, intrinsics) for i, pose in enumerate(odometry)]
    assert ungated_updates[-1].loops == (wrong,)
    with pytest.raises(LoopClosureConfigError, match="loop_gate_chi2"):
        BackendConfig(loop_gate_chi2=0.0)
    with pytest.raises(LoopClosureConfigError, match="loop_gate_drift"):
        BackendConfig(loop_gate_drift=(-0.1, 0.0))


def test_backend_graph_keeps_at_most_max_graph_keyframes() -> None:
    """A robot running for hours: the graph and the odometry chain stay bounded, the newest keyframes stay exact."""
    backend = SlamBackend(BackendConfig(loop=None, max_graph_keyframes=5))
    intrinsics = Intrinsics(fx=40.0, fy=40.0, cx=16.0, cy=12.0, width=32, height=24)
    rgb = np.full((24, 32, 3), 128, np.uint8)
    depth = np.full((24, 32), 2.0, np.float32)
    for keyframe in range(12):
        pose = np.eye(4)
        pose[0, 3] = 0.1 * keyframe
        backend.add_keyframe(keyframe, pose, rgb, depth, 0.1 * depth, intrinsics)
    assert backend.keyframe_count == 12  # added, including the dropped ones
    assert sorted(backend.keyframe_poses()) == [7, 8, 9, 10, 11] and len(backend.graph) == 5
    assert np.allclose(backend.keyframe_poses()[11][:3, 3], [1.1, 0.0, 0.0])
    assert np.allclose(backend.correction(), np.eye(4))
    with pytest.raises(LoopClosureConfigError, match="max_graph_keyframes"):
        BackendConfig(max_graph_keyframes=1)


def test_an_unfused_network_depth_still_maps() -> None:
    """The features odometry hands over network depth claiming 40 % everywhere: its keyframes still make a map."""
    backend = SlamBackend(BackendConfig(loop=None))
    intrinsics = Intrinsics(fx=40.0, fy=40.0, cx=16.0, cy=12.0, width=32, height=24)
    depth = np.full((24, 32), 2.0, np.float32)
    backend.add_keyframe(0, np.eye(4), np.full((24, 32, 3), 128, np.uint8), depth, 0.4 * depth, intrinsics)
    assert len(backend.map) > 0
