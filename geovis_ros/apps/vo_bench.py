"""``geovis vo-bench``: odometry, fusion, loop-closure and map-memory benchmarks on synthetic sequences.

Stable form::

    geovis vo-bench [--frames 300] [--size 320x240] [--sequence room/handheld --sequence street/driving
        --sequence room/loop] [--depth simulated|gt|network] [--motion-prior constant_velocity|pose_network]
        [--json OUT] [--memory-frames 5000] [--quick]

Every sequence (``scene/trajectory`` of the synthetic world, renderer seed ``--seed``, default 0:
held out from training) is rendered once; each frame gets a depth input (``--depth``):

- ``simulated`` (default): the exact depth corrupted like a monocular network's prediction
  (:func:`geovis_ros.eval.simulated_depth.network_like_depth`: smooth multiplicative bias field,
  noise, per-image scale error), so the figures do not hinge on how well a network is trained;
- ``gt``: the exact depth with a 1 % standard deviation (odometry without depth error);
- ``network``: the shipped depth network (or ``--model-depth``) through the inference runtime.

With ``--motion-prior pose_network`` the shipped pose network's motion between consecutive
frames (computed once per sequence) is both methods' per-frame initial guess instead of
constant velocity.

Then both methods run on the same inputs: ``direct`` (photometric tracking on CNN-SLAM fused
keyframe depth, the default :class:`~geovis_ros.slam.frontend.config.OdometryConfig`) and ``features``
(the classical peer, :func:`~geovis_ros.slam.frontend.config.classical_baseline_config`: KLT +
PnP-RANSAC on the keyframe's network depth, no fusion). Each method runs twice over the same
inputs (the stage is deterministic):

1. through :func:`geovis_ros.apps.odometry.run_odometry_over`, the code path of
   ``geovis odometry``: odometry, then every keyframe into the loop-closure back end
   (:class:`~geovis_ros.slam.backend.loop_detection.SlamBackend`). Scored: the raw odometry trajectory,
   the loop-corrected one, and the fused depth of every keyframe handed to the back end;
2. through :func:`geovis_ros.slam.frontend.odometry.run_odometry`, which times each stage call
   (tracking + fusion + keyframes + scale; no networks, no back end).

Printed per sequence and method (one table):

- ``path m``: ground-truth path length; ``ATE m``/``ATE %``: ATE RMSE of the raw odometry after
  SE(3) alignment, NO scale correction, in metres and % of the path; ``RPE %``: KITTI-style
  relative translation error (:func:`geovis_ros.eval.metrics_traj.kitti_rpe`, segment lengths
  scaled to the path) -- both as ``geovis eval traj --align se3`` computes them;
  ``ATE x``: features ATE / direct ATE;
- ``KF AbsRel net``/``fused``/``red %``: mean per-keyframe AbsRel of the depth input of the
  keyframe frames and of their final fused depth (:func:`~geovis_ros.eval.metrics_depth.depth_metrics`),
  on the same pixels (where the fused depth is defined; ``cov %`` of the valid ground truth), and
  the reduction;
- ``loops``: verified loop closures; ``drift m``/``after m``/``drift x``: end-point drift
  (position error of the last pose relative to the first) of the raw odometry and after loop
  closure, and their ratio (the loop target counts ``loop`` trajectories only; elsewhere a factor
  below 1 means a wrong loop closure made the trajectory worse);
- ``ms mean``/``ms p90``: wall time per frame of the stage; ``cpu ms``: process CPU time per frame
  (all threads; robust to other processes on the machine); ``lost`` frames, ``KFs`` keyframes.

Then the memory benchmark (:func:`geovis_ros.slam.backend.mapping.benchmark_mapping`: a long walk
through always-new space, so the bounded map fills and then evicts; it runs first, so that memory
the sequences free and the allocator keeps cannot hide growth of the map) and the issue's targets
with the worst measured figure. ``--json OUT`` writes everything (plus Sim(3) ATE and scale, the
loop-corrected ATE, RPE rotation) as JSON, non-finite numbers as ``null``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geovis_ros.apps.odometry import (
    DepthEstimator,
    PoseEstimator,
    make_depth_estimator,
    make_pose_estimator,
    run_odometry_over,
)
from geovis_ros.apps.run_report import format_number, json_ready
from geovis_ros.apps.stage_benchmarks import MapBenchmark, benchmark_mapping, run_odometry
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.errors import CommandError
from geovis_ros.eval.metrics_depth import DepthMetricsAccumulator
from geovis_ros.eval.metrics_traj import TrajectoryEvalError, evaluate_trajectory, position_consistency
from geovis_ros.eval.simulated_depth import network_like_depth
from geovis_ros.frame import DepthResult, Frame, TrackingState
from geovis_ros.geometry.se3 import invert
from geovis_ros.slam.backend.slam_backend import BackendConfig
from geovis_ros.slam.frontend.config import MOTION_PRIORS, OdometryConfig, classical_baseline_config
from geovis_ros.slam.frontend.keyframes import Keyframe
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

DEFAULT_SEQUENCES = ("room/handheld", "street/driving", "room/loop")
DEPTH_INPUTS = ("simulated", "gt", "network")
LOOP_TRAJECTORY = "loop"
MIN_FRAMES = 5


@dataclasses.dataclass(frozen=True)
class RunSize:
    """Default size of a run; each field is used unless the command line gives it."""

    frames: int
    width: int
    height: int
    memory_frames: int


FULL = RunSize(frames=300, width=320, height=240, memory_frames=5000)
"""Default: the issue's benchmark size."""
QUICK = RunSize(frames=12, width=64, height=48, memory_frames=200)
"""``--quick``: a smoke run."""

Scores = dict[str, Any]


def method_configs() -> dict[str, OdometryConfig]:
    """The compared methods, by name: ``direct`` (the default stage) and ``features`` (the baseline)."""
    return {"direct": OdometryConfig(), "features": classical_baseline_config()}


def sequence_config(sequence: str, frames: int, width: int, height: int, seed: int = 0) -> SynthConfig:
    """The renderer settings of the synthetic sequence ``"scene/trajectory"``.

    Raises:
        ValueError: ``sequence`` is not ``scene/trajectory``, or the renderer refuses the settings
            (:class:`~geovis_ros.synthetic.scenes.SynthConfigError`, naming the field).

    """
    scene, slash, trajectory = sequence.partition("/")
    if not slash or not scene or not trajectory:
        raise ValueError(f"sequence must be 'scene/trajectory' (e.g. room/handheld), got {sequence!r}")
    return SynthConfig(scene=scene, trajectory=trajectory, frames=frames, width=width, height=height, seed=seed)


def simulated_depth_estimator(seed: int = 0) -> DepthEstimator:
    """A depth estimator (``(frame, sequence_frame) -> DepthResult``) giving network-like depth.

    Corrupts ``sequence_frame.depth`` with :func:`~geovis_ros.eval.simulated_depth.network_like_depth`
    (default strengths), drawing from one generator seeded with ``seed``: call it once per frame in
    order for reproducible inputs.
    """
    rng = np.random.default_rng(seed)

    def simulated(frame: Frame, item: SequenceFrame) -> DepthResult:
        if item.depth is None:
            raise ValueError(f"simulated network depth needs the exact depth, but frame {item.name!r} has none")
        depth, std = network_like_depth(item.depth, rng)
        return DepthResult(depth, std, frame.intrinsics)

    return simulated


def end_point_drift(gt_poses: NDArray[np.float64], est_poses: NDArray[np.float64]) -> float:
    """Position error (m) of the last pose relative to the first: ``|t(G0^-1 GN) - t(E0^-1 EN)|``.

    Both (N, 4, 4) trajectories are expressed relative to their own first pose, so no alignment
    enters: the figure is the drift accumulated from start to end (loop closure's target).
    """
    gt_end = invert(gt_poses[0]) @ gt_poses[-1]
    est_end = invert(est_poses[0]) @ est_poses[-1]
    return float(np.linalg.norm(gt_end[:3, 3] - est_end[:3, 3]))


def trajectory_scores(gt_poses: NDArray[np.float64], est_poses: NDArray[np.float64]) -> Scores:
    """ATE (SE(3) and Sim(3)) and KITTI-style RPE of frame-associated trajectories (N, 4, 4).

    Returns:
        ``path_m``, ``ate_m`` (SE(3), no scale), ``ate_pct`` (of the path), ``rpe_pct``,
        ``rpe_rot_deg_per_m``, ``ate_sim3_m``, ``sim3_scale``, ``end_drift_m``.

    Raises:
        TrajectoryEvalError: too few poses to align.

    """
    index = np.arange(gt_poses.shape[0], dtype=np.float64)
    rigid, similar = (
        evaluate_trajectory(index, gt_poses, index, est_poses, align=align, associate_by="index").summary
        for align in ("se3", "sim3")
    )
    path = float(rigid["path_length_m"])
    return {
        "path_m": path,
        "ate_m": float(rigid["ate_rmse_m"]),
        "ate_pct": 100.0 * float(rigid["ate_rmse_m"]) / path if path > 0 else math.nan,
        "rpe_pct": float(rigid["rpe_trans_pct"]),
        "rpe_rot_deg_per_m": float(rigid["rpe_rot_deg_per_m"]),
        "ate_sim3_m": float(similar["ate_rmse_m"]),
        "sim3_scale": float(similar["aligned_scale"]),
        "end_drift_m": end_point_drift(gt_poses, est_poses),
    }


def keyframe_depth_scores(
    keyframes: Sequence[Keyframe], items: Sequence[SequenceFrame], depths: Sequence[DepthResult]
) -> Scores:
    """Mean per-keyframe AbsRel of the depth input and of the fused keyframe depth, on the same pixels.

    Args:
        keyframes: keyframes as handed to the back end (final fused depth).
        items: the input frames (exact depth), one per entry of ``depths``.
        depths: the depth input of every frame.

    Returns:
        ``keyframes_scored``, ``network_abs_rel``, ``fused_abs_rel``, ``reduction_pct``
        (``100 * (1 - fused / network)``) and ``coverage_pct`` (share of the valid ground truth
        where the fused depth is defined, i.e. the scored pixels).

    """
    index_of = {item.stamp_ns: index for index, item in enumerate(items)}
    network, fused = DepthMetricsAccumulator(), DepthMetricsAccumulator()
    for keyframe in keyframes:
        index = index_of[keyframe.stamp_ns]
        truth = items[index].depth
        if truth is None:
            continue
        fused.add(truth, keyframe.depth)
        network.add(truth, np.where(np.isfinite(keyframe.depth), depths[index].depth, np.nan))
    network_abs_rel, fused_abs_rel = network.result()["abs_rel"], fused.result()["abs_rel"]
    return {
        "keyframes_scored": len(fused.per_image),
        "network_abs_rel": network_abs_rel,
        "fused_abs_rel": fused_abs_rel,
        "reduction_pct": 100.0 * (1.0 - fused_abs_rel / network_abs_rel) if network_abs_rel > 0 else math.nan,
        "coverage_pct": 100.0 * fused.result()["pred_coverage"],
    }


def evaluate_method(
    items: Sequence[SequenceFrame], depths: Sequence[DepthResult], config: OdometryConfig,
    backend_config: BackendConfig | None = None, pose_priors: Sequence[NDArray[np.float64] | None] | None = None,
) -> Scores:
    """Run one method over a sequence (the two passes of the module docstring) and score it.

    Args:
        items: frames with exact depth and ground-truth poses (T_world_camera).
        depths: the depth input of every frame (same order).
        config: the odometry settings (method, fusion, ...).
        backend_config: loop closure / pose graph / map settings of the back end (None: defaults).
        pose_priors: the odometry's motion guess of every frame (T_previous_current or None),
            e.g. from the pose network; None for constant velocity.

    Returns:
        :func:`trajectory_scores` of the raw odometry, its ``position_nees_mean`` and
        ``position_error_over_sigma`` (:func:`~geovis_ros.eval.metrics_traj.position_consistency`:
        is the pose covariance honest), ``ate_final_m`` and ``end_drift_final_m``
        of the loop-corrected trajectory, ``drift_factor`` (raw / corrected end drift),
        ``loops``, :func:`keyframe_depth_scores`, ``lost``,
        ``keyframes``, ``ms_mean``, ``ms_p90``, ``cpu_ms_mean`` (per frame, stage only).

    Raises:
        TrajectoryEvalError: too few frames to score.
        ValueError: the frames carry no ground-truth poses.

    """
    depth_of = {item.stamp_ns: depth for item, depth in zip(items, depths, strict=True)}
    prior_of = {} if pose_priors is None else dict(zip((i.stamp_ns for i in items), pose_priors, strict=True))
    keyframes: list[Keyframe] = []
    run, _ = run_odometry_over(items, lambda frame, item: depth_of[item.stamp_ns], config, backend_config,
                               on_keyframe=lambda keyframe, name: keyframes.append(keyframe),
                               pose_estimator=(lambda frame: prior_of[frame.stamp_ns]) if prior_of else None)
    if run.gt_poses is None:
        raise ValueError("the frames carry no ground-truth poses; cannot score the trajectory")
    raw = np.stack([result.pose for result in run.odometry])
    scores = trajectory_scores(run.gt_poses, raw)
    consistency = position_consistency(run.gt_poses, raw, np.stack([result.covariance for result in run.odometry]))
    corrected = trajectory_scores(run.gt_poses, run.poses)
    timed = run_odometry(config, ((Frame(item.stamp_ns, item.rgb, item.intrinsics), depth, None)
                                  for item, depth in zip(items, depths, strict=True)), pose_priors).summary()
    return {
        **scores,
        "position_nees_mean": consistency["position_nees_mean"],
        "position_error_over_sigma": consistency["position_error_over_sigma"],
        "ate_final_m": corrected["ate_m"],
        "end_drift_final_m": corrected["end_drift_m"],
        "drift_factor": scores["end_drift_m"] / corrected["end_drift_m"] if corrected["end_drift_m"] > 0 else math.inf,
        "loops": run.loops,
        **keyframe_depth_scores(keyframes, items, depths),
        "lost": sum(result.state is TrackingState.LOST for result in run.odometry),
        "keyframes": run.keyframes,
        "ms_mean": timed["ms_mean"],
        "ms_p90": timed["ms_p90"],
        "cpu_ms_mean": timed["cpu_ms_mean"],
    }


def benchmark_sequence(
    sequence: str, frames: int, width: int, height: int, depth_estimator: DepthEstimator, seed: int = 0,
    log: Callable[[str], None] = lambda message: None, pose_estimator: PoseEstimator | None = None,
) -> Scores:
    """Render ``sequence``, compute its depth inputs (and pose-network priors) once, and evaluate every method.

    Returns:
        ``{"sequence", "is_loop", "path_m", "ate_ratio", "direct": scores, "features": scores}``
        with the scores of :func:`evaluate_method`; ``ate_ratio`` is features ATE / direct ATE.

    """
    log(f"{sequence}: rendering {frames} frames at {width}x{height}")
    items = list(render_sequence(sequence_config(sequence, frames, width, height, seed), with_flow=False))
    depths = [depth_estimator(Frame(item.stamp_ns, item.rgb, item.intrinsics), item) for item in items]
    priors = None
    if pose_estimator is not None:
        priors = [pose_estimator(Frame(item.stamp_ns, item.rgb, item.intrinsics)) for item in items]
        priors[0] = None  # the estimator's previous frame belonged to another sequence
    result: Scores = {"sequence": sequence, "is_loop": sequence.endswith("/" + LOOP_TRAJECTORY)}
    for name, config in method_configs().items():
        log(f"{sequence}: {name}")
        result[name] = evaluate_method(items, depths, config, pose_priors=priors)
    result["path_m"] = result["direct"]["path_m"]
    direct_ate = result["direct"]["ate_m"]
    result["ate_ratio"] = result["features"]["ate_m"] / direct_ate if direct_ate > 0 else math.inf
    return result


# --------------------------------------------------------------------------------------------------
# Report


_COLUMNS: tuple[tuple[str, int], ...] = (
    ("sequence", 16), ("method", 8), ("path m", 7), ("ATE m", 7), ("ATE %", 6), ("RPE %", 6), ("ATE x", 6),
    ("NEES", 6), ("KF AbsRel net", 13), ("fused", 6), ("red %", 6), ("cov %", 5), ("loops", 5), ("drift m", 7),
    ("after m", 7), ("drift x", 7), ("ms mean", 7), ("ms p90", 6), ("cpu ms", 6), ("lost", 4), ("KFs", 4),
)


def _row(sequence: Scores, method: str) -> list[str]:
    scores = sequence[method]
    first = method == "direct"
    return [
        sequence["sequence"] if first else "", method, format_number(scores["path_m"], digits=2),
        format_number(scores["ate_m"], digits=4), format_number(scores["ate_pct"], digits=2),
        format_number(scores["rpe_pct"], digits=2),
        format_number(sequence["ate_ratio"], "x", 1) if first else "",
        format_number(scores["position_nees_mean"], digits=2),
        format_number(scores["network_abs_rel"], digits=4), format_number(scores["fused_abs_rel"], digits=4),
        format_number(scores["reduction_pct"], digits=1), format_number(scores["coverage_pct"], digits=0),
        str(scores["loops"]),
        format_number(scores["end_drift_m"], digits=3), format_number(scores["end_drift_final_m"], digits=3),
        format_number(scores["drift_factor"], "x", 1),
        format_number(scores["ms_mean"], digits=1), format_number(scores["ms_p90"], digits=1),
        format_number(scores["cpu_ms_mean"], digits=1), str(scores["lost"]), str(scores["keyframes"]),
    ]


def _aligned(cells: Sequence[str]) -> str:
    """One table line: the two name columns left-aligned, the figures right-aligned."""
    return "  ".join(f"{cell:<{width}}" if i < 2 else f"{cell:>{width}}"
                     for i, (cell, (_, width)) in enumerate(zip(cells, _COLUMNS, strict=True))).rstrip()


def format_table(sequences: Sequence[Scores]) -> str:
    """The per-sequence, per-method table (one row per method, ``direct`` first)."""
    lines = [_aligned([title for title, _ in _COLUMNS])]
    lines += [_aligned(_row(sequence, method)) for sequence in sequences for method in method_configs()]
    return "\n".join(lines)


def memory_scores(bench: MapBenchmark) -> Scores:
    """JSON-ready figures of :func:`~geovis_ros.slam.backend.mapping.benchmark_mapping` (RSS growth in %)."""
    growth = bench.rss_growth
    return {**dataclasses.asdict(bench), "rss_growth_pct": None if growth is None else 100.0 * growth}


def format_memory(memory: Scores, width: int, height: int) -> str:
    """One paragraph on the map-memory benchmark."""
    head = (f"map memory: {memory['frames']} frames {width}x{height}, {memory['keyframes']} keyframes; "
            f"map {memory['map_points']}/{memory['max_points']} points")
    if memory["bound_reached_at_frame"] is None:
        rss = "bound not reached (no RSS figure; run more --memory-frames)"
    else:
        rss = (f"bound reached at frame {memory['bound_reached_at_frame']}; RSS after the bound "
               f"{memory['rss_after_bound_min_mb']:.1f} .. {memory['rss_after_bound_max_mb']:.1f} MB "
               f"(growth {format_number(memory['rss_growth_pct'], ' %', 2)}, max - min over min)")
    timing = (f"per frame: cloud {memory['cloud_ms']:.2f} ms; per keyframe: insert "
              f"{memory['keyframe_insert_ms']:.2f} ms; map rebuild {memory['rebuild_ms']:.1f} ms")
    return f"{head}\n  {rss}\n  {timing}"


def _worst(sequences: Sequence[Scores], value: Callable[[Scores], float], highest: bool) -> tuple[float, str]:
    """The worst value over ``sequences`` (highest or lowest) and the sequence it comes from."""
    scored = [(value(sequence), sequence["sequence"]) for sequence in sequences]
    scored = [(number, name) for number, name in scored if not math.isnan(number)]
    if not scored:
        return math.nan, "-"
    return max(scored) if highest else min(scored)


@dataclasses.dataclass(frozen=True)
class TargetRow:
    """One of the issue's targets and the worst figure measured for it.

    Attributes:
        target: what the issue asks, in words.
        worst: the worst value over the sequences it concerns (NaN: not measurable in this run).
        unit: unit of ``worst``.
        where: the sequence (or benchmark) it comes from.
        met: whether ``worst`` meets the target; None when it was not measurable (e.g. the fusion
            target with exact input depth).

    """

    target: str
    worst: float
    unit: str
    where: str
    met: bool | None


def target_rows(sequences: Sequence[Scores], memory: Scores | None) -> list[TargetRow]:
    """The issue's targets with the worst measured figure.

    Accuracy and speed targets concern the ``direct`` method; the loop target only sequences with a
    ``loop`` trajectory; the memory target the map benchmark (left out when it did not run or its
    bound was not reached).
    """
    def direct(key: str) -> Callable[[Scores], float]:
        return lambda sequence: float(sequence["direct"][key])

    checks: list[tuple[str, Sequence[Scores], Callable[[Scores], float], bool, str, Callable[[float], bool]]] = [
        ("ATE SE(3), no scale <= 1 % of path", sequences, direct("ate_pct"), True, "%", lambda v: v <= 1.0),
        ("RPE translation <= 1 %", sequences, direct("rpe_pct"), True, "%", lambda v: v <= 1.0),
        ("ATE >= 2x lower than features", sequences, lambda s: float(s["ate_ratio"]), False, "x",
         lambda v: v >= 2.0),
        ("fused keyframe AbsRel >= 30 % lower", sequences, direct("reduction_pct"), False, "%", lambda v: v >= 30.0),
        ("loop closure end drift >= 5x lower", [s for s in sequences if s["is_loop"]], direct("drift_factor"), False,
         "x", lambda v: v >= 5.0),
        ("tracking + fusion <= 20 ms/frame (mean)", sequences, direct("ms_mean"), True, "ms", lambda v: v <= 20.0),
    ]
    rows = []
    for title, subset, value, highest, unit, meets in checks:
        if subset:
            worst, where = _worst(subset, value, highest)
            rows.append(TargetRow(title, worst, unit, where, None if math.isnan(worst) else bool(meets(worst))))
    if sequences:
        nees = {str(s["sequence"]): float(s["direct"]["position_nees_mean"]) for s in sequences}
        where = max(nees, key=lambda name: abs(math.log(nees[name] / 3.0)) if nees[name] > 0 else math.inf)
        rows.append(TargetRow("position NEES within 3x of 3 dof", nees[where], "", where,
                              None if math.isnan(nees[where]) else 1.0 <= nees[where] <= 9.0))
    if memory is not None and memory["rss_growth_pct"] is not None:
        growth = float(memory["rss_growth_pct"])
        rows.append(TargetRow("memory flat within 10 % after the bound", growth, "%", "map benchmark", growth <= 10.0))
    return rows


def format_targets(rows: Sequence[TargetRow]) -> str:
    """The target rows as text: target, worst measured value, where, met / MISSED / n/a."""
    lines = [f"{'target (issue 6)':<42}{'worst':>10}  {'where':<16}verdict"]
    for row in rows:
        verdict = "n/a" if row.met is None else "met" if row.met else "MISSED"
        lines.append(f"{row.target:<42}{format_number(row.worst, ' ' + row.unit, 2):>10}  {row.where:<16}{verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command


def _image_size(text: str) -> tuple[int, int]:
    width, x, height = text.lower().partition("x")
    try:
        size = (int(width), int(height)) if x else None
    except ValueError:
        size = None
    if size is None or min(size) < 8:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT of at least 8x8 pixels, e.g. 320x240; got {text!r}")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``geovis vo-bench``."""
    parser.add_argument("--frames", type=int, help=f"frames per sequence (default {FULL.frames})")
    parser.add_argument("--size", type=_image_size, metavar="WxH",
                        help=f"image size (default {FULL.width}x{FULL.height})")
    parser.add_argument("--sequence", action="append", metavar="SCENE/TRAJECTORY",
                        help=f"synthetic sequence, repeatable (default: {' '.join(DEFAULT_SEQUENCES)})")
    parser.add_argument("--depth", choices=DEPTH_INPUTS, default="simulated",
                        help="depth input: simulated network errors (default), gt (exact), network (the shipped one)")
    parser.add_argument("--model-depth", default="", metavar="FILE",
                        help="with --depth network: depth weights (.safetensors / .onnx) instead of the shipped ones")
    parser.add_argument("--seed", type=int, default=0, help="renderer and simulated-depth seed (default 0, held out)")
    parser.add_argument("--motion-prior", choices=MOTION_PRIORS, default="constant_velocity",
                        help="odometry's per-frame initial guess, for both methods (default: constant_velocity)")
    parser.add_argument("--memory-frames", type=int, metavar="N",
                        help=f"frames of the map-memory benchmark, 0 to skip (default {FULL.memory_frames})")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write all figures to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK.frames} frames at {QUICK.width}x{QUICK.height}, "
                        f"{QUICK.memory_frames} memory frames (unless given)")


def _depth_estimator(args: argparse.Namespace) -> DepthEstimator:
    if args.depth == "simulated":
        return simulated_depth_estimator(args.seed)
    if args.depth == "gt":
        return make_depth_estimator("gt")
    if not args.model_depth:
        from geovis_ros.models.checkpoint import WEIGHTS_DIR

        shipped = WEIGHTS_DIR / "depth.safetensors"
        if not shipped.is_file():
            raise CommandError(f"--depth network: no shipped depth weights at {shipped}; train them or give "
                               "--model-depth FILE")
    try:
        return make_depth_estimator("network", model_path=args.model_depth)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as err:
        raise CommandError(f"cannot start the depth network: {err}") from None


def _log(message: str) -> None:
    print(f"vo-bench: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``geovis vo-bench``; prints the table (and writes ``--json``); returns 0."""
    defaults = QUICK if args.quick else FULL
    frames = defaults.frames if args.frames is None else args.frames
    width, height = (defaults.width, defaults.height) if args.size is None else args.size
    memory_frames = defaults.memory_frames if args.memory_frames is None else args.memory_frames
    sequences = args.sequence or list(DEFAULT_SEQUENCES)
    if frames < MIN_FRAMES:
        raise CommandError(f"--frames must be >= {MIN_FRAMES} (a trajectory to align), got {frames}")
    if memory_frames < 0:
        raise CommandError(f"--memory-frames must be >= 0, got {memory_frames}")
    for sequence in sequences:  # refuse a bad name before minutes of work on the others
        try:
            sequence_config(sequence, frames, width, height, args.seed)
        except ValueError as err:
            raise CommandError(f"--sequence {sequence}: {err}") from None
    estimator = _depth_estimator(args)
    try:
        pose_estimator = make_pose_estimator(args.motion_prior)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as err:
        raise CommandError(f"cannot start the pose network: {err}") from None
    memory = None
    if memory_frames:  # first: RSS freed by the sequences would stay resident and could absorb growth
        _log(f"map memory benchmark, {memory_frames} frames")
        memory = memory_scores(benchmark_mapping(frames=memory_frames, width=width, height=height))
    results = []
    for sequence in sequences:
        try:
            results.append(benchmark_sequence(sequence, frames, width, height, estimator, args.seed, _log,
                                              pose_estimator))
        except TrajectoryEvalError as err:
            raise CommandError(f"{sequence}: cannot score the trajectory: {err}") from None
    targets = target_rows(results, memory)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"vo-bench: {frames} frames {width}x{height}, depth input {args.depth}, motion prior {args.motion_prior}, "
          f"seed {args.seed}; "
          f"stage timed without networks ({os.cpu_count()} cores, load average {load:.1f})")
    print(format_table(results))
    if memory is not None:
        print(format_memory(memory, width, height))
    print(format_targets(targets))
    if args.json is not None:
        report = {
            "settings": {"frames": frames, "width": width, "height": height, "depth": args.depth, "seed": args.seed,
                         "memory_frames": memory_frames, "load_average": load},
            "sequences": results,
            "memory": memory,
            "targets": [dataclasses.asdict(row) for row in targets],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(json_ready(report), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
