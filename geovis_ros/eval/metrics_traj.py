"""Trajectory metrics: association, Umeyama alignment, ATE, RPE (evo / TUM style) and KITTI odometry RPE.

All poses are (N, 4, 4) float64 ``T_world_sensor`` in metres; ``gt`` and ``est`` arrays passed to a
metric are already associated (row i of one belongs to row i of the other).

Definitions (so the figures compare with papers and tools):

- :func:`associate` follows the TUM RGB-D ``associate.py`` tool: every pair of stamps closer than
  ``max_diff_s`` is a candidate, candidates are taken greedily by increasing time difference, and each
  stamp is used at most once. evo's ``sync.associate_trajectories`` instead matches each stamp of the
  shorter trajectory to its nearest neighbour in the longer one (a stamp may be used twice); both give
  the same pairs whenever those nearest neighbours are distinct, the usual case for two streams
  sampled at similar rates.
- :func:`ate` is evo's ``APE`` with ``PoseRelation.translation_part`` after ``align``/``correct_scale``
  (Umeyama 1991): the RMSE of the position differences after the best SE(3) / Sim(3) fit of the
  estimate onto the ground truth.
- :func:`rpe` is evo's ``RPE`` (TUM RGB-D benchmark, Sturm et al. 2012):
  ``E_i = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j)``, translation error ``|trans(E_i)|`` (metres) and rotation
  error ``angle(E_i)`` (degrees), for pairs (i, j) ``delta`` frames or ``delta`` metres of travelled
  path apart. Pairs are picked on the ground truth (evo's ``pairs_from_reference=True``).
- :func:`kitti_rpe` is the KITTI odometry devkit metric (Geiger et al. 2012, ``evaluate_odometry.cpp``):
  for every ``step_frames``-th first frame and every segment length L, the last frame is the first whose
  travelled ground-truth distance exceeds L; errors are ``|trans(E)| / L`` and ``angle(E) / L``, averaged
  over all (first frame, length) segments. Reported as a percentage and in degrees per metre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.errors import GeovisError
from geovis_ros.geometry.se3 import invert

AlignMode = Literal["se3", "sim3", "none"]
DeltaUnit = Literal["frames", "m"]
AssociateBy = Literal["stamp", "index"]

# KITTI odometry devkit: segments of 100, 200, ..., 800 m starting every 10th frame.
KITTI_SEGMENT_LENGTHS_M: tuple[float, ...] = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)
KITTI_STEP_FRAMES = 10


class TrajectoryEvalError(GeovisError, ValueError):
    """Trajectories cannot be compared: no associated pairs, mismatched sizes, degenerate alignment."""


# --------------------------------------------------------------------------------------------------
# Association


def associate(
    stamps_gt: ArrayLike, stamps_est: ArrayLike, max_diff_s: float = 0.01
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Match two stamp lists like TUM's ``associate.py``: greedy by smallest |difference|, one-to-one.

    Args:
        stamps_gt: (N,) seconds.
        stamps_est: (M,) seconds (any order).
        max_diff_s: largest accepted |t_gt - t_est|, seconds (TUM and evo default: 0.01).

    Returns:
        ``(index_gt, index_est)``: (K,) int64 arrays of matched rows, ordered by ``index_gt``.

    """
    gt = np.asarray(stamps_gt, dtype=np.float64).reshape(-1)
    est = np.asarray(stamps_est, dtype=np.float64).reshape(-1)
    if max_diff_s < 0:
        raise ValueError(f"max_diff_s must be >= 0, got {max_diff_s}")
    est_order = np.argsort(est, kind="stable")
    est_sorted = est[est_order]
    lo = np.searchsorted(est_sorted, gt - max_diff_s, side="left")
    hi = np.searchsorted(est_sorted, gt + max_diff_s, side="right")
    counts = hi - lo
    # All candidate pairs (gt row, est row) within the window, built without a Python loop.
    cand_gt = np.repeat(np.arange(gt.size), counts)
    offsets = np.arange(cand_gt.size) - np.repeat(np.cumsum(counts) - counts, counts)
    cand_est = est_order[np.repeat(lo, counts) + offsets]
    diffs = np.abs(gt[cand_gt] - est[cand_est])
    keep = diffs <= max_diff_s
    cand_gt, cand_est, diffs = cand_gt[keep], cand_est[keep], diffs[keep]
    order = np.lexsort((cand_est, cand_gt, diffs))
    used_gt = np.zeros(gt.size, dtype=bool)
    used_est = np.zeros(est.size, dtype=bool)
    matches: list[tuple[int, int]] = []
    for i, j in zip(cand_gt[order].tolist(), cand_est[order].tolist(), strict=True):
        if not used_gt[i] and not used_est[j]:
            used_gt[i] = used_est[j] = True
            matches.append((i, j))
    matches.sort()
    pairs = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


# --------------------------------------------------------------------------------------------------
# Alignment


@dataclass(frozen=True)
class Similarity:
    """A similarity transform ``p -> scale * rotation @ p + translation`` (world frames, metres)."""

    rotation: NDArray[np.float64] = field(default_factory=lambda: np.eye(3))
    translation: NDArray[np.float64] = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0

    def apply(self, poses: ArrayLike) -> NDArray[np.float64]:
        """Poses (N, 4, 4) re-expressed by this transform: positions mapped, orientations rotated."""
        poses = np.asarray(poses, dtype=np.float64)
        out = poses.copy()
        out[:, :3, :3] = self.rotation @ poses[:, :3, :3]
        out[:, :3, 3] = self.scale * poses[:, :3, 3] @ self.rotation.T + self.translation
        return out


def umeyama(source_xyz: ArrayLike, target_xyz: ArrayLike, with_scale: bool) -> Similarity:
    """Least-squares similarity with ``target ~= s R source + t`` (Umeyama, PAMI 1991).

    Args:
        source_xyz: (N, 3) points to move (estimated positions).
        target_xyz: (N, 3) reference points (ground-truth positions).
        with_scale: estimate the scale (Sim(3)); otherwise scale = 1 (SE(3)).

    Raises:
        TrajectoryEvalError: fewer than 3 points or the points are (nearly) collinear, so the
            rotation is not determined.

    """
    x = np.asarray(source_xyz, dtype=np.float64)
    y = np.asarray(target_xyz, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"point sets must both be (N, 3), got {x.shape} and {y.shape}")
    if x.shape[0] < 3:
        raise TrajectoryEvalError(f"alignment needs at least 3 poses, got {x.shape[0]}")
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mean_x, y - mean_y
    variance_x = float(np.sum(xc**2)) / x.shape[0]
    covariance = yc.T @ xc / x.shape[0]
    u, singular, vt = np.linalg.svd(covariance)
    if variance_x == 0.0 or singular[1] <= 1e-12 * max(singular[0], 1e-300):
        raise TrajectoryEvalError(
            "degenerate trajectory (standing still or on a straight line): the alignment rotation "
            "is not determined; use align 'none'"
        )
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0.0:
        sign[2] = -1.0
    rotation = (u * sign) @ vt
    scale = float(np.sum(singular * sign) / variance_x) if with_scale else 1.0
    return Similarity(rotation, mean_y - scale * rotation @ mean_x, scale)


def align_trajectory(
    gt_poses: ArrayLike, est_poses: ArrayLike, align: AlignMode = "se3"
) -> tuple[NDArray[np.float64], Similarity]:
    """Estimated poses (N, 4, 4) moved onto the ground truth by Umeyama on positions, and the transform.

    ``align``: ``"se3"`` rotation + translation, ``"sim3"`` plus scale, ``"none"`` identity.
    """
    gt, est = _checked_pair(gt_poses, est_poses)
    if align == "none":
        transform = Similarity()
    elif align in ("se3", "sim3"):
        transform = umeyama(est[:, :3, 3], gt[:, :3, 3], with_scale=align == "sim3")
    else:
        raise ValueError(f"unknown alignment {align!r}; expected 'se3', 'sim3' or 'none'")
    return transform.apply(est), transform


# --------------------------------------------------------------------------------------------------
# Metrics


def _checked_pair(
    gt_poses: ArrayLike, est_poses: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    gt = np.asarray(gt_poses, dtype=np.float64)
    est = np.asarray(est_poses, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (4, 4) or est.shape != gt.shape:
        raise TrajectoryEvalError(
            f"need two (N, 4, 4) pose arrays of equal N, got {gt.shape} and {est.shape}"
        )
    if gt.shape[0] == 0:
        raise TrajectoryEvalError("no poses to compare")
    return gt, est


def _statistics(errors: NDArray[np.float64], prefix: str, unit: str) -> dict[str, float]:
    """RMSE, mean, median, std (population, like evo) and max of an error vector."""
    return {
        f"{prefix}_rmse_{unit}": float(np.sqrt(np.mean(errors**2))),
        f"{prefix}_mean_{unit}": float(np.mean(errors)),
        f"{prefix}_median_{unit}": float(np.median(errors)),
        f"{prefix}_std_{unit}": float(np.std(errors)),
        f"{prefix}_max_{unit}": float(np.max(errors)),
    }


def rotation_angles(rotations: ArrayLike) -> NDArray[np.float64]:
    """Angles (N,) in radians, in [0, pi], of rotation matrices (N, 3, 3); accurate near 0 and pi."""
    r = np.asarray(rotations, dtype=np.float64)
    axis = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], axis=-1)
    sin_theta = 0.5 * np.linalg.norm(axis, axis=-1)
    cos_theta = 0.5 * (np.trace(r, axis1=1, axis2=2) - 1.0)
    return np.arctan2(sin_theta, cos_theta)


def cumulative_distances(poses: ArrayLike) -> NDArray[np.float64]:
    """Travelled path length (N,) in metres from pose 0 to each pose (straight lines between poses)."""
    xyz = np.asarray(poses, dtype=np.float64)[:, :3, 3]
    steps = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def relative_pose_errors(
    gt: NDArray[np.float64], est: NDArray[np.float64], first: NDArray[np.int64], last: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Translation (m) and rotation (rad) errors (K,) of the motions ``first[k] -> last[k]``.

    ``E = (gt_i^-1 gt_j)^-1 (est_i^-1 est_j)``; its translation norm and angle are the same for the
    devkit's ``(est_i^-1 est_j)^-1 (gt_i^-1 gt_j)``, so one function serves evo's RPE and KITTI's.
    """
    gt_motion = invert(gt[first]) @ gt[last]
    est_motion = invert(est[first]) @ est[last]
    error = invert(gt_motion) @ est_motion
    return np.linalg.norm(error[:, :3, 3], axis=1), rotation_angles(error[:, :3, :3])


def ate(gt_poses: ArrayLike, est_poses: ArrayLike, align: AlignMode = "se3") -> dict[str, float]:
    """Absolute trajectory error of associated poses (evo APE, translation part).

    Returns:
        ``ate_rmse_m``, ``ate_mean_m``, ``ate_median_m``, ``ate_std_m``, ``ate_max_m`` (metres, after
        alignment), ``aligned_scale`` (Sim(3) scale applied to the estimate; 1 for se3/none) and
        ``pairs`` (number of poses compared).

    """
    gt, _ = _checked_pair(gt_poses, est_poses)
    aligned, transform = align_trajectory(gt_poses, est_poses, align)
    errors = np.linalg.norm(aligned[:, :3, 3] - gt[:, :3, 3], axis=1)
    return {**_statistics(errors, "ate", "m"), "aligned_scale": transform.scale, "pairs": int(gt.shape[0])}


def _pairs_by_frames(n: int, delta: int, all_pairs: bool) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    if all_pairs:
        first = np.arange(max(n - delta, 0), dtype=np.int64)
        return first, first + delta
    ids = np.arange(0, n, delta, dtype=np.int64)
    return ids[:-1], ids[1:]


def _pairs_by_path(
    distances: NDArray[np.float64], delta_m: float, tolerance_m: float, all_pairs: bool
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    n = distances.size
    if all_pairs:
        # For each i, the j > i whose path distance from i is closest to delta (ties: lowest j).
        first = np.arange(n - 1, dtype=np.int64)
        target = distances[:-1] + delta_m
        upper = np.searchsorted(distances, target, side="left")
        lower_value = distances[np.clip(upper - 1, 0, n - 1)]
        lower = np.maximum(np.searchsorted(distances, lower_value, side="left"), first + 1)
        upper_ok = upper < n
        lower_ok = upper - 1 > first
        gap_upper = np.where(upper_ok, np.abs(distances[np.minimum(upper, n - 1)] - target), np.inf)
        gap_lower = np.where(lower_ok, np.abs(distances[lower] - target), np.inf)
        last = np.where(gap_lower <= gap_upper, lower, upper)
        keep = np.minimum(gap_lower, gap_upper) <= tolerance_m
        return first[keep], last[keep].astype(np.int64)
    # Consecutive pairs: restart the path count at each selected pose.
    ids = [0]
    while True:
        nxt = int(np.searchsorted(distances, distances[ids[-1]] + delta_m, side="left"))
        if nxt >= n:
            break
        ids.append(max(nxt, ids[-1] + 1))
    id_array = np.asarray(ids, dtype=np.int64)
    return id_array[:-1], id_array[1:]


def rpe(
    gt_poses: ArrayLike,
    est_poses: ArrayLike,
    delta: float = 1,
    delta_unit: DeltaUnit = "frames",
    all_pairs: bool = False,
    rel_delta_tol: float = 0.1,
) -> dict[str, float]:
    """Relative pose error like evo's ``RPE`` (translation_part and rotation_angle_deg).

    The poses are used as given: align a monocular estimate with :func:`align_trajectory` (``"sim3"``)
    first so that its scale is right; a rigid alignment does not change the RPE.

    Args:
        gt_poses: (N, 4, 4) ground-truth poses.
        est_poses: (N, 4, 4) estimated poses associated with them.
        delta: pair distance: frames (integer) or metres of ground-truth path.
        delta_unit: ``"frames"`` or ``"m"``.
        all_pairs: every pose starts a pair; otherwise consecutive, non-overlapping pairs (evo default).
        rel_delta_tol: with ``all_pairs`` and metres, accept a pair whose path distance is within
            ``delta * rel_delta_tol`` of ``delta`` (evo default 0.1).

    Returns:
        ``rpe_trans_{rmse,mean,median,std,max}_m``, ``rpe_rot_{rmse,mean,median,std,max}_deg`` and
        ``pairs`` (number of pose pairs).

    Raises:
        TrajectoryEvalError: no pair at that distance.

    """
    gt, est = _checked_pair(gt_poses, est_poses)
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if delta_unit == "frames":
        if float(delta) != int(delta):
            raise ValueError(f"delta in frames must be an integer, got {delta}")
        first, last = _pairs_by_frames(gt.shape[0], int(delta), all_pairs)
    elif delta_unit == "m":
        first, last = _pairs_by_path(cumulative_distances(gt), float(delta), delta * rel_delta_tol, all_pairs)
    else:
        raise ValueError(f"unknown delta unit {delta_unit!r}; expected 'frames' or 'm'")
    if first.size == 0:
        raise TrajectoryEvalError(f"no pose pairs {delta} {delta_unit} apart in {gt.shape[0]} poses")
    trans_err, rot_err = relative_pose_errors(gt, est, first, last)
    return {
        **_statistics(trans_err, "rpe_trans", "m"),
        **_statistics(np.degrees(rot_err), "rpe_rot", "deg"),
        "pairs": int(first.size),
    }


def kitti_segment_lengths(total_length_m: float) -> tuple[float, ...]:
    """Default KITTI-style segment lengths for a trajectory of the given path length (metres).

    KITTI uses 100, 200, ..., 800 m on sequences of 0.5-5 km. Short (synthetic, indoor) sequences get
    the same eight multiples of a unit ``min(100 m, nice(total / 10))``, where ``nice`` rounds down to
    1, 2 or 5 times a power of ten: a 30 m sequence is scored on 2, 4, ..., 16 m segments, a 1 km or
    longer one on KITTI's own lengths. Empty for a trajectory that does not move.
    """
    if not total_length_m > 0:
        return ()
    tenth = total_length_m / 10.0
    power = 10.0 ** math.floor(math.log10(tenth))
    unit = max(m * power for m in (1.0, 2.0, 5.0) if m * power <= tenth * (1 + 1e-12))
    unit = min(unit, 100.0)
    return tuple(unit * k for k in range(1, 9))


def kitti_rpe(
    gt_poses: ArrayLike,
    est_poses: ArrayLike,
    segment_lengths_m: tuple[float, ...] | None = None,
    step_frames: int = KITTI_STEP_FRAMES,
) -> dict[str, Any]:
    """KITTI odometry devkit drift: translation error (%) and rotation error (deg/m) over segments.

    Args:
        gt_poses: (N, 4, 4) ground-truth poses.
        est_poses: (N, 4, 4) estimated poses associated with them (a monocular estimate aligned with
            Sim(3) first).
        segment_lengths_m: path lengths to score; None uses :func:`kitti_segment_lengths` of the
            ground-truth path length (KITTI's 100..800 m for trajectories of 1 km or more).
        step_frames: a segment starts at every ``step_frames``-th frame (devkit: 10).

    Returns:
        ``rpe_trans_pct`` (mean of ``|trans error| / L``, times 100), ``rpe_rot_deg_per_m`` (mean of
        ``angle error / L``, degrees per metre), ``segment_lengths_m``, ``segments`` (count) and
        ``per_length`` (for each length: ``trans_pct``, ``rot_deg_per_m``, ``segments``). Both means
        are NaN when no segment fits in the trajectory.

    """
    gt, est = _checked_pair(gt_poses, est_poses)
    if step_frames < 1:
        raise ValueError(f"step_frames must be >= 1, got {step_frames}")
    distances = cumulative_distances(gt)
    lengths = kitti_segment_lengths(float(distances[-1])) if segment_lengths_m is None else segment_lengths_m
    if any(length <= 0 for length in lengths):
        raise ValueError(f"segment lengths must be > 0, got {lengths}")
    starts = np.arange(0, gt.shape[0], step_frames, dtype=np.int64)
    length_grid = np.asarray(lengths, dtype=np.float64)
    # Devkit: the last frame is the first one whose distance exceeds dist[first] + L (strictly).
    ends = np.searchsorted(distances, distances[starts][:, None] + length_grid[None, :], side="right")
    found = ends < gt.shape[0]
    first = np.broadcast_to(starts[:, None], ends.shape)[found]
    segment_length = np.broadcast_to(length_grid[None, :], ends.shape)[found]
    trans_err, rot_err = relative_pose_errors(gt, est, first, ends[found])
    trans_rel = trans_err / segment_length
    rot_rel = np.degrees(rot_err) / segment_length
    per_length = {}
    for length in lengths:
        mask = segment_length == length
        per_length[f"{length:g}"] = {
            "trans_pct": float(100.0 * trans_rel[mask].mean()) if mask.any() else math.nan,
            "rot_deg_per_m": float(rot_rel[mask].mean()) if mask.any() else math.nan,
            "segments": int(mask.sum()),
        }
    return {
        "rpe_trans_pct": float(100.0 * trans_rel.mean()) if trans_rel.size else math.nan,
        "rpe_rot_deg_per_m": float(rot_rel.mean()) if rot_rel.size else math.nan,
        "segment_lengths_m": [float(length) for length in lengths],
        "segments": int(trans_rel.size),
        "per_length": per_length,
    }


# --------------------------------------------------------------------------------------------------
# The whole evaluation `geovis eval traj` prints


@dataclass(frozen=True)
class TrajectoryEvaluation:
    """Associated and aligned trajectories and their scores.

    Attributes:
        stamps_s: (K,) ground-truth stamps of the associated pairs, seconds (frame index for KITTI).
        gt_poses: (K, 4, 4) associated ground-truth poses.
        est_poses: (K, 4, 4) associated estimated poses after alignment.
        alignment: the similarity applied to the estimate.
        summary: JSON-ready scores: ``ate_rmse_m``, ``rpe_trans_pct``, ``rpe_rot_deg_per_m``,
            ``aligned_scale``, ``pairs`` (the stable keys) and details (``ate_*``, ``align``,
            ``segment_lengths_m``, ``segments``, ``path_length_m``).

    """

    stamps_s: NDArray[np.float64]
    gt_poses: NDArray[np.float64]
    est_poses: NDArray[np.float64]
    alignment: Similarity
    summary: dict[str, Any]


def evaluate_trajectory(
    gt_stamps_s: ArrayLike,
    gt_poses: ArrayLike,
    est_stamps_s: ArrayLike,
    est_poses: ArrayLike,
    *,
    align: AlignMode = "se3",
    associate_by: AssociateBy = "stamp",
    max_diff_s: float = 0.01,
    segment_lengths_m: tuple[float, ...] | None = None,
    step_frames: int = KITTI_STEP_FRAMES,
) -> TrajectoryEvaluation:
    """Associate, align, and score an estimated trajectory: ATE plus KITTI-style RPE.

    The KITTI RPE is computed on the aligned estimate, so with ``"sim3"`` a monocular trajectory is
    scored at the recovered scale (a rigid alignment leaves relative motions unchanged).

    Args:
        gt_stamps_s: (N,) ground-truth stamps, seconds (frame index for KITTI).
        gt_poses: (N, 4, 4) ground-truth poses.
        est_stamps_s: (M,) estimate stamps, seconds.
        est_poses: (M, 4, 4) estimated poses.
        align: ``"se3"``, ``"sim3"`` or ``"none"``.
        associate_by: ``"stamp"`` (:func:`associate`, TUM) or ``"index"`` (KITTI: N must equal M).
        max_diff_s: association tolerance in seconds.
        segment_lengths_m: RPE segment lengths, see :func:`kitti_rpe`.
        step_frames: RPE segment start spacing, see :func:`kitti_rpe`.

    Raises:
        TrajectoryEvalError: no associated pairs, different lengths by index, degenerate alignment.

    """
    gt_stamps = np.asarray(gt_stamps_s, dtype=np.float64).reshape(-1)
    est_stamps = np.asarray(est_stamps_s, dtype=np.float64).reshape(-1)
    gt_all = np.asarray(gt_poses, dtype=np.float64)
    est_all = np.asarray(est_poses, dtype=np.float64)
    if gt_stamps.size != gt_all.shape[0] or est_stamps.size != est_all.shape[0]:
        raise ValueError("each trajectory needs one stamp per pose")
    if associate_by == "index":
        if gt_all.shape[0] != est_all.shape[0]:
            raise TrajectoryEvalError(
                f"trajectories associated by index must have the same length: "
                f"{gt_all.shape[0]} ground-truth poses, {est_all.shape[0]} estimated"
            )
        index_gt = index_est = np.arange(gt_all.shape[0])
    elif associate_by == "stamp":
        index_gt, index_est = associate(gt_stamps, est_stamps, max_diff_s)
        if index_gt.size == 0:
            raise TrajectoryEvalError(
                f"no associated pairs: no stamps within {max_diff_s} s (ground truth "
                f"{gt_stamps.min():.3f}..{gt_stamps.max():.3f} s, estimate "
                f"{est_stamps.min():.3f}..{est_stamps.max():.3f} s)"
            )
    else:
        raise ValueError(f"unknown association {associate_by!r}; expected 'stamp' or 'index'")
    gt = gt_all[index_gt]
    aligned, transform = align_trajectory(gt, est_all[index_est], align)
    ate_scores = ate(gt, aligned, align="none")
    kitti = kitti_rpe(gt, aligned, segment_lengths_m, step_frames)
    summary: dict[str, Any] = {
        "ate_rmse_m": ate_scores["ate_rmse_m"],
        "rpe_trans_pct": kitti["rpe_trans_pct"],
        "rpe_rot_deg_per_m": kitti["rpe_rot_deg_per_m"],
        "aligned_scale": transform.scale,
        "pairs": int(index_gt.size),
        "align": align,
        **{key: ate_scores[key] for key in ("ate_mean_m", "ate_median_m", "ate_std_m", "ate_max_m")},
        "segment_lengths_m": kitti["segment_lengths_m"],
        "segments": kitti["segments"],
        "path_length_m": float(cumulative_distances(gt)[-1]),
    }
    return TrajectoryEvaluation(gt_stamps[index_gt], gt, aligned, transform, summary)


def position_consistency(gt_poses: ArrayLike, est_poses: ArrayLike, covariances: ArrayLike) -> dict[str, float]:
    """How honest an odometry's position covariance is: NEES and error / predicted sigma.

    The odometry frame is its first pose, so both trajectories are taken relative to their first
    pose (no fitted alignment: that would hide exactly the drift the covariance must describe).
    For frame i, ``e_i`` = estimated minus true position (metres, odometry frame) and
    ``NEES_i = e_i^T P_i^-1 e_i`` with ``P_i = J C_i J^T`` the covariance of the position (the
    covariance ``C_i`` is of a left perturbation ``exp(xi) T``, which moves the position ``p`` by
    ``v + w x p``: ``J = [I | -[p]x]``); a consistent estimator has mean NEES equal to the 3
    degrees of freedom.

    Args:
        gt_poses: (N, 4, 4) ground truth ``T_world_camera``.
        est_poses: (N, 4, 4) estimates ``T_odom_camera`` (associated row by row).
        covariances: (N, 6, 6) covariances over (x, y, z, rx, ry, rz), metres and radians.

    Returns:
        ``position_nees_mean``, ``position_nees_median``, ``position_error_over_sigma`` (median of
        ``|e_i| / sqrt(trace P_i)``) over the frames after the first, and ``nees_frames``.

    """
    gt, est = _checked_pair(gt_poses, est_poses)
    cov = np.asarray(covariances, dtype=np.float64).reshape(-1, 6, 6)
    if cov.shape[0] != gt.shape[0]:
        raise TrajectoryEvalError(f"{cov.shape[0]} covariances for {gt.shape[0]} poses")
    gt_rel = np.linalg.inv(gt[0]) @ gt
    est_rel = np.linalg.inv(est[0]) @ est
    error = est_rel[1:, :3, 3] - gt_rel[1:, :3, 3]
    p = est_rel[1:, :3, 3]
    jacobian = np.zeros((p.shape[0], 3, 6))
    jacobian[:, :, :3] = np.eye(3)
    jacobian[:, 0, 4], jacobian[:, 0, 5] = p[:, 2], -p[:, 1]  # -[p]x
    jacobian[:, 1, 3], jacobian[:, 1, 5] = -p[:, 2], p[:, 0]
    jacobian[:, 2, 3], jacobian[:, 2, 4] = p[:, 1], -p[:, 0]
    position = jacobian @ cov[1:] @ jacobian.transpose(0, 2, 1)
    nees = np.einsum("ni,ni->n", error, np.linalg.solve(position, error[:, :, None])[:, :, 0])
    ratio = np.linalg.norm(error, axis=1) / np.sqrt(np.trace(position, axis1=1, axis2=2))
    return {
        "position_nees_mean": float(np.mean(nees)) if nees.size else math.nan,
        "position_nees_median": float(np.median(nees)) if nees.size else math.nan,
        "position_error_over_sigma": float(np.median(ratio)) if ratio.size else math.nan,
        "nees_frames": float(nees.size),
    }
