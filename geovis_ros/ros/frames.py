"""REP 103 / REP 105 frames: the camera's odometry re-expressed for the robot's ``base_frame``.

The pipeline tracks the camera: poses ``T_c0_c`` of the optical frame (x right, y down, z forward)
relative to the first frame's optical frame ``c0``. A robot wants ``odom -> base_frame`` (REP 105):
``odom`` is the base frame where the stream started, axes x forward, y left, z up (REP 103). With the
camera extrinsic ``T_base_camera`` (``E``):

- ``T_odom_base = E @ T_c0_c @ inv(E)`` (the body at start is the odom origin);
- loop-closure corrections ``T_map_odom = E @ C @ inv(E)`` for the pipeline's ``C`` (``T_map_odom``
  in ``c0`` axes); map points ``p_map = E @ p_map_c0``; keyframe camera poses ``E @ T_map_c0_kf``.

Covariances are 6x6 over (x, y, z, rot_x, rot_y, rot_z) in the parent frame's axes (ROS); twists
(v, w) are in the child frame. Everything here is numpy, metres and radians.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.frame import OdometryResult
from geovis_ros.geometry.se3 import invert, pose_from_translation_quaternion, skew

# Rotation of the REP 103 optical frame in a body frame at the same origin: optical z (forward) is
# body x, optical x (right) is body -y, optical y (down) is body -z. Columns are the optical axes.
OPTICAL_IN_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# ``camera_extrinsic`` default: x y z qx qy qz qw of OPTICAL_IN_BODY at the base origin.
DEFAULT_CAMERA_EXTRINSIC = (0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5)


def extrinsic_from_values(values: Sequence[float]) -> NDArray[np.float64]:
    """``T_base_camera`` (4, 4) float64 from x y z (metres) qx qy qz qw; ValueError names what is wrong.

    The quaternion must be finite and non-zero; it is normalised.
    """
    if len(values) != 7:
        raise ValueError(f"camera_extrinsic must be 7 numbers (x y z qx qy qz qw), got {len(values)}")
    numbers = [float(v) for v in values]
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"camera_extrinsic must be finite, got {numbers}")
    if math.hypot(*numbers[3:]) < 1e-9:
        raise ValueError("camera_extrinsic quaternion (qx qy qz qw) must not be zero")
    return pose_from_translation_quaternion(numbers[:3], numbers[3:])


def conjugated(pose: ArrayLike, base_from_camera: ArrayLike) -> NDArray[np.float64]:
    """``E @ pose @ inv(E)``: a relative motion of the camera frame as one of the base frame."""
    extrinsic = np.asarray(base_from_camera, np.float64)
    return extrinsic @ np.asarray(pose, np.float64) @ invert(extrinsic)


def odometry_in_base(odometry: OdometryResult, base_from_camera: ArrayLike) -> OdometryResult:
    """``odometry`` (camera in ``c0``) as the base frame's odometry in ``odom`` (see the module doc).

    Pose: ``E T inv(E)``. Covariance: first order, ``J Sigma J^T`` with
    ``J = [[R_E, -R_E [R t_cb]x], [0, R_E]]`` (``R`` the camera rotation, ``t_cb`` the base origin
    in the camera frame): a rotation error of the camera also moves a base origin that sits off
    the optical centre. Twist (in the child frame): ``w_b = R_E w_c``, ``v_b = R_E v_c + w_b x (-t_E)``.
    """
    extrinsic = np.asarray(base_from_camera, np.float64)
    rotation_e, translation_e = extrinsic[:3, :3], extrinsic[:3, 3]
    base_in_camera = invert(extrinsic)[:3, 3]
    lever = odometry.pose[:3, :3] @ base_in_camera
    jacobian = np.zeros((6, 6))
    jacobian[:3, :3] = rotation_e
    jacobian[:3, 3:] = -rotation_e @ skew(lever)
    jacobian[3:, 3:] = rotation_e
    angular = rotation_e @ odometry.velocity[3:]
    linear = rotation_e @ odometry.velocity[:3] + np.cross(angular, -translation_e)
    return replace(
        odometry,
        pose=conjugated(odometry.pose, extrinsic),
        covariance=jacobian @ odometry.covariance @ jacobian.T,
        velocity=np.concatenate([linear, angular]),
    )
