"""CompressedImage decoding is bounded: declared dimensions are checked against a pixel budget first."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from geovis_ros.ros.compressed import (
    DEFAULT_MAX_PIXELS,
    check_pixel_budget,
    compressed_from_numpy,
    compressed_size,
    numpy_from_compressed,
    rgb8_from_compressed,
)
from geovis_ros.ros.errors import ConversionError


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid mono8 PNG of ``width`` x ``height`` black pixels: tiny on the wire, huge decoded."""
    compressor = zlib.compressobj(6)
    rows_per_block = 500
    block = (b"\x00" * (width + 1)) * rows_per_block  # filter byte 0 + a row of zeros
    parts = [compressor.compress(block) for _ in range(height // rows_per_block)]
    parts.append(compressor.compress((b"\x00" * (width + 1)) * (height % rows_per_block)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose start-of-frame header is rewritten to declare ``width`` x ``height``."""
    ok, encoded = cv2.imencode(".jpg", np.zeros((16, 24, 3), np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The issue's bomb: 16000 x 16000 pixels (256 MP, 256 MB decoded) in a few hundred kB."""
    return png_bomb(16000, 16000)


def test_png_bomb_is_refused_before_decoding(bomb: bytes) -> None:
    assert len(bomb) < 1_000_000
    msg = CompressedImage(format="mono8; png compressed mono8", data=bomb)
    with pytest.raises(ConversionError, match=r"declares 16000x16000 pixels \(256.0 MP\), over the budget of "
                                              r"16.8 MP; refused before decoding"):
        rgb8_from_compressed(msg)


def test_the_bomb_is_a_real_png_that_decodes_within_a_raised_budget() -> None:
    small = png_bomb(600, 1100)
    decoded, encoding = numpy_from_compressed(CompressedImage(format="png", data=small), max_pixels=600 * 1100)
    assert encoding == "mono8" and decoded.shape == (1100, 600) and not decoded.any()


def test_jpeg_declaring_a_huge_frame_is_refused() -> None:
    msg = CompressedImage(format="jpeg", data=jpeg_declaring(20000, 12000))
    with pytest.raises(ConversionError, match="jpeg header declares 20000x12000 pixels"):
        rgb8_from_compressed(msg)


def test_budget_is_inclusive_and_configurable() -> None:
    msg = compressed_from_numpy(np.zeros((30, 40, 3), np.uint8), "rgb8", "png")
    assert rgb8_from_compressed(msg, max_pixels=30 * 40).shape == (30, 40, 3)
    with pytest.raises(ConversionError, match="declares 40x30 pixels"):
        rgb8_from_compressed(msg, max_pixels=30 * 40 - 1)
    assert DEFAULT_MAX_PIXELS == 4096 * 4096


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_declared_size_is_read_from_the_header(codec: str) -> None:
    msg = compressed_from_numpy(np.zeros((30, 50), np.uint8), "mono8", codec)
    assert compressed_size(bytes(msg.data)) == (codec, 50, 30)


def test_progressive_jpeg_with_exif_like_segments_is_measured() -> None:
    ok, encoded = cv2.imencode(".jpg", np.zeros((21, 34, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    data = encoded.tobytes()
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 5000) + b"Exif\x00" + bytes(4995)  # a large APP1 segment
    assert compressed_size(data[:2] + b"\xff\xff" + app1 + data[2:]) == ("jpeg", 34, 21)


def test_other_image_formats_never_reach_opencv() -> None:
    ok, bmp = cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))
    assert ok and cv2.imdecode(bmp, cv2.IMREAD_UNCHANGED) is not None  # OpenCV alone would decode it
    with pytest.raises(ConversionError, match="neither PNG nor JPEG"):
        rgb8_from_compressed(CompressedImage(format="png", data=bmp.tobytes()))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG without an IHDR header"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG without a readable frame header"),
        (b"\xff\xd8\xff\xda\x00\x08", "JPEG without a readable frame header"),  # scan before any frame
    ],
    ids=["png-truncated", "jpeg-truncated", "jpeg-no-frame"],
)
def test_truncated_headers_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ConversionError, match=problem):
        check_pixel_budget(data)


def test_zero_sized_declaration_is_refused() -> None:
    with pytest.raises(ConversionError, match="empty 0x30 image"):
        check_pixel_budget(jpeg_declaring(0, 30))


def test_a_small_budget_is_named_in_pixels() -> None:
    msg = compressed_from_numpy(np.zeros((128, 128, 3), np.uint8), "rgb8", "png")
    with pytest.raises(ConversionError, match=r"declares 128x128 pixels \(16384 pixels\), over the budget of 12288 "):
        rgb8_from_compressed(msg, max_pixels=4 * 64 * 48)
