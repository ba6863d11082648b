"""TUM / KITTI trajectory files: exact round trips, evo reads what we write, clear errors."""

import numpy as np
import pytest

from geovis_ros.data.trajectory_io import TrajectoryFormatError, read_trajectory, write_trajectory
from geovis_ros.geometry.se3 import so3_exp


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        poses[i, :3, :3] = so3_exp(rng.normal(size=3))
        poses[i, :3, 3] = rng.normal(size=3) * 10.0
    return poses


@pytest.mark.parametrize("fmt", ["tum", "kitti"])
def test_round_trip_is_exact_to_1e_9(tmp_path, fmt):
    poses = random_poses(20)
    stamps = 1.7e9 + np.arange(20) / 30.0
    path = tmp_path / f"traj_{fmt}.txt"
    write_trajectory(path, stamps, poses, fmt)
    read_stamps, read_poses = read_trajectory(path, fmt)
    np.testing.assert_allclose(read_poses, poses, rtol=0, atol=1e-9)
    expected_stamps = stamps if fmt == "tum" else np.arange(20.0)
    np.testing.assert_allclose(read_stamps, expected_stamps, rtol=0, atol=1e-9)


def test_evo_reads_our_files_identically(tmp_path):
    file_interface = pytest.importorskip("evo.tools.file_interface", reason="evo (requirements-dev) missing")
    poses = random_poses(15, seed=1)
    stamps = np.arange(15) * 0.1
    write_trajectory(tmp_path / "a.tum", stamps, poses, "tum")
    write_trajectory(tmp_path / "a.kitti", stamps, poses, "kitti")
    tum = file_interface.read_tum_trajectory_file(str(tmp_path / "a.tum"))
    kitti = file_interface.read_kitti_poses_file(str(tmp_path / "a.kitti"))
    np.testing.assert_allclose(tum.timestamps, stamps, atol=1e-12)
    np.testing.assert_allclose(np.array(tum.poses_se3), poses, atol=1e-12)
    np.testing.assert_allclose(np.array(kitti.poses_se3), poses, atol=1e-12)


def test_tum_comments_blank_lines_and_unnormalised_quaternions(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text(
        "# ground truth\n\n"
        "1.0 1 2 3 0 0 0 2   # a comment after the numbers\n"
        "2.5\t0 0 0\t0 0 1 1\n"
    )
    stamps, poses = read_trajectory(path)
    np.testing.assert_array_equal(stamps, [1.0, 2.5])
    expected = np.eye(4)
    expected[:3, 3] = [1, 2, 3]
    np.testing.assert_allclose(poses[0], expected)
    np.testing.assert_allclose(poses[1, :3, :3], so3_exp([0, 0, np.pi / 2]), atol=1e-12)


@pytest.mark.parametrize(
    ("fmt", "text", "line", "fragment"),
    [
        ("tum", "0 0 0 0 0 0 0 1\n1 2 3\n", 2, "expected 8 numbers"),
        ("tum", "# c\n0 0 0 0 0 0 0 x\n", 2, "not a number"),
        ("tum", "0 0 0 0 0 0 0 1\n1 0 0 0 0 0 0 0\n", 2, "zero quaternion"),
        ("tum", "0 nan 0 0 0 0 0 1\n", 1, "non-finite"),
        ("kitti", "1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n", 2, "expected 12 numbers"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, fmt, text, line, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(TrajectoryFormatError, match=fragment) as info:
        read_trajectory(path, fmt)
    assert f"{path}:{line}:" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_empty_file_missing_file_and_unknown_format(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(TrajectoryFormatError, match="no poses"):
        read_trajectory(empty)
    with pytest.raises(FileNotFoundError):
        read_trajectory(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown trajectory format"):
        read_trajectory(empty, "euroc")  # type: ignore[arg-type]


def test_write_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\(N, 4, 4\)"):
        write_trajectory(tmp_path / "x.txt", [0.0], np.eye(4))
    with pytest.raises(ValueError, match="2 stamps for 1 poses"):
        write_trajectory(tmp_path / "x.txt", [0.0, 1.0], np.eye(4)[None])
