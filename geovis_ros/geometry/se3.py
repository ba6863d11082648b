"""Rigid-body transforms: SO(3)/SE(3) exponential and logarithm maps, Jacobians, adjoints, quaternions.

Conventions used across geovis_ros:
- A pose is a 4x4 float64 homogeneous matrix ``T_a_b`` that maps points from frame b to
  frame a (``p_a = T_a_b @ p_b``); camera poses are ``T_world_camera``.
- Camera frames follow the OpenCV optical convention: x right, y down, z forward.
- Twists are 6-vectors ``xi = (v, w)``: translation part first, rotation (axis-angle) last,
  matching the order of ROS covariance matrices (x, y, z, roll, pitch, yaw); metres and radians.
- Perturbations: a right (body-frame) perturbation is ``T exp(delta)``, a left (parent-frame)
  one ``exp(delta) T``; they are related by ``exp(delta) T = T exp(Ad(T^-1) delta)``. The
  Jacobians follow Barfoot, *State Estimation for Robotics*: ``exp(xi + d) ~= exp(Jl(xi) d) exp(xi)
  ~= exp(xi) exp(Jr(xi) d)`` for small d, with ``Jr(xi) = Jl(-xi)``.
- Quaternions are ``(x, y, z, w)`` as in ROS messages.

Every function works on batches: leading dimensions ``...`` of its inputs are carried through
to its outputs, and a single vector or matrix (no leading dimension) is a batch of one, computed
by the same code. All outputs are float64.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

_SMALL_ANGLE = 1e-8


def skew(v: ArrayLike) -> NDArray[np.float64]:
    """Cross-product matrices (..., 3, 3) of vectors (..., 3): ``skew(v) @ u == np.cross(v, u)``."""
    v = np.asarray(v, dtype=np.float64)
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def _so3_terms(
    omega: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Angle t (...,) in radians, ``[w]x`` and ``[w]x^2`` (..., 3, 3) of axis-angle vectors w (..., 3)."""
    k = skew(omega)
    return np.sqrt(np.add.reduce(omega * omega, axis=-1)), k, k @ k


def _rotation(theta: NDArray[np.float64], k: NDArray[np.float64], kk: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rodrigues' formula ``I + sin(t)/t [w]x + (1 - cos t)/t^2 [w]x^2`` (..., 3, 3) of :func:`_so3_terms`."""
    small = theta < _SMALL_ANGLE
    t = np.where(small, 1.0, theta)
    # Below _SMALL_ANGLE the second-order series: sin(t)/t -> 1, (1 - cos t)/t^2 -> 1/2.
    a = np.where(small, 1.0, np.sin(t) / t)
    b = np.where(small, 0.5, (1.0 - np.cos(t)) / t**2)
    return np.eye(3) + a[..., None, None] * k + b[..., None, None] * kk


def _so3_left_jacobian(
    theta: NDArray[np.float64], k: NDArray[np.float64], kk: NDArray[np.float64], inverse: bool
) -> NDArray[np.float64]:
    """SO(3) left Jacobians Jl (..., 3, 3), or their inverses, from the :func:`_so3_terms` of w.

    ``Jl = I + b [w]x + c [w]x^2`` with ``b = (1 - cos t) / t^2``, ``c = (t - sin t) / t^3``;
    ``Jl^-1 = I - [w]x / 2 + c [w]x^2`` with ``c = (1 - (t/2) cot(t/2)) / t^2``. The half-angle
    forms keep the rounding error of ``1 - cos t`` from being amplified by ``1 / t^2``.
    """
    small = theta < 1e-6
    t = np.where(small, 1.0, theta)
    half = 0.5 * t
    if inverse:
        b = np.full_like(theta, -0.5)
        c = np.where(small, 1.0 / 12.0, (1.0 - half / np.tan(half)) / t**2)
    else:
        b = np.where(small, 0.5, 0.5 * (np.sin(half) / half) ** 2)
        c = np.where(small, 1.0 / 6.0, (t - np.sin(t)) / t**3)
    return np.eye(3) + b[..., None, None] * k + c[..., None, None] * kk


def so3_exp(omega: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrices (..., 3, 3) of axis-angle vectors omega (..., 3), radians (Rodrigues)."""
    return _rotation(*_so3_terms(np.asarray(omega, dtype=np.float64)))


def so3_log(rotation: ArrayLike) -> NDArray[np.float64]:
    """Axis-angle vectors (..., 3), radians, of rotation matrices (..., 3, 3); angles in [0, pi]."""
    rotation = np.asarray(rotation, dtype=np.float64)
    r = rotation.reshape(-1, 3, 3)
    cos_theta = (r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2] - 1.0) / 2.0
    theta = np.arccos(np.minimum(np.maximum(cos_theta, -1.0), 1.0))
    w = (r - np.swapaxes(r, -1, -2))[:, (2, 0, 1), (1, 2, 0)]  # (R - R^T) = 2 sin(t) [axis]x
    near_pi = np.pi - theta < 1e-4
    series = (theta < 1e-6) | near_pi
    scale = np.where(series, 0.5, theta / np.where(series, 1.0, 2.0 * np.sin(theta)))
    out = scale[:, None] * w
    if near_pi.any():
        # Near pi the antisymmetric part vanishes: the axis is the dominant column of (R + I) / 2.
        b = (r[near_pi] + np.eye(3)) / 2.0
        pivot = np.argmax(np.diagonal(b, axis1=-2, axis2=-1), axis=-1)
        axis = b[np.arange(b.shape[0]), pivot]
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        sign = np.where(np.sum(axis * w[near_pi], axis=-1) < 0, -1.0, 1.0)
        out[near_pi] = (sign * theta[near_pi])[:, None] * axis
    return out.reshape(rotation.shape[:-2] + (3,))


def _se3_q(rho: NDArray[np.float64], theta: NDArray[np.float64], phi: NDArray[np.float64]) -> NDArray[np.float64]:
    """Coupling block Q (..., 3, 3) of the SE(3) left Jacobian ``[[Jl(w), Q], [0, Jl(w)]]`` of a twist (v, w).

    Closed form of Barfoot, *State Estimation for Robotics*, from ``rho = [v]x``, the angle
    ``theta = |w|`` and ``phi = [w]x``.
    """
    small = theta < 1e-2
    a = np.where(small, 1.0, theta)
    # Below 1e-2 rad the closed forms cancel: use their series in the angle (a is only a safe divisor there).
    s2 = theta**2
    c1 = np.where(small, 1.0 / 6.0 - s2 / 120.0, (a - np.sin(a)) / a**3)
    c2 = np.where(small, 1.0 / 24.0 - s2 / 720.0, (a**2 / 2.0 + np.cos(a) - 1.0) / a**4)
    c3 = np.where(small, 1.0 / 120.0 - s2 / 2520.0, (2.0 * a - 3.0 * np.sin(a) + a * np.cos(a)) / (2.0 * a**5))
    phi_rho, rho_phi = phi @ rho, rho @ phi
    phi_rho_phi = phi_rho @ phi
    return (
        0.5 * rho
        + c1[..., None, None] * (phi_rho + rho_phi + phi_rho_phi)
        + c2[..., None, None] * (phi @ phi_rho + rho_phi @ phi - 3.0 * phi_rho_phi)
        + c3[..., None, None] * (phi_rho_phi @ phi + phi @ phi_rho_phi)
    )


def se3_exp(xi: ArrayLike) -> NDArray[np.float64]:
    """Poses (..., 4, 4) of twists xi = (v, w) (..., 6): metres and radians."""
    xi = np.asarray(xi, dtype=np.float64)
    terms = _so3_terms(xi[..., 3:])
    out = np.zeros(xi.shape[:-1] + (4, 4))
    out[..., :3, :3] = _rotation(*terms)
    out[..., :3, 3] = np.einsum("...ij,...j->...i", _so3_left_jacobian(*terms, inverse=False), xi[..., :3])
    out[..., 3, 3] = 1.0
    return out


def se3_log(pose: ArrayLike) -> NDArray[np.float64]:
    """Twists xi = (v, w) (..., 6), metres and radians, of poses (..., 4, 4); inverse of :func:`se3_exp`."""
    pose = np.asarray(pose, dtype=np.float64)
    omega = so3_log(pose[..., :3, :3])
    v = np.einsum("...ij,...j->...i", _so3_left_jacobian(*_so3_terms(omega), inverse=True), pose[..., :3, 3])
    return np.concatenate([v, omega], axis=-1)


def se3_right_jacobian_inverse(xi: ArrayLike) -> NDArray[np.float64]:
    """Inverse right Jacobians ``Jr^-1`` (..., 6, 6) of SE(3) at twists xi = (v, w) (..., 6).

    ``log(exp(xi) exp(delta)) ~= xi + Jr^-1(xi) delta`` for a small right perturbation delta (6,);
    computed as ``Jl^-1(-xi)``.
    """
    negated = -np.asarray(xi, dtype=np.float64)
    theta, phi, phi2 = _so3_terms(negated[..., 3:])
    jl_inv = _so3_left_jacobian(theta, phi, phi2, inverse=True)
    out = np.zeros(negated.shape[:-1] + (6, 6))
    out[..., :3, :3] = jl_inv
    out[..., 3:, 3:] = jl_inv
    out[..., :3, 3:] = -jl_inv @ _se3_q(skew(negated[..., :3]), theta, phi) @ jl_inv
    return out


def se3_adjoint(pose: ArrayLike) -> NDArray[np.float64]:
    """Adjoints (..., 6, 6) of poses ``T`` (..., 4, 4) acting on twists (v, w): ``[[R, [t]x R], [0, R]]``.

    ``T exp(xi) T^-1 == exp(Ad(T) xi)``: a twist in the frame of the pose's child, moved to its parent.
    """
    pose = np.asarray(pose, dtype=np.float64)
    r = pose[..., :3, :3]
    out = np.zeros(pose.shape[:-2] + (6, 6))
    out[..., :3, :3] = r
    out[..., 3:, 3:] = r
    out[..., :3, 3:] = skew(pose[..., :3, 3]) @ r
    return out


def orthonormalized(pose: NDArray[np.float64]) -> NDArray[np.float64]:
    """Copy of a 4x4 pose whose rotation is projected back onto SO(3) (nearest rotation, via SVD).

    Long chains of pose products accumulate rounding; transposing a slightly non-orthonormal
    rotation (as :func:`invert` does) then amplifies the error.
    """
    out = np.array(pose, dtype=np.float64)
    u, _, vt = np.linalg.svd(out[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    out[:3, :3] = rotation
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


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
