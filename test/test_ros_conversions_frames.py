"""REP 103/105 frame algebra: the camera's odometry as the base frame's, checked against the geometry itself."""

import numpy as np
import pytest

from geovis_ros.frame import OdometryResult, TrackingState
from geovis_ros.geometry.se3 import invert, make_pose, se3_exp
from geovis_ros.ros.frames import (
    DEFAULT_CAMERA_EXTRINSIC,
    OPTICAL_IN_BODY,
    conjugated,
    extrinsic_from_values,
    odometry_in_base,
)


def odometry(pose, covariance=None, velocity=None):
    return OdometryResult(pose=pose, covariance=np.eye(6) * 1e-4 if covariance is None else covariance,
                          velocity=np.zeros(6) if velocity is None else velocity, state=TrackingState.TRACKING,
                          is_metric=True, scale_confidence=1.0, keyframe_id=0)


def test_default_extrinsic_is_the_rep103_optical_rotation():
    extrinsic = extrinsic_from_values(DEFAULT_CAMERA_EXTRINSIC)
    np.testing.assert_allclose(extrinsic[:3, :3], OPTICAL_IN_BODY, atol=1e-12)
    np.testing.assert_allclose(extrinsic[:3, 3], 0.0)
    # optical z (forward) is body x, optical x (right) is body -y, optical y (down) is body -z
    np.testing.assert_allclose(extrinsic[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(extrinsic[:3, :3] @ [1, 0, 0], [0, -1, 0], atol=1e-12)


@pytest.mark.parametrize("values, message", [([0.0] * 6, "7 numbers"), ([0, 0, 0, 0, 0, 0, 0], "must not be zero"),
                                             ([float("nan")] + [0.0] * 5 + [1.0], "finite")])
def test_bad_extrinsic_is_refused_with_the_reason(values, message):
    with pytest.raises(ValueError, match=message):
        extrinsic_from_values(values)


def test_camera_moving_forward_is_the_base_moving_along_x():
    forward = make_pose(np.eye(3), [0.0, 0.0, 1.0])  # optical z: one metre ahead
    base = odometry_in_base(odometry(forward), extrinsic_from_values(DEFAULT_CAMERA_EXTRINSIC))
    np.testing.assert_allclose(base.pose, make_pose(np.eye(3), [1.0, 0.0, 0.0]), atol=1e-12)


def test_base_pose_is_where_the_base_actually_is_with_a_lever_arm():
    rng = np.random.default_rng(0)
    extrinsic = se3_exp(rng.normal(0, 0.5, 6))  # camera mounted off the base origin, rotated
    camera = se3_exp(rng.normal(0, 0.5, 6))  # T_c0_c
    base = odometry_in_base(odometry(camera), extrinsic).pose
    # where the base is at time t, in odom (= base at time 0): T_odom_base = T_b0_c0 T_c0_c T_c_b
    np.testing.assert_allclose(base, extrinsic @ camera @ invert(extrinsic), atol=1e-12)
    np.testing.assert_allclose(conjugated(np.eye(4), extrinsic), np.eye(4), atol=1e-12)


def test_covariance_and_twist_follow_the_transform_to_first_order():
    rng = np.random.default_rng(1)
    extrinsic = se3_exp(rng.normal(0, 0.5, 6))
    camera = se3_exp(rng.normal(0, 0.5, 6))
    sigma = np.diag([1e-4, 2e-4, 3e-4, 1e-5, 2e-5, 3e-5])
    velocity = rng.normal(0, 1, 6)
    base = odometry_in_base(odometry(camera, sigma, velocity), extrinsic)
    # Monte Carlo: perturb the camera pose the ROS way (position error, rotation error about fixed axes)
    samples = rng.multivariate_normal(np.zeros(6), sigma, 20000)
    errors = []
    for e in samples:
        perturbed = camera.copy()
        perturbed[:3, 3] += e[:3]
        perturbed[:3, :3] = se3_exp(np.r_[0, 0, 0, e[3:]])[:3, :3] @ camera[:3, :3]
        moved = extrinsic @ perturbed @ invert(extrinsic)
        delta_rotation = moved[:3, :3] @ base.pose[:3, :3].T
        angle = np.array([delta_rotation[2, 1] - delta_rotation[1, 2], delta_rotation[0, 2] - delta_rotation[2, 0],
                          delta_rotation[1, 0] - delta_rotation[0, 1]]) / 2
        errors.append(np.r_[moved[:3, 3] - base.pose[:3, 3], angle])
    np.testing.assert_allclose(np.cov(np.array(errors).T), base.covariance, atol=3e-5, rtol=0.1)
    # twist: the base origin's velocity, from differentiating its pose along the camera's twist
    dt = 1e-6
    later = camera @ se3_exp(np.r_[velocity[:3], velocity[3:]] * dt)
    base_now, base_later = extrinsic @ camera @ invert(extrinsic), extrinsic @ later @ invert(extrinsic)
    body_delta = invert(base_now) @ base_later
    np.testing.assert_allclose(base.velocity[:3], body_delta[:3, 3] / dt, atol=1e-4)
    np.testing.assert_allclose(base.velocity[3:], extrinsic[:3, :3] @ velocity[3:], atol=1e-9)
