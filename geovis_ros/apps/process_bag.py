"""``geovis process-bag IN OUT``: the whole pipeline over a recorded bag, without ROS installed.

Reads the images (and camera_info, ground-truth odometry, depth when present) of IN with rosbags,
runs :class:`~geovis_ros.pipeline.pipeline.Pipeline` on every frame in order, and writes a ROS 2
bag OUT (sqlite3 or mcap) holding the topics pipeline_node would publish, stamped with the input
stamps: ``<ns>/depth``, ``depth/camera_info``, ``depth/uncertainty``, ``depth/colored``,
``points``, ``flow``, ``flow/colored``, ``odom``, ``/tf`` (odom -> camera), ``map`` and
``keyframes`` (whenever the map changed, at most ``map_rate`` Hz of bag time, and at the end) and
``path`` (at the end). ``report.md`` and ``metrics.json`` (scores against the bag's ground truth,
timing) go into OUT next to the bag files, with ``trajectory.png``, ``depth.png`` and ``map.ply``.

``--config`` takes the nodes' parameter file (``config/geovis.yaml``: ``/**`` and
``pipeline_node`` sections are merged) or a flat YAML mapping of the same parameter names.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from geovis_ros.apps.run_report import format_number, timing_metrics, trajectory_metrics, write_run_outputs
from geovis_ros.errors import CommandError
from geovis_ros.eval.metrics_depth import DepthMetricsAccumulator
from geovis_ros.frame import Frame, PipelineResult, PointCloud
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import quaternion_from_matrix
from geovis_ros.pipeline.pipeline import (
    PIPELINE_PARAMETERS,
    STAGES,
    Pipeline,
    pipeline_config_from_parameters,
)
from geovis_ros.visualization import colored_depth, flow_to_color, frustum_lines

if TYPE_CHECKING:
    from rosbags.rosbag2 import Writer

# Parameters process-bag reads besides the pipeline's own (PIPELINE_PARAMETERS).
OUTPUT_PARAMETERS = ("publish_depth", "publish_points", "publish_flow", "publish_colored", "publish_tf",
                     "camera_frame", "map_rate")
DEFAULT_MAP_RATE_HZ = 1.0
STORAGES = ("sqlite3", "mcap")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``geovis process-bag``."""
    parser.add_argument("input", type=Path, help="ROS 2 bag folder (sqlite3/mcap) or ROS 1 .bag with images")
    parser.add_argument("output", type=Path, help="output bag folder (must not exist)")
    parser.add_argument("--config", type=Path, help="parameter file (config/geovis.yaml layout or flat YAML)")
    parser.add_argument("--storage", choices=STORAGES, default="sqlite3", help="output bag storage (default sqlite3)")
    parser.add_argument("--max-frames", type=int, default=None, help="process at most this many frames")
    parser.add_argument("--image-topic", default=None, help="image topic (default: the first colour image topic)")
    parser.add_argument("--namespace", default="/geovis", help="namespace of the output topics (default /geovis)")


def load_parameters(path: Path | None) -> dict[str, Any]:
    """Parameter values from a ROS parameter file (``/**`` then ``pipeline_node`` sections) or a flat mapping.

    Raises CommandError when the file cannot be read or has neither layout.
    """
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CommandError(f"--config {path}: {err}") from None
    if not isinstance(data, dict):
        raise CommandError(f"--config {path}: expected a mapping of parameter names, got {type(data).__name__}")
    sections = [value["ros__parameters"] for key, value in data.items()
                if isinstance(value, dict) and "ros__parameters" in value
                and str(key).strip("/").split("/")[-1] in ("**", "pipeline_node")]
    if any(isinstance(value, dict) and "ros__parameters" in value for value in data.values()):
        merged: dict[str, Any] = {}
        for section in sections:
            merged.update(section or {})
        return merged
    return data


def pipeline_stages(values: dict[str, Any]) -> tuple[str, ...]:
    """Stages to run: all, without flow when it is not published."""
    return tuple(s for s in STAGES if s != "flow" or values.get("publish_flow", True))


class BagOutput:
    """Writes pipeline results as ROS 2 messages into an open rosbags Writer (topic connections on first use)."""

    def __init__(self, writer: Writer, namespace: str, odom_frame: str, switches: dict[str, bool]) -> None:
        from geovis_ros.data.bag import jazzy_typestore

        self.typestore = jazzy_typestore()
        self.types = self.typestore.types
        self.writer = writer
        self.namespace = namespace.rstrip("/")
        self.odom_frame = odom_frame
        self.switches = switches
        self._connections: dict[str, Any] = {}
        self.messages_written = 0

    # -- message building -----------------------------------------------------------------
    def header(self, stamp_ns: int, frame_id: str) -> Any:
        """std_msgs/Header."""
        seconds, nanoseconds = divmod(int(stamp_ns), 1_000_000_000)
        return self.types["std_msgs/msg/Header"](
            stamp=self.types["builtin_interfaces/msg/Time"](sec=seconds, nanosec=nanoseconds), frame_id=frame_id)

    def image(self, header: Any, pixels: NDArray[Any], encoding: str) -> Any:
        """sensor_msgs/Image of (H, W[, C]) pixels, little endian, no row padding."""
        data = np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)
        height, width = pixels.shape[:2]
        return self.types["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding=encoding,
                                                   is_bigendian=0, step=data.size // height, data=data)

    def camera_info(self, header: Any, k: Intrinsics) -> Any:
        """sensor_msgs/CameraInfo of pinhole intrinsics (plumb_bob, no distortion)."""
        projection = np.zeros((3, 4))
        projection[:, :3] = k.matrix
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                             do_rectify=False)
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=header, height=k.height, width=k.width, distortion_model="plumb_bob", d=np.zeros(5),
            k=k.matrix.reshape(-1), r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0,
            roi=roi)

    def pointcloud(self, header: Any, cloud: PointCloud) -> Any:
        """sensor_msgs/PointCloud2 with float32 x, y, z and packed 0x00RRGGBB rgb (16 bytes per point)."""
        layout = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                           "offsets": [0, 4, 8, 12]})
        points = np.empty(len(cloud.xyz), layout)
        for axis, name in enumerate("xyz"):
            points[name] = cloud.xyz[:, axis]
        rgb = cloud.rgb.astype(np.uint32)
        points["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        field = self.types["sensor_msgs/msg/PointField"]
        fields = [field(name=name, offset=offset, datatype=7, count=1)  # 7 = FLOAT32 (rgb: packed bits)
                  for name, offset in (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))]
        return self.types["sensor_msgs/msg/PointCloud2"](
            header=header, height=1, width=len(points), fields=fields, is_bigendian=False, point_step=16,
            row_step=16 * len(points), data=points.view(np.uint8).reshape(-1),
            is_dense=bool(np.isfinite(cloud.xyz).all()))

    def pose(self, matrix: NDArray[np.float64]) -> Any:
        """geometry_msgs/Pose of a 4x4 pose."""
        t = self.types
        x, y, z = (float(v) for v in matrix[:3, 3])
        qx, qy, qz, qw = (float(v) for v in quaternion_from_matrix(matrix[:3, :3]))
        return t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                           orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))

    def vector(self, values: NDArray[np.float64]) -> Any:
        """geometry_msgs/Vector3."""
        return self.types["geometry_msgs/msg/Vector3"](x=float(values[0]), y=float(values[1]), z=float(values[2]))

    # -- writing ------------------------------------------------------------------------------
    def write(self, topic: str, msgtype: str, stamp_ns: int, msg: Any) -> None:
        """Serialize ``msg`` (CDR) on ``topic`` (relative names go into the namespace)."""
        name = topic if topic.startswith("/") else f"{self.namespace}/{topic}"
        if name not in self._connections:
            self._connections[name] = self.writer.add_connection(name, msgtype, typestore=self.typestore)
        self.writer.write(self._connections[name], int(stamp_ns), self.typestore.serialize_cdr(msg, msgtype))
        self.messages_written += 1

    def write_result(self, result: PipelineResult) -> None:
        """Every per-frame topic of one result that its switch allows."""
        frame, on = result.frame, self.switches
        stamp = frame.stamp_ns
        header = self.header(stamp, frame.frame_id)
        image_type = "sensor_msgs/msg/Image"
        if result.depth is not None:
            if on["publish_depth"]:
                self.write("depth", image_type, stamp, self.image(header, result.depth.depth, "32FC1"))
                self.write("depth/uncertainty", image_type, stamp, self.image(header, result.depth.std, "32FC1"))
                self.write("depth/camera_info", "sensor_msgs/msg/CameraInfo", stamp,
                           self.camera_info(header, frame.intrinsics))
            if on["publish_colored"]:
                self.write("depth/colored", image_type, stamp,
                           self.image(header, colored_depth(result.depth.depth), "rgb8"))
        if result.points is not None and on["publish_points"]:
            self.write("points", "sensor_msgs/msg/PointCloud2", stamp, self.pointcloud(header, result.points))
        if result.flow is not None and on["publish_flow"]:
            self.write("flow", image_type, stamp, self.image(header, result.flow.flow, "32FC2"))
            if on["publish_colored"]:
                self.write("flow/colored", image_type, stamp, self.image(header, flow_to_color(result.flow.flow),
                                                                          "rgb8"))
        if result.odometry is not None:
            self._write_odometry(result, header)

    def _write_odometry(self, result: PipelineResult, header: Any) -> None:
        t, odometry, stamp = self.types, result.odometry, result.frame.stamp_ns
        assert odometry is not None
        odom_header = self.header(stamp, self.odom_frame)
        msg = t["nav_msgs/msg/Odometry"](
            header=odom_header, child_frame_id=header.frame_id,
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=self.pose(odometry.pose),
                                                           covariance=odometry.covariance.reshape(-1).copy()),
            twist=t["geometry_msgs/msg/TwistWithCovariance"](
                twist=t["geometry_msgs/msg/Twist"](linear=self.vector(odometry.velocity[:3]),
                                                   angular=self.vector(odometry.velocity[3:])),
                covariance=np.zeros(36)))
        self.write("odom", "nav_msgs/msg/Odometry", stamp, msg)
        if self.switches["publish_tf"]:
            transform = t["geometry_msgs/msg/Transform"](translation=self.vector(odometry.pose[:3, 3]),
                                                         rotation=self.pose(odometry.pose).orientation)
            stamped = t["geometry_msgs/msg/TransformStamped"](header=odom_header, child_frame_id=header.frame_id,
                                                              transform=transform)
            self.write("/tf", "tf2_msgs/msg/TFMessage", stamp, t["tf2_msgs/msg/TFMessage"](transforms=[stamped]))

    def write_path(self, stamps_ns: list[int], poses: list[NDArray[np.float64]]) -> None:
        """nav_msgs/Path of the whole trajectory, stamped with its last pose."""
        if not stamps_ns:
            return
        t = self.types
        stamped = [t["geometry_msgs/msg/PoseStamped"](header=self.header(s, self.odom_frame), pose=self.pose(p))
                   for s, p in zip(stamps_ns, poses, strict=True)]
        self.write("path", "nav_msgs/msg/Path", stamps_ns[-1],
                   t["nav_msgs/msg/Path"](header=self.header(stamps_ns[-1], self.odom_frame), poses=stamped))

    def write_map(self, stamp_ns: int, cloud: PointCloud, keyframe_poses: dict[int, NDArray[np.float64]],
                  intrinsics: Intrinsics) -> None:
        """The map cloud and the keyframe frustums (one LINE_LIST marker)."""
        t = self.types
        header = self.header(stamp_ns, self.odom_frame)
        self.write("map", "sensor_msgs/msg/PointCloud2", stamp_ns, self.pointcloud(header, cloud))
        lines = frustum_lines(np.array([keyframe_poses[k] for k in sorted(keyframe_poses)]), intrinsics)
        marker = t["visualization_msgs/msg/Marker"](
            header=header, ns="keyframes", id=0, type=5, action=0,  # LINE_LIST, ADD
            pose=self.pose(np.eye(4)), scale=self.vector(np.array([0.01, 0.0, 0.0])),
            color=t["std_msgs/msg/ColorRGBA"](r=1.0, g=0.6, b=0.0, a=1.0),
            lifetime=t["builtin_interfaces/msg/Duration"](sec=0, nanosec=0), frame_locked=False,
            points=[t["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z)) for x, y, z in lines],
            colors=[], texture_resource="",
            texture=t["sensor_msgs/msg/CompressedImage"](header=header, format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text="", mesh_resource="",
            mesh_file=t["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False)
        self.write("keyframes", "visualization_msgs/msg/MarkerArray", stamp_ns,
                   t["visualization_msgs/msg/MarkerArray"](markers=[marker]))


def run(args: argparse.Namespace) -> int:
    """Process the bag, write OUT with the outputs and the report."""
    from geovis_ros.data.bag import BagSequence
    from geovis_ros.data.image_io import DatasetError

    if args.max_frames is not None and args.max_frames < 1:
        raise CommandError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.output.exists():
        raise CommandError(f"{args.output} already exists; the output bag is written to a new folder")
    values = load_parameters(args.config)
    ignored = sorted(set(values) - set(PIPELINE_PARAMETERS) - set(OUTPUT_PARAMETERS))
    if ignored:
        print(f"geovis process-bag: ignoring node-only or unknown parameters: {', '.join(ignored)}", file=sys.stderr)
    try:
        config = pipeline_config_from_parameters(values, pipeline_stages(values))
    except ValueError as err:
        raise CommandError(f"--config: {err}") from None
    try:
        sequence = BagSequence(args.input, image_topic=args.image_topic)
    except (DatasetError, ImportError) as err:
        raise CommandError(str(err)) from None
    total = len(sequence) if args.max_frames is None else min(len(sequence), args.max_frames)
    switches = {name: bool(values.get(name, True)) for name in OUTPUT_PARAMETERS if name.startswith("publish_")}
    map_period_ns = round(1e9 / float(values.get("map_rate", DEFAULT_MAP_RATE_HZ)))
    camera_frame = str(values.get("camera_frame", "")) or "camera"
    pipeline = Pipeline(config)
    print(f"geovis process-bag: {args.input} ({sequence.image_topic}, {total} frames) -> {args.output} "
          f"[stages: {', '.join(config.stages)}]")
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.SQLITE3 if args.storage == "sqlite3" else StoragePlugin.MCAP
    run_state = _RunState()
    started = time.perf_counter()
    try:
        with Writer(args.output, version=9, storage_plugin=plugin) as writer:
            output = BagOutput(writer, args.namespace, config.odom_frame, switches)
            with _progress(total) as advance:
                for index, item in enumerate(sequence):
                    if index >= total:
                        break
                    run_state.process(pipeline, output, item, camera_frame, map_period_ns)
                    advance()
            run_state.finish(pipeline, output)
    except DatasetError as err:
        raise CommandError(str(err)) from None
    metrics, evaluation = run_state.metrics(pipeline)
    metrics["elapsed_s"] = time.perf_counter() - started
    metrics["messages_written"] = output.messages_written
    details = [f"Input `{args.input}` ({sequence.image_topic}), output bag `{args.output}` ({args.storage}), "
               f"stages {', '.join(config.stages)}, backend {metrics['backend']}.",
               "ATE: SE(3) alignment, no scale correction (n/a without ground-truth odometry in the bag). "
               "Latency: pipeline time per frame; the first 2 frames (engine build) are left out."]
    write_run_outputs(args.output, "geovis process-bag", metrics, details, evaluation, run_state.depth_example,
                      pipeline.map_cloud() if config.mapping else None)
    print(f"geovis process-bag: {metrics['frames_out']} frames, {format_number(metrics['fps'], ' frames/s', 2)}, "
          f"ATE {format_number(metrics['ate_rmse_m'], ' m')}, depth AbsRel {format_number(metrics['depth_absrel'])}; "
          f"report in {args.output / 'report.md'}")
    return 0


class _RunState:
    """What process-bag remembers across frames: skipped stamps, trajectory, scores, last map write."""

    def __init__(self) -> None:
        self.last_stamp_ns: int | None = None
        self.skipped = 0
        self.gt_stamps: list[int] = []
        self.gt_poses: list[NDArray[np.float64]] = []
        self.est_stamps: list[int] = []
        self.est_poses: list[NDArray[np.float64]] = []
        self.latencies_ms: list[float] = []
        self.done_s: list[float] = []
        self.stage_ms: dict[str, list[float]] = {}
        self.depth = DepthMetricsAccumulator()
        self.depth_example: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
        self.map_written: tuple[int, int] = (0, -(2**62))  # (map version, stamp) of the last map written
        self.intrinsics: Intrinsics | None = None

    def process(self, pipeline: Pipeline, output: BagOutput, item: Any, camera_frame: str, map_period_ns: int
                ) -> None:
        """Run one bag frame through the pipeline and write its outputs (stamps must increase)."""
        if self.last_stamp_ns is not None and item.stamp_ns <= self.last_stamp_ns:
            self.skipped += 1
            return
        self.last_stamp_ns = item.stamp_ns
        self.intrinsics = item.intrinsics
        result = pipeline(Frame(item.stamp_ns, item.rgb, item.intrinsics, camera_frame))
        self.done_s.append(time.perf_counter())
        self.latencies_ms.append(result.timings_ms["total"])
        for stage, ms in result.timings_ms.items():
            self.stage_ms.setdefault(stage, []).append(ms)
        output.write_result(result)
        if item.pose is not None:
            self.gt_stamps.append(item.stamp_ns)
            self.gt_poses.append(item.pose)
        if result.odometry is not None:
            self.est_stamps.append(item.stamp_ns)
            self.est_poses.append(result.odometry.pose)
        if item.depth is not None and result.depth is not None:
            self.depth.add(item.depth, result.depth.depth)
            if self.depth_example is None or len(self.depth.per_image) == 10:
                self.depth_example = (item.depth, result.depth.depth)
        version, stamp = self.map_written
        if pipeline.config.mapping and pipeline.map_version != version and item.stamp_ns - stamp >= map_period_ns:
            self._write_map(pipeline, output, item.stamp_ns)

    def _write_map(self, pipeline: Pipeline, output: BagOutput, stamp_ns: int) -> None:
        assert self.intrinsics is not None
        output.write_map(stamp_ns, pipeline.map_cloud(), pipeline.keyframe_poses(), self.intrinsics)
        self.map_written = (pipeline.map_version, stamp_ns)

    def finish(self, pipeline: Pipeline, output: BagOutput) -> None:
        """Map the last keyframe, write the final map and the path."""
        pipeline.finish()
        if pipeline.config.mapping and self.last_stamp_ns is not None:
            self._write_map(pipeline, output, self.last_stamp_ns)
        output.write_path(self.est_stamps, self.est_poses)

    def metrics(self, pipeline: Pipeline) -> tuple[dict[str, Any], Any]:
        """metrics.json of the run and the trajectory evaluation (None without ground truth)."""
        trajectory, evaluation = trajectory_metrics(self.gt_stamps, self.gt_poses, self.est_stamps, self.est_poses)
        depth = self.depth.result()
        description = pipeline.describe()
        metrics: dict[str, Any] = {
            "frames_in": len(self.done_s) + self.skipped,
            "frames_out": len(self.done_s),
            "skipped_frames": self.skipped,
            **trajectory,
            "depth_absrel": depth["abs_rel"],
            "depth_a1": depth["a1"],
            "depth_frames": int(depth["n_images"]),
            **timing_metrics(self.latencies_ms, self.done_s),
            **{f"{stage}_ms_mean": float(np.mean(ms[2:])) if len(ms) > 2 else math.nan
               for stage, ms in self.stage_ms.items()},
            "backend": f"{description.get('depth_backend', 'none')}-{description.get('depth_device', 'none')}",
            "keyframes": int(description.get("keyframes", 0)),
            "map_points": int(description.get("map_points", 0)),
        }
        return metrics, evaluation


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A tqdm progress bar (shown on a terminal only); yields ``advance()``."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", disable=None, file=sys.stderr)

    def advance() -> None:
        bar.update(1)

    try:
        yield advance
    finally:
        bar.close()
