"""Pipeline results -> the output messages, per topic: one mapping for the nodes and ``geovis process-bag``.

Topic names are relative (the node's namespace, or process-bag's ``--namespace``, applies):

- ``depth/image`` (Image 32FC1, metres, NaN invalid) and its image_transport siblings
  ``depth/camera_info`` (CameraInfo of the depth image), ``depth/uncertainty`` (32FC1, metres),
  ``depth/colored`` (rgb8);
- ``points`` (PointCloud2 x, y, z + packed rgb, camera frame);
- ``flow/image`` (32FC2, pixels, previous -> this frame), ``flow/colored`` (rgb8);
- ``odom`` (Odometry with covariance and twist, in ``odom_frame``; child the camera frame, or
  the ``child_frame_id`` given, e.g. the robot's base_frame) and ``tf`` (the same pose as a
  TransformStamped, for TF); ``path`` (Path);
- ``map`` (PointCloud2 of the fused map) and ``keyframes`` (MarkerArray: one LINE_LIST marker
  drawing a camera frustum per keyframe), in the frame of the header given.

Per-frame messages carry the header given (stamp and camera frame of the input image); the
odometry ones the same stamp in ``odom_frame``. The ``factory`` makes rclpy messages for the
nodes (default) or rosbags messages for a bag.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import numpy as np
from numpy.typing import NDArray

from geovis_ros.frame import PipelineResult, PointCloud
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.ros.camera_info import CameraCalibration, camera_info_from_calibration
from geovis_ros.ros.image import image_from_depth, image_from_numpy
from geovis_ros.ros.messages import (
    CAMERA_INFO,
    COLOR_RGBA,
    HEADER,
    IMAGE,
    MARKER,
    MARKER_ARRAY,
    ODOMETRY,
    PATH,
    POINT,
    POINT_CLOUD2,
    POSE,
    QUATERNION,
    RCLPY,
    TRANSFORM_STAMPED,
    VECTOR3,
    Message,
    MessageFactory,
)
from geovis_ros.ros.pointcloud import pointcloud_from_numpy
from geovis_ros.ros.poses import odometry_from_matrix, transform_stamped_from_matrix
from geovis_ros.visualization import colored_depth, flow_to_color, frustum_lines

# Output name -> ROS 2 message type ("tf" is not a topic: its transform goes to TF).
OUTPUT_TYPES: dict[str, str] = {
    "depth/image": IMAGE,
    "depth/uncertainty": IMAGE,
    "depth/camera_info": CAMERA_INFO,
    "depth/colored": IMAGE,
    "points": POINT_CLOUD2,
    "flow/image": IMAGE,
    "flow/colored": IMAGE,
    "odom": ODOMETRY,
    "tf": TRANSFORM_STAMPED,
    "path": PATH,
    "map": POINT_CLOUD2,
    "keyframes": MARKER_ARRAY,
}
# Output groups of the stage nodes (process-bag writes all of them).
OUTPUT_GROUPS = ("depth", "points", "flow", "odometry", "map")
# Line width of the keyframe frustum markers, metres.
FRUSTUM_LINE_WIDTH_M = 0.01
# visualization_msgs/Marker type and action constants.
_MARKER_LINE_LIST = 5
_MARKER_ADD = 0


def output_topics(groups: Collection[str], switches: Mapping[str, bool]) -> list[str]:
    """The topics of the output ``groups`` (of :data:`OUTPUT_GROUPS`) that the switches turn on.

    ``switches`` holds the booleans ``publish_depth``, ``publish_colored``, ``publish_points`` and
    ``publish_flow``; odometry (``odom``, ``path``) and map (``map``, ``keyframes``) are always on.
    """
    topics: list[str] = []
    if "depth" in groups and switches["publish_depth"]:
        topics += ["depth/image", "depth/uncertainty", "depth/camera_info"]
    if "depth" in groups and switches["publish_colored"]:
        topics.append("depth/colored")
    if "points" in groups and switches["publish_points"]:
        topics.append("points")
    if "flow" in groups and switches["publish_flow"]:
        topics.append("flow/image")
        if switches["publish_colored"]:
            topics.append("flow/colored")
    if "odometry" in groups:
        topics += ["odom", "path"]
    if "map" in groups:
        topics += ["map", "keyframes"]
    return topics


def frame_messages(
    result: PipelineResult,
    header: Message,
    odom_frame: str,
    wanted: Collection[str],
    calibration: CameraCalibration | None = None,
    factory: MessageFactory = RCLPY,
    child_frame_id: str | None = None,
) -> dict[str, Message]:
    """The per-frame messages of one result, by output name, for the names in ``wanted``.

    Only the messages that are wanted and that the result has (its stage ran and is ready)
    are built: depth/image, depth/uncertainty, depth/camera_info, depth/colored, points,
    flow/image, flow/colored, odom and tf, in that order. ``header`` is the input image's
    (stamp, camera frame); ``calibration`` describes the depth image (default: the frame's
    intrinsics without distortion). ``child_frame_id`` names the frame whose pose
    ``result.odometry`` holds (default: the camera frame, ``header.frame_id``).
    """
    builders: dict[str, Callable[[], Message]] = {}
    depth, flow, points, odometry = result.depth, result.flow, result.points, result.odometry
    if depth is not None:
        calibration = calibration or CameraCalibration(result.frame.intrinsics)
        builders["depth/image"] = lambda: image_from_depth(depth.depth, "32FC1", header, factory)
        builders["depth/uncertainty"] = lambda: image_from_numpy(depth.std, "32FC1", header, factory)
        builders["depth/camera_info"] = lambda: camera_info_from_calibration(calibration, header, factory)
        builders["depth/colored"] = lambda: image_from_numpy(colored_depth(depth.depth), "rgb8", header, factory)
    if points is not None:
        builders["points"] = lambda: pointcloud_from_numpy(points.xyz, points.rgb, header, factory)
    if flow is not None:
        builders["flow/image"] = lambda: image_from_numpy(flow.flow, "32FC2", header, factory)
        builders["flow/colored"] = lambda: image_from_numpy(flow_to_color(flow.flow), "rgb8", header, factory)
    if odometry is not None:
        odom_header = factory.new(HEADER, stamp=header.stamp, frame_id=odom_frame)
        child = header.frame_id if child_frame_id is None else child_frame_id
        builders["odom"] = lambda: odometry_from_matrix(
            odometry.pose, odom_header, child, odometry.covariance, odometry.velocity, factory=factory
        )
        builders["tf"] = lambda: transform_stamped_from_matrix(odometry.pose, odom_header, child, factory)
    return {name: build() for name, build in builders.items() if name in wanted}


def map_messages(
    cloud: PointCloud,
    keyframe_poses: Mapping[int, NDArray[np.float64]],
    intrinsics: Intrinsics,
    header: Message,
    factory: MessageFactory = RCLPY,
) -> dict[str, Message]:
    """``map`` (the fused cloud) and ``keyframes`` (their frustums), with ``header`` (their frame).

    ``cloud`` xyz (N, 3) metres in ``header.frame_id``; ``keyframe_poses`` id -> (4, 4)
    ``T_frame_camera``; ``intrinsics`` size the frustums.
    """
    return {
        "map": pointcloud_from_numpy(cloud.xyz, cloud.rgb, header, factory),
        "keyframes": keyframe_markers(keyframe_poses, intrinsics, header, factory),
    }


def keyframe_markers(
    poses: Mapping[int, NDArray[np.float64]],
    intrinsics: Intrinsics,
    header: Message,
    factory: MessageFactory = RCLPY,
) -> Message:
    """One LINE_LIST marker (namespace ``keyframes``, id 0) drawing a frustum per keyframe pose.

    ``poses`` id -> (4, 4) ``T_frame_camera`` in ``header.frame_id``, drawn in id order; lines
    :data:`FRUSTUM_LINE_WIDTH_M` wide, orange, never expiring.
    """
    ids = sorted(poses)
    lines = frustum_lines(np.array([poses[i] for i in ids]).reshape(-1, 4, 4), intrinsics)
    marker = factory.new(
        MARKER,
        header=header,
        ns="keyframes",
        id=0,
        type=_MARKER_LINE_LIST,
        action=_MARKER_ADD,
        pose=factory.new(POSE, orientation=factory.new(QUATERNION, x=0.0, y=0.0, z=0.0, w=1.0)),
        scale=factory.new(VECTOR3, x=FRUSTUM_LINE_WIDTH_M),
        color=factory.new(COLOR_RGBA, r=1.0, g=0.6, b=0.0, a=1.0),
        frame_locked=False,
        points=[factory.new(POINT, x=float(x), y=float(y), z=float(z)) for x, y, z in lines],
    )
    return factory.new(MARKER_ARRAY, markers=[marker])
