"""``geovis odometry``: trajectory, per-frame depths, run report and map from a recording; clean errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geovis_ros.apps.ply import read_ply
from geovis_ros.cli import main
from geovis_ros.data.image_io import write_rgb
from geovis_ros.data.trajectory_io import read_trajectory
from geovis_ros.data.tum import write_tum_sequence
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

FRAMES = 30


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A short synthetic TUM folder (RGB, depth, ground truth, calibration)."""
    folder = tmp_path_factory.mktemp("tum")
    config = SynthConfig(scene="tabletop", trajectory="loop", frames=FRAMES, width=96, height=72, seed=2)
    write_tum_sequence(folder, render_sequence(config, with_flow=False))
    return folder


@pytest.mark.parametrize("method", ["features", "direct"])
def test_odometry_writes_trajectory_depths_and_map(recording, tmp_path, capsys, method: str) -> None:
    out = tmp_path / "traj.txt"
    status = main([
        "odometry", str(recording), "--out", str(out), "--depth-source", "gt", "--method", method,
        "--depth-out", str(tmp_path / "depths"), "--map-out", str(tmp_path / "map.ply"), "--quiet",
    ])
    assert status == 0
    stamps, poses = read_trajectory(out, "tum")
    gt_stamps, _ = read_trajectory(recording / "groundtruth.txt", "tum")
    np.testing.assert_allclose(stamps, gt_stamps)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-9)  # odom = the first keyframe's camera
    depth_files = sorted((tmp_path / "depths").glob("*.npy"))
    assert depth_files
    depth = np.load(depth_files[0])
    assert depth.shape == (72, 96) and depth.dtype == np.float32
    assert len(depth_files) == FRAMES  # every frame's best depth, not only the keyframes'
    keyframe_stamps, _ = read_trajectory(tmp_path / "depths" / "keyframes.txt", "tum")
    assert 1 <= len(keyframe_stamps) <= FRAMES
    cloud = read_ply(tmp_path / "map.ply")
    assert cloud.xyz.shape[0] > 100 and cloud.frame_id == "odom"
    summary = capsys.readouterr().out
    assert f"frames       {FRAMES}" in summary and "ATE final" in summary


def test_odometry_kitti_format_and_max_frames(recording, tmp_path) -> None:
    out = tmp_path / "traj.txt"
    status = main([
        "odometry", str(recording), "--out", str(out), "--format", "kitti", "--depth-source", "gt",
        "--method", "features", "--max-frames", "12", "--no-loop-closure", "--depth-format", "png",
        "--depth-out", str(tmp_path / "depths"), "--quiet",
    ])
    assert status == 0
    rows = out.read_text().split("\n")
    assert len([row for row in rows if row]) == 12 and len(rows[0].split()) == 12
    assert sorted((tmp_path / "depths").glob("*.png"))


def test_odometry_scores_against_a_given_ground_truth_file(recording, tmp_path, capsys) -> None:
    status = main([
        "odometry", str(recording), "--out", str(tmp_path / "t.txt"), "--depth-source", "gt", "--method",
        "features", "--max-frames", "10", "--gt", str(recording / "groundtruth.txt"), "--quiet",
    ])
    assert status == 0
    assert "ATE odometry" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-frames", "0"], "--max-frames must be >= 1"),
        (["--gt", "/nonexistent/gt.txt"], "no such file"),
        (["--model-depth", "/nonexistent/depth.onnx"], "cannot start the depth network"),
    ],
)
def test_odometry_bad_options_are_clean_errors(recording, tmp_path, capsys, extra, message: str) -> None:
    status = main(["odometry", str(recording), "--out", str(tmp_path / "t.txt"), "--quiet", *extra])
    assert status == 2
    assert message in capsys.readouterr().err


def test_odometry_unreadable_input_is_a_clean_error(tmp_path, capsys) -> None:
    assert main(["odometry", str(tmp_path / "missing"), "--out", str(tmp_path / "t.txt")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["odometry", str(tmp_path / "empty"), "--out", str(tmp_path / "t.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_odometry_ground_truth_depth_needs_depth_in_the_input(tmp_path, capsys) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        write_rgb(folder / f"{index:06d}.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    status = main([
        "odometry", str(folder), "--out", str(tmp_path / "t.txt"), "--calib", "50,50,31.5,23.5",
        "--depth-source", "gt", "--quiet",
    ])
    assert status == 2
    assert "has no depth" in capsys.readouterr().err


def test_odometry_relative_depth_source_and_run_report(recording, tmp_path, capsys) -> None:
    report = tmp_path / "run.json"
    status = main([
        "odometry", str(recording), "--out", str(tmp_path / "t.txt"), "--depth-source", "simulated-relative",
        "--max-frames", "20", "--report", str(report), "--depth-out", str(tmp_path / "d"), "--quiet",
    ])
    assert status == 0
    data = json.loads(report.read_text())
    assert data["frames"] == 20 and data["frames_lost"] + sum(data["tracked_by"].values()) >= 20
    assert data["scale_source"] == "none" and data["is_metric"] is False  # relative depth, no metric source
    assert set(data["ms_per_frame"]) >= {"depth", "odometry", "fused_depth", "total"}
    assert data["trajectory"]["ate_se3_m"] >= 0 and data["trajectory"]["position_nees_mean"] > 0
    # one scale for the sequence makes the published relative depth close to the true depth
    assert data["depth"]["published_one_scale_abs_rel"] < data["depth"]["network_abs_rel"]
    assert "depth        AbsRel published" in capsys.readouterr().out


def test_odometry_camera_height_reports_its_scale_source(recording, tmp_path) -> None:
    report = tmp_path / "run.json"
    status = main([
        "odometry", str(recording), "--out", str(tmp_path / "t.txt"), "--depth-source", "gt", "--max-frames", "8",
        "--camera-height", "1.0", "--report", str(report), "--quiet",
    ])
    assert status == 0
    assert json.loads(report.read_text())["scale_source"] in ("camera_height", "fused_map", "metric_network")
    assert main(["odometry", str(recording), "--out", str(tmp_path / "t.txt"), "--camera-height", "-1"]) == 2
