"""``geovis odometry``: monocular visual odometry (+ loop closure and map) over a recording.

Stable form::

    geovis odometry INPUT --out TRAJ.txt [--format tum|kitti] [--calib FILE] [--depth-out DIR]
        [--map-out MAP.ply] [--method direct|features] [--gt GT] [--max-frames N]
        [--camera-height M] [--depth-source network|gt|simulated-relative] [--report FILE.json]

INPUT is anything :func:`geovis_ros.data.readers.open_sequence` reads (TUM RGB-D, KITTI odometry,
7-Scenes, a bag, an image folder or a video). Per frame: depth (the depth network through the
inference runtime, or the input's own depth with ``--depth-source gt`` for evaluation, or that
depth made relative with ``--depth-source simulated-relative``), then the odometry stage (metric
scale from ``--camera-height`` when given) and the frame's best depth; every finished keyframe
goes to the back end (loop closure, pose graph, map).

Outputs:

- ``--out``: one pose per processed frame, ``T_odom_camera`` (OpenCV optical camera frame, odom =
  the first keyframe's camera), loop-corrected unless ``--no-loop-closure``; TUM
  (``t tx ty tz qx qy qz qw``) or KITTI (3x4 row-major per line).
- ``--depth-out DIR``: every frame's best depth (the network depth corrected by the fused keyframe
  depth, what the depth topic publishes), ``<frame name>.npy`` (float32 metres, NaN invalid) or
  ``.png`` (16-bit millimetres, 0 invalid), plus ``keyframes.txt`` (TUM, keyframe poses).
- ``--map-out MAP.ply``: the fused map (binary PLY, xyz + rgb) in the trajectory's frame.
- ``--report FILE.json``: :func:`geovis_ros.apps.run_report.run_report` (frames, lost,
  relocalisations, keyframes, scale source, is_metric, scale confidence, ms per frame, scores).

The summary (stdout) gives frames, keyframes, loops, lost frames, timings, the scale source, and
when ground truth is available (``--gt`` or poses in the input) ATE/RPE and the covariance's
consistency (NEES); with depth in the input, the AbsRel of every 10th frame's published depth.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from geovis_ros.apps.ply import write_ply
from geovis_ros.apps.run_report import run_report, write_json_report
from geovis_ros.data.bag import BagSequence
from geovis_ros.data.image_io import DatasetError, write_depth_png
from geovis_ros.data.readers import open_sequence
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.data.trajectory_io import TrajectoryFormatError, read_trajectory, write_trajectory
from geovis_ros.errors import CommandError, GeovisError
from geovis_ros.eval.metrics_depth import DepthMetricsAccumulator
from geovis_ros.eval.metrics_traj import (
    AssociateBy,
    TrajectoryEvalError,
    evaluate_trajectory,
    position_consistency,
)
from geovis_ros.eval.simulated_depth import relative_inverse_depth
from geovis_ros.frame import DepthResult, Frame, OdometryResult, TrackingState
from geovis_ros.geometry.camera import CameraModelError
from geovis_ros.geometry.se3 import invert
from geovis_ros.pipeline.keyframe_feed import KeyframeFeed
from geovis_ros.slam.backend.slam_backend import BackendConfig, SlamBackend
from geovis_ros.slam.frontend.config import MOTION_PRIORS, OdometryConfig, odometry_config_for
from geovis_ros.slam.frontend.keyframes import Keyframe
from geovis_ros.slam.frontend.odometry import OdometryStage

DepthSource = Literal["network", "gt", "simulated-relative"]
DepthEstimator = Callable[[Frame, SequenceFrame], DepthResult]
# (frame) -> (4, 4) T_previous_current motion guess for the odometry, None for constant velocity.
PoseEstimator = Callable[[Frame], "NDArray[np.float64] | None"]
DEPTH_SOURCES: tuple[str, ...] = ("network", "gt", "simulated-relative")
GT_DEPTH_RELATIVE_STD = 0.01
"""Standard deviation (fraction of depth) attached to ground-truth depth: trusted but not exact."""


class MissingDepthError(GeovisError, ValueError):
    """``--depth-source gt`` on an input frame that carries no depth."""


def make_depth_estimator(
    source: DepthSource,
    backend: str = "auto",
    device: str = "auto",
    input_width: int = 320,
    model_path: str = "",
    seed: int = 0,
) -> DepthEstimator:
    """A function ``(frame, sequence_frame) -> DepthResult`` giving each frame's metric depth.

    Args:
        source: ``"network"``: the depth network through the inference runtime
            (:class:`geovis_ros.pipeline.networks.DepthStage`); ``"gt"``: the input's own depth
            (``sequence_frame.depth``) with a standard deviation of 1 % of depth, for evaluating
            odometry and fusion without network error; ``"simulated-relative"``: the input's own
            depth turned into an affine-invariant relative inverse depth with a random scale and
            shift per frame and smooth noise (:func:`~geovis_ros.eval.simulated_depth.relative_inverse_depth`,
            seeded with ``seed``), ``is_metric=False``: the relative-depth machinery on real images.
        backend: inference backend (see :class:`geovis_ros.inference.engine.EngineConfig`).
        device: inference device (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        input_width: network input width, pixels.
        model_path: "" for the shipped weights, or a ``.safetensors`` / ``.onnx`` file.
        seed: seed of ``"simulated-relative"``'s random scales, shifts and noise.

    Raises:
        ValueError: unknown source or runtime option. The ``"gt"`` estimator raises
            :class:`MissingDepthError` for a frame without depth.

    """
    if source == "gt":
        def ground_truth(frame: Frame, item: SequenceFrame) -> DepthResult:
            if item.depth is None:
                raise MissingDepthError(f"ground-truth depth requested, but frame {item.name!r} has none")
            depth = np.where(item.depth > 0, item.depth, np.nan).astype(np.float32)
            return DepthResult(depth, (GT_DEPTH_RELATIVE_STD * depth).astype(np.float32), frame.intrinsics)

        return ground_truth
    if source == "simulated-relative":
        rng = np.random.default_rng(seed)

        def simulated_relative(frame: Frame, item: SequenceFrame) -> DepthResult:
            if item.depth is None:
                raise MissingDepthError(f"simulated relative depth needs depth, frame {item.name!r} has none")
            relative, std, _, _ = relative_inverse_depth(np.where(item.depth > 0, item.depth, np.nan), rng)
            return DepthResult(relative, std, frame.intrinsics, is_metric=False)

        return simulated_relative
    if source != "network":
        raise ValueError(f"depth source must be one of {DEPTH_SOURCES}, got {source!r}")
    from geovis_ros.inference.engine import EngineConfig
    from geovis_ros.pipeline.networks import DepthStage, NetworkConfig

    stage = DepthStage(NetworkConfig(EngineConfig(backend=backend, device=device), input_width, model_path))

    def network(frame: Frame, item: SequenceFrame) -> DepthResult:
        return stage(frame)

    return network


def make_pose_estimator(
    motion_prior: str, backend: str = "auto", device: str = "auto", model_path: str = ""
) -> PoseEstimator | None:
    """The odometry's per-frame motion guess: None for ``constant_velocity``, the pose network otherwise.

    ``pose_network`` runs :class:`geovis_ros.pipeline.networks.PoseStage` (shipped weights or
    ``model_path``) on the previous and the current frame.

    Raises:
        ValueError: unknown ``motion_prior`` or runtime option.

    """
    if motion_prior not in MOTION_PRIORS:
        raise ValueError(f"motion prior must be one of {MOTION_PRIORS}, got {motion_prior!r}")
    if motion_prior == "constant_velocity":
        return None
    from geovis_ros.inference.engine import EngineConfig
    from geovis_ros.pipeline.networks import NetworkConfig, PoseStage

    return PoseStage(NetworkConfig(EngineConfig(backend=backend, device=device), model_path=model_path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``geovis odometry``."""
    parser.add_argument("input", type=Path, help="TUM / KITTI / 7-Scenes folder, bag, image folder or video")
    parser.add_argument("--out", type=Path, required=True, metavar="TRAJ.txt", help="trajectory file to write")
    parser.add_argument("--format", choices=("tum", "kitti"), default="tum", help="trajectory format (default: tum)")
    parser.add_argument("--calib", metavar="FILE", help="calibration file or 'fx,fy,cx,cy' (overrides the input's)")
    parser.add_argument("--depth-out", type=Path, metavar="DIR",
                        help="write every frame's best depth (network depth corrected by the fused keyframe depth)")
    parser.add_argument(
        "--depth-format", choices=("npy", "png"), default="npy",
        help="depth files: npy (float32 m) or png (16-bit mm) (default: npy)",
    )
    parser.add_argument("--camera-height", type=float, default=0.0, metavar="M",
                        help="camera height above the ground, metres: metric scale from the ground plane (0: off)")
    parser.add_argument("--report", type=Path, metavar="FILE.json",
                        help="write a machine-readable run report (frames, lost, scale source, timings, scores)")
    parser.add_argument("--map-out", type=Path, metavar="MAP.ply", help="write the fused map as a PLY file")
    parser.add_argument("--method", choices=("direct", "features"), default="direct",
                        help="direct (photometric, default) or features (classical KLT + PnP baseline)")
    parser.add_argument("--gt", type=Path, metavar="GT", help="ground-truth trajectory to score against")
    parser.add_argument("--gt-format", choices=("tum", "kitti"), help="format of --gt (default: --format)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="process at most N frames")
    parser.add_argument("--no-loop-closure", action="store_true", help="write the raw odometry (no pose graph)")
    parser.add_argument(
        "--depth-source", choices=DEPTH_SOURCES, default="network",
        help="network (default); gt: the input's own depth (evaluation without network error); "
             "simulated-relative: the input's depth as a relative inverse depth with a random scale and shift per "
             "frame (evaluation of the scale machinery)",
    )
    parser.add_argument("--backend", default="auto", help="inference backend for the depth network (default: auto)")
    parser.add_argument("--device", default="auto", help="inference device: auto, cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--input-width", type=int, default=320, help="depth network input width (default: 320)")
    parser.add_argument("--model-depth", default="", metavar="FILE", help="depth weights (.safetensors / .onnx)")
    parser.add_argument("--motion-prior", choices=MOTION_PRIORS, default="constant_velocity",
                        help="odometry's per-frame initial guess (default: constant_velocity)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class OdometryRun:
    """Everything one run produced (in memory, for the writers and the summary).

    Attributes:
        names: frame names, one per processed frame.
        stamps_ns: (N,) int64 frame stamps.
        odometry: one OdometryResult per frame (raw odometry, ``T_odom_camera``).
        poses: (N, 4, 4) loop-corrected poses (equal to the raw poses without loop closure).
        gt_poses: (N, 4, 4) T_world_camera from the input, or None when the input has no poses.
        keyframes: number of keyframes handed to the back end.
        loops: number of verified loop closures.
        timings_ms: mean milliseconds per frame of ``depth``, ``odometry``, ``fused_depth``, ``backend``.

    """

    names: list[str]
    stamps_ns: NDArray[np.int64]
    odometry: list[OdometryResult]
    poses: NDArray[np.float64]
    gt_poses: NDArray[np.float64] | None
    keyframes: int
    loops: int
    timings_ms: dict[str, float] = field(default_factory=dict)


def run_odometry_over(
    frames: Iterable[SequenceFrame],
    depth_estimator: DepthEstimator,
    odometry_config: OdometryConfig | None = None,
    backend_config: BackendConfig | None = None,
    on_keyframe: Callable[[Keyframe, str], None] | None = None,
    progress: Callable[[], object] | None = None,
    pose_estimator: PoseEstimator | None = None,
    on_frame_depth: Callable[[DepthResult, SequenceFrame], None] | None = None,
) -> tuple[OdometryRun, SlamBackend]:
    """Run depth -> odometry -> back end over ``frames``; returns the run and the back end (map, poses).

    Args:
        frames: input frames in time order.
        depth_estimator: see :func:`make_depth_estimator`.
        odometry_config: tracking / fusion / keyframe settings (``method`` picks direct or features);
            None for the defaults.
        backend_config: map, loop closure (``loop=None``: off) and pose-graph settings; None for the
            defaults.
        on_keyframe: called as ``(keyframe, frame_name)`` for every keyframe handed to the back end
            (finished keyframes as they finish, the active one at the end).
        progress: called once per processed frame.
        pose_estimator: the odometry's per-frame motion guess (:func:`make_pose_estimator`); None
            for constant velocity. Its time counts as ``depth`` (network) time.
        on_frame_depth: called as ``(depth, sequence_frame)`` with every frame's best depth
            (:meth:`~geovis_ros.slam.frontend.odometry.OdometryStage.frame_depth`), timed as ``fused_depth``.

    """
    backend = SlamBackend(backend_config or BackendConfig())
    stage = OdometryStage(odometry_config or OdometryConfig())
    names: dict[int, str] = {}  # stamp -> frame name, for keyframe file names

    def report(keyframe: Keyframe) -> None:
        if on_keyframe is not None:
            on_keyframe(keyframe, names.get(keyframe.stamp_ns, f"keyframe_{keyframe.id:06d}"))

    feed = KeyframeFeed(stage, backend, report)
    frame_names: list[str] = []
    stamps: list[int] = []
    results: list[OdometryResult] = []
    gt: list[NDArray[np.float64] | None] = []
    seconds = {"depth": 0.0, "odometry": 0.0, "fused_depth": 0.0, "backend": 0.0}
    for item in frames:
        frame = Frame(item.stamp_ns, item.rgb, item.intrinsics)
        names[item.stamp_ns] = item.name
        start = time.perf_counter()
        depth = depth_estimator(frame, item)
        pose_prior = pose_estimator(frame) if pose_estimator is not None else None
        middle = time.perf_counter()
        results.append(stage(frame, depth, pose_prior=pose_prior))
        tracked = time.perf_counter()
        if on_frame_depth is not None:
            on_frame_depth(stage.frame_depth(depth), item)
        end = time.perf_counter()
        feed.flush()
        seconds["depth"] += middle - start
        seconds["odometry"] += tracked - middle
        seconds["fused_depth"] += end - tracked
        seconds["backend"] += time.perf_counter() - end
        stamps.append(item.stamp_ns)
        frame_names.append(item.name)
        gt.append(None if item.pose is None else np.asarray(item.pose, dtype=np.float64))
        if progress is not None:
            progress()
    feed.flush(include_active=True)  # the keyframe still being refined: its depth is as good as it gets
    known = set(backend.keyframe_poses())
    corrected = [backend.correct(r.pose, r.keyframe_id) if r.keyframe_id in known else r.pose for r in results]
    count = max(len(results), 1)
    run = OdometryRun(
        names=frame_names,
        stamps_ns=np.asarray(stamps, dtype=np.int64),
        odometry=results,
        poses=np.stack(corrected) if corrected else np.zeros((0, 4, 4)),
        gt_poses=np.stack(gt) if gt and all(pose is not None for pose in gt) else None,  # type: ignore[arg-type]
        keyframes=backend.keyframe_count,
        loops=feed.loops,
        timings_ms={name: 1e3 * value / count for name, value in seconds.items()},
    )
    return run, backend


def _open_input(args: argparse.Namespace) -> tuple[Iterable[SequenceFrame], int | None]:
    """The frame source and its length (None when unknown); CommandError for unreadable input."""
    if not args.input.exists():
        raise CommandError(f"{args.input}: no such file or folder")
    try:
        source = open_sequence(args.input, calib=args.calib)
        length = len(source) if isinstance(source, Sized) else None
    except (DatasetError, CameraModelError, OSError) as err:
        raise CommandError(f"cannot read {args.input}: {err}") from None
    return source, length


def _frames(source: Iterable[SequenceFrame], max_frames: int | None, where: Path) -> Iterator[SequenceFrame]:
    """At most ``max_frames`` frames of ``source``; read errors become CommandError naming ``where``."""
    try:
        for index, item in enumerate(source):
            if max_frames is not None and index >= max_frames:
                return
            yield item
    except (DatasetError, CameraModelError, OSError) as err:
        raise CommandError(f"cannot read {where}: {err}") from None


def _write_depth(directory: Path, depth_format: str, depth: NDArray[np.float32], name: str) -> None:
    """Write a depth map as ``<name>.npy`` (float32 m, NaN invalid) or ``.png`` (uint16 mm, 0 invalid)."""
    path = directory / f"{name}.{depth_format}"
    if depth_format == "npy":
        np.save(path, depth.astype(np.float32))
    else:
        write_depth_png(path, depth, scale=1000.0)


DEPTH_SCORE_EVERY = 10
"""The run scores every this many frames' published depth against the input's depth, when it has some."""
DEPTH_SCORE_RANGE_M = (0.1, 10.0)
"""Ground-truth depth range scored, metres."""


class DepthScorer:
    """Scores of every :data:`DEPTH_SCORE_EVERY`-th frame's published and network depth against the input's depth.

    ``published``: metric, no scaling; ``published_one_scale``: one scale for the whole sequence
    (the median over the scored frames of median(gt) / median(published)); ``network``: the raw
    depth input (metric, no scaling).
    """

    def __init__(self) -> None:
        self._pairs: list[tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]] = []
        self._index = 0

    def add(self, published: DepthResult, network: DepthResult, item: SequenceFrame) -> None:
        """Keep the frame's (gt, published, network) depths when it is one to score and has depth."""
        index, self._index = self._index, self._index + 1
        if item.depth is None or index % DEPTH_SCORE_EVERY:
            return
        self._pairs.append((item.depth, published.depth, network.depth))

    def scores(self) -> dict[str, float]:
        """``{published,published_one_scale,network}_{abs_rel,a1}``, ``one_scale`` and ``depth_frames_scored``."""
        if not self._pairs:
            return {}
        low, high = DEPTH_SCORE_RANGE_M
        ratios = []
        for gt, published, _ in self._pairs:
            ok = np.isfinite(gt) & (gt > low) & (gt < high) & np.isfinite(published) & (published > 0)
            if np.any(ok):
                ratios.append(float(np.median(gt[ok]) / np.median(published[ok])))
        one_scale = float(np.median(ratios)) if ratios else math.nan
        out: dict[str, float] = {"depth_frames_scored": float(len(self._pairs)), "one_scale": one_scale}
        for key, index, factor in (("published", 1, 1.0), ("published_one_scale", 1, one_scale), ("network", 2, 1.0)):
            accumulator = DepthMetricsAccumulator(min_depth=low, max_depth=high)
            for pair in self._pairs:
                accumulator.add(pair[0], pair[index] * factor)
            result = accumulator.result()
            out[f"{key}_abs_rel"], out[f"{key}_a1"] = result["abs_rel"], result["a1"]
        return out


def _score(run: OdometryRun, args: argparse.Namespace) -> dict[str, float] | None:
    """Scores of the corrected and raw (``odometry_``) trajectories; None without ground truth.

    ``ate_{se3,sim3}_m``: ATE RMSE after SE(3) / Sim(3) alignment; ``rpe_{se3,sim3}_pct``: KITTI-style
    RPE; ``end_drift_m``: position error of the last pose when the first poses are made to coincide
    (the loop-closure figure); ``path_length_m``; the raw odometry's covariance consistency
    (:func:`~geovis_ros.eval.metrics_traj.position_consistency`) when every frame has ground truth.
    """
    stamps_s = run.stamps_ns.astype(np.float64) * 1e-9
    associate_by: AssociateBy = "stamp"
    if args.gt is not None:
        gt_format = args.gt_format or args.format
        try:
            gt_stamps, gt_poses = read_trajectory(args.gt, gt_format)
        except (OSError, TrajectoryFormatError) as err:
            raise CommandError(f"cannot read --gt {args.gt}: {err}") from None
        if gt_format == "kitti":  # no stamps: frame i of the file is processed frame i
            associate_by = "index"
            stamps_s = np.arange(len(run.names), dtype=np.float64)
            gt_stamps, gt_poses = gt_stamps[: len(run.names)], gt_poses[: len(run.names)]
    elif run.gt_poses is not None:
        gt_stamps, gt_poses = stamps_s, run.gt_poses
    else:
        return None
    raw = np.stack([r.pose for r in run.odometry])
    scores: dict[str, float] = {}
    try:
        for prefix, poses in (("", run.poses), ("odometry_", raw)):
            for align in ("se3", "sim3"):
                summary = evaluate_trajectory(gt_stamps, gt_poses, stamps_s, poses, align=align,
                                              associate_by=associate_by).summary
                scores[f"{prefix}ate_{align}_m"] = float(summary["ate_rmse_m"])
                scores[f"{prefix}rpe_{align}_pct"] = float(summary["rpe_trans_pct"])
                scores["path_length_m"] = float(summary.get("path_length_m", math.nan))
            pairs = evaluate_trajectory(gt_stamps, gt_poses, stamps_s, poses, align="none", associate_by=associate_by)
            gt_end = invert(pairs.gt_poses[0]) @ pairs.gt_poses[-1]
            est_end = invert(pairs.est_poses[0]) @ pairs.est_poses[-1]
            scores[f"{prefix}end_drift_m"] = float(np.linalg.norm(gt_end[:3, 3] - est_end[:3, 3]))
        if len(pairs.gt_poses) == len(run.odometry) and len(run.odometry) >= 2:  # every frame associated
            covariances = np.stack([r.covariance for r in run.odometry])
            scores.update(position_consistency(pairs.gt_poses, raw, covariances))
    except TrajectoryEvalError as err:
        raise CommandError(f"cannot score against the ground truth: {err}") from None
    return scores


def run(args: argparse.Namespace) -> int:
    """Run ``geovis odometry``; returns the exit status (0)."""
    if args.max_frames is not None and args.max_frames < 1:
        raise CommandError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.gt is not None and not args.gt.is_file():
        raise CommandError(f"--gt {args.gt}: no such file")
    source, length = _open_input(args)
    total = length if args.max_frames is None else min(length or args.max_frames, args.max_frames)
    if not args.camera_height >= 0:
        raise CommandError(f"--camera-height must be >= 0 metres, got {args.camera_height}")
    try:
        depth_estimator = make_depth_estimator(args.depth_source, args.backend, args.device, args.input_width,
                                               args.model_depth)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as err:
        raise CommandError(f"cannot start the depth network: {err}") from None
    try:
        pose_estimator = make_pose_estimator(args.motion_prior, args.backend, args.device)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as err:
        raise CommandError(f"cannot start the pose network: {err}") from None
    keyframe_stamps: dict[int, int] = {}
    scorer = DepthScorer()
    last_network: list[DepthResult] = []

    def on_keyframe(keyframe: Keyframe, name: str) -> None:
        keyframe_stamps[keyframe.id] = keyframe.stamp_ns

    def network_depth(frame: Frame, item: SequenceFrame) -> DepthResult:
        depth = depth_estimator(frame, item)
        last_network[:] = [depth]
        return depth

    def on_frame_depth(depth: DepthResult, item: SequenceFrame) -> None:
        scorer.add(depth, last_network[0], item)
        if args.depth_out is not None:
            _write_depth(args.depth_out, args.depth_format, depth.depth, item.name)

    if args.depth_out is not None:
        args.depth_out.mkdir(parents=True, exist_ok=True)
    config = odometry_config_for(args.method)
    config = replace(config, scale=replace(config.scale, camera_height=args.camera_height))
    from tqdm import tqdm

    with tqdm(total=total, unit="frame", desc="odometry", disable=args.quiet, file=sys.stderr) as bar:
        backend_config = BackendConfig(loop=None) if args.no_loop_closure else BackendConfig()
        try:
            result, backend = run_odometry_over(_frames(source, args.max_frames, args.input), network_depth,
                                                config, backend_config, on_keyframe, bar.update, pose_estimator,
                                                on_frame_depth)
        except MissingDepthError as err:
            raise CommandError(f"--depth-source {args.depth_source}: {err}; {args.input} has no depth") from None
    if not result.odometry:
        raise CommandError(f"{args.input}: no frames to process")
    write_trajectory(args.out, result.stamps_ns * 1e-9, result.poses, args.format)
    if args.depth_out is not None and keyframe_stamps:
        poses = backend.keyframe_poses()
        ids = sorted(keyframe_stamps)
        write_trajectory(args.depth_out / "keyframes.txt", [keyframe_stamps[i] * 1e-9 for i in ids],
                         np.stack([poses[i] for i in ids]), "tum")
    if args.map_out is not None:
        write_ply(args.map_out, backend.map_cloud())
    scores = _score(result, args)
    depth_scores = scorer.scores()
    if args.report is not None:
        write_json_report(args.report, run_report(result.odometry, result.keyframes, result.loops, result.timings_ms,
                                                  scores, depth_scores))
    print(_summary(result, backend, args, scores, depth_scores))
    if isinstance(source, BagSequence) and source.skipped.total:
        print(f"input        {source.skipped.summary()}")
    return 0


def _summary(run: OdometryRun, backend: SlamBackend, args: argparse.Namespace,
             scores: dict[str, float] | None, depth_scores: dict[str, float]) -> str:
    """The text printed at the end of a run."""
    states = [r.state for r in run.odometry]
    lost = sum(state is TrackingState.LOST for state in states)
    relocalized = sum(state is TrackingState.RELOCALIZED for state in states)
    lines = [
        f"frames       {len(states)} ({lost} lost, {relocalized} relocalized)",
        f"keyframes    {run.keyframes}, loop closures {run.loops}",
        "timing       " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in run.timings_ms.items()) + " per frame",
        f"map          {len(backend.map)} points",
        f"trajectory   {args.out} ({args.format})",
    ]
    last = run.odometry[-1] if run.odometry else None
    if last is not None:
        lines.append(f"scale        {last.scale_source.value}, metric {last.is_metric}, "
                     f"confidence {last.scale_confidence:.2f}")
    if args.depth_out is not None:
        lines.append(f"depths       {args.depth_out}")
    if args.map_out is not None:
        lines.append(f"map file     {args.map_out}")
    if scores is not None:
        lines.append(f"path length  {scores['path_length_m']:.2f} m")
        for prefix, label in (("", "final"), ("odometry_", "odometry")):
            lines.append(
                f"ATE {label:<8} {scores[prefix + 'ate_se3_m']:.4f} m se3, {scores[prefix + 'ate_sim3_m']:.4f} m sim3; "
                f"RPE {scores[prefix + 'rpe_se3_pct']:.2f} %; end drift {scores[prefix + 'end_drift_m']:.4f} m"
            )
        if "position_error_over_sigma" in scores:
            ratio, nees = scores["position_error_over_sigma"], scores["position_nees_mean"]
            lines.append(f"covariance   position error / predicted sigma: median {ratio:.2f}, "
                         f"NEES mean {nees:.2f} (3 dof)")
    if depth_scores:
        lines.append(
            f"depth        AbsRel published {depth_scores['published_abs_rel']:.3f} (metric), "
            f"{depth_scores['published_one_scale_abs_rel']:.3f} (one scale x{depth_scores['one_scale']:.3f}); "
            f"network {depth_scores['network_abs_rel']:.3f}; every {DEPTH_SCORE_EVERY}th frame, "
            f"{DEPTH_SCORE_RANGE_M[0]}-{DEPTH_SCORE_RANGE_M[1]} m")
    return "\n".join(lines)
