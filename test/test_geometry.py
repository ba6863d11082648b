import numpy as np
import pytest

from geovis_ros.geometry import se3
from geovis_ros.geometry.camera import (
    CameraModelError,
    Intrinsics,
    backproject,
    check_plausible_intrinsics,
    field_of_view_deg,
    pixel_grid,
    project,
    rigid_flow,
    transform_points,
)

RNG = np.random.default_rng(0)


def random_pose(scale: float = 1.0) -> np.ndarray:
    return se3.se3_exp(np.concatenate([RNG.normal(size=3) * scale, RNG.normal(size=3) * 0.5]))


def test_exp_log_round_trip():
    for _ in range(50):
        xi = np.concatenate([RNG.normal(size=3), RNG.uniform(-1, 1, size=3)])
        np.testing.assert_allclose(se3.se3_log(se3.se3_exp(xi)), xi, atol=1e-9)


def test_so3_log_near_pi_and_identity():
    axis = np.array([0.0, 0.6, 0.8])
    for angle in (np.pi - 1e-6, np.pi, 1e-9, 0.0):
        r = se3.so3_exp(axis * angle)
        np.testing.assert_allclose(se3.so3_exp(se3.so3_log(r)), r, atol=1e-6)


def test_batch_exp_log_match_scalar_versions() -> None:
    rng = np.random.default_rng(0)
    twists = rng.normal(size=(40, 6))
    twists[:4, 3:] *= 1e-9  # tiny rotations
    twists[4, 3:] = [np.pi - 1e-6, 0.0, 0.0]  # near pi
    twists[5, 3:] = [0.0, 0.0, 0.0]
    poses = se3.se3_exp(twists)
    for twist, pose in zip(twists, poses, strict=True):
        np.testing.assert_allclose(pose, se3.se3_exp(twist), atol=1e-12)
    logs = se3.se3_log(poses)
    for pose, log in zip(poses, logs, strict=True):
        np.testing.assert_allclose(log, se3.se3_log(pose), atol=1e-8)
    # Any leading dimensions: a (2, 20) batch is the (40,) batch reshaped.
    np.testing.assert_array_equal(se3.se3_exp(twists.reshape(2, 20, 6)), poses.reshape(2, 20, 4, 4))
    np.testing.assert_array_equal(se3.so3_log(poses[:, :3, :3].reshape(4, 10, 3, 3)), logs[:, 3:].reshape(4, 10, 3))


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-8, 3e-8, 1e-7, 1e-6 * (1 - 1e-12), 1e-6, 1e-6 * (1 + 1e-12), 1e-5])
def test_se3_exp_log_are_accurate_at_small_rotations(angle: float) -> None:
    # Closed forms like (1 - cos t) / t^2 lose digits at small t; the round trip and the series
    # expansion of exp to second order in the angle (exact here to ~1e-16) must both hold to rounding.
    axis, v = np.array([0.0, 0.6, 0.8]), np.array([2.0, -1.0, 3.0])
    xi = np.concatenate([v, angle * axis])
    pose = se3.se3_exp(xi)
    k = se3.skew(angle * axis)
    expected_translation = v + k @ v / 2.0 + k @ k @ v / 6.0
    np.testing.assert_allclose(pose[:3, 3], expected_translation, rtol=0.0, atol=1e-14)
    np.testing.assert_allclose(se3.se3_log(pose), xi, rtol=0.0, atol=1e-14)


def test_adjoint_moves_twists_between_frames() -> None:
    rng = np.random.default_rng(1)
    pose = se3.se3_exp(rng.normal(size=6))
    twist = 1e-4 * rng.normal(size=6)
    lhs = pose @ se3.se3_exp(twist) @ se3.invert(pose)
    np.testing.assert_allclose(se3.se3_log(lhs), se3.se3_adjoint(pose[None])[0] @ twist, atol=1e-10)
    np.testing.assert_array_equal(se3.se3_adjoint(pose), se3.se3_adjoint(pose[None])[0])


def test_right_jacobian_inverse_is_the_derivative_of_log() -> None:
    rng = np.random.default_rng(4)
    twists = rng.normal(size=(6, 6))
    angles = np.array([1e-7, 1e-3, 0.5, 1.0, 2.0, np.pi - 1e-2])  # below pi: log(exp(xi)) == xi
    twists[:, 3:] *= (angles / np.linalg.norm(twists[:, 3:], axis=1))[:, None]
    jr_inv = se3.se3_right_jacobian_inverse(twists)
    steps = 1e-6 * np.eye(6)
    for xi, jacobian in zip(twists, jr_inv, strict=True):
        pose = se3.se3_exp(xi)
        plus, minus = se3.se3_log(pose @ se3.se3_exp(steps)), se3.se3_log(pose @ se3.se3_exp(-steps))
        numeric = (plus - minus).T / 2e-6  # column k: derivative along the k-th twist axis
        np.testing.assert_allclose(jacobian, numeric, atol=1e-6)
        np.testing.assert_array_equal(se3.se3_right_jacobian_inverse(xi), jacobian)


def test_quaternion_round_trip_batch_and_sign():
    poses = np.stack([random_pose() for _ in range(20)])
    q = se3.quaternion_from_matrix(poses[:, :3, :3])
    assert q.shape == (20, 4) and np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(se3.matrix_from_quaternion(q), poses[:, :3, :3], atol=1e-10)
    # 90 degrees about z, by hand.
    np.testing.assert_allclose(
        se3.quaternion_from_matrix(se3.so3_exp([0, 0, np.pi / 2])), [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12
    )


def test_matrix_from_quaternion_rejects_zero():
    with pytest.raises(ValueError, match="quaternion"):
        se3.matrix_from_quaternion([0, 0, 0, 0])


def test_invert_matches_linalg():
    poses = np.stack([random_pose() for _ in range(5)])
    np.testing.assert_allclose(se3.invert(poses), np.linalg.inv(poses), atol=1e-12)
    assert se3.rotation_angle(se3.so3_exp([0.3, 0, 0])) == pytest.approx(0.3)


def test_intrinsics_validation_names_field():
    with pytest.raises(CameraModelError, match="fx"):
        Intrinsics(float("nan"), 1, 1, 1, 10, 10)
    with pytest.raises(CameraModelError, match="focal"):
        Intrinsics(-1, 1, 1, 1, 10, 10)
    with pytest.raises(CameraModelError, match="size"):
        Intrinsics(1, 1, 1, 1, 0, 10)


def test_plausible_intrinsics_pass() -> None:
    vga = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    check_plausible_intrinsics(vga)
    horizontal, vertical = field_of_view_deg(vga)
    assert horizontal == pytest.approx(2 * np.degrees(np.arctan(320 / 525)))
    assert vertical == pytest.approx(2 * np.degrees(np.arctan(240 / 525)))
    check_plausible_intrinsics(Intrinsics(200.0, 200.0, 639.5, 0.0, 640, 480))  # principal point on the edges
    fisheye = Intrinsics(400.0, 400.0, 639.5, 479.5, 1280, 960)  # 183 deg wide: more than any pinhole
    check_plausible_intrinsics(fisheye, "equidistant")
    assert field_of_view_deg(fisheye, "equidistant") == pytest.approx((np.degrees(3.2), np.degrees(2.4)))


@pytest.mark.parametrize(("intrinsics", "model", "problem"), [
    (Intrinsics(1e-6, 1e-6, 319.5, 239.5, 640, 480), "plumb_bob", r"horizontal field of view 180 deg .* 5\.\.170"),
    (Intrinsics(1e12, 1e12, 319.5, 239.5, 640, 480), "plumb_bob", "horizontal field of view 3.667e-08 deg"),
    (Intrinsics(525.0, 1e6, 319.5, 239.5, 640, 480), "plumb_bob", "vertical field of view"),
    (Intrinsics(525.0, 525.0, -1e6, 239.5, 640, 480), "plumb_bob", "principal point cx = -1e\\+06 is outside"),
    (Intrinsics(525.0, 525.0, 319.5, 480.0, 640, 480), "plumb_bob", "principal point cy = 480 is outside"),
    (Intrinsics(100.0, 100.0, 639.5, 479.5, 1280, 960), "equidistant", r"horizontal .* outside 5\.\.200 deg"),
], ids=["fx-tiny", "fx-huge", "fy-huge", "cx-far", "cy-edge", "fisheye-too-wide"])
def test_implausible_intrinsics_are_refused_in_one_line(intrinsics: Intrinsics, model: str, problem: str) -> None:
    with pytest.raises(CameraModelError, match=problem) as raised:
        check_plausible_intrinsics(intrinsics, model)
    assert "\n" not in str(raised.value) and str(raised.value).startswith("implausible intrinsics: ")


def test_resized_intrinsics_keep_ray_directions():
    k = Intrinsics(100.0, 110.0, 31.5, 23.5, 64, 48)
    k2 = k.resized(128, 96)
    assert (k2.fx, k2.fy, k2.cx, k2.cy) == (200.0, 220.0, 63.5, 47.5)
    np.testing.assert_allclose(Intrinsics.from_matrix(k.matrix, 64, 48).matrix, k.matrix)


def test_backproject_project_round_trip():
    k = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)
    depth = RNG.uniform(1, 5, size=(48, 64)).astype(np.float32)
    uv, z = project(backproject(depth, k), k)
    np.testing.assert_allclose(uv, pixel_grid(48, 64), atol=1e-4)
    np.testing.assert_allclose(z, depth, rtol=1e-6)


def test_rigid_flow_pure_translation_along_x():
    k = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)
    depth = np.full((48, 64), 2.0, np.float32)
    t = se3.make_pose(np.eye(3), [-0.1, 0, 0])  # camera moves +x: points move -x in the camera frame
    flow = rigid_flow(depth, k, t)
    np.testing.assert_allclose(flow[..., 0], -50.0 * 0.1 / 2.0, atol=1e-5)
    np.testing.assert_allclose(flow[..., 1], 0.0, atol=1e-5)


def test_points_behind_camera_project_to_nan():
    k = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)
    uv, _ = project(np.array([[0.0, 0.0, -1.0]]), k)
    assert np.all(np.isnan(uv))
    np.testing.assert_allclose(transform_points(np.eye(4), np.ones((2, 3))), np.ones((2, 3)))
