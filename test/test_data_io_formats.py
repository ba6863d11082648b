"""File formats: .flo, KITTI flow PNG, depth PNG, PFM, masks, RGB and calibration files."""

import struct

import cv2
import numpy as np
import pytest

from geovis_ros.data.calibration import load_calibration, read_calibration, write_calibration
from geovis_ros.data.image_io import (
    DatasetError,
    list_images,
    read_depth,
    read_depth_png,
    read_flo,
    read_flow,
    read_kitti_flow_png,
    read_mask_png,
    read_pfm,
    read_rgb,
    write_depth_png,
    write_flo,
    write_kitti_flow_png,
    write_mask_png,
    write_pfm,
    write_rgb,
)
from geovis_ros.geometry.camera import Intrinsics

H, W = 12, 16


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_flo_round_trip_keeps_values_and_unknowns(tmp_path, rng):
    flow = rng.normal(0, 5, (H, W, 2)).astype(np.float32)
    flow[2, 3] = np.nan
    write_flo(tmp_path / "a.flo", flow)
    back = read_flo(tmp_path / "a.flo")
    assert back.dtype == np.float32 and back.shape == (H, W, 2)
    np.testing.assert_array_equal(back, flow)
    assert np.isnan(back[2, 3]).all()
    raw = np.fromfile(tmp_path / "a.flo", "<f4", count=1)[0]
    assert raw == np.float32(202021.25)


def test_flo_reads_middlebury_unknown_marker_as_nan(tmp_path):
    data = np.zeros((2, 3, 2), "<f4")
    data[1, 2, 0] = 1e10
    (tmp_path / "u.flo").write_bytes(struct.pack("<fii", 202021.25, 3, 2) + data.tobytes())
    flow, valid = read_flow(tmp_path / "u.flo")
    assert np.isnan(flow[1, 2]).all() and not valid[1, 2] and valid.sum() == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (struct.pack("<fii", 202021.25, 3, 2) + b"\0" * 20, "truncated"),
        (struct.pack("<fii", 123.0, 3, 2) + b"\0" * 48, "bad .flo magic"),
        (b"\0" * 5, "truncated .flo header"),
        (struct.pack("<fii", 202021.25, -3, 2), "implausible"),
        (struct.pack("<fii", 202021.25, 1, 1) + b"\0" * 12, "trailing"),
    ],
)
def test_malformed_flo_names_file_and_problem(tmp_path, content, message):
    path = tmp_path / "bad.flo"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        read_flo(path)
    assert str(path) in str(info.value)


def test_missing_file_is_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_flo(tmp_path / "nope.flo")
    with pytest.raises(DatasetError, match="nope.png"):
        read_rgb(tmp_path / "nope.png")


def test_kitti_flow_png_round_trip_and_channel_order(tmp_path, rng):
    flow = (np.rint(rng.normal(0, 20, (H, W, 2)) * 64) / 64).astype(np.float32)
    valid = rng.random((H, W)) > 0.3
    write_kitti_flow_png(tmp_path / "f.png", flow, valid)
    back, back_valid = read_kitti_flow_png(tmp_path / "f.png")
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[valid], flow[valid])
    assert np.isnan(back[~valid]).all()
    # KITTI stores u in the red channel: cv2 (BGR) sees it as channel 2.
    raw = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)
    i, j = np.argwhere(valid)[0]
    assert raw[i, j, 2] == flow[i, j, 0] * 64 + 2**15 and raw[i, j, 0] == 1


def test_kitti_flow_png_rejects_8bit(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="16-bit 3-channel"):
        read_kitti_flow_png(tmp_path / "x.png")


def test_depth_png_round_trip_within_a_millimetre(tmp_path, rng):
    depth = rng.uniform(0.2, 30.0, (H, W)).astype(np.float32)
    depth[0, 0] = np.nan
    depth[0, 1] = -1.0
    depth[0, 2] = 100.0  # beyond 65.535 m: not representable, so invalid
    write_depth_png(tmp_path / "d.png", depth)
    raw = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw[0, 0] == 0 and raw[0, 1] == 0 and raw[0, 2] == 0
    back = read_depth_png(tmp_path / "d.png")
    assert np.isnan(back[0, :2]).all()
    np.testing.assert_allclose(back[1:], depth[1:], atol=0.5e-3 + 1e-6)
    assert read_depth(tmp_path / "d.png", scale=1000.0)[5, 5] == back[5, 5]


def test_depth_png_extra_invalid_values_and_bad_type(tmp_path):
    cv2.imwrite(str(tmp_path / "d.png"), np.array([[0, 65535, 1500]], np.uint16))
    depth = read_depth_png(tmp_path / "d.png", invalid_values=(0, 65535))
    assert np.isnan(depth[0, :2]).all() and depth[0, 2] == pytest.approx(1.5)
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(DatasetError, match="16-bit single-channel"):
        read_depth_png(tmp_path / "c.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_pfm_round_trip_keeps_row_order(tmp_path, rng, channels):
    shape = (H, W) if channels == 1 else (H, W, 3)
    image = rng.normal(0, 10, shape).astype(np.float32)
    write_pfm(tmp_path / "x.pfm", image)
    back = read_pfm(tmp_path / "x.pfm")
    np.testing.assert_array_equal(back, image)
    # Rows are stored bottom to top: the first data row is the image's last row.
    data = (tmp_path / "x.pfm").read_bytes()
    first = np.frombuffer(data[len(data) - image.nbytes:], "<f4", count=W * channels)
    np.testing.assert_array_equal(first, image[-1].reshape(-1))


def test_pfm_big_endian_and_malformed(tmp_path):
    image = np.arange(6, dtype=">f4").reshape(2, 3)
    (tmp_path / "be.pfm").write_bytes(b"Pf\n3 2\n1.0\n" + image[::-1].tobytes())
    np.testing.assert_array_equal(read_pfm(tmp_path / "be.pfm"), image.astype(np.float32))
    (tmp_path / "magic.pfm").write_bytes(b"P6\n3 2\n1.0\n" + b"\0" * 24)
    with pytest.raises(DatasetError, match="bad PFM magic"):
        read_pfm(tmp_path / "magic.pfm")
    (tmp_path / "short.pfm").write_bytes(b"Pf\n3 2\n-1.0\n" + b"\0" * 10)
    with pytest.raises(DatasetError, match="truncated") as info:
        read_pfm(tmp_path / "short.pfm")
    assert "short.pfm" in str(info.value)


def test_read_depth_npy_and_pfm_and_unknown_suffix(tmp_path):
    depth = np.array([[1.0, 0.0], [np.inf, 2.5]], np.float64)
    np.save(tmp_path / "d.npy", depth)
    back = read_depth(tmp_path / "d.npy")
    assert back.dtype == np.float32 and back[0, 0] == 1 and back[1, 1] == 2.5 and np.isnan(back[0, 1])
    assert np.isnan(back[1, 0])
    write_pfm(tmp_path / "disp.pfm", np.full((2, 2), 7.0, np.float32))
    assert read_depth(tmp_path / "disp.pfm")[0, 0] == 7.0
    (tmp_path / "d.txt").write_text("1")
    with pytest.raises(DatasetError, match="unknown depth file type"):
        read_depth(tmp_path / "d.txt")


def test_rgb_grey_and_mask_round_trips(tmp_path, rng):
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    write_rgb(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(read_rgb(tmp_path / "c.png"), rgb)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_rgb(tmp_path / "g.png"), np.repeat(grey[..., None], 3, 2))
    mask = rng.random((H, W)) > 0.5
    write_mask_png(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png"), mask)
    with pytest.raises(DatasetError, match="uint8 RGB"):
        write_rgb(tmp_path / "f.png", rgb.astype(np.float32))


def test_list_images_natural_order(tmp_path):
    for name in ["frame10.png", "frame2.png", "frame1.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["frame1.jpg", "frame2.png", "frame10.png"]


def test_calibration_yaml_round_trip_and_ros_camera_info(tmp_path):
    k = Intrinsics(100.0, 101.0, 15.5, 11.5, W, H)
    write_calibration(tmp_path / "calibration.yaml", k, depth_scale=1000.0)
    calibration = read_calibration(tmp_path / "calibration.yaml")
    assert calibration.intrinsics(W, H, "x") == k and calibration.depth_scale == 1000.0
    (tmp_path / "camera_info.yaml").write_text(
        "image_width: 16\nimage_height: 12\ncamera_name: cam\n"
        "camera_matrix:\n  rows: 3\n  cols: 3\n  data: [100.0, 0, 15.5, 0, 101.0, 11.5, 0, 0, 1]\n"
        "distortion_model: plumb_bob\ndistortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}\n"
    )
    assert read_calibration(tmp_path / "camera_info.yaml").intrinsics(W, H, "x") == k
    assert load_calibration("100,101,15.5,11.5").intrinsics(W, H, "x") == k
    assert load_calibration(k).intrinsics(W, H, "x") == k


def test_calibration_errors_name_file_and_problem(tmp_path):
    (tmp_path / "c.yaml").write_text("fx: 100\nfy: 100\ncx: 8\n")
    with pytest.raises(DatasetError, match=r"c\.yaml: missing cy"):
        read_calibration(tmp_path / "c.yaml")
    (tmp_path / "s.yaml").write_text("fx: 100\nfy: x\ncx: 8\ncy: 6\n")
    with pytest.raises(DatasetError, match="'fy' must be a finite number"):
        read_calibration(tmp_path / "s.yaml")
    (tmp_path / "size.yaml").write_text("fx: 100\nfy: 100\ncx: 8\ncy: 6\nwidth: 640\nheight: 480\n")
    with pytest.raises(DatasetError, match="640x480 images but the images are 16x12"):
        read_calibration(tmp_path / "size.yaml").intrinsics(W, H, str(tmp_path / "size.yaml"))
    with pytest.raises(DatasetError, match="fx,fy,cx,cy"):
        load_calibration("1,2,3")
