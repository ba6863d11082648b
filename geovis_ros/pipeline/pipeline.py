"""All stages in one process, ROS-free: ``Pipeline(config)(frame) -> PipelineResult``.

Per frame: depth network | flow network -> (optionally) pose network -> odometry (tracking +
keyframe depth fusion) -> the frame's best depth (network depth corrected by the fused keyframe
depth, in the odometry's metric scale: ``PipelineResult.depth``; the network's own output stays in
``network_depth``) -> per-frame point cloud (camera frame) -> global map (keyframe clouds in a bounded voxel map,
loop closure on the keyframe pose graph). Every stage can be switched off; the networks share
one :class:`~geovis_ros.inference.engine.EngineConfig` (one backend, device and engine cache).
The nodes, ``geovis process-bag`` and the demo all run this class.

The depth network and the flow network (then the pose network) are independent: they may run at
the same time (``network_overlap``), flow and pose on a worker thread while depth runs on the
caller's (ONNX Runtime, torch and OpenCV release the GIL while they compute), and the frame's
odometry starts once both are done; the results are those of running them one after the other.
``auto`` overlaps them where one runs on a GPU and the others on the CPU. On the CPU alone it buys
nothing measurable when each engine already uses every core (2 cores, ONNX Runtime and OpenCV DIS:
per-frame time within 5 % either way, alternating frames in one process), so ``auto`` runs them in
turn there and ``on`` overlaps them anyway. Two CUDA stages share one stream, which orders their
work: they never overlap.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geovis_ros.frame import FlowResult, Frame, PipelineResult, PointCloud
from geovis_ros.geometry.camera import Intrinsics, transform_points
from geovis_ros.geometry.se3 import invert
from geovis_ros.inference.engine import EngineConfig, default_engine_cache_dir
from geovis_ros.pipeline.keyframe_feed import KeyframeFeed
from geovis_ros.pipeline.networks import DepthStage, FlowStage, NetworkConfig, PoseStage
from geovis_ros.slam.backend.mapping import CloudConfig, depth_to_cloud
from geovis_ros.slam.backend.slam_backend import BackendConfig, SlamBackend
from geovis_ros.slam.frontend.config import MOTION_PRIORS, OdometryConfig, ScaleConfig
from geovis_ros.slam.frontend.odometry import OdometryStage

STAGES: tuple[str, ...] = ("depth", "flow", "odometry", "mapping")
NETWORK_OVERLAPS: tuple[str, ...] = ("auto", "on", "off")
"""Values of :attr:`PipelineConfig.network_overlap`."""
# Node parameters (geovis_ros.nodes.params) that pipeline_config_from_parameters reads.
PIPELINE_PARAMETERS: tuple[str, ...] = (
    "backend", "device", "precision", "engine_cache_dir", "model_depth", "model_flow", "model_pose",
    "model_depth_card", "model_flow_card", "flow_refinement", "input_width",
    "input_height", "odometry_method", "motion_prior", "odom_frame", "map_voxel_size", "map_max_points",
    "points_stride", "points_confidence", "camera_height",
)
EMPTY_CLOUD_WARNING_S = 10.0
"""Throttle of the warning that the per-frame cloud's confidence threshold removed every point, seconds."""
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline runs and how.

    Attributes:
        depth, flow, odometry, mapping: stage switches. Odometry needs depth; mapping needs odometry.
        depth_network, flow_network, pose_network: backend, weights and input width of each network.
        pose_prior: odometry's initial guess for each frame comes from the pose network (run on the
            previous and the current frame) instead of the constant-velocity model. Off by default:
            it costs one more inference per frame, and the direct tracker converges from either
            guess on smooth motion (see the model card's PoseNet section).
        max_network_height: network inputs are at most this many pixels tall (the input width
            shrinks to keep the image's aspect ratio); 0 lets the width alone decide. Images
            smaller than the network input are not enlarged.
        odometry_config: tracking, keyframe fusion, scale and baseline settings.
        mapping_config: keyframe map (voxel size, point bound), loop closure, pose graph.
        cloud: which depth pixels become the per-frame point cloud (stride, confidence, range);
            the confidence threshold is relative to the depth source by default (pixels at most 1.5x
            the image's median relative std, or within 10 %).
        odom_frame: frame name of the odometry, the map and the keyframe poses.
        network_overlap: when the flow (and pose) network runs on a worker thread while the depth
            network runs (same results): ``auto`` where exactly one of them runs on CUDA and the
            others on the CPU, ``on`` also when all run on the CPU, ``off`` never (see the module
            docstring for what it buys).

    """

    depth: bool = True
    flow: bool = True
    odometry: bool = True
    mapping: bool = True
    depth_network: NetworkConfig = field(default_factory=NetworkConfig)
    flow_network: NetworkConfig = field(default_factory=NetworkConfig)
    pose_network: NetworkConfig = field(default_factory=NetworkConfig)
    pose_prior: bool = False
    max_network_height: int = 0
    odometry_config: OdometryConfig = field(default_factory=OdometryConfig)
    mapping_config: BackendConfig = field(default_factory=BackendConfig)
    cloud: CloudConfig = field(default_factory=lambda: CloudConfig(stride=2, std_over_median=1.5))
    odom_frame: str = "odom"
    network_overlap: str = "auto"

    def __post_init__(self) -> None:
        if self.odometry and not self.depth:
            raise ValueError("PipelineConfig: the odometry stage needs the depth stage (depth=True)")
        if self.pose_prior and not self.odometry:
            raise ValueError("PipelineConfig: the pose prior is for the odometry stage (odometry=True)")
        if self.mapping and not self.odometry:
            raise ValueError("PipelineConfig: the mapping stage needs the odometry stage (odometry=True)")
        if self.max_network_height < 0:
            raise ValueError(f"PipelineConfig.max_network_height must be >= 0, got {self.max_network_height}")
        if not self.odom_frame:
            raise ValueError("PipelineConfig.odom_frame must not be empty")
        if self.network_overlap not in NETWORK_OVERLAPS:
            raise ValueError(f"PipelineConfig.network_overlap must be one of {', '.join(NETWORK_OVERLAPS)}, "
                             f"got {self.network_overlap!r}")

    @property
    def stages(self) -> tuple[str, ...]:
        """Names of the stages that are on, in execution order."""
        return tuple(name for name in STAGES if getattr(self, name))


def network_input_width(image_width: int, image_height: int, max_width: int, max_height: int) -> int:
    """Network input width (pixels): the widest of the image's aspect ratio within ``max_width`` x ``max_height``.

    Images are never enlarged (the result is at most ``image_width``); ``max_height`` 0 leaves the
    height unbounded.
    """
    width = min(max_width, image_width)
    if max_height > 0:
        width = min(width, round(max_height * image_width / image_height))
    return max(1, width)


def pipeline_config_from_parameters(values: Mapping[str, Any], stages: tuple[str, ...] = STAGES) -> PipelineConfig:
    """The PipelineConfig that node parameters ``values`` (names of geovis_ros.nodes.params) describe.

    Args:
        values: parameter name -> value; missing names keep the dataclass defaults. Read:
            :data:`PIPELINE_PARAMETERS`; the others (publishing, QoS, mode) are the node's business.
        stages: the stages to run (a subset of :data:`STAGES`).

    Raises:
        ValueError: an unknown stage, or a value the configs refuse (the message names it).

    """
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown pipeline stage(s) {sorted(unknown)}; expected some of {STAGES}")
    engine_defaults = EngineConfig()
    cache_dir = values.get("engine_cache_dir", "")
    engine = EngineConfig(
        backend=values.get("backend", engine_defaults.backend),
        device=values.get("device", engine_defaults.device),
        precision=values.get("precision", engine_defaults.precision),
        engine_cache_dir=Path(cache_dir).expanduser() if cache_dir else default_engine_cache_dir(),
    )
    width = int(values.get("input_width", NetworkConfig().input_width))
    defaults = PipelineConfig()
    motion_prior = values.get("motion_prior", MOTION_PRIORS[0])
    if motion_prior not in MOTION_PRIORS:
        raise ValueError(f"motion_prior must be one of {', '.join(MOTION_PRIORS)}, got {motion_prior!r}")
    voxel_map = defaults.mapping_config.map.map
    voxel_size = float(values.get("map_voxel_size", voxel_map.voxel_size_m))
    voxel_map = replace(voxel_map, voxel_size_m=voxel_size,
                        max_points=int(values.get("map_max_points", voxel_map.max_points)))
    keyframe_map = replace(defaults.mapping_config.map, map=voxel_map, keyframe_voxel_size_m=voxel_size)
    return PipelineConfig(
        depth="depth" in stages,
        flow="flow" in stages,
        odometry="odometry" in stages,
        mapping="mapping" in stages,
        depth_network=NetworkConfig(engine=engine, input_width=width, model_path=values.get("model_depth", ""),
                                    card=values.get("model_depth_card", "")),
        flow_network=NetworkConfig(engine=engine, input_width=width, model_path=values.get("model_flow", ""),
                                   card=values.get("model_flow_card", ""),
                                   flow_refinement=values.get("flow_refinement", NetworkConfig().flow_refinement)),
        pose_network=NetworkConfig(engine=engine, input_width=width, model_path=values.get("model_pose", "")),
        pose_prior="odometry" in stages and motion_prior == "pose_network",
        max_network_height=int(values.get("input_height", defaults.max_network_height)),
        odometry_config=OdometryConfig(
            method=values.get("odometry_method", defaults.odometry_config.method),
            scale=ScaleConfig(camera_height=float(values.get("camera_height", ScaleConfig().camera_height))),
        ),
        mapping_config=replace(defaults.mapping_config, map=keyframe_map),
        cloud=replace(defaults.cloud, stride=int(values.get("points_stride", defaults.cloud.stride)),
                      std_over_median=float(values.get("points_confidence", defaults.cloud.std_over_median))),
        odom_frame=values.get("odom_frame", defaults.odom_frame) or defaults.odom_frame,
    )


class Pipeline:
    """Depth, flow, odometry, per-frame cloud and map of a frame stream, in one call per frame.

    Not thread-safe: one caller (the node's worker thread, or an offline loop) drives it. When the
    networks overlap it owns one worker thread for the flow and pose networks (every call waits for
    it, so no network runs between calls).
    """

    def __init__(self, config: PipelineConfig = PipelineConfig()) -> None:
        self.config = config
        self.depth_stage = DepthStage(config.depth_network) if config.depth else None
        self.flow_stage = FlowStage(config.flow_network) if config.flow else None
        self.pose_stage = PoseStage(config.pose_network) if config.pose_prior else None
        self.odometry_stage = OdometryStage(config.odometry_config) if config.odometry else None
        self.backend = SlamBackend(config.mapping_config) if config.mapping else None
        self._keyframe_feed = (KeyframeFeed(self.odometry_stage, self.backend)
                               if self.backend is not None and self.odometry_stage is not None else None)
        self.map_version = 0
        self.frames = 0
        self._image_size: tuple[int, int] | None = None
        self._last_result: PipelineResult | None = None
        self.empty_clouds = 0
        self._last_empty_warning = -math.inf
        # Whether the flow/pose networks run beside the depth network: decided once the first frames
        # have created their engines (None: not yet).
        self._concurrent: bool | None = None
        self._worker: ThreadPoolExecutor | None = None

    # -- streaming -----------------------------------------------------------------------
    def __call__(self, frame: Frame, points: bool = True) -> PipelineResult:
        """Run every enabled stage on ``frame``; ``timings_ms`` holds each stage's wall time.

        ``points``: compute the per-frame point cloud (``result.points``); a caller that will not
        publish or write it passes False and saves its time (the map does not use it).

        ``timings_ms`` (milliseconds): ``depth``, ``flow`` and ``pose`` are each network stage's own
        wall time, measured on the thread that ran it; when they run concurrently they overlap, and
        ``networks`` (present whenever depth and flow or pose run) is the wall time until all of them
        are done. ``odometry``, ``fused_depth``, ``points`` and ``mapping`` follow one after the
        other; ``total`` is the whole call.
        """
        start = time.perf_counter()
        self._fit_networks(frame)
        result = PipelineResult(frame=frame)
        timings = result.timings_ms
        pose_prior = self._run_networks(frame, result)
        clock = time.perf_counter()
        if "flow" in timings or "pose" in timings:
            timings["networks"] = (clock - start) * 1000.0
        if self.odometry_stage is not None and result.depth is not None:
            result.network_depth = result.depth
            result.odometry = self.odometry_stage(frame, result.depth, result.flow, pose_prior)
            clock = _lap(timings, "odometry", clock)
            result.depth = self.odometry_stage.frame_depth(result.depth)
            clock = _lap(timings, "fused_depth", clock)
        if points and result.depth is not None:
            result.points = depth_to_cloud(result.depth.depth, result.depth.std, frame.image, frame.intrinsics,
                                           self.config.cloud, frame.frame_id)
            self._check_cloud(result.points)
            clock = _lap(timings, "points", clock)
        if self.backend is not None:
            self._update_map()
            clock = _lap(timings, "mapping", clock)
        timings["total"] = (clock - start) * 1000.0
        self.frames += 1
        self._last_result = result
        return result

    def _run_networks(self, frame: Frame, result: PipelineResult) -> NDArray[np.float64] | None:
        """Fill ``result.depth``, ``result.flow`` and their timings; returns the pose network's prior (or None).

        Flow and pose run on the worker thread while depth runs here when :meth:`_overlap` allows it
        (then this waits for the worker also when the depth network raises); otherwise depth, flow
        and pose run here in turn.
        """
        timings = result.timings_ms
        side: Future[tuple[FlowResult | None, NDArray[np.float64] | None, dict[str, float]]] | None = None
        if self._overlap():
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geovis-networks")
            side = self._worker.submit(self._flow_and_pose, frame)
        try:
            if self.depth_stage is not None:
                clock = time.perf_counter()
                result.depth = self.depth_stage(frame)
                _lap(timings, "depth", clock)
        finally:
            outputs = side.result() if side is not None else None
        result.flow, pose_prior, side_timings = outputs if outputs is not None else self._flow_and_pose(frame)
        timings.update(side_timings)
        return pose_prior

    def _flow_and_pose(
        self, frame: Frame,
    ) -> tuple[FlowResult | None, NDArray[np.float64] | None, dict[str, float]]:
        """The flow network's result, the pose network's prior (None where a stage is off) and their ms.

        The timings are ``flow`` and ``pose`` (each stage's wall time, ms). Runs on the worker thread
        or on the caller's.
        """
        flow, pose_prior = None, None
        timings: dict[str, float] = {}
        if self.flow_stage is not None:
            clock = time.perf_counter()
            flow = self.flow_stage(frame)
            _lap(timings, "flow", clock)
        if self.pose_stage is not None:
            clock = time.perf_counter()
            pose_prior = self.pose_stage(frame)
            _lap(timings, "pose", clock)
        return flow, pose_prior, timings

    def _overlap(self) -> bool:
        """Whether this frame's flow and pose networks run beside the depth network (``network_overlap``).

        Needs a depth stage and a flow or pose stage; decided once every one of them has an engine
        (the first frames run them in turn), from the devices the engines run on.
        """
        stages = [s for s in (self.depth_stage, self.flow_stage, self.pose_stage) if s is not None]
        if self.config.network_overlap == "off" or self.depth_stage is None or len(stages) < 2:
            return False
        if self._concurrent is None:
            devices = [stage.describe().get(f"{stage.spec.name}_device") for stage in stages]
            if any(device is None for device in devices):
                return False  # an engine is created by this frame: a later frame decides
            on_cuda = sum(str(device).startswith("cuda") for device in devices)
            self._concurrent = on_cuda == 1 or (on_cuda == 0 and self.config.network_overlap == "on")
        return self._concurrent

    def _check_cloud(self, points: PointCloud) -> None:
        """Count empty per-frame clouds; warn (throttled) when the confidence threshold removed everything."""
        if len(points.xyz):
            return
        self.empty_clouds += 1
        now = time.monotonic()
        if now - self._last_empty_warning >= EMPTY_CLOUD_WARNING_S:
            self._last_empty_warning = now
            _LOG.warning(
                "per-frame point cloud is empty (%d frames so far): no depth pixel passes the confidence "
                "threshold (max relative std %.2f, or %.1fx the image's median); raise points_confidence",
                self.empty_clouds, self.config.cloud.max_relative_std, self.config.cloud.std_over_median)

    def reset(self) -> None:
        """Forget the stream (new session, clock jump, image size change); engines are kept."""
        if self.flow_stage is not None:
            self.flow_stage.reset()
        if self.pose_stage is not None:
            self.pose_stage.reset()
        if self.odometry_stage is not None:
            self.odometry_stage.reset()
        if self.backend is not None:
            self.backend.reset()
            self.map_version += 1
        if self._keyframe_feed is not None:
            self._keyframe_feed.reset()
        self._image_size = None
        self._last_result = None

    def warm_up(self, intrinsics: Intrinsics) -> None:
        """Create the networks' engines for images of ``intrinsics`` now, so the first frame does not wait for them.

        Two mid-grey frames go through the depth, flow and pose networks (flow and pose need a
        previous frame); their state is then forgotten, and nothing else (odometry, map, frame
        count) is touched: the stream goes on as if this had not happened.
        """
        image = np.full((intrinsics.height, intrinsics.width, 3), 128, np.uint8)
        frames = [Frame(stamp_ns, image, intrinsics, "warm_up") for stamp_ns in (0, 1)]
        self._fit_networks(frames[0])
        for frame in frames:
            for stage in (self.depth_stage, self.flow_stage, self.pose_stage):
                if stage is not None:
                    stage(frame)
        for stage in (self.flow_stage, self.pose_stage):
            if stage is not None:
                stage.reset()

    def set_camera_height(self, metres: float) -> None:
        """Use ``metres`` (> 0) as the camera's height above the ground for the metric scale, from now on.

        For a height known only once the stream runs (a node's TF lookup of the camera above
        ``ground_frame``): the odometry stage is rebuilt with it and the stream starts afresh (as after
        :meth:`reset`); the networks and their engines are kept.
        """
        if self.odometry_stage is None:
            raise ValueError("set_camera_height needs the odometry stage")
        if not (math.isfinite(metres) and metres > 0):
            raise ValueError(f"camera height must be a positive number of metres, got {metres}")
        odometry = self.config.odometry_config
        odometry = replace(odometry, scale=replace(odometry.scale, camera_height=float(metres)))
        self.config = replace(self.config, odometry_config=odometry)
        self.odometry_stage = OdometryStage(odometry)
        if self.backend is not None:
            self._keyframe_feed = KeyframeFeed(self.odometry_stage, self.backend)
        self.reset()

    def finish(self) -> None:
        """Add the keyframe still being refined to the map (end of a recording)."""
        self._update_map(include_active=True)

    def _fit_networks(self, frame: Frame) -> None:
        """Fit the network input widths to a new image size (aspect ratio within the size bound)."""
        size = (frame.intrinsics.width, frame.intrinsics.height)
        if size == self._image_size:
            return
        self._image_size = size
        for stage, network in ((self.depth_stage, self.config.depth_network),
                               (self.flow_stage, self.config.flow_network),
                               (self.pose_stage, self.config.pose_network)):
            if stage is not None:
                width = network_input_width(*size, network.input_width, self.config.max_network_height)
                stage.config = replace(network, input_width=width)

    def _update_map(self, include_active: bool = False) -> None:
        """Hand finished keyframes (and with ``include_active`` the active one) to the back end."""
        if self._keyframe_feed is not None:
            self.map_version += self._keyframe_feed.flush(include_active)

    # -- map and state -------------------------------------------------------------------
    def map_cloud(self) -> PointCloud:
        """The fused map: xyz (N, 3) float32 metres in ``odom_frame``, rgb (N, 3) uint8 (empty without mapping)."""
        if self.backend is None:
            return PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), self.config.odom_frame)
        cloud = self.backend.map_cloud()
        xyz = transform_points(self._odom_from_map(), cloud.xyz) if len(cloud.xyz) else cloud.xyz
        return PointCloud(xyz.astype(np.float32, copy=False), cloud.rgb, self.config.odom_frame)

    def keyframe_poses(self) -> dict[int, NDArray[np.float64]]:
        """Keyframe id -> (4, 4) float64 ``T_odom_keyframe`` of the mapped keyframes (loop-corrected)."""
        if self.backend is None:
            return {}
        odom_from_map = self._odom_from_map()
        return {key: odom_from_map @ pose for key, pose in self.backend.keyframe_poses().items()}

    def _odom_from_map(self) -> NDArray[np.float64]:
        """``T_odom_map``: the loop-corrected map expressed in the current odometry frame.

        Odometry is never corrected after the fact (no jumps); instead the map is moved so that it
        agrees with the odometry at the latest keyframe (identity until a loop closes).
        """
        assert self.backend is not None
        return invert(self.backend.correction())

    def describe(self) -> dict[str, str]:
        """Key/values for diagnostics and reports: backends, last timings, tracking state, map size."""
        values: dict[str, str] = {"stages": ",".join(self.config.stages), "frames_processed": str(self.frames)}
        for stage in (self.depth_stage, self.flow_stage, self.pose_stage):
            if stage is not None:
                values.update(stage.describe())
        last = self._last_result
        if last is not None:
            values.update({f"{name}_ms": f"{ms:.1f}" for name, ms in last.timings_ms.items()})
            if last.odometry is not None:
                values["tracking_state"] = last.odometry.state.value
                values["keyframe_id"] = str(last.odometry.keyframe_id)
                values["scale_confidence"] = f"{last.odometry.scale_confidence:.2f}"
                values["scale_source"] = last.odometry.scale_source.value
                values["is_metric"] = str(last.odometry.is_metric).lower()
                values["tracker"] = last.odometry.tracker
            if last.points is not None:
                values["points"] = str(len(last.points.xyz))
                values["empty_clouds"] = str(self.empty_clouds)
        if self.backend is not None:
            values["keyframes"] = str(self.backend.keyframe_count)
            values["map_points"] = str(len(self.backend.map))
        return values


def _lap(timings: dict[str, float], name: str, since: float) -> float:
    """Record ``now - since`` under ``name`` (ms); returns now."""
    now = time.perf_counter()
    timings[name] = (now - since) * 1000.0
    return now
