"""The node every geovis stage runs in: a :class:`PerceptionNode` driving a :class:`Pipeline`.

A subclass picks the stages it runs (``STAGES``), the outputs it publishes (``OUTPUTS``) and
the parameters it declares (``PARAMETERS``); the five node modules are nothing more.

Output groups (topic names relative, so the launch namespace applies):

- ``depth``: ``depth`` (32FC1 m), ``depth/camera_info``, ``depth/uncertainty`` (32FC1 m),
  ``depth/colored`` (rgb8), switches ``publish_depth`` / ``publish_colored``;
- ``points``: ``points`` (PointCloud2 xyz + rgb, camera frame), switch ``publish_points``;
- ``flow``: ``flow`` (32FC2 px, previous -> this frame), ``flow/colored`` (rgb8), switches
  ``publish_flow`` / ``publish_colored``;
- ``odometry``: ``odom`` (Odometry in ``odom_frame``), ``path``, TF ``odom -> camera`` when
  tf2_ros is importable and ``publish_tf`` is true;
- ``map``: ``map`` (PointCloud2 in ``odom_frame``, transient local, at most ``map_rate`` Hz) and
  ``keyframes`` (MarkerArray: one camera frustum per keyframe).

Image outputs carry the input image's header (stamp and frame id; ``camera_frame`` overrides the
frame id), so they line up with the input in rviz2 and in recordings.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from nav_msgs.msg import Odometry, Path
from numpy.typing import NDArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from geovis_ros.frame import Frame, PipelineResult, PointCloud
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.nodes.base import PerceptionNode
from geovis_ros.pipeline.pipeline import Pipeline, pipeline_config_from_parameters
from geovis_ros.ros.camera_info import CameraCalibration, camera_info_from_calibration
from geovis_ros.ros.image import image_from_depth, image_from_numpy
from geovis_ros.ros.pointcloud import pointcloud_from_numpy
from geovis_ros.ros.poses import append_to_path, odometry_from_matrix, transform_stamped_from_matrix
from geovis_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS
from geovis_ros.visualization import colored_depth, flow_to_color, frustum_lines

# The path keeps the newest this many poses (about 5 minutes at 30 Hz), so it cannot grow forever.
PATH_MAX_POSES = 10_000
# A path longer than this is republished every ceil(len / PATH_POSES_PER_FRAME) frames, so the
# amortised cost of publishing it stays that of a path this long.
PATH_POSES_PER_FRAME = 500
# Line width of the keyframe frustum markers, metres.
FRUSTUM_LINE_WIDTH_M = 0.01

# Parameters every stage node declares.
COMMON_PARAMETERS = ["backend", "device", "precision", "engine_cache_dir", "input_width", "input_height",
                     "mode", "input_qos", "use_compressed", "camera_frame"]
ODOMETRY_PARAMETERS = ["model_depth", "model_pose", "odometry_method", "motion_prior", "odom_frame"]


def keyframe_markers(poses: dict[int, NDArray[np.float64]], intrinsics: Intrinsics, header: Header) -> MarkerArray:
    """One LINE_LIST marker (namespace ``keyframes``, id 0) drawing a frustum per keyframe pose."""
    ids = sorted(poses)
    lines = frustum_lines(np.array([poses[i] for i in ids]).reshape(-1, 4, 4), intrinsics)
    marker = Marker(header=header, ns="keyframes", id=0, type=Marker.LINE_LIST, action=Marker.ADD,
                    lifetime=Duration(), frame_locked=False)
    marker.pose.orientation.w = 1.0
    marker.scale.x = FRUSTUM_LINE_WIDTH_M
    marker.color = ColorRGBA(r=1.0, g=0.6, b=0.0, a=1.0)
    marker.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in lines]
    return MarkerArray(markers=[marker])


def _transform_broadcaster(node: PerceptionNode) -> Any | None:
    """A tf2_ros TransformBroadcaster, or None when tf2_ros is not installed."""
    try:
        from tf2_ros import TransformBroadcaster
    except ImportError:
        return None
    return TransformBroadcaster(node)


class StageNode(PerceptionNode):
    """Runs the pipeline stages ``STAGES`` on every frame and publishes the ``OUTPUTS`` groups."""

    STAGES: tuple[str, ...] = ()
    OUTPUTS: tuple[str, ...] = ()

    def __init__(self, node_name: str, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        params = self.params
        try:
            self.pipeline = Pipeline(pipeline_config_from_parameters(params, self.stages()))
        except Exception:
            self.destroy_node()  # stop the worker thread the base started
            raise
        self.odom_frame = self.pipeline.config.odom_frame
        self._description: dict[str, str] = {}
        self._outputs: dict[str, Any] = {}
        if "depth" in self.OUTPUTS and params["publish_depth"]:
            self._advertise(Image, "depth", "depth/uncertainty")
            self._advertise(CameraInfo, "depth/camera_info")
        if "depth" in self.OUTPUTS and params["publish_colored"]:
            self._advertise(Image, "depth/colored")
        if "points" in self.OUTPUTS and params["publish_points"]:
            self._advertise(PointCloud2, "points")
        if "flow" in self.OUTPUTS and params["publish_flow"]:
            self._advertise(Image, "flow")
            if params["publish_colored"]:
                self._advertise(Image, "flow/colored")
        self._path: Path | None = None
        self._path_frames = 0
        self._tf = None
        if "odometry" in self.OUTPUTS:
            self._advertise(Odometry, "odom")
            self._advertise(Path, "path")
            self._path = Path(header=Header(frame_id=self.odom_frame))
            self._tf = _transform_broadcaster(self)
            if self._tf is None and params["publish_tf"]:
                self.get_logger().info("tf2_ros is not installed: the odom -> camera TF is not broadcast "
                                       "(odom and path are published)")
        self._map_lock = threading.Lock()
        self._map_snapshot: tuple[int, PointCloud, dict[int, NDArray[np.float64]], Intrinsics, Header] | None = None
        self._map_published_version = -1
        self._map_snapshot_version = 0
        self._map_publish_ms = float("nan")
        if "map" in self.OUTPUTS:
            self._outputs["map"] = self.create_publisher(PointCloud2, "map", LATCHED_QOS)
            self._outputs["keyframes"] = self.create_publisher(MarkerArray, "keyframes", LATCHED_QOS)
            self.create_timer(1.0 / params["map_rate"], self._publish_map)

    def stages(self) -> tuple[str, ...]:
        """The pipeline stages this node runs (subclasses may prune by parameter)."""
        return self.STAGES

    def _advertise(self, message_type: type, *topics: str) -> None:
        for topic in topics:
            self._outputs[topic] = self.create_publisher(message_type, topic, OUTPUT_QOS)

    # -- worker thread --------------------------------------------------------------------
    def process(self, frame: Frame, header: Header) -> None:
        """Run the pipeline on ``frame`` and publish its results with the input's stamp."""
        result = self.pipeline(frame)
        self._description = self.pipeline.describe()
        out_header = Header(stamp=header.stamp, frame_id=frame.frame_id)
        try:
            self._publish_depth(result, out_header)
            self._publish_flow(result, out_header)
            self._publish_odometry(result, out_header)
        except Exception:
            if self.context.ok():
                raise
            return  # SIGINT/SIGTERM shut the context down while this frame was being published
        if "map" in self.OUTPUTS and self.pipeline.map_version != self._map_snapshot_version:
            self._snapshot_map(frame.intrinsics, out_header)

    def reset(self) -> None:
        """Forget the stream: pipeline state, path (the map is republished empty)."""
        self.pipeline.reset()
        if self._path is not None:
            self._path.poses.clear()

    def diagnostic_values(self) -> dict[str, str]:
        """Backends, stage timings, tracking state and map size of the last frame."""
        values = dict(self._description)
        if "map" in self.OUTPUTS:
            values["map_publish_ms"] = f"{self._map_publish_ms:.1f}"
        return values

    def _publish(self, topic: str, make: Any) -> None:
        """Publish ``make()`` on ``topic`` if that output is on (messages are only built when needed)."""
        publisher = self._outputs.get(topic)
        if publisher is not None:
            publisher.publish(make())

    def _publish_depth(self, result: PipelineResult, header: Header) -> None:
        depth, frame = result.depth, result.frame
        if depth is not None:
            self._publish("depth", lambda: image_from_depth(depth.depth, "32FC1", header))
            self._publish("depth/uncertainty", lambda: image_from_numpy(depth.std, "32FC1", header))
            self._publish("depth/camera_info", lambda: camera_info_from_calibration(self._depth_calibration(frame),
                                                                                    header))
            self._publish("depth/colored", lambda: image_from_numpy(colored_depth(depth.depth), "rgb8", header))
        points = result.points
        if points is not None:
            self._publish("points", lambda: pointcloud_from_numpy(points.xyz, points.rgb, header))

    def _depth_calibration(self, frame: Frame) -> CameraCalibration:
        """Calibration of the depth image: the frame's intrinsics with the input's distortion model."""
        calibration = self.calibration
        if calibration is not None and calibration.intrinsics == frame.intrinsics:
            return calibration
        return CameraCalibration(frame.intrinsics)

    def _publish_flow(self, result: PipelineResult, header: Header) -> None:
        flow = result.flow
        if flow is not None:
            self._publish("flow", lambda: image_from_numpy(flow.flow, "32FC2", header))
            self._publish("flow/colored", lambda: image_from_numpy(flow_to_color(flow.flow), "rgb8", header))

    def _publish_odometry(self, result: PipelineResult, header: Header) -> None:
        odometry = result.odometry
        if odometry is None or "odometry" not in self.OUTPUTS:
            return
        odom_header = Header(stamp=header.stamp, frame_id=self.odom_frame)
        self._publish("odom", lambda: odometry_from_matrix(
            odometry.pose, odom_header, header.frame_id, odometry.covariance, odometry.velocity))
        assert self._path is not None
        append_to_path(self._path, odometry.pose, result.frame.stamp_ns, PATH_MAX_POSES)
        self._path_frames += 1
        if self._path_frames % -(-len(self._path.poses) // PATH_POSES_PER_FRAME) == 0:
            self._publish("path", lambda: self._path)
        if self._tf is not None and self.get_parameter("publish_tf").value:
            self._tf.sendTransform(transform_stamped_from_matrix(odometry.pose, odom_header, header.frame_id))

    def _snapshot_map(self, intrinsics: Intrinsics, header: Header) -> None:
        """Copy the map and keyframe poses for the map timer (the worker never blocks on publishing)."""
        version = self.pipeline.map_version
        snapshot = (version, self.pipeline.map_cloud(), self.pipeline.keyframe_poses(), intrinsics,
                    Header(stamp=header.stamp, frame_id=self.odom_frame))
        with self._map_lock:
            self._map_snapshot = snapshot
        self._map_snapshot_version = version

    # -- executor thread ------------------------------------------------------------------
    def _publish_map(self) -> None:
        with self._map_lock:
            snapshot = self._map_snapshot
        if snapshot is None or snapshot[0] == self._map_published_version:
            return
        version, cloud, poses, intrinsics, header = snapshot
        started = time.perf_counter()
        self._outputs["map"].publish(pointcloud_from_numpy(cloud.xyz, cloud.rgb, header))
        self._outputs["keyframes"].publish(keyframe_markers(poses, intrinsics, header))
        self._map_published_version = version
        self._map_publish_ms = (time.perf_counter() - started) * 1000.0
