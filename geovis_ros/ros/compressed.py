"""``sensor_msgs/CompressedImage`` (jpeg, png) <-> numpy, with image_transport's format strings.

image_transport's ``compressed`` plugin writes ``format`` as
``"<original encoding>; <codec> compressed <compressed encoding>"``, e.g.
``"rgb8; jpeg compressed bgr8"``; older publishers write just ``"jpeg"`` or ``"png"``.
Decoding gives the pixels back in the original encoding when the format names one.
Messages are rclpy or rosbags messages alike (:mod:`geovis_ros.ros.messages`).

Decoding is bounded: the width and height that the PNG (IHDR) or JPEG (SOF) header declares are
read first and checked against a pixel budget (``max_pixels``, default 4096 x 4096), so a small
message declaring a huge image (a decompression bomb) is refused before any pixel is allocated.
Data that is neither PNG nor JPEG is refused too, so OpenCV's other decoders are never reached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.image import check_pixels, convert_colour
from geovis_ros.ros.messages import COMPRESSED_IMAGE, HEADER, RCLPY, Message, MessageFactory

# codec -> {encoding of the pixels handed in -> encoding the codec stores}. OpenCV encodes
# colour as BGR(A); JPEG has no alpha and only 8 bits.
_STORED_ENCODING: dict[str, dict[str, str]] = {
    "jpeg": {"rgb8": "bgr8", "bgr8": "bgr8", "rgba8": "bgr8", "bgra8": "bgr8", "mono8": "mono8"},
    "png": {
        "rgb8": "bgr8",
        "bgr8": "bgr8",
        "rgba8": "bgra8",
        "bgra8": "bgra8",
        "mono8": "mono8",
        "mono16": "mono16",
        "16UC1": "mono16",
    },
}
_FILE_EXTENSION = {"jpeg": ".jpg", "png": ".png"}
_CODEC_ALIASES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
# (dtype, channels) of what cv2.imdecode returns -> its encoding.
_DECODED_ENCODING = {
    ("uint8", 1): "mono8",
    ("uint8", 3): "bgr8",
    ("uint8", 4): "bgra8",
    ("uint16", 1): "mono16",
}

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Default pixel budget of a decoded CompressedImage (width x height)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic):
# 0xC0..0xCF except DHT (C4), JPG (C8) and DAC (CC). Their segment gives the frame's height and width.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field: TEM, RST0..RST7, SOI, EOI.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xDA)})
_JPEG_SOS = 0xDA

_FORMAT_PATTERN = re.compile(
    r"^\s*(?:(?P<original>[\w]+)\s*;\s*)?(?P<codec>\w+)(?:\s+compressed(?:\s+(?P<compressed>\w+))?)?\s*$"
)


@dataclass(frozen=True)
class CompressedFormat:
    """A parsed ``CompressedImage.format``.

    ``codec`` is "jpeg", "png" or None (empty format: the codec is sniffed from the data);
    ``original_encoding`` is the Image encoding before compression and ``compressed_encoding``
    the one the codec stored, each None when the format does not say.
    """

    codec: str | None
    original_encoding: str | None = None
    compressed_encoding: str | None = None

    def __str__(self) -> str:
        """The format string image_transport writes, e.g. ``"rgb8; jpeg compressed bgr8"``."""
        text = self.codec or ""
        if self.original_encoding:
            text = f"{self.original_encoding}; {text} compressed"
            if self.compressed_encoding:
                text = f"{text} {self.compressed_encoding}"
        return text


def parse_compressed_format(text: str) -> CompressedFormat:
    """Parse ``"jpeg"``, ``"png"``, ``"bgr8; jpeg compressed bgr8"`` or ``""`` (codec unknown).

    Other codecs (e.g. compressedDepth's ``"16UC1; compressedDepth png"``) raise
    ConversionError naming the format.
    """
    if not text.strip():
        return CompressedFormat(codec=None)
    match = _FORMAT_PATTERN.match(text)
    codec = _CODEC_ALIASES.get(match.group("codec").lower()) if match else None
    if match is None or codec is None:
        raise ConversionError(
            f"CompressedImage.format {text!r} is not supported; expected jpeg or png, "
            "optionally as '<encoding>; <jpeg|png> compressed <encoding>'"
        )
    return CompressedFormat(codec, match.group("original"), match.group("compressed"))


def _png_size(data: memoryview) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG specification puts first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ConversionError("CompressedImage.data is a PNG without an IHDR header (truncated or corrupt)")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment, walking the segments before it."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker == _JPEG_SOS:
            break
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if marker in _JPEG_SOF_MARKERS:
            if length < 7 or position + 9 > len(data):
                break
            height = int.from_bytes(data[position + 5:position + 7], "big")
            width = int.from_bytes(data[position + 7:position + 9], "big")
            return width, height
        if length < 2:
            break
        position += 2 + length
    raise ConversionError("CompressedImage.data is a JPEG without a readable frame header (truncated or corrupt)")


def compressed_size(data: bytes | memoryview) -> tuple[str, int, int]:
    """(codec, width, height) that compressed ``data`` declares in its header, without decoding it.

    ``codec`` is "png" or "jpeg", sniffed from the data's signature; ``data`` is read in place
    (a memoryview of the message's buffer is not copied). Raises ConversionError for data that
    is neither, or whose header is truncated or corrupt.
    """
    view = memoryview(data).cast("B")
    if view[:len(_PNG_SIGNATURE)] == _PNG_SIGNATURE:
        return ("png", *_png_size(view))
    if view[:len(_JPEG_SOI)] == _JPEG_SOI:
        return ("jpeg", *_jpeg_size(view))
    raise ConversionError("CompressedImage.data is neither PNG nor JPEG (no PNG signature or JPEG SOI marker)")


def _pixel_count(pixels: int) -> str:
    """``"16.8 MP"``, or ``"12288 pixels"`` below 0.1 MP."""
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


def check_pixel_budget(data: bytes | memoryview, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """:func:`compressed_size` of ``data``, raising ConversionError when it is empty or over the budget.

    An image is refused when its declared width x height exceeds ``max_pixels`` or either side
    is 0 (a JPEG that defers its height to a DNL marker included).
    """
    codec, width, height = compressed_size(data)
    if width == 0 or height == 0:
        raise ConversionError(f"CompressedImage.data: the {codec} header declares an empty {width}x{height} image")
    if width * height > max_pixels:
        raise ConversionError(
            f"CompressedImage.data: the {codec} header declares {width}x{height} pixels "
            f"({_pixel_count(width * height)}), over the budget of {_pixel_count(max_pixels)}; refused before decoding"
        )
    return codec, width, height


def numpy_from_compressed(msg: Message, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[NDArray[Any], str]:
    """Decode a jpeg/png CompressedImage; returns (pixels, their encoding).

    The pixels come in the original encoding when ``format`` names one (rgb8, bgr8, rgba8,
    bgra8, mono8, mono16 or 16UC1), else as decoded: bgr8, bgra8, mono8 or mono16.
    Empty, truncated or corrupt data, data that is not PNG or JPEG, and an image declaring more
    than ``max_pixels`` pixels (checked on the header, before decoding) raise ConversionError.
    """
    fmt = parse_compressed_format(msg.format)
    encoded = np.frombuffer(msg.data, dtype=np.uint8)
    if encoded.size == 0:
        raise ConversionError("CompressedImage.data is empty")
    _, width, height = check_pixel_budget(encoded.data, max_pixels)
    try:
        pixels = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ConversionError(f"CompressedImage.data could not be decoded: {err}") from None
    if pixels is None:
        raise ConversionError(
            f"CompressedImage.data ({encoded.size} bytes) could not be decoded as {fmt.codec or 'an image'}"
        )
    if pixels.shape[:2] != (height, width):
        raise ConversionError(
            f"CompressedImage.data decodes to {pixels.shape[1]}x{pixels.shape[0]}, its header declares {width}x{height}"
        )
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    decoded_encoding = _DECODED_ENCODING.get((pixels.dtype.name, channels))
    if decoded_encoding is None:
        raise ConversionError(
            f"CompressedImage.data decodes to {channels}-channel {pixels.dtype}, which has no encoding here"
        )
    target = fmt.original_encoding or decoded_encoding
    try:
        return convert_colour(pixels, decoded_encoding, target), target
    except ConversionError:
        raise ConversionError(
            f"CompressedImage.format names encoding {target!r}, which {decoded_encoding} data cannot give"
        ) from None


def rgb8_from_compressed(msg: Message, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.uint8]:
    """RGB pixels (H, W, 3) uint8 of a colour or mono jpeg/png CompressedImage (at most ``max_pixels``)."""
    pixels, encoding = numpy_from_compressed(msg, max_pixels)
    return convert_colour(pixels, encoding, "rgb8")


def compressed_from_numpy(
    pixels: ArrayLike,
    encoding: str,
    codec: str = "jpeg",
    header: Message | None = None,
    jpeg_quality: int = 90,
    png_compression: int = 3,
    factory: MessageFactory = RCLPY,
) -> Message:
    """Encode pixels (H, W[, C]) of ``encoding`` as a jpeg or png CompressedImage.

    jpeg takes rgb8/bgr8/rgba8/bgra8 (alpha dropped) and mono8; png also keeps alpha and
    takes mono16/16UC1. ``format`` is written the way image_transport does, so
    :func:`numpy_from_compressed` restores ``encoding``. ``jpeg_quality`` is 0..100,
    ``png_compression`` 0..9. ``factory`` makes the message (rclpy by default, or rosbags).
    """
    stored_by_encoding = _STORED_ENCODING.get(codec)
    if stored_by_encoding is None:
        raise ConversionError(f"codec {codec!r} is not supported; supported: {', '.join(_STORED_ENCODING)}")
    array = check_pixels(pixels, encoding)
    stored_encoding = stored_by_encoding.get(encoding)
    if stored_encoding is None:
        raise ConversionError(f"Image.encoding {encoding!r} cannot be stored as {codec}")
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        if codec == "jpeg"
        else [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    )
    ok, encoded = cv2.imencode(
        _FILE_EXTENSION[codec], convert_colour(array, encoding, stored_encoding), params
    )
    if not ok:
        raise ConversionError(f"OpenCV could not encode {encoding} {array.shape} as {codec}")
    return factory.with_data(
        COMPRESSED_IMAGE,
        encoded,
        header=header if header is not None else factory.new(HEADER),
        format=str(CompressedFormat(codec, encoding, stored_encoding)),
    )
