"""``sensor_msgs/CompressedImage`` (jpeg, png) <-> numpy, with image_transport's format strings.

image_transport's ``compressed`` plugin writes ``format`` as
``"<original encoding>; <codec> compressed <compressed encoding>"``, e.g.
``"rgb8; jpeg compressed bgr8"``; older publishers write just ``"jpeg"`` or ``"png"``.
Decoding gives the pixels back in the original encoding when the format names one.
Messages are rclpy or rosbags messages alike (:mod:`geovis_ros.ros.messages`).
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


def numpy_from_compressed(msg: Message) -> tuple[NDArray[Any], str]:
    """Decode a jpeg/png CompressedImage; returns (pixels, their encoding).

    The pixels come in the original encoding when ``format`` names one (rgb8, bgr8, rgba8,
    bgra8, mono8, mono16 or 16UC1), else as decoded: bgr8, bgra8, mono8 or mono16.
    Empty, truncated or corrupt data raises ConversionError.
    """
    fmt = parse_compressed_format(msg.format)
    encoded = np.frombuffer(msg.data, dtype=np.uint8)
    if encoded.size == 0:
        raise ConversionError("CompressedImage.data is empty")
    try:
        pixels = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ConversionError(f"CompressedImage.data could not be decoded: {err}") from None
    if pixels is None:
        raise ConversionError(
            f"CompressedImage.data ({encoded.size} bytes) could not be decoded as {fmt.codec or 'an image'}"
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


def rgb8_from_compressed(msg: Message) -> NDArray[np.uint8]:
    """RGB pixels (H, W, 3) uint8 of a colour or mono jpeg/png CompressedImage."""
    pixels, encoding = numpy_from_compressed(msg)
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
