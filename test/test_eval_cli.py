"""``geovis eval traj|depth|flow`` end to end through geovis_ros.cli.main: tables, JSON, plots, errors."""

import json
import math

import numpy as np
import pytest

from geovis_ros.cli import main
from geovis_ros.data.image_io import write_depth_png, write_flo, write_kitti_flow_png, write_pfm
from geovis_ros.data.trajectory_io import write_trajectory
from geovis_ros.geometry.se3 import so3_exp

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def helix(n: int = 80) -> np.ndarray:
    """(n, 4, 4) poses on a rising helix of radius 3 m, looking along the tangent."""
    angle = np.linspace(0.0, 3.0, n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, 3] = np.stack([3 * np.cos(angle), 3 * np.sin(angle), 0.5 * angle], axis=1)
    poses[:, :3, :3] = [so3_exp([0.0, 0.0, a]) for a in angle]
    return poses


def run_cli(capsys, *argv):
    status = main(["eval", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------------------ traj


def test_traj_tum_sim3_json_and_plot(tmp_path, capsys):
    gt = helix()
    stamps = np.arange(len(gt)) / 10.0
    est = gt.copy()
    est[:, :3, 3] = 0.5 * gt[:, :3, 3] + [1.0, 0.0, 0.0]  # half scale, shifted: sim3 undoes it
    write_trajectory(tmp_path / "gt.txt", stamps, gt)
    write_trajectory(tmp_path / "est.txt", stamps + 0.002, est)
    out_json, out_png = tmp_path / "out" / "traj.json", tmp_path / "traj.png"
    status, out, err = run_cli(capsys, "traj", "--gt", tmp_path / "gt.txt", "--est", tmp_path / "est.txt",
                               "--align", "sim3", "--json", out_json, "--plot", out_png)
    assert status == 0, err
    assert "ATE RMSE [m]" in out and "RPE translation [%]" in out
    scores = json.loads(out_json.read_text())
    assert {"ate_rmse_m", "rpe_trans_pct", "rpe_rot_deg_per_m", "aligned_scale", "pairs"} <= set(scores)
    assert scores["pairs"] == 80
    assert scores["ate_rmse_m"] == pytest.approx(0.0, abs=1e-9)
    assert scores["aligned_scale"] == pytest.approx(2.0, rel=1e-9)
    assert scores["rpe_trans_pct"] == pytest.approx(0.0, abs=1e-6)
    assert_png(out_png)


def test_traj_kitti_by_index_with_explicit_segments(tmp_path, capsys):
    gt = helix(40)
    est = gt.copy()
    est[:, :3, 3] += [0.3, 0.0, 0.0]
    write_trajectory(tmp_path / "gt.txt", [], gt, "kitti")
    write_trajectory(tmp_path / "est.txt", [], est, "kitti")
    out_json = tmp_path / "traj.json"
    status, _, err = run_cli(capsys, "traj", "--gt", tmp_path / "gt.txt", "--est", tmp_path / "est.txt",
                             "--format", "kitti", "--align", "none", "--segment-lengths", "1,2",
                             "--step-frames", "1", "--json", out_json)
    assert status == 0, err
    scores = json.loads(out_json.read_text())
    assert scores["ate_rmse_m"] == pytest.approx(0.3, abs=1e-12)
    assert scores["segment_lengths_m"] == [1.0, 2.0] and scores["segments"] > 0
    assert scores["rpe_trans_pct"] == pytest.approx(0.0, abs=1e-9)  # a constant offset is no drift


def test_traj_errors_exit_2_with_a_clear_message(tmp_path, capsys):
    gt = helix(20)
    write_trajectory(tmp_path / "gt.txt", np.arange(20.0), gt)
    write_trajectory(tmp_path / "late.txt", np.arange(20.0) + 500, gt)
    write_trajectory(tmp_path / "short.kitti", [], gt[:10], "kitti")
    write_trajectory(tmp_path / "gt.kitti", [], gt, "kitti")
    (tmp_path / "bad.txt").write_text("0 0 0 0 0 0 0 1\n1 2 3\n")
    cases = [
        (["--est", tmp_path / "missing.txt"], "estimate trajectory not found"),
        (["--est", tmp_path / "late.txt"], "no associated pairs"),
        (["--est", tmp_path / "bad.txt"], "bad.txt:2: expected 8 numbers"),
    ]
    for extra, message in cases:
        status, _, err = run_cli(capsys, "traj", "--gt", tmp_path / "gt.txt", *extra)
        assert status == 2 and message in err, err
    status, _, err = run_cli(capsys, "traj", "--gt", tmp_path / "gt.kitti", "--est",
                             tmp_path / "short.kitti", "--format", "kitti")
    assert status == 2 and "same length" in err


# ------------------------------------------------------------------------------ depth


def depth_pair(seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1.0, 20.0, size=(48, 64)).astype(np.float32)
    gt[:4] = np.nan
    return gt, (gt * 1.1).astype(np.float32)


def test_depth_single_npy_files_with_median_scaling_json_and_plot(tmp_path, capsys):
    gt, pred = depth_pair()
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "pred.npy", pred)
    out_json, out_png = tmp_path / "depth.json", tmp_path / "depth.png"
    status, out, err = run_cli(capsys, "depth", "--gt", tmp_path / "gt.npy", "--pred",
                               tmp_path / "pred.npy", "--median-scaling", "--json", out_json,
                               "--plot", out_png)
    assert status == 0, err
    assert "abs_rel" in out
    scores = json.loads(out_json.read_text())
    assert {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "n_pixels"} <= set(scores)
    assert scores["n_pixels"] == 44 * 64
    assert scores["abs_rel"] == pytest.approx(0.0, abs=1e-6) and scores["a1"] == 1.0
    assert scores["scale"] == pytest.approx(1 / 1.1, rel=1e-6)
    assert_png(out_png)


def test_depth_folders_png_mm_against_pfm_disparity(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    focal_baseline = 50.0
    for index in range(2):
        gt, _ = depth_pair(seed=index)
        write_depth_png(tmp_path / "gt" / f"{index:06d}.png", gt)  # millimetres
        disparity = np.where(np.isfinite(gt), focal_baseline / (gt.astype(np.float64) * 1.25), 0.0)
        write_pfm(tmp_path / "pred" / f"{index:06d}.pfm", disparity.astype(np.float32))
    (tmp_path / "gt" / "notes.txt").write_text("ignored: not a depth file")
    out_json = tmp_path / "depth.json"
    status, _, err = run_cli(capsys, "depth", "--gt", tmp_path / "gt", "--pred", tmp_path / "pred",
                             "--calib", focal_baseline, "--max-depth", "80", "--json", out_json)
    assert status == 0, err
    scores = json.loads(out_json.read_text())
    assert scores["n_images"] == 2 and scores["n_pixels"] == 2 * 44 * 64
    assert scores["abs_rel"] == pytest.approx(0.25, abs=1e-3)  # mm rounding of the PNG


def test_depth_errors_exit_2_with_a_clear_message(tmp_path, capsys):
    gt, pred = depth_pair()
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "small.npy", pred[:10])
    write_pfm(tmp_path / "disp.pfm", np.ones((48, 64), np.float32))
    (tmp_path / "gt_dir").mkdir()
    (tmp_path / "pred_dir").mkdir()
    np.save(tmp_path / "gt_dir" / "a.npy", gt)
    np.save(tmp_path / "gt_dir" / "b.npy", gt)
    np.save(tmp_path / "pred_dir" / "a.npy", pred)
    (tmp_path / "depth.jpg").write_bytes(b"")
    cases = [
        (tmp_path / "gt.npy", tmp_path / "missing.npy", "prediction not found"),
        (tmp_path / "gt.npy", tmp_path / "small.npy", "size mismatch"),
        (tmp_path / "gt.npy", tmp_path / "disp.pfm", "--calib"),
        (tmp_path / "gt.npy", tmp_path / "pred_dir", "both be files or both be folders"),
        (tmp_path / "gt_dir", tmp_path / "pred_dir", "1 ground-truth files have no prediction"),
        (tmp_path / "gt.npy", tmp_path / "depth.jpg", "unsupported file type"),
    ]
    for gt_path, pred_path, message in cases:
        status, _, err = run_cli(capsys, "depth", "--gt", gt_path, "--pred", pred_path)
        assert status == 2 and message in err, (message, err)
    np.save(tmp_path / "far.npy", np.full((48, 64), 500.0))
    status, _, err = run_cli(capsys, "depth", "--gt", tmp_path / "far.npy", "--pred", tmp_path / "gt.npy")
    assert status == 2 and "no pixel to score" in err


# ------------------------------------------------------------------------------ flow


def flow_pair():
    rng = np.random.default_rng(1)
    gt = rng.normal(scale=5.0, size=(48, 64, 2)).astype(np.float32)
    pred = gt.copy()
    pred[:, :32, 0] += 4.0  # left half 4 px off: EPE 2 on average; outliers where |gt| < 80 px (all)
    return gt, pred


def test_flow_flo_and_kitti_png_json_and_plot(tmp_path, capsys):
    gt, pred = flow_pair()
    valid = np.ones(gt.shape[:2], bool)
    valid[0] = False
    write_kitti_flow_png(tmp_path / "gt.png", gt, valid)
    write_flo(tmp_path / "pred.flo", pred)
    out_json, out_png = tmp_path / "flow.json", tmp_path / "flow.png"
    status, out, err = run_cli(capsys, "flow", "--gt", tmp_path / "gt.png", "--pred", tmp_path / "pred.flo",
                               "--json", out_json, "--plot", out_png)
    assert status == 0, err
    assert "EPE [px]" in out
    scores = json.loads(out_json.read_text())
    assert {"epe", "fl_all", "n_pixels"} <= set(scores)
    assert scores["n_pixels"] == 47 * 64
    assert scores["epe"] == pytest.approx(2.0, abs=0.02)  # KITTI PNG stores 1/64 px
    assert scores["fl_all"] == pytest.approx(0.5, abs=0.01)
    assert_png(out_png)


def test_flow_folders_of_npy_and_errors(tmp_path, capsys):
    gt, pred = flow_pair()
    for name in ("gt", "pred"):
        (tmp_path / name).mkdir()
    np.save(tmp_path / "gt" / "0001.npy", gt)
    np.save(tmp_path / "pred" / "0001.npy", pred)
    write_flo(tmp_path / "pred" / "0002.flo", pred)
    np.save(tmp_path / "gt" / "0002.npy", gt)
    out_json = tmp_path / "flow.json"
    status, _, err = run_cli(capsys, "flow", "--gt", tmp_path / "gt", "--pred", tmp_path / "pred",
                             "--json", out_json)
    assert status == 0, err
    scores = json.loads(out_json.read_text())
    assert scores["n_images"] == 2 and scores["epe"] == pytest.approx(2.0, abs=1e-5)

    np.save(tmp_path / "small.npy", gt[:, :10])
    np.save(tmp_path / "depth.npy", gt[..., 0])
    (tmp_path / "broken.flo").write_bytes(b"PIEH")
    cases = [
        (tmp_path / "gt" / "0001.npy", tmp_path / "small.npy", "size mismatch"),
        (tmp_path / "gt" / "0001.npy", tmp_path / "depth.npy", "(H, W, 2)"),
        (tmp_path / "gt" / "0001.npy", tmp_path / "broken.flo", "broken.flo"),
        (tmp_path / "nothing.flo", tmp_path / "broken.flo", "ground truth not found"),
    ]
    for gt_path, pred_path, message in cases:
        status, _, err = run_cli(capsys, "flow", "--gt", gt_path, "--pred", pred_path)
        assert status == 2 and message in err, (message, err)


def test_json_writes_null_for_undefined_scores(tmp_path, capsys):
    still = np.tile(np.eye(4), (12, 1, 1))
    write_trajectory(tmp_path / "gt.txt", np.arange(12.0), still)
    out_json = tmp_path / "still.json"
    status, out, err = run_cli(capsys, "traj", "--gt", tmp_path / "gt.txt", "--est", tmp_path / "gt.txt",
                               "--align", "none", "--json", out_json)
    assert status == 0, err
    scores = json.loads(out_json.read_text())
    assert scores["rpe_trans_pct"] is None and scores["ate_rmse_m"] == 0.0
    assert "n/a" in out
    assert not math.isnan(scores["aligned_scale"])
