"""Rigid-body transforms: SO(3)/SE(3) exponential and logarithm maps, quaternions.

Conventions used across geovis_ros:
- A pose is a 4x4 float64 homogeneous matrix ``T_a_b`` that maps points from frame b to
  frame a (``p_a = T_a_b @ p_b``); camera poses are ``T_world_camera``.
- Camera frames follow the OpenCV optical convention: x right, y down, z forward.
- Twists are 6-vectors ``xi = (v, w)``: translation part first, rotation (axis-angle) last,
  matching the order of ROS covariance matrices (x, y, z, roll, pitch, yaw).
- Quaternions are ``(x, y, z, w)`` as in ROS messages.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

_SMALL_ANGLE = 1e-8


def skew(v: ArrayLike) -> NDArray[np.float64]:
    """Cross-product matrix: ``skew(v) @ u == np.cross(v, u)``; v shape (3,) -> (3, 3)."""
    x, y, z = np.asarray(v, dtype=np.float64)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def so3_exp(omega: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrix (3, 3) of an axis-angle vector omega (3,), radians (Rodrigues)."""
    omega = np.asarray(omega, dtype=np.float64)
    theta = float(np.linalg.norm(omega))
    k = skew(omega)
    if theta < _SMALL_ANGLE:
        return np.eye(3) + k + 0.5 * k @ k
    return np.eye(3) + np.sin(theta) / theta * k + (1.0 - np.cos(theta)) / theta**2 * k @ k


def so3_log(rotation: ArrayLike) -> NDArray[np.float64]:
    """Axis-angle vector (3,), radians, of a rotation matrix (3, 3); angle in [0, pi]."""
    r = np.asarray(rotation, dtype=np.float64)
    cos_theta = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    theta = float(np.arccos(cos_theta))
    w = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if theta < 1e-6:
        return 0.5 * w
    if np.pi - theta < 1e-4:
        # Near pi the antisymmetric part vanishes: take the axis from the symmetric part.
        b = (r + np.eye(3)) / 2.0
        axis = b[int(np.argmax(np.diag(b)))]
        axis = axis / np.linalg.norm(axis)
        if np.dot(axis, w) < 0:
            axis = -axis
        return theta * axis
    return theta / (2.0 * np.sin(theta)) * w


def _left_jacobian(omega: NDArray[np.float64]) -> NDArray[np.float64]:
    theta = float(np.linalg.norm(omega))
    k = skew(omega)
    if theta < _SMALL_ANGLE:
        return np.eye(3) + 0.5 * k
    return (
        np.eye(3)
        + (1.0 - np.cos(theta)) / theta**2 * k
        + (theta - np.sin(theta)) / theta**3 * k @ k
    )


def se3_exp(xi: ArrayLike) -> NDArray[np.float64]:
    """Pose (4, 4) of a twist xi = (v, w) (6,): metres and radians."""
    xi = np.asarray(xi, dtype=np.float64)
    t = np.eye(4)
    t[:3, :3] = so3_exp(xi[3:])
    t[:3, 3] = _left_jacobian(xi[3:]) @ xi[:3]
    return t


def se3_log(pose: ArrayLike) -> NDArray[np.float64]:
    """Twist xi = (v, w) (6,) of a pose (4, 4); inverse of :func:`se3_exp`."""
    pose = np.asarray(pose, dtype=np.float64)
    omega = so3_log(pose[:3, :3])
    v = np.linalg.solve(_left_jacobian(omega), pose[:3, 3])
    return np.concatenate([v, omega])


def make_pose(rotation: ArrayLike, translation: ArrayLike) -> NDArray[np.float64]:
    """Pose (4, 4) from a rotation (3, 3) and a translation (3,) in metres."""
    t = np.eye(4)
    t[:3, :3] = np.asarray(rotation, dtype=np.float64)
    t[:3, 3] = np.asarray(translation, dtype=np.float64)
    return t


def invert(pose: ArrayLike) -> NDArray[np.float64]:
    """Inverse of a rigid pose (..., 4, 4) without a general matrix inverse."""
    pose = np.asarray(pose, dtype=np.float64)
    r_t = np.swapaxes(pose[..., :3, :3], -1, -2)
    out = np.zeros_like(pose)
    out[..., :3, :3] = r_t
    out[..., :3, 3] = -(r_t @ pose[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def quaternion_from_matrix(rotation: ArrayLike) -> NDArray[np.float64]:
    """Unit quaternion (x, y, z, w) with w >= 0 of a rotation matrix (..., 3, 3)."""
    r = np.asarray(rotation, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    # Shepperd's method in vectorised form: pick, per matrix, the best-conditioned pivot.
    candidates = np.stack(
        [
            np.stack([1 + m00 - m11 - m22, r[..., 0, 1] + r[..., 1, 0],
                      r[..., 0, 2] + r[..., 2, 0], r[..., 2, 1] - r[..., 1, 2]], -1),
            np.stack([r[..., 0, 1] + r[..., 1, 0], 1 - m00 + m11 - m22,
                      r[..., 1, 2] + r[..., 2, 1], r[..., 0, 2] - r[..., 2, 0]], -1),
            np.stack([r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1],
                      1 - m00 - m11 + m22, r[..., 1, 0] - r[..., 0, 1]], -1),
            np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                      r[..., 1, 0] - r[..., 0, 1], 1 + m00 + m11 + m22], -1),
        ],
        -2,
    )
    pivot = np.argmax(np.stack([m00, m11, m22, m00 + m11 + m22], -1), -1)
    q = np.take_along_axis(candidates, pivot[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def matrix_from_quaternion(quaternion: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrix (..., 3, 3) of a quaternion (..., 4) ordered (x, y, z, w); normalised first."""
    q = np.asarray(quaternion, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(~np.isfinite(norm)) or np.any(norm < 1e-12):
        raise ValueError("quaternion must be finite and non-zero")
    x, y, z, w = np.moveaxis(q / norm, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def pose_from_translation_quaternion(
    translation: ArrayLike, quaternion: ArrayLike
) -> NDArray[np.float64]:
    """Poses (..., 4, 4) from translations (..., 3) in metres and quaternions (..., 4) xyzw."""
    t = np.asarray(translation, dtype=np.float64)
    r = matrix_from_quaternion(quaternion)
    out = np.zeros(r.shape[:-2] + (4, 4))
    out[..., :3, :3] = r
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def rotation_angle(rotation: ArrayLike) -> float:
    """Rotation angle in radians, in [0, pi], of a rotation matrix (3, 3)."""
    r = np.asarray(rotation, dtype=np.float64)
    return float(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))
