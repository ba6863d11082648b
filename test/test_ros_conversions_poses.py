"""4x4 poses <-> Pose/PoseStamped/TransformStamped/Odometry/Path, and stamps, on real messages."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Quaternion
from nav_msgs.msg import Path
from std_msgs.msg import Header

from geovis_ros.geometry.se3 import se3_exp
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.poses import (
    append_to_path,
    matrices_from_path,
    matrix_from_odometry,
    matrix_from_pose_msg,
    matrix_from_pose_stamped,
    matrix_from_transform,
    odometry_from_matrix,
    path_from_matrices,
    pose_msg_from_matrix,
    pose_stamped_from_matrix,
    transform_stamped_from_matrix,
    twist_from_odometry,
)
from geovis_ros.ros.stamps import ns_from_time, time_from_ns

POSE = se3_exp([0.4, -1.2, 2.5, 0.3, -0.7, 2.9])
HEADER = Header(stamp=time_from_ns(12_000_000_345), frame_id="odom")


def covariance(seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(6, 6))
    return a @ a.T


def test_pose_round_trip_and_quaternion_convention():
    msg = pose_msg_from_matrix(POSE)
    q = msg.orientation
    assert q.w >= 0 and np.isclose(q.x**2 + q.y**2 + q.z**2 + q.w**2, 1.0)
    assert [msg.position.x, msg.position.y, msg.position.z] == POSE[:3, 3].tolist()
    np.testing.assert_allclose(matrix_from_pose_msg(msg), POSE, atol=1e-12)


def test_identity_pose_is_the_unit_quaternion():
    q = pose_msg_from_matrix(np.eye(4)).orientation
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)


def test_pose_stamped_round_trip():
    msg = pose_stamped_from_matrix(POSE, HEADER)
    assert msg.header.frame_id == "odom"
    np.testing.assert_allclose(matrix_from_pose_stamped(msg), POSE, atol=1e-12)


def test_transform_stamped_round_trip():
    msg = transform_stamped_from_matrix(POSE, HEADER, "camera")
    assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "camera")
    assert msg.transform.translation.z == POSE[2, 3]
    np.testing.assert_allclose(matrix_from_transform(msg), POSE, atol=1e-12)
    np.testing.assert_allclose(matrix_from_transform(msg.transform), POSE, atol=1e-12)


def test_odometry_round_trip_with_covariances_and_twist():
    twist = np.array([0.5, 0.0, 1.5, 0.01, -0.02, 0.3])
    msg = odometry_from_matrix(POSE, HEADER, "camera", covariance(0), twist, covariance(1))
    assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "camera")
    assert msg.pose.covariance[1] == covariance(0)[0, 1]  # row-major
    pose, pose_covariance = matrix_from_odometry(msg)
    np.testing.assert_allclose(pose, POSE, atol=1e-12)
    np.testing.assert_array_equal(pose_covariance, covariance(0))
    twist_back, twist_covariance = twist_from_odometry(msg)
    np.testing.assert_array_equal(twist_back, twist)
    np.testing.assert_array_equal(twist_covariance, covariance(1))


def test_odometry_defaults_are_zero_twist_and_unknown_covariance():
    msg = odometry_from_matrix(POSE)
    _, pose_covariance = matrix_from_odometry(msg)
    twist, _ = twist_from_odometry(msg)
    assert not pose_covariance.any() and not twist.any()


def test_path_round_trip_and_stamps():
    poses = np.stack([se3_exp([0.1 * i, 0.0, 0.2 * i, 0.0, 0.05 * i, 0.0]) for i in range(5)])
    stamps = [1_000_000_000 + 33_000_000 * i for i in range(5)]
    path = path_from_matrices(poses, stamps, Header(frame_id="odom"))
    assert [ns_from_time(p.header.stamp) for p in path.poses] == stamps
    assert {p.header.frame_id for p in path.poses} == {"odom"}
    assert ns_from_time(path.header.stamp) == stamps[-1]
    np.testing.assert_allclose(matrices_from_path(path), poses, atol=1e-12)


def test_append_to_path_keeps_the_newest():
    path = Path(header=Header(frame_id="odom"))
    assert matrices_from_path(path).shape == (0, 4, 4)
    for i in range(6):
        append_to_path(path, se3_exp([i, 0, 0, 0, 0, 0]), 1_000 * i, max_length=4)
    assert len(path.poses) == 4
    assert matrices_from_path(path)[:, 0, 3].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert ns_from_time(path.header.stamp) == 5_000


def broken_pose(kind: str) -> np.ndarray:
    pose = POSE.copy()
    if kind == "nan":
        pose[1, 3] = np.nan
    elif kind == "scaled":
        pose[:3, :3] *= 1.01
    elif kind == "reflection":
        pose[:3, 0] *= -1
    elif kind == "last-row":
        pose[3, 0] = 0.1
    return pose


@pytest.mark.parametrize(
    ("pose", "problem"),
    [
        (broken_pose("nan"), "finite"),
        (broken_pose("scaled"), "rotation"),
        (broken_pose("reflection"), "rotation"),
        (broken_pose("last-row"), "last row"),
        (np.eye(3), "shape"),
    ],
    ids=["nan", "scaled", "reflection", "last-row", "3x3"],
)
def test_non_rigid_pose_raises(pose, problem):
    for convert in (
        pose_msg_from_matrix,
        lambda p: transform_stamped_from_matrix(p, HEADER, "c"),
        lambda p: odometry_from_matrix(p, HEADER, "c"),
    ):
        with pytest.raises(ConversionError, match=f"pose.*{problem}"):
            convert(pose)


def test_float32_rotation_round_off_is_accepted():
    np.testing.assert_allclose(
        matrix_from_pose_msg(pose_msg_from_matrix(POSE.astype(np.float32))), POSE, atol=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"pose_covariance": np.eye(3)}, "pose_covariance shape"),
        ({"pose_covariance": np.full((6, 6), np.nan)}, "pose_covariance must be finite"),
        ({"twist_covariance": np.zeros(36)}, "twist_covariance shape"),
        ({"twist": np.zeros(3)}, "twist"),
        ({"twist": [0, 0, np.inf, 0, 0, 0]}, "twist"),
    ],
)
def test_bad_covariance_or_twist_raises(kwargs, problem):
    with pytest.raises(ConversionError, match=problem):
        odometry_from_matrix(POSE, HEADER, "camera", **kwargs)


def test_path_input_checks():
    with pytest.raises(ConversionError, match="poses shape"):
        path_from_matrices(np.eye(4), [0])
    with pytest.raises(ConversionError, match="stamps_ns has 1 stamps for 2 poses"):
        path_from_matrices(np.stack([np.eye(4)] * 2), [0])


@pytest.mark.parametrize(
    ("quaternion", "problem"),
    [((0.0, 0.0, 0.0, 0.0), "non-zero quaternion"), ((np.nan, 0.0, 0.0, 1.0), "finite non-zero quaternion")],
)
def test_degenerate_quaternion_in_message_raises(quaternion, problem):
    x, y, z, w = quaternion
    with pytest.raises(ConversionError, match=f"orientation.*{problem}"):
        matrix_from_pose_msg(Pose(orientation=Quaternion(x=x, y=y, z=z, w=w)))


def test_non_finite_position_in_message_raises():
    msg = pose_msg_from_matrix(POSE)
    msg.position.y = float("inf")
    with pytest.raises(ConversionError, match="position must be finite"):
        matrix_from_pose_msg(msg)


@pytest.mark.parametrize("stamp_ns", [0, 1, 999_999_999, 1_700_000_000_123_456_789, (2**31 - 1) * 10**9])
def test_stamp_round_trip(stamp_ns):
    stamp = time_from_ns(stamp_ns)
    assert 0 <= stamp.nanosec < 10**9
    assert ns_from_time(stamp) == stamp_ns


def test_stamp_fields():
    assert (time_from_ns(12_000_000_345).sec, time_from_ns(12_000_000_345).nanosec) == (12, 345)
    assert ns_from_time(Time(sec=3, nanosec=4)) == 3_000_000_004


@pytest.mark.parametrize("stamp_ns", [-1, 2**31 * 10**9])
def test_stamp_out_of_range_raises(stamp_ns):
    with pytest.raises(ConversionError, match="Time.sec"):
        time_from_ns(stamp_ns)
