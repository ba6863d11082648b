"""The node every geovis stage runs in: a :class:`PerceptionNode` driving a :class:`Pipeline`.

A subclass picks the stages it runs (``STAGES``), the outputs it publishes (``OUTPUTS``) and
the parameters it declares (``PARAMETERS``); the five node modules are nothing more.

Output groups (topic names relative, so the launch namespace applies):

- ``depth``: ``depth/image`` (32FC1 m), ``depth/camera_info`` (of the rectified image),
  ``depth/uncertainty`` (32FC1 m), ``depth/colored`` (rgb8), switches ``publish_depth`` /
  ``publish_colored``;
- ``points``: ``points`` (PointCloud2 xyz + rgb, camera frame), switch ``publish_points``; the cloud is
  computed only for a frame it will be published for (switch on and the topic has a subscriber);
- ``flow``: ``flow/image`` (32FC2 px, previous -> this frame), ``flow/colored`` (rgb8), switches
  ``publish_flow`` / ``publish_colored``;
- ``odometry`` (REP 105): ``odom`` (Odometry in ``odom_frame``, child ``base_frame``), ``path``
  (in ``odom_frame``), TF ``odom -> base_frame`` when ``publish_tf``;
- ``map``: ``map`` (PointCloud2 in ``map_frame``, transient local, at most ``map_rate`` Hz),
  ``keyframes`` (MarkerArray: one camera frustum per keyframe, in ``map_frame``) and TF
  ``map -> odom`` (the loop-closure correction; odom itself never jumps) when ``publish_map_tf``.

The camera's motion becomes the base frame's through the extrinsic ``T_base_camera``
(:class:`~geovis_ros.nodes.tf.TfLink`; :mod:`geovis_ros.ros.frames` has the algebra). Publishing
switches other than ``publish_flow`` (which decides whether the flow network is loaded), the TF
switches and ``map_rate`` may change at run time. Image outputs carry the input image's header
(stamp and frame id; ``camera_frame`` overrides the frame id), so they line up with the input in
rviz2 and in recordings.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
from nav_msgs.msg import Path
from numpy.typing import NDArray
from rclpy.clock import Clock, ClockType
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from geovis_ros.frame import Frame, PipelineResult, PointCloud, TrackingState
from geovis_ros.geometry.camera import Intrinsics, transform_points
from geovis_ros.nodes.base import PerceptionNode
from geovis_ros.nodes.health import ERROR, WARN, Check
from geovis_ros.nodes.tf import TfLink
from geovis_ros.pipeline.pipeline import Pipeline, pipeline_config_from_parameters
from geovis_ros.ros.frames import conjugated, extrinsic_from_values, odometry_in_base
from geovis_ros.ros.messages import RCLPY
from geovis_ros.ros.poses import append_to_path, transform_stamped_from_matrix
from geovis_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS
from geovis_ros.ros.rectify import rectified_calibration
from geovis_ros.ros.results import OUTPUT_TYPES, frame_messages, map_messages, output_topics

# The path keeps the newest this many poses (about 5 minutes at 30 Hz), so it cannot grow forever.
PATH_MAX_POSES = 10_000
# A path longer than this is republished every ceil(len / PATH_POSES_PER_FRAME) frames, so the
# amortised cost of publishing it stays that of a path this long.
PATH_POSES_PER_FRAME = 500
# Outputs published latched (transient local), so a late rviz2 still gets the last map.
LATCHED_OUTPUTS = ("map", "keyframes")
# Output switches that may change at run time (publish_flow decides whether flow runs at all).
RUNTIME_SWITCHES = ("publish_depth", "publish_points", "publish_colored")
# Outputs built only while someone subscribes (a recorder counts): costly, and only for people.
LAZY_OUTPUTS = ("points", "depth/colored", "flow/colored")

# Parameters every stage node declares (the base node reads them).
COMMON_PARAMETERS = ["backend", "device", "precision", "engine_cache_dir", "input_width", "input_height",
                     "mode", "input_qos", "use_compressed", "max_image_pixels", "bag_queue_mb", "camera_frame",
                     "min_output_rate", "max_delay"]
# Parameters of the nodes that track the camera (odometry, mapping, pipeline).
ODOMETRY_PARAMETERS = ["model_depth", "model_depth_card", "model_pose", "odometry_method", "motion_prior",
                       "camera_height", "ground_frame", "odom_frame", "base_frame", "camera_extrinsic", "tf_timeout",
                       "lost_frames_error"]
# Parameters of the nodes that build the map (mapping, pipeline).
MAP_PARAMETERS = ["map_frame", "publish_map_tf", "map_rate", "map_voxel_size", "map_max_points"]


class StageNode(PerceptionNode):
    """Runs the pipeline stages ``STAGES`` on every frame and publishes the ``OUTPUTS`` groups."""

    STAGES: tuple[str, ...] = ()
    OUTPUTS: tuple[str, ...] = ()

    def __init__(self, node_name: str, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        params = self.params
        try:
            extrinsic = extrinsic_from_values(params["camera_extrinsic"]) if "odometry" in self.STAGES else None
            self.pipeline = Pipeline(pipeline_config_from_parameters(params, self.stages()))
        except Exception:
            self.destroy_node()  # stop the worker thread the base started
            raise
        # The engines for an image of the network input size, before any camera: an image of that
        # aspect ratio (any size) needs no other, so a live stream loses no frame to building them.
        width, height = int(params["input_width"]), int(params["input_height"])
        self.request_warm_up(Intrinsics(float(width), float(width), (width - 1) / 2, (height - 1) / 2, width, height))
        self.odom_frame = self.pipeline.config.odom_frame
        self._description: dict[str, str] = {}
        created = {**{name: True for name in RUNTIME_SWITCHES}, "publish_flow": params.get("publish_flow", False)}
        self._outputs: dict[str, Any] = {
            topic: self.create_publisher(RCLPY.message_class(OUTPUT_TYPES[topic]), topic,
                                         LATCHED_QOS if topic in LATCHED_OUTPUTS else OUTPUT_QOS)
            for topic in output_topics(self.OUTPUTS, created)
        }
        self._tf = (TfLink(self, params["base_frame"], extrinsic, params["tf_timeout"], listen=True)
                    if extrinsic is not None else None)
        # With camera_height 0, the camera's height above ground_frame in TF (once) gives the metric scale.
        self._ground_frame: str | None = (params["ground_frame"] if extrinsic is not None
                                          and not params.get("camera_height", 0.0) else None)
        self._path: Path | None = None
        self._path_frames = 0
        if "odometry" in self.OUTPUTS:
            self._path = Path(header=Header(frame_id=self.odom_frame))
        self._lost_frames = 0
        self._metric = True
        self._map_lock = threading.Lock()
        self._map_snapshot: tuple[int, PointCloud, dict[int, NDArray[np.float64]], Intrinsics, Header] | None = None
        self._map_published_version = -1
        self._map_snapshot_version = 0
        self._map_publish_ms = float("nan")
        self._map_timer = None
        if "map" in self.OUTPUTS:
            # Steady clock: the last map is still published after a bag's /clock stops.
            self._map_timer = self.create_timer(1.0 / params["map_rate"], self._publish_map,
                                                clock=Clock(clock_type=ClockType.STEADY_TIME))
            self.add_post_set_parameters_callback(self._on_parameters_set)

    def stages(self) -> tuple[str, ...]:
        """The pipeline stages this node runs (subclasses may prune by parameter)."""
        return self.STAGES

    def _on_parameters_set(self, parameters: list[Parameter]) -> None:
        """Apply a new ``map_rate`` to the map timer (values were validated before they were set)."""
        for parameter in parameters:
            if parameter.name == "map_rate" and self._map_timer is not None:
                self._map_timer.timer_period_ns = round(1e9 / float(parameter.value))

    def _switch(self, name: str) -> bool:
        """The current value of a boolean parameter this node declares (False when it declares none)."""
        return bool(self.has_parameter(name) and self.get_parameter(name).value)

    # -- worker thread --------------------------------------------------------------------
    def process(self, frame: Frame, header: Header) -> None:
        """Run the pipeline on ``frame`` and publish its results with the input's stamp."""
        if self._ground_frame is not None and self._tf is not None:
            height = self._tf.height_above(self._ground_frame, frame.frame_id)
            self._ground_frame = None
            if height is not None:
                self.pipeline.set_camera_height(height)
        switches = {name: self._switch(name) for name in (*RUNTIME_SWITCHES, "publish_flow")}
        wanted = set(output_topics(self.OUTPUTS, switches)) & set(self._outputs)
        # Nobody listens: the cloud is not even computed, the images for people not even coloured
        # (at 640x480 colouring depth and flow costs more than the fused depth and the odometry together).
        for topic in LAZY_OUTPUTS:
            if topic in wanted and not self._outputs[topic].get_subscription_count():
                wanted.discard(topic)
        result = self.pipeline(frame, points="points" in wanted)
        self._description = self.pipeline.describe()
        self._observe(result)
        out_header = Header(stamp=header.stamp, frame_id=frame.frame_id)
        extrinsic = self._tf.extrinsic(frame.frame_id) if self._tf is not None else None
        if self._tf is not None and self._tf.available and self._switch("publish_tf") and "odometry" in self.OUTPUTS:
            wanted.add("tf")
        if result.odometry is not None and extrinsic is not None:
            result = replace(result, odometry=odometry_in_base(result.odometry, extrinsic))
        base_frame = self.params.get("base_frame")
        try:
            messages = frame_messages(result, out_header, self.odom_frame, wanted,
                                      rectified_calibration(frame.intrinsics), child_frame_id=base_frame)
            transform = messages.pop("tf", None)
            for topic, msg in messages.items():
                self._outputs[topic].publish(msg)
            if transform is not None and self._tf is not None:
                self._tf.send(transform)
            if result.odometry is not None and self._path is not None:
                self._publish_path(result.odometry.pose, result.frame.stamp_ns)
            if "map" in self.OUTPUTS and extrinsic is not None:
                self._publish_map_correction(extrinsic, out_header)
        except Exception:
            if self.context.ok():
                raise
            return  # SIGINT/SIGTERM shut the context down while this frame was being published
        if "map" in self.OUTPUTS and extrinsic is not None and self.pipeline.map_version != self._map_snapshot_version:
            self._snapshot_map(frame.intrinsics, out_header, extrinsic)

    def _observe(self, result: PipelineResult) -> None:
        """Track what /diagnostics judges: consecutive frames with tracking lost, metric scale."""
        if result.odometry is not None:
            self._lost_frames = self._lost_frames + 1 if result.odometry.state is TrackingState.LOST else 0
            self._metric = result.odometry.is_metric
        elif result.depth is not None:
            self._metric = result.depth.is_metric

    def warm_up(self, intrinsics: Intrinsics) -> None:
        """Build the networks' engines for this image size before the first image (see the base class)."""
        self.pipeline.warm_up(intrinsics)

    def reset(self) -> None:
        """Forget the stream: pipeline state, path (the map is republished empty)."""
        self.pipeline.reset()
        self._lost_frames = 0
        if self._path is not None:
            self._path.poses.clear()

    def diagnostic_values(self) -> dict[str, str]:
        """Backends, stage timings, tracking state and map size of the last frame."""
        values = dict(self._description)
        if "odometry" in self.STAGES:
            values["lost_frames"] = str(self._lost_frames)
        values["metric"] = str(self._metric).lower()
        if "map" in self.OUTPUTS:
            values["map_publish_ms"] = f"{self._map_publish_ms:.1f}"
        return values

    def stage_checks(self) -> list[Check]:
        """Tracking lost (WARN; ERROR after ``lost_frames_error`` frames), scale not metric, backend fallback (WARN)."""
        checks = []
        if self._lost_frames:
            limit = int(self.get_parameter("lost_frames_error").value)
            level = ERROR if self._lost_frames >= limit else WARN
            checks.append(Check(level, f"tracking lost for {self._lost_frames} frame(s) (ERROR from {limit})"))
        if not self._metric:
            checks.append(Check(WARN, "scale is not metric (relative depth): distances are up to an unknown scale"))
        requested = self.params["backend"]
        fallen = sorted({value for key, value in self._description.items()
                         if key.endswith("_backend") and requested != "auto" and value != requested})
        if fallen:
            checks.append(Check(WARN, f"backend {requested} was requested but {', '.join(fallen)} runs (fallback; "
                                      "see the node log for why)"))
        return checks

    def _publish_path(self, pose: NDArray[np.float64], stamp_ns: int) -> None:
        """Append the pose to the path; publish it every frame, or less often once it is long."""
        assert self._path is not None
        append_to_path(self._path, pose, stamp_ns, PATH_MAX_POSES)
        self._path_frames += 1
        if self._path_frames % -(-len(self._path.poses) // PATH_POSES_PER_FRAME) == 0:
            self._outputs["path"].publish(self._path)

    def _publish_map_correction(self, extrinsic: NDArray[np.float64], header: Header) -> None:
        """Broadcast ``map -> odom`` (the back end's loop-closure correction in base axes) when switched on."""
        backend = self.pipeline.backend
        if self._tf is None or backend is None or not self._switch("publish_map_tf"):
            return
        map_header = Header(stamp=header.stamp, frame_id=self.params["map_frame"])
        self._tf.send(transform_stamped_from_matrix(conjugated(backend.correction(), extrinsic), map_header,
                                                    self.odom_frame))

    def _snapshot_map(self, intrinsics: Intrinsics, header: Header, extrinsic: NDArray[np.float64]) -> None:
        """Copy the map and keyframe poses, in ``map_frame``, for the map timer (the worker never blocks on it)."""
        backend = self.pipeline.backend
        assert backend is not None
        version = self.pipeline.map_version
        cloud = backend.map_cloud()
        xyz = transform_points(extrinsic, cloud.xyz) if len(cloud.xyz) else cloud.xyz
        map_frame = self.params["map_frame"]
        poses = {key: extrinsic @ pose for key, pose in backend.keyframe_poses().items()}
        snapshot = (version, PointCloud(xyz.astype(np.float32, copy=False), cloud.rgb, map_frame), poses, intrinsics,
                    Header(stamp=header.stamp, frame_id=map_frame))
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
