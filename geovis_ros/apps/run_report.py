"""Scores of one pipeline run against ground truth, and its report files (demo, process-bag, odometry). ROS-free.

Trajectory: ATE RMSE after an SE(3) alignment with NO scale correction (the odometry claims
metric scale), KITTI-style RPE, and the ground-truth path length. Depth: AbsRel and delta < 1.25
of the network depth against ground-truth depth (no median scaling). Timing: latency percentiles
and throughput, leaving out the first ``WARMUP_FRAMES`` frames, whose latency includes building
the inference engines (ONNX export, TensorRT build).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.apps.ply import write_ply
from geovis_ros.eval.metrics_traj import TrajectoryEvalError, TrajectoryEvaluation, evaluate_trajectory
from geovis_ros.frame import OdometryResult, PointCloud, TrackingState

WARMUP_FRAMES = 2
# Stamps of a result and its ground truth are the same message stamp; allow only rounding.
STAMP_TOLERANCE_S = 1e-3


def trajectory_metrics(
    gt_stamps_ns: ArrayLike, gt_poses: ArrayLike, est_stamps_ns: ArrayLike, est_poses: ArrayLike
) -> tuple[dict[str, float], TrajectoryEvaluation | None]:
    """Scores of estimated poses (M, 4, 4) T_odom_camera against ground truth (N, 4, 4) T_world_camera.

    Returns:
        ``({"ate_rmse_m", "ate_pct_of_length", "rpe_trans_pct", "trajectory_length_m",
        "estimated_length_m"}, evaluation)``; NaN scores and None when nothing can be associated.

    """
    gt_poses = np.asarray(gt_poses, np.float64).reshape(-1, 4, 4)
    est_poses = np.asarray(est_poses, np.float64).reshape(-1, 4, 4)
    scores = dict.fromkeys(
        ("ate_rmse_m", "ate_pct_of_length", "rpe_trans_pct", "trajectory_length_m", "estimated_length_m"), math.nan
    )
    if len(est_poses) >= 2:
        scores["estimated_length_m"] = float(np.sum(np.linalg.norm(np.diff(est_poses[:, :3, 3], axis=0), axis=1)))
    if len(gt_poses) < 2 or len(est_poses) < 2:
        return scores, None
    try:
        evaluation = evaluate_trajectory(
            np.asarray(gt_stamps_ns, np.int64) * 1e-9, gt_poses, np.asarray(est_stamps_ns, np.int64) * 1e-9,
            est_poses, align="se3", max_diff_s=STAMP_TOLERANCE_S,
        )
    except TrajectoryEvalError:
        return scores, None
    summary = evaluation.summary
    length = summary["path_length_m"]
    scores.update(
        ate_rmse_m=summary["ate_rmse_m"],
        ate_pct_of_length=100.0 * summary["ate_rmse_m"] / length if length > 0 else math.nan,
        rpe_trans_pct=summary["rpe_trans_pct"],
        trajectory_length_m=length,
    )
    return scores, evaluation


def timing_metrics(latencies_ms: Sequence[float], done_s: Sequence[float], warmup: int = WARMUP_FRAMES,
                   ) -> dict[str, float]:
    """Latency p50/p99 (ms) and throughput (frames/s) of frames in completion order.

    Args:
        latencies_ms: per frame, input -> result, milliseconds.
        done_s: per frame, completion time in seconds (any monotonic clock).
        warmup: the first frames left out (engine building).

    """
    latency = np.asarray(latencies_ms, np.float64)[warmup:]
    done = np.asarray(done_s, np.float64)[warmup:]
    p50, p99 = np.percentile(latency, [50, 99]) if latency.size else (math.nan, math.nan)
    span = float(done[-1] - done[0]) if done.size >= 2 else 0.0
    fps = (done.size - 1) / span if span > 0 else math.nan
    return {"latency_ms_p50": float(p50), "latency_ms_p99": float(p99), "fps": fps, "timed_frames": int(latency.size)}


def json_ready(value: Any) -> Any:
    """``value`` with NaN/inf floats as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_number(value: Any, unit: str = "", digits: int = 3) -> str:
    """``value`` with ``digits`` decimals and ``unit``; "n/a" for None, NaN and inf."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def format_report(title: str, metrics: dict[str, Any], details: Sequence[str] = ()) -> str:
    """Markdown report: title, a metric table, then ``details`` lines (already Markdown)."""
    lines = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    for key, value in metrics.items():
        shown = format_number(value, digits=4) if isinstance(value, float) else str(value)
        lines.append(f"| `{key}` | {shown} |")
    return "\n".join([*lines, "", *details, ""])


def write_run_outputs(
    out_dir: Path,
    title: str,
    metrics: dict[str, Any],
    details: Sequence[str] = (),
    evaluation: TrajectoryEvaluation | None = None,
    depth_example: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
    cloud: PointCloud | None = None,
) -> dict[str, Path]:
    """Write metrics.json, report.md and, when there is data for them, trajectory.png, depth.png, map.ply.

    Args:
        out_dir: folder (created).
        title: report title.
        metrics: flat JSON-able scores (NaN written as null).
        details: extra Markdown lines for the report.
        evaluation: aligned trajectories for trajectory.png.
        depth_example: (ground truth, prediction) (H, W) metres for depth.png.
        cloud: the map for map.ply.

    Returns:
        file kind -> path of every file written.

    """
    from geovis_ros.eval.plots import plot_depth, plot_trajectory

    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"metrics": out_dir / "metrics.json", "report": out_dir / "report.md"}
    written["metrics"].write_text(json.dumps(json_ready(metrics), indent=2) + "\n")
    if evaluation is not None:
        ate = metrics.get("ate_rmse_m", math.nan)
        written["trajectory"] = plot_trajectory(
            out_dir / "trajectory.png", evaluation.gt_poses[:, :3, 3], evaluation.est_poses[:, :3, 3],
            evaluation.stamps_s, title=f"{title}: ATE {ate:.3f} m (SE(3) aligned, no scale correction)")
    if depth_example is not None:
        gt, pred = depth_example
        finite = gt[np.isfinite(gt) & (gt > 0)]
        if finite.size:
            written["depth"] = plot_depth(out_dir / "depth.png", gt, pred, float(finite.min()) * 0.9,
                                          float(finite.max()) * 1.1, title=f"{title}: network depth")
    if cloud is not None:
        written["map"] = write_ply(out_dir / "map.ply", cloud)
    files = [f"- `{path.name}`" for path in written.values()]
    written["report"].write_text(format_report(title, metrics, [*details, "", "Files:", *files]))
    return written


def run_report(
    results: Sequence[OdometryResult], keyframes: int, loops: int, timings_ms: dict[str, float],
    scores: dict[str, float] | None, depth_scores: dict[str, float],
) -> dict[str, Any]:
    """The machine-readable report of one ``geovis odometry`` run (``--report FILE.json``).

    Args:
        results: one odometry result per frame.
        keyframes: keyframes handed to the back end.
        loops: verified loop closures.
        timings_ms: mean milliseconds per frame of each step.
        scores: trajectory scores (None without ground truth).
        depth_scores: published-depth scores (empty without ground-truth depth).

    Keys: ``frames``, ``frames_lost``, ``relocalisations``, ``keyframes``, ``loop_closures``,
    ``tracked_by`` (frames per tracker: direct, features, motion_model, ""), ``scale_source``,
    ``is_metric`` and ``scale_confidence`` (of the last frame), ``scale_sources`` (frames per
    source), ``ms_per_frame`` (mean per step and ``total``), ``trajectory`` (ATE/RPE/covariance
    scores, when there is ground truth) and ``depth`` (published-depth scores, when the input has depth).

    """
    states = [r.state for r in results]
    last = results[-1] if results else None
    trackers: dict[str, int] = {}
    sources: dict[str, int] = {}
    for result in results:
        trackers[result.tracker] = trackers.get(result.tracker, 0) + 1
        sources[result.scale_source.value] = sources.get(result.scale_source.value, 0) + 1
    return {
        "frames": len(results),
        "frames_lost": sum(state is TrackingState.LOST for state in states),
        "relocalisations": sum(state is TrackingState.RELOCALIZED for state in states),
        "keyframes": keyframes,
        "loop_closures": loops,
        "tracked_by": trackers,
        "scale_source": None if last is None else last.scale_source.value,
        "is_metric": None if last is None else last.is_metric,
        "scale_confidence": None if last is None else last.scale_confidence,
        "scale_sources": sources,
        "ms_per_frame": {**timings_ms, "total": sum(timings_ms.values())},
        "trajectory": scores or {},
        "depth": depth_scores,
    }


def write_json_report(path: Path, report: dict[str, Any]) -> Path:
    """Write ``report`` as strict JSON (NaN/inf as null) to ``path`` (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(report), indent=2) + "\n")
    return path
