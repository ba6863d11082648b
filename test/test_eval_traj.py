"""Trajectory metrics: known answers, the KITTI devkit definition, and agreement with evo to 1e-6."""

import copy
import math

import numpy as np
import pytest

from geovis_ros.data.trajectory_io import read_trajectory, write_trajectory
from geovis_ros.eval.metrics_traj import (
    KITTI_SEGMENT_LENGTHS_M,
    Similarity,
    TrajectoryEvalError,
    align_trajectory,
    associate,
    ate,
    cumulative_distances,
    evaluate_trajectory,
    kitti_rpe,
    kitti_segment_lengths,
    position_consistency,
    rotation_angles,
    rpe,
    umeyama,
)
from geovis_ros.geometry.se3 import rotation_angle, so3_exp

try:
    from evo.core import metrics as evo_metrics
    from evo.core import sync
    from evo.tools import file_interface
except ImportError:  # evo is a test requirement (requirements-dev.txt); without it only the comparisons skip
    evo_metrics = None

needs_evo = pytest.mark.skipif(evo_metrics is None, reason="evo (requirements-dev.txt) is not installed")
TOL = 1e-6


def smooth_trajectory(n: int, seed: int) -> np.ndarray:
    """(n, 4, 4) smooth 6-DoF ground truth: forward drift plus random-walk velocity and rotation."""
    rng = np.random.default_rng(seed)
    velocity = np.cumsum(rng.normal(scale=0.01, size=(n, 3)), axis=0) + [0.08, 0.02, 0.01]
    rotvec = np.cumsum(rng.normal(scale=0.01, size=(n, 3)), axis=0)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, 3] = np.cumsum(velocity, axis=0)
    poses[:, :3, :3] = [so3_exp(w) for w in rotvec]
    return poses


def noisy_estimate(gt: np.ndarray, seed: int, transform: Similarity | None = None) -> np.ndarray:
    """gt with per-pose rotation/translation noise, then expressed in another (similarity) frame."""
    rng = np.random.default_rng(seed + 100)
    est = gt.copy()
    est[:, :3, :3] = np.array([so3_exp(rng.normal(scale=0.01, size=3)) for _ in gt]) @ gt[:, :3, :3]
    est[:, :3, 3] += rng.normal(scale=0.03, size=(len(gt), 3))
    return est if transform is None else transform.apply(est)


FOREIGN_FRAME = Similarity(so3_exp([0.4, -0.3, 1.2]), np.array([5.0, -2.0, 1.0]), 1.8)


# ------------------------------------------------------------------------------ known answers


def test_ate_of_ground_truth_against_itself_is_zero():
    gt = smooth_trajectory(60, seed=0)
    for align in ("se3", "sim3", "none"):
        result = ate(gt, gt, align)
        assert result["ate_rmse_m"] == pytest.approx(0.0, abs=1e-12)
        assert result["aligned_scale"] == pytest.approx(1.0, abs=1e-12)
        assert result["pairs"] == 60


def test_ate_of_constant_offset_without_alignment_is_the_offset():
    gt = smooth_trajectory(50, seed=1)
    offset = np.array([0.1, -0.2, 0.3])
    est = gt.copy()
    est[:, :3, 3] += offset
    result = ate(gt, est, "none")
    for key in ("ate_rmse_m", "ate_mean_m", "ate_median_m", "ate_max_m"):
        assert result[key] == pytest.approx(math.sqrt(0.14), abs=1e-12)
    assert result["ate_std_m"] == pytest.approx(0.0, abs=1e-12)
    assert ate(gt, est, "se3")["ate_rmse_m"] == pytest.approx(0.0, abs=1e-9)


def test_sim3_recovers_a_known_scale_and_se3_does_not():
    gt = smooth_trajectory(50, seed=2)
    est = Similarity(so3_exp([0.1, 0.2, -0.3]), np.array([1.0, 2.0, 3.0]), 2.5).apply(gt)
    sim3 = ate(gt, est, "sim3")
    assert sim3["aligned_scale"] == pytest.approx(1 / 2.5, rel=1e-12)
    assert sim3["ate_rmse_m"] == pytest.approx(0.0, abs=1e-9)
    se3 = ate(gt, est, "se3")
    assert se3["aligned_scale"] == 1.0
    assert se3["ate_rmse_m"] > 0.1


def test_umeyama_returns_the_generating_similarity():
    rng = np.random.default_rng(3)
    source = rng.normal(size=(30, 3))
    truth = Similarity(so3_exp([0.5, -1.0, 2.0]), np.array([3.0, -1.0, 0.5]), 0.7)
    target = truth.scale * source @ truth.rotation.T + truth.translation
    found = umeyama(source, target, with_scale=True)
    np.testing.assert_allclose(found.rotation, truth.rotation, atol=1e-12)
    np.testing.assert_allclose(found.translation, truth.translation, atol=1e-12)
    assert found.scale == pytest.approx(0.7, rel=1e-12)
    aligned, _ = align_trajectory(np.tile(np.eye(4), (30, 1, 1)), np.tile(np.eye(4), (30, 1, 1)), "none")
    np.testing.assert_array_equal(aligned, np.tile(np.eye(4), (30, 1, 1)))


@pytest.mark.parametrize("kind", ["standstill", "straight line", "two poses"])
def test_degenerate_alignment_is_a_clear_error(kind):
    n = 2 if kind == "two poses" else 10
    poses = np.tile(np.eye(4), (n, 1, 1))
    if kind != "standstill":
        poses[:, 0, 3] = np.arange(n)
    with pytest.raises(TrajectoryEvalError, match="degenerate|at least 3"):
        ate(poses, poses, "se3")
    assert ate(poses, poses, "none")["ate_rmse_m"] == 0.0


def test_mismatched_pose_arrays_are_refused():
    with pytest.raises(TrajectoryEvalError, match="equal N"):
        ate(np.tile(np.eye(4), (5, 1, 1)), np.tile(np.eye(4), (4, 1, 1)))
    with pytest.raises(ValueError, match="unknown alignment"):
        ate(smooth_trajectory(5, 0), smooth_trajectory(5, 0), "affine")  # type: ignore[arg-type]


def test_rotation_angles_match_the_scalar_formula_and_stay_accurate_near_zero_and_pi():
    rotations = np.array([so3_exp(w) for w in ([0.3, -0.2, 0.1], [1e-9, 0, 0], [0, np.pi - 1e-9, 0])])
    expected = [np.linalg.norm([0.3, -0.2, 0.1]), 1e-9, np.pi - 1e-9]
    np.testing.assert_allclose(rotation_angles(rotations), expected, rtol=1e-6)
    assert rotation_angles(rotations[:1])[0] == pytest.approx(rotation_angle(rotations[0]), abs=1e-12)


def test_rpe_hand_case_constant_step_error():
    # Ground truth moves 1 m along x per frame; the estimate 1.1 m: every 1-frame pair is 0.1 m off.
    gt = np.tile(np.eye(4), (11, 1, 1))
    gt[:, 0, 3] = np.arange(11.0)
    est = gt.copy()
    est[:, 0, 3] *= 1.1
    result = rpe(gt, est, 1, "frames")
    assert result["pairs"] == 10
    assert result["rpe_trans_rmse_m"] == pytest.approx(0.1, abs=1e-12)
    assert result["rpe_rot_max_deg"] == pytest.approx(0.0, abs=1e-12)
    by_metres = rpe(gt, est, 3.0, "m")  # pairs (0, 3), (3, 6), (6, 9): 0.3 m error each
    assert by_metres["pairs"] == 3
    assert by_metres["rpe_trans_mean_m"] == pytest.approx(0.3, abs=1e-12)
    with pytest.raises(TrajectoryEvalError, match="no pose pairs"):
        rpe(gt, est, 20, "frames")
    with pytest.raises(ValueError, match="integer"):
        rpe(gt, est, 1.5, "frames")


# ------------------------------------------------------------------------------ association


def test_association_is_greedy_by_smallest_difference_and_one_to_one():
    gt = [0.0, 1.0, 2.0, 3.0]
    est = [3.001, 0.004, 0.996, 1.008, 2.02]  # unsorted; 1.0 has two candidates; 2.0 none within 0.01
    index_gt, index_est = associate(gt, est, max_diff_s=0.01)
    np.testing.assert_array_equal(index_gt, [0, 1, 3])
    np.testing.assert_array_equal(index_est, [1, 2, 0])
    # One estimate stamp near two ground-truth stamps is used once (evo would reuse it).
    index_gt, index_est = associate([0.0, 0.008], [0.004], max_diff_s=0.01)
    assert index_gt.tolist() == [0] and index_est.tolist() == [0]
    assert associate([0.0], [1.0])[0].size == 0


# ------------------------------------------------------------------------------ KITTI devkit


def devkit_reference(gt, est, lengths, step):
    """The KITTI odometry devkit's computeSequenceErrors, literally (loops), for cross-checking."""
    dist = [0.0]
    for i in range(1, len(gt)):
        dist.append(dist[-1] + float(np.linalg.norm(gt[i, :3, 3] - gt[i - 1, :3, 3])))
    t_errs, r_errs = [], []
    for first in range(0, len(gt), step):
        for length in lengths:
            last = next((i for i in range(first, len(gt)) if dist[i] > dist[first] + length), -1)
            if last == -1:
                continue
            delta_gt = np.linalg.inv(gt[first]) @ gt[last]
            delta_est = np.linalg.inv(est[first]) @ est[last]
            error = np.linalg.inv(delta_est) @ delta_gt
            d = 0.5 * (np.trace(error[:3, :3]) - 1.0)
            r_errs.append(math.acos(max(min(d, 1.0), -1.0)) / length)
            t_errs.append(float(np.linalg.norm(error[:3, 3])) / length)
    return 100 * np.mean(t_errs), math.degrees(np.mean(r_errs)), len(t_errs)


def test_kitti_rpe_hand_case():
    # 1 m steps along x, estimate scaled by 1.1, 10 m segments from frames 0, 10, 20: the devkit's last
    # frame is the first *beyond* 10 m (11 m away), so the error is 1.1 m per 10 m = 11 %.
    gt = np.tile(np.eye(4), (31, 1, 1))
    gt[:, 0, 3] = np.arange(31.0)
    est = gt.copy()
    est[:, 0, 3] *= 1.1
    result = kitti_rpe(gt, est, segment_lengths_m=(10.0,), step_frames=10)
    assert result["segments"] == 2
    assert result["rpe_trans_pct"] == pytest.approx(11.0, abs=1e-9)
    assert result["rpe_rot_deg_per_m"] == pytest.approx(0.0, abs=1e-12)
    assert result["per_length"]["10"]["segments"] == 2


@pytest.mark.parametrize("step", [1, 10])
def test_kitti_rpe_matches_the_devkit_loops(step):
    gt = smooth_trajectory(150, seed=4)
    est = noisy_estimate(gt, seed=4)
    lengths = (2.0, 4.0, 6.0, 9.5)
    trans_pct, rot_deg_per_m, count = devkit_reference(gt, est, lengths, step)
    result = kitti_rpe(gt, est, lengths, step)
    assert result["segments"] == count > 0
    assert result["rpe_trans_pct"] == pytest.approx(trans_pct, abs=1e-9)
    assert result["rpe_rot_deg_per_m"] == pytest.approx(rot_deg_per_m, abs=1e-7)


def test_kitti_segment_length_defaults_scale_with_the_path():
    assert kitti_segment_lengths(5000.0) == KITTI_SEGMENT_LENGTHS_M
    assert kitti_segment_lengths(1000.0) == KITTI_SEGMENT_LENGTHS_M
    assert kitti_segment_lengths(30.0) == tuple(2.0 * k for k in range(1, 9))
    assert kitti_segment_lengths(500.0) == tuple(50.0 * k for k in range(1, 9))
    assert kitti_segment_lengths(0.0) == ()
    still = np.tile(np.eye(4), (20, 1, 1))
    result = kitti_rpe(still, still)
    assert result["segments"] == 0 and math.isnan(result["rpe_trans_pct"])


def test_cumulative_distances():
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[1, :3, 3] = [3, 4, 0]
    np.testing.assert_allclose(cumulative_distances(poses), [0, 5, 10])


# ------------------------------------------------------------------------------ evo agreement


def evo_associated(gt_path, est_path):
    return sync.associate_trajectories(
        file_interface.read_tum_trajectory_file(str(gt_path)),
        file_interface.read_tum_trajectory_file(str(est_path)),
    )


def evo_ape_rmse(ref, est, align):
    est = copy.deepcopy(est)
    if align != "none":
        est.align(ref, correct_scale=align == "sim3")
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    return ape.get_statistic(evo_metrics.StatisticsType.rmse), est


def evo_rpe(ref, est, relation, delta, unit, all_pairs):
    unit = evo_metrics.Unit.frames if unit == "frames" else evo_metrics.Unit.meters
    metric = evo_metrics.RPE(relation, delta, unit, all_pairs=all_pairs, pairs_from_reference=True)
    metric.process_data((ref, est))
    return metric


@pytest.fixture(scope="module")
def tum_files(tmp_path_factory):
    """GT at 30 Hz; estimate with jittered stamps, a late start, dropped frames, noise, another frame."""
    folder = tmp_path_factory.mktemp("tum")
    gt = smooth_trajectory(160, seed=5)
    stamps = 1000.0 + np.arange(160) / 30.0
    rng = np.random.default_rng(5)
    keep = np.sort(rng.choice(np.arange(8, 160), size=120, replace=False))
    est = noisy_estimate(gt, seed=5, transform=FOREIGN_FRAME)[keep]
    est_stamps = stamps[keep] + rng.uniform(-0.004, 0.004, size=keep.size)
    write_trajectory(folder / "gt.txt", stamps, gt)
    write_trajectory(folder / "est.txt", est_stamps, est)
    return folder / "gt.txt", folder / "est.txt"


@pytest.mark.parametrize("align", ["se3", "sim3", "none"])
@needs_evo
def test_ate_and_association_agree_with_evo_on_tum_files(tum_files, align):
    gt_path, est_path = tum_files
    ref, est = evo_associated(gt_path, est_path)
    evo_rmse, _ = evo_ape_rmse(ref, est, align)
    evaluation = evaluate_trajectory(*read_trajectory(gt_path), *read_trajectory(est_path), align=align)
    assert evaluation.summary["pairs"] == ref.num_poses == 120
    np.testing.assert_allclose(evaluation.stamps_s, ref.timestamps, atol=1e-9)
    assert evaluation.summary["ate_rmse_m"] == pytest.approx(evo_rmse, abs=TOL)
    if align == "sim3":
        assert evaluation.summary["aligned_scale"] == pytest.approx(1 / FOREIGN_FRAME.scale, rel=0.05)


@pytest.mark.parametrize(("delta", "unit", "all_pairs"), [(1, "frames", False), (7, "frames", True),
                                                          (1.5, "m", False), (1.5, "m", True)])
@pytest.mark.parametrize("align", ["se3", "sim3"])
@needs_evo
def test_rpe_agrees_with_evo_on_tum_files(tum_files, delta, unit, all_pairs, align):
    gt_path, est_path = tum_files
    ref, est = evo_associated(gt_path, est_path)
    _, est_aligned = evo_ape_rmse(ref, est, align)
    translation = evo_rpe(ref, est_aligned, evo_metrics.PoseRelation.translation_part, delta, unit, all_pairs)
    rotation = evo_rpe(ref, est_aligned, evo_metrics.PoseRelation.rotation_angle_deg, delta, unit, all_pairs)

    gt_stamps, gt_poses = read_trajectory(gt_path)
    est_stamps, est_poses = read_trajectory(est_path)
    index_gt, index_est = associate(gt_stamps, est_stamps)
    aligned, _ = align_trajectory(gt_poses[index_gt], est_poses[index_est], align)
    ours = rpe(gt_poses[index_gt], aligned, delta, unit, all_pairs=all_pairs)
    assert ours["pairs"] == len(translation.error) > 3
    for name in ("rmse", "mean", "median", "std", "max"):
        statistic = getattr(evo_metrics.StatisticsType, name)
        assert ours[f"rpe_trans_{name}_m"] == pytest.approx(translation.get_statistic(statistic), abs=TOL)
        assert ours[f"rpe_rot_{name}_deg"] == pytest.approx(rotation.get_statistic(statistic), abs=TOL)


@pytest.mark.parametrize("align", ["se3", "sim3", "none"])
@needs_evo
def test_ate_and_rpe_agree_with_evo_on_kitti_files(tmp_path, align):
    gt = smooth_trajectory(120, seed=6)
    est = noisy_estimate(gt, seed=6, transform=FOREIGN_FRAME if align != "none" else None)
    write_trajectory(tmp_path / "gt.txt", [], gt, "kitti")
    write_trajectory(tmp_path / "est.txt", [], est, "kitti")
    ref = file_interface.read_kitti_poses_file(str(tmp_path / "gt.txt"))
    evo_est = file_interface.read_kitti_poses_file(str(tmp_path / "est.txt"))
    evo_rmse, evo_est = evo_ape_rmse(ref, evo_est, align)
    evaluation = evaluate_trajectory(
        *read_trajectory(tmp_path / "gt.txt", "kitti"), *read_trajectory(tmp_path / "est.txt", "kitti"),
        align=align, associate_by="index",
    )
    assert evaluation.summary["ate_rmse_m"] == pytest.approx(evo_rmse, abs=TOL)
    translation = evo_rpe(ref, evo_est, evo_metrics.PoseRelation.translation_part, 2.0, "m", False)
    ours = rpe(evaluation.gt_poses, evaluation.est_poses, 2.0, "m")
    evo_rmse = translation.get_statistic(evo_metrics.StatisticsType.rmse)
    assert ours["rpe_trans_rmse_m"] == pytest.approx(evo_rmse, abs=TOL)


def test_evaluate_trajectory_refuses_unassociable_input():
    gt = smooth_trajectory(10, seed=7)
    with pytest.raises(TrajectoryEvalError, match="no associated pairs"):
        evaluate_trajectory(np.arange(10.0), gt, np.arange(10.0) + 100, gt)
    with pytest.raises(TrajectoryEvalError, match="same length"):
        evaluate_trajectory(np.arange(10.0), gt, np.arange(9.0), gt[:9], associate_by="index")


def test_relative_errors_are_invariant_to_a_rigid_change_of_world_frame():
    gt = smooth_trajectory(40, seed=8)
    est = noisy_estimate(gt, seed=8)
    moved = Similarity(so3_exp([1.0, 0.0, 0.5]), np.array([3.0, 0, 0])).apply(est)
    before, after = rpe(gt, est, 3), rpe(gt, moved, 3)
    assert after["rpe_trans_rmse_m"] == pytest.approx(before["rpe_trans_rmse_m"], abs=1e-12)
    assert after["rpe_rot_rmse_deg"] == pytest.approx(before["rpe_rot_rmse_deg"], abs=1e-9)


def test_position_consistency_of_errors_drawn_from_the_covariance():
    rng = np.random.default_rng(0)
    count = 400
    gt = np.tile(np.eye(4), (count, 1, 1))
    gt[:, 0, 3] = np.linspace(0.0, 10.0, count)  # straight line along x
    covariance = np.tile(np.diag([0.04, 0.01, 0.09, 1e-8, 1e-8, 1e-8]), (count, 1, 1))
    est = gt.copy()
    est[:, :3, 3] += rng.normal(0.0, [0.2, 0.1, 0.3], (count, 3))
    est[0] = gt[0]
    consistent = position_consistency(gt, est, covariance)
    assert consistent["position_nees_mean"] == pytest.approx(3.0, rel=0.2)
    assert position_consistency(gt, est, covariance / 100.0)["position_nees_mean"] > 100  # overconfident
