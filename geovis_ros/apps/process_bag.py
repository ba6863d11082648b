"""``geovis process-bag IN OUT``: the whole pipeline over a recorded bag, without ROS installed.

Reads the images (and camera_info, ground-truth odometry, depth when present) of IN with rosbags,
runs :class:`~geovis_ros.pipeline.pipeline.Pipeline` on every frame in order, and writes a ROS 2
bag OUT (sqlite3 or mcap) holding the topics pipeline_node would publish, stamped with the input
stamps: ``<ns>/depth/image``, ``depth/camera_info``, ``depth/uncertainty``, ``depth/colored``,
``points``, ``flow/image``, ``flow/colored``, ``odom``, ``/tf`` (odom -> camera), ``map`` and
``keyframes`` (whenever the map changed, at most ``map_rate`` Hz of bag time, and at the end) and
``path`` (at the end). ``report.md`` and ``metrics.json`` (scores against the bag's ground truth,
timing) go into OUT next to the bag files, with ``trajectory.png``, ``depth.png`` and ``map.ply``.

``--config`` takes the nodes' parameter file (``config/geovis.yaml``: ``/**`` and
``pipeline_node`` sections are merged) or a flat YAML mapping of the same parameter names.

Hostile or broken inputs end in one line on stderr and exit status 2, never a traceback: an
unreadable bag or model file, a pipeline that fails on a frame. Bad messages (lying CDR lengths,
undecodable or wrongly sized images) are skipped and counted; the summary line says how many.
OUT appears only complete: everything is written into a hidden temporary folder beside it and
renamed to OUT at the end, and removed on failure, so a failed run never blocks a rerun.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geovis_ros.apps.run_report import format_number, timing_metrics, trajectory_metrics, write_run_outputs
from geovis_ros.data.bag import STORAGES, BagSequence, BagWriter, open_bag_writer
from geovis_ros.data.image_io import DatasetError
from geovis_ros.errors import CommandError, GeovisError
from geovis_ros.eval.metrics_depth import DepthMetricsAccumulator
from geovis_ros.frame import Frame, PipelineResult, PointCloud
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.pipeline.pipeline import (
    PIPELINE_PARAMETERS,
    STAGES,
    Pipeline,
    pipeline_config_from_parameters,
)
from geovis_ros.ros.messages import TF_MESSAGE
from geovis_ros.ros.poses import path_from_matrices
from geovis_ros.ros.results import OUTPUT_GROUPS, frame_messages, map_messages, output_topics
from geovis_ros.ros.stamps import header_from_ns

# Parameters process-bag reads besides the pipeline's own (PIPELINE_PARAMETERS).
OUTPUT_PARAMETERS = ("publish_depth", "publish_points", "publish_flow", "publish_colored", "publish_tf",
                     "camera_frame", "map_rate")
DEFAULT_MAP_RATE_HZ = 1.0


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
    """Writes pipeline results into an open bag: the messages pipeline_node publishes, by the same mapping.

    Relative topic names go into ``namespace``; the odometry transform goes to ``/tf`` as a
    TFMessage when ``switches["publish_tf"]`` is on.
    """

    def __init__(self, bag: BagWriter, namespace: str, odom_frame: str, switches: dict[str, bool]) -> None:
        self.bag = bag
        self.factory = bag.factory
        self.namespace = namespace.rstrip("/")
        self.odom_frame = odom_frame
        self.topics = output_topics(OUTPUT_GROUPS, switches) + (["tf"] if switches["publish_tf"] else [])

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Write ``msg`` on ``topic`` (relative names go into the namespace), stamped ``stamp_ns``."""
        self.bag.write(topic if topic.startswith("/") else f"{self.namespace}/{topic}", stamp_ns, msg)

    def write_result(self, result: PipelineResult) -> None:
        """Every per-frame message of one result that its switch allows."""
        stamp = result.frame.stamp_ns
        header = header_from_ns(stamp, result.frame.frame_id, self.factory)
        messages = frame_messages(result, header, self.odom_frame, self.topics, factory=self.factory)
        transform = messages.pop("tf", None)
        for topic, msg in messages.items():
            self.write(topic, stamp, msg)
        if transform is not None:
            self.write("/tf", stamp, self.factory.new(TF_MESSAGE, transforms=[transform]))

    def write_path(self, stamps_ns: list[int], poses: list[NDArray[np.float64]]) -> None:
        """nav_msgs/Path of the whole trajectory, stamped with its last pose."""
        if not stamps_ns:
            return
        header = header_from_ns(stamps_ns[-1], self.odom_frame, self.factory)
        self.write("path", stamps_ns[-1], path_from_matrices(np.array(poses), stamps_ns, header, self.factory))

    def write_map(self, stamp_ns: int, cloud: PointCloud, keyframe_poses: dict[int, NDArray[np.float64]],
                  intrinsics: Intrinsics) -> None:
        """The map cloud and the keyframe frustums (one LINE_LIST marker)."""
        header = header_from_ns(stamp_ns, self.odom_frame, self.factory)
        for topic, msg in map_messages(cloud, keyframe_poses, intrinsics, header, self.factory).items():
            self.write(topic, stamp_ns, msg)


def run(args: argparse.Namespace) -> int:
    """Process the bag, write OUT with the outputs and the report (see the module docstring)."""
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
    try:
        pipeline = Pipeline(config)
    except (GeovisError, OSError) as err:
        raise CommandError(f"cannot start the pipeline: {err}") from None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{args.output.name}.", suffix=".partial", dir=args.output.parent))
    except OSError as err:
        raise CommandError(f"cannot write next to {args.output}: {err}") from None
    try:
        summary = _process(args, values, sequence, pipeline, staging / args.output.name)
        if args.output.exists():
            raise CommandError(f"{args.output} appeared while processing; not replacing it")
        try:
            (staging / args.output.name).rename(args.output)
        except OSError as err:
            raise CommandError(f"cannot move the finished output to {args.output}: {err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # empty after a successful rename
    print(f"geovis process-bag: {summary}; report in {args.output / 'report.md'}")
    return 0


def _process(args: argparse.Namespace, values: dict[str, Any], sequence: BagSequence, pipeline: Pipeline,
             output_path: Path) -> str:
    """Run the pipeline over ``sequence`` into the bag folder ``output_path`` with its report; returns the summary."""
    config = pipeline.config
    total = len(sequence) if args.max_frames is None else min(len(sequence), args.max_frames)
    switches = {name: bool(values.get(name, True)) for name in OUTPUT_PARAMETERS if name.startswith("publish_")}
    map_period_ns = round(1e9 / float(values.get("map_rate", DEFAULT_MAP_RATE_HZ)))
    camera_frame = str(values.get("camera_frame", "")) or "camera"
    print(f"geovis process-bag: {args.input} ({sequence.image_topic}, {total} frames) -> {args.output} "
          f"[stages: {', '.join(config.stages)}]")
    run_state = _RunState()
    started = time.perf_counter()
    try:
        with open_bag_writer(output_path, args.storage) as bag:
            output = BagOutput(bag, args.namespace, config.odom_frame, switches)
            with _progress(total) as advance:
                for index, item in enumerate(sequence):
                    if index >= total:
                        break
                    try:
                        run_state.process(pipeline, output, item, camera_frame, map_period_ns)
                    except GeovisError as err:
                        raise CommandError(f"frame {item.name} (stamp {item.stamp_ns} ns): {err}") from None
                    advance()
            run_state.finish(pipeline, output)
    except DatasetError as err:
        raise CommandError(str(err)) from None
    metrics, evaluation = run_state.metrics(pipeline)
    metrics["elapsed_s"] = time.perf_counter() - started
    metrics["messages_written"] = bag.messages_written
    metrics["bad_messages_skipped"] = sequence.skipped.total
    details = [f"Input `{args.input}` ({sequence.image_topic}), output bag `{args.output}` ({args.storage}), "
               f"stages {', '.join(config.stages)}, backend {metrics['backend']}.",
               "ATE: SE(3) alignment, no scale correction (n/a without ground-truth odometry in the bag). "
               "Latency: pipeline time per frame; the first 2 frames (engine build) are left out.",
               f"Input messages: {sequence.skipped.summary()}."]
    write_run_outputs(output_path, "geovis process-bag", metrics, details, evaluation, run_state.depth_example,
                      pipeline.map_cloud() if config.mapping else None)
    return (f"{metrics['frames_out']} frames, {format_number(metrics['fps'], ' frames/s', 2)}, "
            f"ATE {format_number(metrics['ate_rmse_m'], ' m')}, depth AbsRel {format_number(metrics['depth_absrel'])}; "
            f"{sequence.skipped.summary()}")


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
        result = pipeline(Frame(item.stamp_ns, item.rgb, item.intrinsics, camera_frame),
                          points="points" in output.topics)
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
