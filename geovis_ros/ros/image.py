"""``sensor_msgs/Image`` <-> numpy, driven by one encoding table.

To numpy is zero-copy: the array is a view of ``msg.data`` (``np.frombuffer``) that honours
``step`` (row padding); writing to it writes to the message. The only copy made is a byte
swap, when ``is_bigendian`` differs from this machine. From numpy copies the pixels once.

Arrays are (H, W) for one-channel encodings and (H, W, C) otherwise; channel order is the
encoding's (rgb8 is R, G, B). Depth images follow REP 118: 16UC1 in millimetres with 0
invalid, 32FC1 in metres with NaN invalid. 32FC2 holds optical flow (du, dv) in pixels.
Reading also takes OpenCV's generic names 8UC1 and 8UC3 (as mono8 and bgr8, cv_bridge's reading).

Messages are rclpy or rosbags messages alike (:mod:`geovis_ros.ros.messages`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.messages import HEADER, IMAGE, RCLPY, Message, MessageFactory


@dataclass(frozen=True)
class PixelFormat:
    """Memory layout of one encoding: element type (native byte order) and channels per pixel."""

    dtype: np.dtype[Any]
    channels: int

    @property
    def pixel_bytes(self) -> int:
        """Bytes per pixel."""
        return self.dtype.itemsize * self.channels


IMAGE_ENCODINGS: dict[str, PixelFormat] = {
    "rgb8": PixelFormat(np.dtype(np.uint8), 3),
    "bgr8": PixelFormat(np.dtype(np.uint8), 3),
    "rgba8": PixelFormat(np.dtype(np.uint8), 4),
    "bgra8": PixelFormat(np.dtype(np.uint8), 4),
    "mono8": PixelFormat(np.dtype(np.uint8), 1),
    "mono16": PixelFormat(np.dtype(np.uint16), 1),
    "16UC1": PixelFormat(np.dtype(np.uint16), 1),
    "32FC1": PixelFormat(np.dtype(np.float32), 1),
    "32FC2": PixelFormat(np.dtype(np.float32), 2),
}

# 8-bit colour encodings -> OpenCV's name of the channel order (cv2.COLOR_<src>2<dst>).
_OPENCV_CHANNEL_ORDER = {"rgb8": "RGB", "bgr8": "BGR", "rgba8": "RGBA", "bgra8": "BGRA", "mono8": "GRAY"}
# Encodings that differ in name only (identical pixels).
_SAME_PIXELS = {frozenset({"mono16", "16UC1"})}
# Generic OpenCV names read as the encoding they stand for (never written).
_READ_ALIASES = {"8UC1": "mono8", "8UC3": "bgr8"}
# Encodings a camera image may arrive in (rgb8_from_image); depth and flow encodings are outputs only.
COLOUR_INPUTS: tuple[str, ...] = (*_OPENCV_CHANNEL_ORDER, "mono16")
# Depth encodings read in millimetres (besides 32FC1 in metres).
_MILLIMETRE_DEPTH_ENCODINGS = ("16UC1", "mono16")

_MILLIMETRES_PER_METRE = 1000.0
_HOST_IS_BIG_ENDIAN = sys.byteorder == "big"


def pixel_format(encoding: str) -> PixelFormat:
    """The :class:`PixelFormat` of ``encoding``; ConversionError names it when unsupported."""
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ConversionError(
            f"Image.encoding {encoding!r} is not supported; supported: {', '.join(IMAGE_ENCODINGS)}"
        ) from None


def read_encoding(msg: Message) -> str:
    """The encoding an Image's pixels are read as: its ``encoding``, with 8UC1/8UC3 as mono8/bgr8."""
    encoding: str = msg.encoding
    return _READ_ALIASES.get(encoding, encoding)


def numpy_from_image(msg: Message) -> NDArray[Any]:
    """Pixels of an Image as a zero-copy view of ``msg.data``: (H, W) or (H, W, C).

    The dtype is the encoding's (uint8, uint16 or float32), in native byte order: big-endian
    data on a little-endian host (or the reverse) is byte-swapped into a new array. Works on
    ``msg.data`` as ``array.array('B')`` (rclpy), ``bytes`` or a uint8 array (rosbags); a
    view of read-only data is read-only.
    """
    fmt = pixel_format(read_encoding(msg))
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ConversionError(f"Image height/width must be > 0, got {height}x{width}")
    row_bytes = width * fmt.pixel_bytes
    if step < row_bytes:
        raise ConversionError(
            f"Image.step {step} is less than width * pixel size = {width} * {fmt.pixel_bytes} "
            f"= {row_bytes} bytes for {msg.encoding}"
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if raw.size < height * step:
        raise ConversionError(
            f"Image.data has {raw.size} bytes, needs height * step = {height} * {step} = {height * step}"
        )
    stored = fmt.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    rows = raw[: height * step].reshape(height, step)[:, :row_bytes]
    pixels = rows.view(stored).reshape(_array_shape(height, width, fmt.channels))
    return pixels if stored.isnative else pixels.astype(fmt.dtype)


def image_from_numpy(
    pixels: ArrayLike, encoding: str, header: Message | None = None, factory: MessageFactory = RCLPY
) -> Message:
    """An Image holding ``pixels`` (H, W) or (H, W, C) of the encoding's dtype; one copy.

    The dtype must be the encoding's (uint8 / uint16 / float32): nothing is cast silently.
    Big-endian arrays are sent as they are, with ``is_bigendian`` set; ``step`` has no
    padding. ``header`` (stamp, frame_id) is copied by reference; default an empty Header.
    ``factory`` makes the message (rclpy by default, or rosbags).
    """
    array = check_pixels(pixels, encoding)
    height, width = array.shape[:2]
    return factory.with_data(
        IMAGE,
        array,
        header=header if header is not None else factory.new(HEADER),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(array.dtype.byteorder == ">" or (array.dtype.isnative and _HOST_IS_BIG_ENDIAN)),
        step=width * IMAGE_ENCODINGS[encoding].pixel_bytes,
    )


def check_pixels(pixels: ArrayLike, encoding: str) -> NDArray[Any]:
    """``pixels`` as an array after checking it fits ``encoding`` (dtype, channels, non-empty).

    Raises ConversionError naming the encoding and the expected dtype or shape.
    """
    fmt = pixel_format(encoding)
    array = np.asarray(pixels)
    if array.dtype.newbyteorder("=") != fmt.dtype:
        raise ConversionError(f"pixels dtype {array.dtype} does not match {encoding} ({fmt.dtype})")
    shape_ok = (array.ndim == 2 and fmt.channels == 1) or (array.ndim == 3 and array.shape[2] == fmt.channels)
    if not shape_ok:
        expected = "(H, W)" if fmt.channels == 1 else f"(H, W, {fmt.channels})"
        raise ConversionError(f"pixels shape {array.shape} does not match {encoding} {expected}")
    if array.size == 0:
        raise ConversionError(f"pixels height/width must be > 0, got shape {array.shape}")
    return array


def convert_colour(pixels: NDArray[Any], source_encoding: str, target_encoding: str) -> NDArray[Any]:
    """Convert between rgb8, bgr8, rgba8, bgra8 and mono8 (mono16 also converts to those).

    Returns ``pixels`` itself when nothing changes. mono16 maps to 8 bits by dropping the low
    byte (v >> 8); colour -> mono8 uses OpenCV's luma weights; alpha added is 255.
    """
    if source_encoding == target_encoding or {source_encoding, target_encoding} in _SAME_PIXELS:
        return pixels
    if source_encoding == "mono16" and target_encoding in _OPENCV_CHANNEL_ORDER:
        return convert_colour((pixels >> 8).astype(np.uint8), "mono8", target_encoding)
    if source_encoding not in _OPENCV_CHANNEL_ORDER or target_encoding not in _OPENCV_CHANNEL_ORDER:
        raise ConversionError(f"encoding {source_encoding!r} cannot be converted to {target_encoding!r}")
    code = getattr(
        cv2, f"COLOR_{_OPENCV_CHANNEL_ORDER[source_encoding]}2{_OPENCV_CHANNEL_ORDER[target_encoding]}"
    )
    return cv2.cvtColor(pixels, code)


def rgb8_from_image(msg: Message) -> NDArray[np.uint8]:
    """RGB pixels (H, W, 3) uint8 of a colour or mono Image (rgb8/bgr8/rgba8/bgra8/mono8/mono16).

    rgb8 gives the zero-copy view of :func:`numpy_from_image`; the others a new array. Any other
    encoding (depth and flow images included) is refused naming the colour inputs, before any pixel is read.
    """
    encoding = read_encoding(msg)
    if encoding not in COLOUR_INPUTS:
        raise ConversionError(f"Image.encoding {msg.encoding!r} is not a camera image encoding; supported: "
                              f"{', '.join(COLOUR_INPUTS)} (and 8UC1, 8UC3 read as mono8, bgr8)")
    return convert_colour(numpy_from_image(msg), encoding, "rgb8")


def depth_from_image(msg: Message) -> NDArray[np.float32]:
    """Metric depth (H, W) float32 in metres, NaN where invalid, from a 16UC1 or 32FC1 Image.

    16UC1 (and mono16, as some drivers label it) is millimetres with 0 invalid. In 32FC1
    (metres) every value that is not a finite positive number (NaN, +-inf, <= 0) becomes NaN.
    Always a new array.
    """
    if msg.encoding != "32FC1" and msg.encoding not in _MILLIMETRE_DEPTH_ENCODINGS:
        raise ConversionError(f"Image.encoding {msg.encoding!r} is not a depth encoding (16UC1, 32FC1)")
    stored = numpy_from_image(msg)
    depth = stored.astype(np.float32)
    if msg.encoding in _MILLIMETRE_DEPTH_ENCODINGS:
        depth /= _MILLIMETRES_PER_METRE
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def image_from_depth(
    depth: ArrayLike, encoding: str = "32FC1", header: Message | None = None, factory: MessageFactory = RCLPY
) -> Message:
    """A depth Image from metric depth (H, W) in metres (NaN, +-inf or <= 0 = invalid).

    32FC1: metres, float32 input is sent with one copy (other float dtypes are cast first),
    values unchanged. 16UC1: rounded millimetres; invalid depths and depths beyond 65.535 m
    become 0 (invalid). ``factory`` makes the message (rclpy by default, or rosbags).
    """
    metres = np.asarray(depth)
    if not np.issubdtype(metres.dtype, np.floating):
        raise ConversionError(f"depth dtype {metres.dtype} must be floating point (metres)")
    if encoding == "32FC1":
        return image_from_numpy(metres.astype(np.float32, copy=False), encoding, header, factory)
    if encoding == "16UC1":
        with np.errstate(invalid="ignore"):
            millimetres = np.rint(metres * _MILLIMETRES_PER_METRE)
            representable = (
                np.isfinite(millimetres) & (millimetres > 0) & (millimetres <= np.iinfo(np.uint16).max)
            )
        return image_from_numpy(
            np.where(representable, millimetres, 0).astype(np.uint16), encoding, header, factory
        )
    raise ConversionError(f"Image.encoding {encoding!r} is not a depth encoding (16UC1, 32FC1)")


def _array_shape(height: int, width: int, channels: int) -> tuple[int, ...]:
    return (height, width) if channels == 1 else (height, width, channels)
