"""4x4 poses <-> geometry_msgs Pose / PoseStamped / TransformStamped and nav_msgs Odometry / Path.

Poses are 4x4 float64 rigid transforms ``T_parent_child`` (p_parent = T @ p_child), metres.
The parent frame is ``header.frame_id`` and the child the message's ``child_frame_id``
(or the pose's own frame). Covariances are 6x6 over (x, y, z, rot_x, rot_y, rot_z), the
row-major float64[36] of ROS; twists are (v, w) 6-vectors in m/s and rad/s expressed in
the child frame, as nav_msgs/Odometry specifies. Messages are rclpy or rosbags messages alike
(:mod:`geovis_ros.ros.messages`); the encoders' ``factory`` makes them (rclpy by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.geometry.se3 import pose_from_translation_quaternion, quaternion_from_matrix
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.messages import (
    HEADER,
    ODOMETRY,
    PATH,
    POINT,
    POSE,
    POSE_STAMPED,
    POSE_WITH_COVARIANCE,
    QUATERNION,
    RCLPY,
    TRANSFORM,
    TRANSFORM_STAMPED,
    TWIST,
    TWIST_WITH_COVARIANCE,
    VECTOR3,
    Message,
    MessageFactory,
)
from geovis_ros.ros.stamps import time_from_ns

# Largest |R^T R - I| and |det R - 1| accepted as a rotation (float32 round-off passes).
_ROTATION_TOLERANCE = 1e-5


def check_rigid_pose(pose: ArrayLike, name: str = "pose") -> NDArray[np.float64]:
    """``pose`` as a 4x4 float64 array after checking it is a finite rigid transform.

    The rotation block must be orthonormal with determinant +1 (within 1e-5) and the last row
    exactly (0, 0, 0, 1). ConversionError names ``name`` otherwise.
    """
    matrix = np.asarray(pose, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ConversionError(f"{name} shape {matrix.shape} must be (4, 4)")
    if not np.all(np.isfinite(matrix)):
        raise ConversionError(f"{name} must be finite")
    if not np.array_equal(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise ConversionError(f"{name} last row must be [0, 0, 0, 1], got {matrix[3].tolist()}")
    rotation = matrix[:3, :3]
    orthonormal = np.allclose(rotation.T @ rotation, np.eye(3), rtol=0.0, atol=_ROTATION_TOLERANCE)
    if not orthonormal or abs(np.linalg.det(rotation) - 1.0) > _ROTATION_TOLERANCE:
        raise ConversionError(f"{name} rotation block is not a rotation (orthonormal, det +1)")
    return matrix


def check_covariance(covariance: ArrayLike, name: str = "covariance") -> NDArray[np.float64]:
    """``covariance`` as a 6x6 float64 array after checking its shape and that it is finite."""
    matrix = np.asarray(covariance, dtype=np.float64)
    if matrix.shape != (6, 6):
        raise ConversionError(f"{name} shape {matrix.shape} must be (6, 6)")
    if not np.all(np.isfinite(matrix)):
        raise ConversionError(f"{name} must be finite")
    return matrix


def pose_msg_from_matrix(pose: ArrayLike, factory: MessageFactory = RCLPY) -> Message:
    """A geometry_msgs/Pose (position, xyzw orientation with w >= 0) of a 4x4 rigid pose."""
    matrix = check_rigid_pose(pose)
    x, y, z, w = quaternion_from_matrix(matrix[:3, :3]).tolist()
    tx, ty, tz = matrix[:3, 3].tolist()
    return factory.new(
        POSE,
        position=factory.new(POINT, x=tx, y=ty, z=tz),
        orientation=factory.new(QUATERNION, x=x, y=y, z=z, w=w),
    )


def matrix_from_pose_msg(msg: Message) -> NDArray[np.float64]:
    """4x4 float64 pose of a geometry_msgs/Pose; the quaternion is normalised."""
    position, orientation = msg.position, msg.orientation
    return _matrix_from_parts(
        [position.x, position.y, position.z],
        [orientation.x, orientation.y, orientation.z, orientation.w],
        "Pose",
    )


def pose_stamped_from_matrix(
    pose: ArrayLike, header: Message | None = None, factory: MessageFactory = RCLPY
) -> Message:
    """A PoseStamped: the pose of a frame in ``header.frame_id``."""
    return factory.new(
        POSE_STAMPED,
        header=header if header is not None else factory.new(HEADER),
        pose=pose_msg_from_matrix(pose, factory),
    )


def matrix_from_pose_stamped(msg: Message) -> NDArray[np.float64]:
    """4x4 float64 pose of a PoseStamped (in ``msg.header.frame_id``)."""
    return matrix_from_pose_msg(msg.pose)


def matrix_from_stamped_pose(msg: Message) -> NDArray[np.float64]:
    """4x4 float64 pose of an Odometry, PoseWithCovarianceStamped or PoseStamped (``msg.pose[.pose]``)."""
    pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
    return matrix_from_pose_msg(pose)


def transform_stamped_from_matrix(
    pose: ArrayLike, header: Message | None = None, child_frame_id: str = "", factory: MessageFactory = RCLPY
) -> Message:
    """A TransformStamped of ``T_parent_child``: parent ``header.frame_id``, child ``child_frame_id``."""
    pose_msg = pose_msg_from_matrix(pose, factory)
    position = pose_msg.position
    return factory.new(
        TRANSFORM_STAMPED,
        header=header if header is not None else factory.new(HEADER),
        child_frame_id=child_frame_id,
        transform=factory.new(
            TRANSFORM,
            translation=factory.new(VECTOR3, x=position.x, y=position.y, z=position.z),
            rotation=pose_msg.orientation,
        ),
    )


def matrix_from_transform(msg: Message) -> NDArray[np.float64]:
    """4x4 float64 ``T_parent_child`` of a TransformStamped (or a bare Transform)."""
    transform: Message = getattr(msg, "transform", msg)
    translation, rotation = transform.translation, transform.rotation
    return _matrix_from_parts(
        [translation.x, translation.y, translation.z],
        [rotation.x, rotation.y, rotation.z, rotation.w],
        "Transform",
    )


def odometry_from_matrix(
    pose: ArrayLike,
    header: Message | None = None,
    child_frame_id: str = "",
    pose_covariance: ArrayLike | None = None,
    twist: ArrayLike | None = None,
    twist_covariance: ArrayLike | None = None,
    factory: MessageFactory = RCLPY,
) -> Message:
    """An Odometry of ``T_odom_child`` (odom = ``header.frame_id``).

    ``pose_covariance`` and ``twist_covariance`` are 6x6 (default all zeros = unknown);
    ``twist`` (6,) is (v, w) in the child frame, default zero.
    """
    pose_with_covariance = {"pose": pose_msg_from_matrix(pose, factory)}
    if pose_covariance is not None:
        pose_with_covariance["covariance"] = check_covariance(pose_covariance, "pose_covariance").ravel()
    twist_with_covariance = {}
    if twist is not None:
        velocity = np.asarray(twist, dtype=np.float64)
        if velocity.shape != (6,) or not np.all(np.isfinite(velocity)):
            raise ConversionError(f"twist must be a finite (6,) vector (v, w), got shape {velocity.shape}")
        vx, vy, vz, wx, wy, wz = velocity.tolist()
        twist_with_covariance["twist"] = factory.new(
            TWIST,
            linear=factory.new(VECTOR3, x=vx, y=vy, z=vz),
            angular=factory.new(VECTOR3, x=wx, y=wy, z=wz),
        )
    if twist_covariance is not None:
        twist_with_covariance["covariance"] = check_covariance(twist_covariance, "twist_covariance").ravel()
    return factory.new(
        ODOMETRY,
        header=header if header is not None else factory.new(HEADER),
        child_frame_id=child_frame_id,
        pose=factory.new(POSE_WITH_COVARIANCE, **pose_with_covariance),
        twist=factory.new(TWIST_WITH_COVARIANCE, **twist_with_covariance),
    )


def matrix_from_odometry(msg: Message) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The pose (4, 4) float64 and its covariance (6, 6) float64 of an Odometry."""
    return matrix_from_pose_msg(msg.pose.pose), np.asarray(msg.pose.covariance, dtype=np.float64).reshape(
        6, 6
    )


def twist_from_odometry(msg: Message) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The twist (6,) float64 (v, w) in the child frame and its covariance (6, 6) of an Odometry."""
    linear, angular = msg.twist.twist.linear, msg.twist.twist.angular
    twist = np.array([linear.x, linear.y, linear.z, angular.x, angular.y, angular.z])
    return twist, np.asarray(msg.twist.covariance, dtype=np.float64).reshape(6, 6)


def path_from_matrices(
    poses: ArrayLike, stamps_ns: Sequence[int], header: Message | None = None, factory: MessageFactory = RCLPY
) -> Message:
    """A Path of poses (N, 4, 4) in ``header.frame_id``, pose i stamped ``stamps_ns[i]`` (ns)."""
    matrices = np.asarray(poses, dtype=np.float64)
    if matrices.ndim != 3 or matrices.shape[1:] != (4, 4):
        raise ConversionError(f"poses shape {matrices.shape} must be (N, 4, 4)")
    if len(stamps_ns) != len(matrices):
        raise ConversionError(f"stamps_ns has {len(stamps_ns)} stamps for {len(matrices)} poses")
    path = factory.new(PATH, header=header if header is not None else factory.new(HEADER))
    for matrix, stamp_ns in zip(matrices, stamps_ns, strict=True):
        append_to_path(path, matrix, stamp_ns, factory=factory)
    return path


def append_to_path(
    path: Message,
    pose: ArrayLike,
    stamp_ns: int,
    max_length: int | None = None,
    factory: MessageFactory = RCLPY,
) -> None:
    """Append a pose (4, 4) in ``path.header.frame_id``, stamped ``stamp_ns``; keep the newest ``max_length``.

    Also sets ``path.header.stamp`` to ``stamp_ns`` (the stamp of the newest pose). ``factory``
    must be the one that made ``path``.
    """
    stamp = time_from_ns(stamp_ns, factory)
    header = factory.new(HEADER, stamp=stamp, frame_id=path.header.frame_id)
    path.poses.append(pose_stamped_from_matrix(pose, header, factory))
    path.header.stamp = stamp
    if max_length is not None and len(path.poses) > max_length:
        del path.poses[: len(path.poses) - max_length]


def matrices_from_path(path: Message) -> NDArray[np.float64]:
    """The poses (N, 4, 4) float64 of a Path (N may be 0)."""
    return np.array([matrix_from_pose_stamped(pose) for pose in path.poses]).reshape(-1, 4, 4)


def _matrix_from_parts(translation: list[float], quaternion: list[float], name: str) -> NDArray[np.float64]:
    """4x4 pose from a translation (3,) and an xyzw quaternion (4,); both must be finite."""
    if not np.all(np.isfinite(translation)):
        raise ConversionError(f"{name} translation/position must be finite, got {translation}")
    norm = float(np.linalg.norm(quaternion))
    if not np.isfinite(norm) or norm < 1e-12:
        raise ConversionError(
            f"{name} orientation/rotation must be a finite non-zero quaternion, got {quaternion}"
        )
    return pose_from_translation_quaternion(translation, quaternion)
