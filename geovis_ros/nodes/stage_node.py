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
from nav_msgs.msg import Path
from numpy.typing import NDArray
from std_msgs.msg import Header

from geovis_ros.frame import Frame, PointCloud
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.nodes.base import PerceptionNode
from geovis_ros.pipeline.pipeline import Pipeline, pipeline_config_from_parameters
from geovis_ros.ros.camera_info import CameraCalibration
from geovis_ros.ros.messages import RCLPY
from geovis_ros.ros.poses import append_to_path
from geovis_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS
from geovis_ros.ros.results import OUTPUT_TYPES, frame_messages, map_messages, output_topics

# The path keeps the newest this many poses (about 5 minutes at 30 Hz), so it cannot grow forever.
PATH_MAX_POSES = 10_000
# A path longer than this is republished every ceil(len / PATH_POSES_PER_FRAME) frames, so the
# amortised cost of publishing it stays that of a path this long.
PATH_POSES_PER_FRAME = 500
# Outputs published latched (transient local), so a late rviz2 still gets the last map.
LATCHED_OUTPUTS = ("map", "keyframes")

# Parameters every stage node declares.
COMMON_PARAMETERS = ["backend", "device", "precision", "engine_cache_dir", "input_width", "input_height",
                     "mode", "input_qos", "use_compressed", "camera_frame"]
ODOMETRY_PARAMETERS = ["model_depth", "model_pose", "odometry_method", "motion_prior", "odom_frame"]


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
        self._outputs: dict[str, Any] = {
            topic: self.create_publisher(RCLPY.message_class(OUTPUT_TYPES[topic]), topic,
                                         LATCHED_QOS if topic in LATCHED_OUTPUTS else OUTPUT_QOS)
            for topic in output_topics(self.OUTPUTS, params)
        }
        self._path: Path | None = None
        self._path_frames = 0
        self._tf = None
        if "odometry" in self.OUTPUTS:
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
            self.create_timer(1.0 / params["map_rate"], self._publish_map)

    def stages(self) -> tuple[str, ...]:
        """The pipeline stages this node runs (subclasses may prune by parameter)."""
        return self.STAGES

    # -- worker thread --------------------------------------------------------------------
    def process(self, frame: Frame, header: Header) -> None:
        """Run the pipeline on ``frame`` and publish its results with the input's stamp."""
        result = self.pipeline(frame)
        self._description = self.pipeline.describe()
        out_header = Header(stamp=header.stamp, frame_id=frame.frame_id)
        wanted = set(self._outputs)
        if self._tf is not None and self.get_parameter("publish_tf").value:
            wanted.add("tf")
        try:
            messages = frame_messages(result, out_header, self.odom_frame, wanted, self._depth_calibration(frame))
            transform = messages.pop("tf", None)
            for topic, msg in messages.items():
                self._outputs[topic].publish(msg)
            if transform is not None and self._tf is not None:
                self._tf.sendTransform(transform)
            if result.odometry is not None and self._path is not None:
                self._publish_path(result.odometry.pose, result.frame.stamp_ns)
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

    def _depth_calibration(self, frame: Frame) -> CameraCalibration:
        """Calibration of the depth image: the frame's intrinsics with the input's distortion model."""
        calibration = self.calibration
        if calibration is not None and calibration.intrinsics == frame.intrinsics:
            return calibration
        return CameraCalibration(frame.intrinsics)

    def _publish_path(self, pose: NDArray[np.float64], stamp_ns: int) -> None:
        """Append the pose to the path; publish it every frame, or less often once it is long."""
        assert self._path is not None
        append_to_path(self._path, pose, stamp_ns, PATH_MAX_POSES)
        self._path_frames += 1
        if self._path_frames % -(-len(self._path.poses) // PATH_POSES_PER_FRAME) == 0:
            self._outputs["path"].publish(self._path)

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
        for topic, msg in map_messages(cloud, poses, intrinsics, header).items():
            self._outputs[topic].publish(msg)
        self._map_published_version = version
        self._map_publish_ms = (time.perf_counter() - started) * 1000.0
