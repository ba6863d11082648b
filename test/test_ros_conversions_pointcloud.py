"""sensor_msgs/PointCloud2 <-> numpy xyz (+ rgb), on real rclpy message classes."""

import sys

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.pointcloud import numpy_from_pointcloud, pack_rgb, pointcloud_from_numpy, unpack_rgb

N_POINTS = 37


def random_cloud(count: int = N_POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, 3)).astype(np.float32), rng.integers(0, 256, (count, 3), dtype=np.uint8)


def field_layout(msg: PointCloud2) -> list[tuple[str, int, int, int]]:
    return [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]


def test_xyz_rgb_cloud_has_create_cloud_layout_and_round_trips():
    xyz, rgb = random_cloud()
    msg = pointcloud_from_numpy(xyz, rgb, Header(frame_id="camera"))
    assert field_layout(msg) == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1),
    ]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, N_POINTS, 16, 16 * N_POINTS)
    assert msg.is_bigendian == (sys.byteorder == "big") and msg.is_dense
    assert len(msg.data) == 16 * N_POINTS and msg.header.frame_id == "camera"
    xyz_back, rgb_back = numpy_from_pointcloud(msg)
    assert xyz_back.dtype == np.float32 and rgb_back.dtype == np.uint8
    np.testing.assert_array_equal(xyz_back, xyz)
    np.testing.assert_array_equal(rgb_back, rgb)


def test_xyz_only_cloud_has_create_cloud_xyz32_layout():
    xyz, _ = random_cloud()
    msg = pointcloud_from_numpy(xyz.astype(np.float64))
    assert [f.name for f in msg.fields] == ["x", "y", "z"]
    assert (msg.point_step, msg.row_step) == (12, 12 * N_POINTS)
    xyz_back, rgb_back = numpy_from_pointcloud(msg)
    assert rgb_back is None
    np.testing.assert_array_equal(xyz_back, xyz)


def test_rgb_is_packed_as_float32_bits_of_0x00rrggbb():
    xyz = np.zeros((2, 3), np.float32)
    rgb = np.array([[0x12, 0x34, 0x56], [255, 0, 128]], np.uint8)
    msg = pointcloud_from_numpy(xyz, rgb)
    records = np.frombuffer(msg.data, np.uint8).reshape(2, 16)
    packed = records[:, 12:16].copy().view(np.float32).view(np.uint32).ravel()
    assert packed.tolist() == [0x00123456, 0x00FF0080]
    assert pack_rgb(rgb).tolist() == [0x00123456, 0x00FF0080]
    np.testing.assert_array_equal(unpack_rgb(np.array([0xFF123456], np.uint32)), [[0x12, 0x34, 0x56]])


def test_non_finite_points_clear_is_dense():
    xyz, _ = random_cloud()
    xyz[3, 1] = np.nan
    msg = pointcloud_from_numpy(xyz)
    assert not msg.is_dense
    np.testing.assert_array_equal(numpy_from_pointcloud(msg)[0], xyz)


def test_empty_cloud_round_trips():
    msg = pointcloud_from_numpy(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    assert (msg.width, len(msg.data)) == (0, 0)
    xyz, rgb = numpy_from_pointcloud(msg)
    assert xyz.shape == (0, 3) and rgb.shape == (0, 3)


def foreign_cloud(xyz: np.ndarray, rgb: np.ndarray, big_endian: bool = False, height: int = 1) -> PointCloud2:
    """A cloud as another tool might write it: x/y/z/rgb plus intensity and padding, in a
    different field order, 32-byte points, rows padded by 8 bytes, chosen byte order."""
    order = ">" if big_endian else "<"
    layout = np.dtype(
        {
            "names": ["intensity", "x", "y", "z", "rgb", "ring"],
            "formats": [order + "f4", order + "f4", order + "f4", order + "f4", order + "u4", order + "u2"],
            "offsets": [0, 8, 12, 16, 24, 28],
            "itemsize": 32,
        }
    )
    width = len(xyz) // height
    points = np.zeros(len(xyz), layout)
    points["intensity"] = 7.0
    points["x"], points["y"], points["z"] = xyz.T
    points["rgb"] = pack_rgb(rgb)
    row_bytes = width * layout.itemsize
    rows = np.full((height, row_bytes + 8), 0xCD, np.uint8)
    rows[:, :row_bytes] = points.view(np.uint8).reshape(height, row_bytes)
    fields = [
        PointField(name="intensity", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="rgb", offset=24, datatype=PointField.UINT32, count=1),
        PointField(name="z", offset=16, datatype=PointField.FLOAT32, count=1),
        PointField(name="x", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=12, datatype=PointField.FLOAT32, count=1),
        PointField(name="ring", offset=28, datatype=PointField.UINT16, count=1),
    ]
    return PointCloud2(
        height=height,
        width=width,
        fields=fields,
        is_bigendian=big_endian,
        point_step=32,
        row_step=row_bytes + 8,
        data=rows.tobytes(),
        is_dense=True,
    )


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("height", [1, 4])
def test_foreign_cloud_with_padding_and_extra_fields_reads(big_endian, height):
    xyz, rgb = random_cloud(count=36)
    xyz_back, rgb_back = numpy_from_pointcloud(foreign_cloud(xyz, rgb, big_endian, height))
    np.testing.assert_array_equal(xyz_back, xyz)
    np.testing.assert_array_equal(rgb_back, rgb)


def test_float64_coordinates_read_as_float32():
    xyz, _ = random_cloud(count=5)
    points = xyz.astype(np.float64)
    fields = [
        PointField(name=n, offset=8 * i, datatype=PointField.FLOAT64, count=1) for i, n in enumerate("xyz")
    ]
    msg = PointCloud2(height=1, width=5, fields=fields, point_step=24, row_step=120, data=points.tobytes())
    xyz_back, rgb_back = numpy_from_pointcloud(msg)
    assert rgb_back is None and xyz_back.dtype == np.float32
    np.testing.assert_array_equal(xyz_back, xyz)


def cloud_with(**changes) -> PointCloud2:
    msg = pointcloud_from_numpy(*random_cloud())
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


def with_field(field_name: str, **changes) -> list[PointField]:
    fields = cloud_with().fields
    for field in fields:
        if field.name == field_name:
            for key, value in changes.items():
                setattr(field, key, value)
    return fields


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (cloud_with(fields=with_field("y", name="v")), r"lacks \['y'\]"),
        (cloud_with(data=bytes(16)), "data has 16 bytes"),
        (cloud_with(row_step=16), "row_step"),
        (cloud_with(fields=with_field("z", offset=14)), "'z' at offset 14"),
        (cloud_with(fields=with_field("x", datatype=42)), "'x' has unknown datatype"),
        (cloud_with(fields=with_field("x", count=3)), "'x' has count 3"),
        (cloud_with(fields=with_field("rgb", datatype=PointField.UINT8)), "'rgb' must be 4 bytes"),
    ],
    ids=[
        "missing-y",
        "short-data",
        "short-row-step",
        "field-overruns-point",
        "unknown-datatype",
        "count",
        "narrow-rgb",
    ],
)
def test_malformed_cloud_raises_naming_the_field(msg, field):
    with pytest.raises(ConversionError, match=field):
        numpy_from_pointcloud(msg)


@pytest.mark.parametrize(
    ("xyz", "rgb", "problem"),
    [
        (np.zeros((4, 2), np.float32), None, "xyz shape"),
        (np.zeros(12, np.float32), None, "xyz shape"),
        (np.zeros((4, 3), np.int32), None, "xyz dtype"),
        (np.zeros((4, 3), np.float32), np.zeros((3, 3), np.uint8), "rgb"),
        (np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32), "rgb"),
    ],
)
def test_bad_arrays_raise(xyz, rgb, problem):
    with pytest.raises(ConversionError, match=problem):
        pointcloud_from_numpy(xyz, rgb)
