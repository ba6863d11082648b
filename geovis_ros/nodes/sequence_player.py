"""Play a frame sequence over DDS to a geovis node and record what it publishes (demo, end-to-end tests).

:class:`SequencePlayer` is an rclpy node that publishes ``/clock`` (sim time), an image topic
(rgb8) and a camera_info topic (reliable QoS, so nothing is lost), and subscribes to the outputs
of a pipeline_node in ``namespace``. Frames are sent with at most ``window`` frames in flight:
a frame counts as done when its ``odom`` (or, without odometry, its ``depth``) arrives, which
gives the end-to-end latency of each frame (publish -> result received, wall clock).
:meth:`SequencePlayer.play_paced` plays like a live camera instead: wall-clock stamps, a fixed
rate, never waiting for results (for a node in ``live`` mode without sim time).
Recorded outputs are converted to numpy as they arrive, so the caller needs no ROS types.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from numpy.typing import NDArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.frame import PointCloud
from geovis_ros.nodes.base import BAG_HISTORY
from geovis_ros.ros.camera_info import CameraCalibration, camera_info_from_calibration
from geovis_ros.ros.image import depth_from_image, image_from_numpy, numpy_from_image
from geovis_ros.ros.pointcloud import numpy_from_pointcloud
from geovis_ros.ros.poses import matrix_from_odometry
from geovis_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS, input_qos
from geovis_ros.ros.stamps import ns_from_time, time_from_ns

# Seconds between the first camera_info and the first image (a node drops images until it has one).
CAMERA_INFO_LEAD_S = 1.0
# The output whose arrival marks a frame as done, by ``done_on``.
DONE_TOPICS = {"odom": "odom", "depth": "depth/image"}


@dataclass
class Recording:
    """What the node published, keyed by input stamp (ns); numpy only.

    Attributes:
        sent_s / done_s: wall time (monotonic s) each frame was published / its result arrived.
        depth: stamp -> (H, W) float32 metres; depth_info: stamp -> (width, height, K (3, 3)).
        depth_encodings / flow_encodings: every encoding seen on depth / flow.
        frame_ids: stamp -> frame_id of the depth header.
        flow: stamps that had a flow image; flow_shape: (H, W, C) of the last one.
        points: stamp -> number of points in the per-frame cloud.
        odometry: stamp -> (pose (4, 4), covariance (6, 6)); odom_frames: (frame_id, child_frame_id) seen.
        path_length: poses in the last path; map: the last map; map_frame: its frame id;
        keyframe_markers: number of line points in the last keyframes MarkerArray.
        diagnostics: the last /diagnostics key/values of the played node; diagnostic_level /
            diagnostic_message: that status's level (0 OK, 1 WARN, 2 ERROR, 3 STALE; -1 none yet) and message.

    """

    sent_s: dict[int, float] = field(default_factory=dict)
    done_s: dict[int, float] = field(default_factory=dict)
    depth: dict[int, NDArray[np.float32]] = field(default_factory=dict)
    depth_info: dict[int, tuple[int, int, NDArray[np.float64]]] = field(default_factory=dict)
    depth_encodings: set[str] = field(default_factory=set)
    frame_ids: dict[int, str] = field(default_factory=dict)
    flow: set[int] = field(default_factory=set)
    flow_encodings: set[str] = field(default_factory=set)
    flow_shape: tuple[int, ...] = ()
    points: dict[int, int] = field(default_factory=dict)
    odometry: dict[int, tuple[NDArray[np.float64], NDArray[np.float64]]] = field(default_factory=dict)
    odom_frames: set[tuple[str, str]] = field(default_factory=set)
    path_length: int = 0
    map: PointCloud | None = None
    map_frame: str = ""
    keyframe_markers: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)
    diagnostic_level: int = -1
    diagnostic_message: str = ""

    def latencies_ms(self) -> NDArray[np.float64]:
        """(N,) wall-clock latency of every completed frame, milliseconds, in stamp order."""
        stamps = sorted(set(self.sent_s) & set(self.done_s))
        return np.array([(self.done_s[s] - self.sent_s[s]) * 1000.0 for s in stamps])


class SequencePlayer(Node):
    """Publishes frames + /clock and records a pipeline_node's outputs (see the module docstring).

    Args:
        namespace: namespace of the played node's outputs (e.g. ``/geovis``).
        image_topic, info_topic: where the frames go (the node is remapped to them).
        frame_id: header frame of the images.
        diagnostics_name: suffix of the played node's /diagnostics status name.
        done_on: output that marks a frame as done: ``"odom"`` or ``"depth"`` (nodes without odometry).

    """

    def __init__(self, namespace: str = "/geovis", image_topic: str = "/camera/image_raw",
                 info_topic: str = "/camera/camera_info", frame_id: str = "camera",
                 diagnostics_name: str = "pipeline_node", done_on: str = "odom") -> None:
        if done_on not in DONE_TOPICS:
            raise ValueError(f"done_on must be 'odom' or 'depth', got {done_on!r}")
        super().__init__("geovis_sequence_player")
        self.frame_id = frame_id
        self.recording = Recording()
        self._diagnostics_name = diagnostics_name
        qos = input_qos("reliable", depth=BAG_HISTORY)  # a whole window of frames in flight is kept
        self._clock_publisher = self.create_publisher(Clock, "/clock", 10)
        self._image = self.create_publisher(Image, image_topic, qos)
        self._info = self.create_publisher(CameraInfo, info_topic, qos)
        ns = namespace.rstrip("/")
        subscriptions: list[tuple[type, str, Callable[..., None], QoSProfile]] = [
            (Image, "depth/image", self._on_depth, OUTPUT_QOS),
            (CameraInfo, "depth/camera_info", self._on_depth_info, OUTPUT_QOS),
            (Image, "flow/image", self._on_flow, OUTPUT_QOS),
            (PointCloud2, "points", self._on_points, OUTPUT_QOS),
            (Odometry, "odom", self._on_odometry, OUTPUT_QOS),
            (Path, "path", self._on_path, OUTPUT_QOS),
            (PointCloud2, "map", self._on_map, LATCHED_QOS),
            (MarkerArray, "keyframes", self._on_keyframes, LATCHED_QOS),
        ]
        for message_type, topic, callback, profile in subscriptions:
            self.create_subscription(message_type, f"{ns}/{topic}", callback, profile)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._image_topic = image_topic
        self._info_topic = info_topic
        self._done_on = done_on
        self._done_topic = f"{ns}/{DONE_TOPICS[done_on]}"
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self)

    # -- driving ----------------------------------------------------------------------------
    def spin_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Spin until ``condition()`` holds or ``timeout_s`` passes; returns ``condition()``."""
        end = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < end:
            self._executor.spin_once(timeout_sec=0.01)
        return condition()

    def wait_for_played_node(self, timeout_s: float) -> bool:
        """Wait until something subscribes to the image and camera_info topics and publishes the done topic."""
        return self.spin_until(lambda: self.count_subscribers(self._image_topic) > 0
                               and self.count_subscribers(self._info_topic) > 0
                               and self.count_publishers(self._done_topic) > 0, timeout_s)

    def play(self, frames: Iterable[SequenceFrame], window: int = 1, frame_timeout_s: float = 60.0,
             progress: Callable[[int], None] | None = None) -> int:
        """Send every frame (clock, camera_info, image) with at most ``window`` frames in flight.

        Returns the number of frames sent. Raises TimeoutError when a frame's result does not arrive
        within ``frame_timeout_s`` (the node died or dropped it).
        """
        sent: list[int] = []
        for frame in frames:
            if not sent:  # the camera_info must be cached before the first image arrives
                self._info.publish(camera_info_from_calibration(CameraCalibration(frame.intrinsics)))
                self.spin_until(lambda: False, CAMERA_INFO_LEAD_S)
            if len(sent) >= window:
                self._wait_done(sent[-window], frame_timeout_s)
            header = Header(stamp=time_from_ns(frame.stamp_ns), frame_id=self.frame_id)
            self._clock_publisher.publish(Clock(clock=header.stamp))
            self._info.publish(camera_info_from_calibration(CameraCalibration(frame.intrinsics), header))
            self.recording.sent_s[frame.stamp_ns] = time.monotonic()
            self._image.publish(image_from_numpy(frame.rgb, "rgb8", header))
            sent.append(frame.stamp_ns)
            self._executor.spin_once(timeout_sec=0.0)
            if progress is not None:
                progress(len(sent))
        for stamp in sent[-window:]:
            self._wait_done(stamp, frame_timeout_s)
        return len(sent)

    def play_paced(self, frames: Iterable[SequenceFrame], rate_hz: float, settle_s: float = 5.0,
                   progress: Callable[[int], None] | None = None) -> list[int]:
        """Send every frame (camera_info, image) at ``rate_hz`` like a live camera; returns the stamps sent (ns).

        The returned stamps are in the frames' order (the i-th is the i-th frame's), so results
        recorded under them can be matched to the frames' own stamps.

        Each image is stamped with the wall clock (ns since the epoch) when it is sent, and the
        next one follows 1 / ``rate_hz`` s later whatever the node does (results arrive meanwhile
        and are recorded). After the last frame this spins until its result arrives or ``settle_s``
        seconds pass. No /clock: the node runs on its own clock (``use_sim_time`` false).
        """
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        period = 1.0 / rate_hz
        sent: list[int] = []
        due = time.monotonic()
        for frame in frames:
            if not sent:  # the camera_info must be cached before the first image arrives
                self._info.publish(camera_info_from_calibration(CameraCalibration(frame.intrinsics)))
                self.spin_until(lambda: False, CAMERA_INFO_LEAD_S)
                due = time.monotonic()
            self.spin_until(lambda: False, max(0.0, due - time.monotonic()))  # results arrive meanwhile
            stamp_ns = max(time.time_ns(), sent[-1] + 1 if sent else 0)
            header = Header(stamp=time_from_ns(stamp_ns), frame_id=self.frame_id)
            self._info.publish(camera_info_from_calibration(CameraCalibration(frame.intrinsics), header))
            self.recording.sent_s[stamp_ns] = time.monotonic()
            self._image.publish(image_from_numpy(frame.rgb, "rgb8", header))
            sent.append(stamp_ns)
            due += period
            if progress is not None:
                progress(len(sent))
        if sent:
            self.spin_until(lambda: sent[-1] in self.recording.done_s, settle_s)
        return sent

    def _wait_done(self, stamp_ns: int, timeout_s: float) -> None:
        if not self.spin_until(lambda: stamp_ns in self.recording.done_s, timeout_s):
            raise TimeoutError(f"no result for the frame stamped {stamp_ns} ns within {timeout_s:.0f} s")

    # -- recording --------------------------------------------------------------------------
    def _on_depth(self, msg: Image) -> None:
        stamp = ns_from_time(msg.header.stamp)
        self.recording.depth_encodings.add(msg.encoding)
        self.recording.frame_ids[stamp] = msg.header.frame_id
        self.recording.depth[stamp] = depth_from_image(msg)
        if self._done_on == "depth":
            self.recording.done_s.setdefault(stamp, time.monotonic())

    def _on_depth_info(self, msg: CameraInfo) -> None:
        k = np.asarray(msg.k, np.float64).reshape(3, 3)
        self.recording.depth_info[ns_from_time(msg.header.stamp)] = (msg.width, msg.height, k)

    def _on_flow(self, msg: Image) -> None:
        self.recording.flow.add(ns_from_time(msg.header.stamp))
        self.recording.flow_encodings.add(msg.encoding)
        self.recording.flow_shape = numpy_from_image(msg).shape

    def _on_points(self, msg: PointCloud2) -> None:
        self.recording.points[ns_from_time(msg.header.stamp)] = msg.width * msg.height

    def _on_odometry(self, msg: Odometry) -> None:
        stamp = ns_from_time(msg.header.stamp)
        self.recording.odometry[stamp] = matrix_from_odometry(msg)
        self.recording.odom_frames.add((msg.header.frame_id, msg.child_frame_id))
        if self._done_on == "odom":
            self.recording.done_s.setdefault(stamp, time.monotonic())

    def _on_path(self, msg: Path) -> None:
        self.recording.path_length = len(msg.poses)

    def _on_map(self, msg: PointCloud2) -> None:
        xyz, rgb = numpy_from_pointcloud(msg)
        self.recording.map = PointCloud(xyz, rgb if rgb is not None else np.zeros(xyz.shape, np.uint8),
                                        msg.header.frame_id)

    def _on_keyframes(self, msg: MarkerArray) -> None:
        self.recording.keyframe_markers = sum(len(marker.points) for marker in msg.markers)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(self._diagnostics_name):
                self.recording.diagnostics = {kv.key: kv.value for kv in status.values}
                self.recording.diagnostic_level = int.from_bytes(status.level, "little")
                self.recording.diagnostic_message = status.message

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        self._executor.shutdown()
        self.destroy_node()


def run_player(play: Callable[[SequencePlayer], None], **player_kwargs: object) -> Recording:
    """Init rclpy, run ``play(player)``, shut everything down; returns the recording."""
    rclpy.init()
    player = SequencePlayer(**player_kwargs)  # type: ignore[arg-type]
    try:
        play(player)
        return player.recording
    finally:
        player.close()
        rclpy.try_shutdown()
