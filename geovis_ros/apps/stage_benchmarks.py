"""Harnesses that time one SLAM stage in isolation: the odometry stage and the bounded keyframe map.

Used by ``geovis vo-bench`` and its tests; the stages themselves live in :mod:`geovis_ros.slam`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geovis_ros.frame import DepthResult, FlowResult, Frame, OdometryResult, TrackingState
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.slam.backend.mapping import CloudConfig, KeyframeMap, KeyframeMapConfig, depth_to_cloud
from geovis_ros.slam.frontend.config import OdometryConfig
from geovis_ros.slam.frontend.odometry import KeyframeEvent, KeyframeEventKind, OdometryStage


@dataclass(frozen=True)
class OdometryBenchmark:
    """Per-frame results and timings of :func:`run_odometry`.

    Attributes:
        results: one OdometryResult per input frame.
        stamps_ns: (N,) int64 frame stamps.
        milliseconds: (N,) float64 wall time of each stage call (tracking + fusion; no networks).
        cpu_milliseconds: (N,) float64 CPU time of the process during each call (all threads; less
            sensitive than wall time to other processes competing for the cores).
        keyframes: number of keyframes created.

    """

    results: list[OdometryResult]
    stamps_ns: NDArray[np.int64]
    milliseconds: NDArray[np.float64]
    cpu_milliseconds: NDArray[np.float64]
    keyframes: int

    @property
    def poses(self) -> NDArray[np.float64]:
        """(N, 4, 4) T_odom_camera of every frame."""
        return np.stack([r.pose for r in self.results]) if self.results else np.zeros((0, 4, 4))

    def summary(self) -> dict[str, float]:
        """Timing percentiles (ms) and state counts."""
        states = [r.state for r in self.results]
        summary = {"frames": float(len(self.results))}
        for name, values in (("ms", self.milliseconds), ("cpu_ms", self.cpu_milliseconds)):
            summary[f"{name}_mean"] = float(np.mean(values)) if values.size else math.nan
            summary[f"{name}_median"] = float(np.median(values)) if values.size else math.nan
            summary[f"{name}_p90"] = float(np.percentile(values, 90)) if values.size else math.nan
        return {
            **summary,
            "keyframes": float(self.keyframes),
            "lost": float(sum(s is TrackingState.LOST for s in states)),
        }


def run_odometry(
    config: OdometryConfig, inputs: Iterable[tuple[Frame, DepthResult, FlowResult | None]],
    pose_priors: Iterable[NDArray[np.float64] | None] | None = None,
) -> OdometryBenchmark:
    """Run a fresh :class:`OdometryStage` over ``(frame, depth, flow)`` triples, timing every call.

    ``pose_priors``: one (4, 4) T_previous_current guess (or None) per input, e.g. from the pose
    network; None for constant velocity throughout. The timing covers the stage only (tracking,
    fusion, keyframes, scale), not the producers of the inputs; use it as the benchmark of the
    <= 20 ms/frame target.
    """
    created: list[KeyframeEvent] = []
    stage = OdometryStage(config, on_keyframe=lambda e: created.append(e) if e.kind is KeyframeEventKind.CREATED
                          else None)
    results: list[OdometryResult] = []
    stamps: list[int] = []
    timings: list[float] = []
    cpu_timings: list[float] = []
    priors = iter(pose_priors) if pose_priors is not None else None
    for frame, depth, flow in inputs:
        prior = next(priors) if priors is not None else None
        start, cpu_start = time.perf_counter(), time.process_time()
        results.append(stage(frame, depth, flow, prior))
        timings.append((time.perf_counter() - start) * 1e3)
        cpu_timings.append((time.process_time() - cpu_start) * 1e3)
        stamps.append(frame.stamp_ns)
    return OdometryBenchmark(results, np.asarray(stamps, np.int64), np.asarray(timings), np.asarray(cpu_timings),
                             len(created))



def resident_memory_bytes() -> int | None:
    """Current resident set size of this process in bytes (Linux ``/proc/self/statm``), else None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as stream:
            resident_pages = int(stream.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class MapBenchmark:
    """Figures of :func:`benchmark_mapping` (milliseconds are means per call)."""

    frames: int
    keyframes: int
    cloud_ms: float
    keyframe_insert_ms: float
    rebuild_ms: float
    map_points: int
    max_points: int
    bound_reached_at_frame: int | None
    rss_after_bound_min_mb: float | None
    rss_after_bound_max_mb: float | None

    @property
    def rss_growth(self) -> float | None:
        """(max - min) / min of the RSS samples taken after the map bound was reached."""
        if self.rss_after_bound_min_mb is None or self.rss_after_bound_max_mb is None:
            return None
        return (self.rss_after_bound_max_mb - self.rss_after_bound_min_mb) / self.rss_after_bound_min_mb


def benchmark_mapping(
    frames: int = 5000,
    width: int = 320,
    height: int = 240,
    keyframe_every: int = 5,
    config: KeyframeMapConfig | None = None,
    cloud_config: CloudConfig | None = None,
    seed: int = 0,
) -> MapBenchmark:
    """Time the per-frame cloud and the keyframe map, and sample RSS, over a long synthetic walk.

    A camera walks a long corridor-like path (always seeing new space, so the map fills and then
    evicts); every frame gets a random-textured depth map, every ``keyframe_every``-th frame is
    inserted as a keyframe. RSS is sampled every 50 frames once both bounds are reached (the voxel
    map has evicted and the keyframe cloud store holds ``max_keyframes``).
    ``config`` and ``cloud_config`` default to :class:`KeyframeMapConfig` and :class:`CloudConfig` defaults.
    """
    config = config if config is not None else KeyframeMapConfig()
    cloud_config = cloud_config if cloud_config is not None else CloudConfig()
    rng = np.random.default_rng(seed)
    intrinsics = Intrinsics(0.8 * width, 0.8 * width, (width - 1) / 2, (height - 1) / 2, width, height)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    base_depth = (2.0 + rng.random((height, width)) * 3.0).astype(np.float32)
    std = (0.02 * base_depth).astype(np.float32)
    keyframe_map = KeyframeMap(config)
    cloud_time = insert_time = 0.0
    keyframes = 0
    bound_frame: int | None = None
    rss: list[int] = []
    for index in range(frames):
        pose = np.eye(4)
        yaw = 0.3 * np.sin(index / 40.0)
        pose[:3, :3] = [[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0], [-np.sin(yaw), 0.0, np.cos(yaw)]]
        pose[:3, 3] = [0.5 * np.sin(index / 25.0), 0.0, 0.05 * index]
        depth = base_depth * np.float32(1.0 + 0.1 * np.sin(index / 7.0))
        start = time.perf_counter()
        cloud = depth_to_cloud(depth, std, rgb, intrinsics, cloud_config)
        cloud_time += time.perf_counter() - start
        if index % keyframe_every == 0:
            start = time.perf_counter()
            keyframe_map.add_keyframe(index, pose, cloud)
            insert_time += time.perf_counter() - start
            keyframes += 1
        full = keyframe_map.voxels.evicted_total > 0 and len(keyframe_map.keyframe_ids) >= config.max_keyframes
        if bound_frame is None and full:
            bound_frame = index
        if bound_frame is not None and index % 50 == 0:
            sample = resident_memory_bytes()
            if sample is not None:
                rss.append(sample)
    start = time.perf_counter()
    keyframe_map.rebuild()
    rebuild_ms = (time.perf_counter() - start) * 1e3
    return MapBenchmark(
        frames=frames,
        keyframes=keyframes,
        cloud_ms=cloud_time * 1e3 / frames,
        keyframe_insert_ms=insert_time * 1e3 / max(keyframes, 1),
        rebuild_ms=rebuild_ms,
        map_points=len(keyframe_map),
        max_points=config.map.max_points,
        bound_reached_at_frame=bound_frame,
        rss_after_bound_min_mb=min(rss) / 2**20 if rss else None,
        rss_after_bound_max_mb=max(rss) / 2**20 if rss else None,
    )

