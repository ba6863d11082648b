"""``sensor_msgs/PointCloud2`` <-> numpy xyz (+ rgb) arrays.

Written clouds have the layout of sensor_msgs_py's ``create_cloud``: fields x, y, z FLOAT32
at offsets 0, 4, 8 and, with colour, ``rgb`` FLOAT32 at 12 holding the bits of the packed
uint32 0x00RRGGBB (PCL's convention); point_step 16 (12 without colour, as
``create_cloud_xyz32``), height 1, width N, dense rows. Reading honours the field offsets,
``point_step``, ``row_step`` and ``is_bigendian`` of any cloud, so clouds with padding or
extra fields from other tools read too. Messages are rclpy or rosbags messages alike
(:mod:`geovis_ros.ros.messages`).
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.messages import HEADER, POINT_CLOUD2, POINT_FIELD, RCLPY, Message, MessageFactory

# sensor_msgs/PointField.FLOAT32, the datatype of every field written.
POINT_FIELD_FLOAT32 = 7
# PointField.datatype -> element type (byte order applied per cloud).
POINT_FIELD_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype(np.int8),  # INT8
    2: np.dtype(np.uint8),  # UINT8
    3: np.dtype(np.int16),  # INT16
    4: np.dtype(np.uint16),  # UINT16
    5: np.dtype(np.int32),  # INT32
    6: np.dtype(np.uint32),  # UINT32
    POINT_FIELD_FLOAT32: np.dtype(np.float32),  # FLOAT32
    8: np.dtype(np.float64),  # FLOAT64
}
_XYZ_FIELDS = ("x", "y", "z")
_COLOUR_FIELDS = ("rgb", "rgba")  # packed 0x00RRGGBB (alpha, if any, in the top byte is ignored)
# The layouts written (native byte order). rgb is labelled FLOAT32 in the message but
# written as the uint32 whose bits it holds.
_XYZ_LAYOUT = np.dtype({"names": list(_XYZ_FIELDS), "formats": [np.float32] * 3, "offsets": [0, 4, 8]})
_XYZ_RGB_LAYOUT = np.dtype(
    {"names": [*_XYZ_FIELDS, "rgb"], "formats": [np.float32] * 3 + [np.uint32], "offsets": [0, 4, 8, 12]}
)


def pointcloud_from_numpy(
    xyz: ArrayLike,
    rgb: ArrayLike | None = None,
    header: Message | None = None,
    factory: MessageFactory = RCLPY,
) -> Message:
    """A PointCloud2 of N points: ``xyz`` (N, 3) floating metres in the header's frame.

    ``rgb`` (N, 3) uint8, optional, is packed into the ``rgb`` field. The points are written
    straight into ``msg.data`` (the only copy) through a structured view, no per-point Python.
    ``is_dense`` is True when every coordinate is finite. N = 0 gives an empty cloud.
    ``factory`` makes the message (rclpy by default, or rosbags).
    """
    points = np.asarray(xyz)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ConversionError(f"xyz shape {points.shape} must be (N, 3)")
    if not np.issubdtype(points.dtype, np.floating):
        raise ConversionError(f"xyz dtype {points.dtype} must be floating point (metres)")
    colours = None if rgb is None else np.asarray(rgb)
    if colours is not None and (colours.shape != points.shape or colours.dtype != np.uint8):
        raise ConversionError(
            f"rgb must be (N, 3) uint8 like xyz {points.shape}, got {colours.shape} {colours.dtype}"
        )

    count = points.shape[0]
    layout = _XYZ_LAYOUT if colours is None else _XYZ_RGB_LAYOUT
    msg, data = factory.with_zeroed_data(
        POINT_CLOUD2,
        layout.itemsize * count,
        header=header if header is not None else factory.new(HEADER),
        height=1,
        width=count,
        fields=[
            # x, y, z and rgb are consecutive 4-byte fields, as create_cloud lays them out
            factory.new(POINT_FIELD, name=name, offset=4 * index, datatype=POINT_FIELD_FLOAT32, count=1)
            for index, name in enumerate(_XYZ_FIELDS if colours is None else (*_XYZ_FIELDS, "rgb"))
        ],
        is_bigendian=sys.byteorder == "big",
        point_step=layout.itemsize,
        row_step=layout.itemsize * count,
        is_dense=bool(np.isfinite(points.astype(np.float32, copy=False)).all()),
    )
    cloud = data.view(layout)
    # Column by column: numpy's 1-D strided copies are several times faster than assigning
    # an (N, 3) block into an interleaved record.
    for axis, name in enumerate(_XYZ_FIELDS):
        cloud[name] = points[:, axis]
    if colours is not None:
        cloud["rgb"] = pack_rgb(colours)
    return msg


def numpy_from_pointcloud(msg: Message) -> tuple[NDArray[np.float32], NDArray[np.uint8] | None]:
    """Points (N, 3) float32 and colours (N, 3) uint8, or None without an rgb/rgba field.

    N = height * width (organised clouds are flattened row by row). x, y, z may be any
    numeric PointField type; the colour field must be 4 bytes wide (FLOAT32, UINT32 or
    INT32) holding 0x00RRGGBB. New arrays (one copy of the coordinates).
    """
    by_name = {field.name: field for field in msg.fields}
    missing = [name for name in _XYZ_FIELDS if name not in by_name]
    if missing:
        raise ConversionError(f"PointCloud2.fields lacks {missing}; has {list(by_name)}")
    colour_field = next((by_name[name] for name in _COLOUR_FIELDS if name in by_name), None)
    height, width, point_step, row_step = msg.height, msg.width, msg.point_step, msg.row_step
    if height * width == 0:
        empty_rgb = None if colour_field is None else np.zeros((0, 3), np.uint8)
        return np.zeros((0, 3), np.float32), empty_rgb
    if row_step < width * point_step:
        raise ConversionError(
            f"PointCloud2.row_step {row_step} is less than width * point_step = {width} * {point_step}"
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if raw.size < height * row_step:
        raise ConversionError(
            f"PointCloud2.data has {raw.size} bytes, needs height * row_step = {height} * {row_step} "
            f"= {height * row_step}"
        )

    byte_order: Literal["<", ">"] = ">" if msg.is_bigendian else "<"
    fields = [by_name[name] for name in _XYZ_FIELDS] + ([colour_field] if colour_field is not None else [])
    formats = [_field_dtype(field, point_step).newbyteorder(byte_order) for field in fields]
    if colour_field is not None:
        if formats[-1].itemsize != 4:
            raise ConversionError(
                f"PointCloud2 field {colour_field.name!r} must be 4 bytes (FLOAT32/UINT32/INT32), "
                f"got datatype {colour_field.datatype}"
            )
        formats[-1] = np.dtype(np.uint32).newbyteorder(byte_order)  # the packed bits, whatever the label
    layout = np.dtype(
        {
            "names": [field.name for field in fields],
            "formats": formats,
            "offsets": [field.offset for field in fields],
            "itemsize": point_step,
        }
    )
    rows = raw[: height * row_step].reshape(height, row_step)[:, : width * point_step]
    cloud = rows.view(layout)
    xyz = np.empty((height, width, 3), dtype=np.float32)
    for axis, name in enumerate(_XYZ_FIELDS):
        xyz[..., axis] = cloud[name]
    if colour_field is None:
        return xyz.reshape(-1, 3), None
    return xyz.reshape(-1, 3), unpack_rgb(cloud[colour_field.name]).reshape(-1, 3)


def pack_rgb(rgb: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """Colours (..., 3) uint8 -> packed (...) uint32 0x00RRGGBB (the bits of the float32 rgb field)."""
    wide = rgb.astype(np.uint32)
    packed = (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]
    return packed.astype(np.uint32, copy=False)


def unpack_rgb(packed: NDArray[np.uint32]) -> NDArray[np.uint8]:
    """Packed (...) uint32 0x00RRGGBB -> colours (..., 3) uint8 (R, G, B); the top byte is ignored."""
    rgb = np.empty((*packed.shape, 3), dtype=np.uint8)
    for channel, shift in enumerate((16, 8, 0)):
        rgb[..., channel] = packed >> shift  # the uint32 -> uint8 assignment keeps the low byte
    return rgb


def _field_dtype(field: Message, point_step: int) -> np.dtype[Any]:
    """Element dtype of one PointField, after checking its type, count and extent."""
    dtype = POINT_FIELD_DTYPES.get(field.datatype)
    if dtype is None:
        raise ConversionError(f"PointCloud2 field {field.name!r} has unknown datatype {field.datatype}")
    if field.count != 1:
        raise ConversionError(
            f"PointCloud2 field {field.name!r} has count {field.count}; only 1 is supported"
        )
    if field.offset + dtype.itemsize > point_step:
        raise ConversionError(
            f"PointCloud2 field {field.name!r} at offset {field.offset} ({dtype.itemsize} bytes) "
            f"overruns point_step {point_step}"
        )
    return dtype
