"""Dataset folders: TUM write/read, KITTI, 7-Scenes, image folders, videos and format detection."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from geovis_ros.data.frame_source import FrameSource
from geovis_ros.data.image_io import DatasetError, write_depth_png, write_rgb
from geovis_ros.data.kitti import KittiSequence
from geovis_ros.data.readers import detect_format, open_sequence
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.data.sevenscenes import SevenScenesSequence
from geovis_ros.data.tum import TumSequence, format_stamp, parse_stamp_ns, write_tum_sequence
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import se3_exp

H, W = 12, 16
K = Intrinsics(20.0, 21.0, 7.5, 5.5, W, H)


def make_frames(count: int = 3, seed: int = 0, flow: bool = True) -> list[SequenceFrame]:
    """Small random frames with every kind of ground truth (flow on all but the last)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        depth = rng.uniform(0.5, 8.0, (H, W)).astype(np.float32)
        depth[0, i] = np.nan
        has_flow = flow and i < count - 1
        frames.append(SequenceFrame(
            name=f"{i:06d}",
            stamp_ns=1_305_031_102_000_000_000 + i * 33_333_333,
            rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
            intrinsics=K,
            depth=depth,
            pose=se3_exp(rng.normal(0, 0.5, 6)),
            flow=rng.normal(0, 3, (H, W, 2)).astype(np.float32) if has_flow else None,
            flow_valid=(rng.random((H, W)) > 0.2) if has_flow else None,
        ))
    return frames


def test_stamp_text_round_trip_is_exact():
    for stamp in [0, 1, 999_999_999, 1_305_031_102_175_304_123]:
        assert parse_stamp_ns(format_stamp(stamp)) == stamp
    assert parse_stamp_ns("1305031102.175304") == 1_305_031_102_175_304_000
    assert parse_stamp_ns("1.5e-3") == 1_500_000


def test_tum_write_then_read_round_trip(tmp_path):
    frames = make_frames()
    # The writer streams: a generator works and is consumed once.
    out = write_tum_sequence(tmp_path / "seq", (f for f in frames))
    for name in ["rgb.txt", "depth.txt", "groundtruth.txt", "calibration.yaml", "flow/000000.flo",
                 "flow/000000_valid.png", "depth/000002.png"]:
        assert (out / name).is_file(), name
    assert not (out / "flow/000002.flo").exists()
    assert (out / "rgb.txt").read_text().startswith("#")

    sequence = TumSequence(out)
    assert len(sequence) == 3 and sequence.intrinsics == K and sequence.depth_scale == 1000.0
    for written, read in zip(frames, sequence, strict=True):
        assert read.name == written.name and read.stamp_ns == written.stamp_ns
        np.testing.assert_array_equal(read.rgb, written.rgb)
        np.testing.assert_array_equal(np.isnan(read.depth), np.isnan(written.depth))
        np.testing.assert_allclose(read.depth, written.depth, atol=1e-3)
        np.testing.assert_allclose(read.pose, written.pose, atol=1e-6)
        if written.flow is None:
            assert read.flow is None and read.flow_valid is None
        else:
            np.testing.assert_array_equal(read.flow, written.flow)
            np.testing.assert_array_equal(read.flow_valid, written.flow_valid)
    assert sequence[-1].name == "000002"


def test_tum_writer_rejects_inconsistent_frames(tmp_path):
    frames = make_frames(2, flow=False)
    frames[1].intrinsics = Intrinsics(30.0, 30.0, 7.5, 5.5, W, H)
    with pytest.raises(DatasetError, match="differ from the first frame"):
        write_tum_sequence(tmp_path / "a", frames)
    frames = make_frames(1, flow=False)
    frames[0].depth = np.zeros((H + 1, W), np.float32)
    with pytest.raises(DatasetError, match="depth shape"):
        write_tum_sequence(tmp_path / "b", frames)
    with pytest.raises(DatasetError, match="no frames"):
        write_tum_sequence(tmp_path / "c", [])


def write_real_tum_layout(folder: Path, rng: np.random.Generator) -> None:
    """A benchmark-like TUM folder: 640x480, depth at 5000/m, stamps that differ between streams."""
    rgb_lines, depth_lines = ["# color images", "# timestamp filename"], ["# depth maps"]
    for i in range(3):
        t = 100.0 + i * 0.1
        write_rgb(folder / "rgb" / f"{t:.6f}.png", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        write_depth_png(folder / "depth" / f"{t + 0.012:.6f}.png", np.full((480, 640), 2.0), scale=5000.0)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.012:.6f} depth/{t + 0.012:.6f}.png")
    (folder / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (folder / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    gt = ["# timestamp tx ty tz qx qy qz qw"]
    gt += [f"{100.0 + i * 0.01:.4f} {i * 0.01} 0 0 0 0 0 1" for i in range(16)]  # 100 Hz, ends at 100.15
    (folder / "groundtruth.txt").write_text("\n".join(gt) + "\n")


def test_tum_reads_benchmark_layout_with_defaults_and_association(tmp_path):
    write_real_tum_layout(tmp_path, np.random.default_rng(1))
    sequence = TumSequence(tmp_path)
    assert sequence.intrinsics == Intrinsics(517.3, 516.5, 318.6, 255.3, 640, 480)
    assert sequence.depth_scale == 5000.0
    frames = list(sequence)
    assert frames[0].name == "100.000000" and frames[1].stamp_ns == 100_100_000_000
    assert np.nanmax(np.abs(frames[0].depth - 2.0)) < 1e-6  # depth 12 ms away: associated
    assert frames[1].pose[0, 3] == pytest.approx(0.10)
    assert frames[2].pose is None  # nearest ground truth (100.15) is 50 ms from 100.2
    custom = TumSequence(tmp_path, calib="500,500,320,240", max_time_difference_s=0.005)
    assert custom.intrinsics.fx == 500 and custom[0].depth is None


def test_tum_errors_name_file_and_line(tmp_path):
    write_real_tum_layout(tmp_path, np.random.default_rng(2))
    with (tmp_path / "rgb.txt").open("a") as stream:
        stream.write("100.3 rgb/missing.png\n")
    with pytest.raises(DatasetError, match=r"rgb\.txt:6: rgb/missing\.png does not exist"):
        TumSequence(tmp_path)
    (tmp_path / "rgb.txt").write_text("# header\nabc rgb/x.png\n")
    with pytest.raises(DatasetError, match=r"rgb\.txt:2: timestamp 'abc' is not a number"):
        TumSequence(tmp_path)
    (tmp_path / "rgb.txt").write_text("1.0\n")
    with pytest.raises(DatasetError, match=r"rgb\.txt:1: expected 'timestamp filename'"):
        TumSequence(tmp_path)


def test_tum_bad_groundtruth_line_is_dataset_error(tmp_path):
    write_real_tum_layout(tmp_path, np.random.default_rng(3))
    (tmp_path / "groundtruth.txt").write_text("100.0 0 0 0 0 0 0 1\n100.1 0 0 0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"groundtruth\.txt:2"):
        TumSequence(tmp_path)


# ------------------------------------------------------------------------------------------ KITTI

P0 = "P0: 20.0 0 7.5 0 0 21.0 5.5 0 0 0 1 0"
P1 = "P1: 20.0 0 7.5 -10.0 0 21.0 5.5 0 0 0 1 0"  # baseline 0.5 m


def write_kitti_sequence(root: Path, count: int = 3, folder: str = "image_0", labelled: bool = True) -> np.ndarray:
    """dataset/sequences/07 with grey images, calib, times and dataset/poses/07.txt; returns the poses."""
    sequence = root / "sequences" / "07"
    rng = np.random.default_rng(4)
    for i in range(count):
        (sequence / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sequence / folder / f"{i:06d}.png"), rng.integers(0, 256, (H, W), dtype=np.uint8))
    lines = [P0, P1] if labelled else [P0[4:], P1[4:]]
    (sequence / "calib.txt").write_text("\n".join([*lines, "Tr: 1 0 0 0 0 1 0 0 0 0 1 0"]) + "\n")
    (sequence / "times.txt").write_text("".join(f"{i * 0.103:e}\n" for i in range(count)))
    poses = np.stack([se3_exp(rng.normal(0, 0.3, 6)) for _ in range(count)])
    (root / "poses").mkdir(parents=True, exist_ok=True)
    (root / "poses" / "07.txt").write_text(
        "".join(" ".join(f"{v:.9e}" for v in p[:3].reshape(-1)) + "\n" for p in poses)
    )
    return poses


def test_kitti_standard_layout(tmp_path):
    poses = write_kitti_sequence(tmp_path)
    sequence = KittiSequence(tmp_path / "sequences" / "07")
    assert len(sequence) == 3 and sequence.camera == "image_0"
    assert sequence.intrinsics == Intrinsics(20.0, 21.0, 7.5, 5.5, W, H)
    frames = list(sequence)
    assert frames[1].stamp_ns == 103_000_000 and frames[2].name == "000002"
    assert frames[0].rgb.shape == (H, W, 3) and np.all(frames[0].rgb[..., 0] == frames[0].rgb[..., 2])
    np.testing.assert_allclose(np.stack([f.pose for f in frames]), poses, atol=1e-8)


def test_kitti_flexible_layout_and_camera_offset(tmp_path):
    poses = write_kitti_sequence(tmp_path, folder="image_r", labelled=False)
    folder = tmp_path / "sequences" / "07"
    (folder / "times.txt").unlink()
    (tmp_path / "poses" / "07.txt").rename(folder / "poses.txt")
    sequence = KittiSequence(folder)
    assert sequence.camera == "image_r"
    frame = sequence[1]
    assert frame.stamp_ns == 100_000_000  # 10 Hz without times.txt
    # Right camera (P1): 0.5 m to the right of camera 0.
    expected = poses[1] @ np.array([[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(frame.pose, expected, atol=1e-8)


def test_kitti_errors(tmp_path):
    write_kitti_sequence(tmp_path)
    folder = tmp_path / "sequences" / "07"
    (folder / "calib.txt").write_text(P0 + "\nP1: 1 2 3\n")
    with pytest.raises(DatasetError, match=r"calib\.txt:2: expected 12 finite numbers"):
        KittiSequence(folder)
    (folder / "calib.txt").write_text("P0: 20 0 7.5 0 0 21 5.5 0 0 0 one 0\n")
    with pytest.raises(DatasetError, match=r"calib\.txt:1: non-numeric"):
        KittiSequence(folder)
    (folder / "calib.txt").write_text(P0 + "\n")
    (folder / "times.txt").write_text("0.0\n0.1\n")
    with pytest.raises(DatasetError, match=r"times\.txt: 2 timestamps for 3 images"):
        KittiSequence(folder)
    (folder / "times.txt").unlink()
    (tmp_path / "poses" / "07.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(DatasetError, match="1 poses for 3 images"):
        KittiSequence(folder)
    with pytest.raises(DatasetError, match="no image folder"):
        KittiSequence(tmp_path)


# --------------------------------------------------------------------------------------- 7-Scenes


def write_seven_scenes(folder: Path, count: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    poses = []
    for i in range(count):
        write_rgb(folder / f"frame-{i:06d}.color.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        raw = rng.integers(400, 4000, (H, W)).astype(np.uint16)
        raw[0, 0], raw[0, 1] = 0, 65535
        cv2.imwrite(str(folder / f"frame-{i:06d}.depth.png"), raw)
        pose = se3_exp(rng.normal(0, 0.3, 6))
        np.savetxt(folder / f"frame-{i:06d}.pose.txt", pose)
        poses.append(pose)
    return poses


def test_seven_scenes_folder(tmp_path):
    poses = write_seven_scenes(tmp_path)
    (tmp_path / "camera-intrinsics.txt").write_text("20 0 7.5\n0 21 5.5\n0 0 1\n")
    sequence = SevenScenesSequence(tmp_path)
    assert len(sequence) == 2 and sequence.intrinsics == K
    frame = sequence[1]
    assert frame.name == "frame-000001" and frame.stamp_ns == round(1e9 / 30)
    assert np.isnan(frame.depth[0, :2]).all() and np.nanmin(frame.depth) >= 0.4
    np.testing.assert_allclose(frame.pose, poses[1], atol=1e-12)


def test_seven_scenes_default_intrinsics_and_bad_pose(tmp_path):
    write_seven_scenes(tmp_path, 1)
    with pytest.raises(DatasetError, match="7-Scenes default intrinsics"):
        SevenScenesSequence(tmp_path)  # the nominal K is for 640x480, these images are 16x12
    sequence = SevenScenesSequence(tmp_path, calib="20,21,7.5,5.5")
    (tmp_path / "frame-000000.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1\n0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"frame-000000\.pose\.txt:3: expected 4 numbers, got 3"):
        sequence[0]
    (tmp_path / "frame-000000.pose.txt").write_text("-inf -inf -inf -inf\n" * 4)
    assert sequence[0].pose is None


# ------------------------------------------------------------------------------ folders and videos


def test_image_folder_with_calibration_and_fps(tmp_path):
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    for i, image in enumerate(images):
        write_rgb(tmp_path / f"img{i * 5}.png", image)
    (tmp_path / "calibration.yaml").write_text("fx: 20\nfy: 21\ncx: 7.5\ncy: 5.5\n")
    sequence = open_sequence(tmp_path, fps=10.0)
    assert isinstance(sequence, FrameSource) and len(sequence) == 3 and sequence.intrinsics == K
    frames = list(sequence)
    assert [f.name for f in frames] == ["img0", "img5", "img10"]
    assert frames[2].stamp_ns == 200_000_000
    np.testing.assert_array_equal(frames[1].rgb, images[1])


def test_image_folder_without_calibration_says_what_to_give(tmp_path):
    write_rgb(tmp_path / "a.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(DatasetError, match="no calibration found"):
        open_sequence(tmp_path)
    assert open_sequence(tmp_path, calib="20,21,7.5,5.5").intrinsics == K


def test_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build has no MJPG/AVI writer to make a test video")
    for i in range(4):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    sequence = open_sequence(path, calib="50,50,31.5,23.5")
    assert len(sequence) == 4 and sequence.fps == 15.0
    frames = list(sequence)
    assert len(frames) == 4 and frames[3].stamp_ns == 200_000_000 and frames[3].rgb.shape == (48, 64, 3)
    assert abs(int(frames[3].rgb.mean()) - 120) <= 3


# ------------------------------------------------------------------------------------ detection


def test_detect_format(tmp_path):
    write_tum_sequence(tmp_path / "tum", make_frames(1, flow=False))
    write_seven_scenes(tmp_path / "7s", 1)
    write_kitti_sequence(tmp_path / "kitti", 1)
    write_rgb(tmp_path / "imgs" / "a.png", np.zeros((H, W, 3), np.uint8))
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_text("x: 1\n")
    (tmp_path / "old.bag").write_bytes(b"")
    (tmp_path / "clip.mp4").write_bytes(b"")
    expected = {"tum": "tum", "7s": "7scenes", "kitti/sequences/07": "kitti", "imgs": "images",
                "bag": "bag", "bag/metadata.yaml": "bag", "old.bag": "bag", "clip.mp4": "video"}
    assert {name: detect_format(tmp_path / name) for name in expected} == expected


def test_unrecognised_input_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="looked for a bag .*rgb.txt.*frame-XXXXXX.*calib.txt.*images"):
        open_sequence(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_sequence(tmp_path / "missing")


def test_open_sequence_rejects_options_the_reader_does_not_take(tmp_path):
    write_tum_sequence(tmp_path, make_frames(1, flow=False))
    with pytest.raises(DatasetError, match="fps do not apply to a tum input"):
        open_sequence(tmp_path, fps=5.0)
    assert len(open_sequence(tmp_path, max_time_difference_s=0.01)) == 1
