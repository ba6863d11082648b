"""sensor_msgs/Image and CompressedImage <-> numpy, on real rclpy message classes."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from geovis_ros.ros.compressed import (
    CompressedFormat,
    compressed_from_numpy,
    numpy_from_compressed,
    parse_compressed_format,
    rgb8_from_compressed,
)
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.image import (
    IMAGE_ENCODINGS,
    depth_from_image,
    image_from_depth,
    image_from_numpy,
    numpy_from_image,
    rgb8_from_image,
)
from geovis_ros.ros.stamps import time_from_ns

HEIGHT, WIDTH = 48, 64
ODD_HEIGHT, ODD_WIDTH = 7, 13


def random_pixels(encoding: str, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Random pixels of the encoding's dtype and shape; float encodings include NaN."""
    fmt = IMAGE_ENCODINGS[encoding]
    shape = (height, width) if fmt.channels == 1 else (height, width, fmt.channels)
    rng = np.random.default_rng(seed)
    if fmt.dtype.kind == "f":
        pixels = rng.normal(size=shape).astype(fmt.dtype)
        pixels.reshape(-1)[::7] = np.nan
        return pixels
    return rng.integers(0, np.iinfo(fmt.dtype).max, shape, endpoint=True, dtype=fmt.dtype)


def handmade_image(pixels: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False) -> Image:
    """An Image built byte by byte (not by the code under test): rows padded, chosen byte order."""
    height, width = pixels.shape[:2]
    stored = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    rows = stored.reshape(height, -1).view(np.uint8)
    padded = np.full((height, rows.shape[1] + padding), 0xAB, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=padded.shape[1],
        data=padded.tobytes(),
    )


def assert_same_pixels(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype.newbyteorder("=")
    np.testing.assert_array_equal(actual, expected)  # NaN == NaN here


@pytest.mark.parametrize("encoding", list(IMAGE_ENCODINGS))
@pytest.mark.parametrize(("height", "width"), [(HEIGHT, WIDTH), (ODD_HEIGHT, ODD_WIDTH)])
def test_every_encoding_round_trips(encoding, height, width):
    pixels = random_pixels(encoding, height, width)
    header = Header(stamp=time_from_ns(1_500_000_001), frame_id="camera")
    msg = image_from_numpy(pixels, encoding, header)
    assert (msg.height, msg.width, msg.encoding) == (height, width, encoding)
    assert msg.step == width * IMAGE_ENCODINGS[encoding].pixel_bytes
    assert len(msg.data) == msg.step * height
    assert msg.is_bigendian == (sys.byteorder == "big")
    assert msg.header.frame_id == "camera" and msg.header.stamp.nanosec == 500_000_001
    assert_same_pixels(numpy_from_image(msg), pixels)


@pytest.mark.parametrize("encoding", list(IMAGE_ENCODINGS))
@pytest.mark.parametrize("padding", [1, 3, 8])
def test_padded_step_reads_only_the_pixels(encoding, padding):
    pixels = random_pixels(encoding, ODD_HEIGHT, ODD_WIDTH)
    assert_same_pixels(numpy_from_image(handmade_image(pixels, encoding, padding=padding)), pixels)


@pytest.mark.parametrize("encoding", list(IMAGE_ENCODINGS))
def test_big_endian_data_reads_in_native_order(encoding):
    pixels = random_pixels(encoding, ODD_HEIGHT, ODD_WIDTH)
    result = numpy_from_image(handmade_image(pixels, encoding, padding=2, big_endian=True))
    assert result.dtype.isnative
    assert_same_pixels(result, pixels)


def test_big_endian_array_is_sent_without_swapping():
    pixels = random_pixels("32FC1").astype(">f4")
    msg = image_from_numpy(pixels, "32FC1")
    assert msg.is_bigendian == 1
    assert bytes(msg.data) == pixels.tobytes()
    assert_same_pixels(numpy_from_image(msg), pixels)


def test_non_contiguous_array_round_trips():
    pixels = random_pixels("rgb8", 2 * HEIGHT, WIDTH)[::2, :, :]
    assert not pixels.flags.c_contiguous
    assert_same_pixels(numpy_from_image(image_from_numpy(pixels, "rgb8")), pixels)


def test_to_numpy_is_a_zero_copy_view_of_msg_data():
    msg = handmade_image(random_pixels("mono16"), "mono16", padding=4)
    pixels = numpy_from_image(msg)
    assert np.shares_memory(pixels, np.frombuffer(msg.data, dtype=np.uint8))
    pixels[0, 0] = 1234  # a view: writes through to the message
    assert numpy_from_image(msg)[0, 0] == 1234


def test_bytes_data_gives_a_read_only_view():
    reference = image_from_numpy(random_pixels("bgr8"), "bgr8")
    fields = ("height", "width", "encoding", "is_bigendian", "step")
    msg = SimpleNamespace(data=bytes(reference.data), **{name: getattr(reference, name) for name in fields})
    pixels = numpy_from_image(msg)
    assert not pixels.flags.writeable
    assert_same_pixels(pixels, numpy_from_image(reference))


def image_with(**changes) -> Image:
    msg = image_from_numpy(random_pixels("rgb8", ODD_HEIGHT, ODD_WIDTH), "rgb8")
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (image_with(encoding="yuv422"), "encoding"),
        (image_with(encoding=""), "encoding"),
        (image_with(data=bytes(10)), "data"),
        (image_with(step=ODD_WIDTH * 3 - 1), "step"),
        (image_with(height=ODD_HEIGHT + 1), "data"),
        (image_with(height=0), "height/width"),
        (image_with(width=0), "height/width"),
        (Image(encoding="mono8"), "height/width"),
    ],
    ids=[
        "unknown-encoding",
        "empty-encoding",
        "short-data",
        "short-step",
        "height-too-big",
        "zero-height",
        "zero-width",
        "empty-message",
    ],
)
def test_malformed_image_raises_conversion_error_naming_the_field(msg, field):
    with pytest.raises(ConversionError, match=field):
        numpy_from_image(msg)


@pytest.mark.parametrize(
    ("pixels", "encoding", "problem"),
    [
        (np.zeros((4, 5, 3), np.float32), "rgb8", "dtype"),
        (np.zeros((4, 5), np.uint8), "rgb8", "shape"),
        (np.zeros((4, 5, 4), np.uint8), "rgb8", "shape"),
        (np.zeros((4, 5, 1, 1), np.uint16), "mono16", "shape"),
        (np.zeros((0, 5), np.uint8), "mono8", "height/width"),
        (np.zeros((4, 5), np.uint8), "8UC1", "encoding"),
        (np.zeros((4, 5), np.float64), "32FC1", "dtype"),
    ],
)
def test_bad_array_for_encoding_raises(pixels, encoding, problem):
    with pytest.raises(ConversionError, match=problem):
        image_from_numpy(pixels, encoding)


def test_conversion_error_is_a_value_error():
    assert issubclass(ConversionError, ValueError)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_rgb8_from_colour_encodings(encoding):
    rgb = random_pixels("rgb8")
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    stored = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], -1),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], -1),
    }[encoding]
    msg = handmade_image(np.ascontiguousarray(stored), encoding, padding=3)
    assert_same_pixels(rgb8_from_image(msg), rgb)


def test_rgb8_from_mono_encodings_repeats_the_grey_level():
    grey16 = random_pixels("mono16")
    expected = np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    assert_same_pixels(rgb8_from_image(image_from_numpy(grey16, "mono16")), expected)
    grey8 = random_pixels("mono8")
    assert_same_pixels(rgb8_from_image(image_from_numpy(grey8, "mono8")), np.repeat(grey8[..., None], 3, -1))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "32FC2"])
def test_rgb8_from_non_colour_encoding_raises(encoding):
    with pytest.raises(ConversionError, match=encoding):
        rgb8_from_image(image_from_numpy(random_pixels(encoding), encoding))


def test_depth_from_16uc1_is_metres_with_nan_for_zero():
    millimetres = np.array([[0, 1, 1500], [65535, 0, 250]], np.uint16)
    depth = depth_from_image(image_from_numpy(millimetres, "16UC1"))
    expected = np.array([[np.nan, 0.001, 1.5], [65.535, np.nan, 0.25]], np.float32)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, expected, rtol=1e-6)


def test_depth_from_32fc1_marks_non_positive_and_non_finite_invalid():
    stored = np.array([[1.25, np.nan, np.inf], [-np.inf, 0.0, -2.0]], np.float32)
    msg = image_from_numpy(stored, "32FC1")
    depth = depth_from_image(msg)
    np.testing.assert_array_equal(depth, [[1.25, np.nan, np.nan], [np.nan, np.nan, np.nan]])
    assert not np.shares_memory(depth, np.frombuffer(msg.data, np.uint8))  # the message is untouched
    assert np.isinf(numpy_from_image(msg)[0, 2])


def test_depth_to_16uc1_rounds_millimetres_and_zeroes_invalid():
    metres = np.array([[1.0004, np.nan, -1.0], [70.0, 0.0, 0.0005]])
    msg = image_from_depth(metres, "16UC1")
    np.testing.assert_array_equal(numpy_from_image(msg), [[1000, 0, 0], [0, 0, 0]])
    depth = depth_from_image(msg)
    np.testing.assert_allclose(depth, [[1.0, np.nan, np.nan], [np.nan, np.nan, np.nan]])


def test_depth_32fc1_round_trip_keeps_values():
    metres = random_pixels("32FC1") ** 2 + 0.1
    msg = image_from_depth(metres)
    assert msg.encoding == "32FC1"
    assert_same_pixels(depth_from_image(msg), metres)


@pytest.mark.parametrize(
    ("depth", "encoding", "problem"),
    [
        (np.ones((2, 2), np.uint16), "16UC1", "dtype"),
        (np.ones((2, 2), np.float32), "mono16", "encoding"),
    ],
)
def test_bad_depth_input_raises(depth, encoding, problem):
    with pytest.raises(ConversionError, match=problem):
        image_from_depth(depth, encoding)


def test_depth_from_colour_image_raises():
    with pytest.raises(ConversionError, match="encoding"):
        depth_from_image(image_from_numpy(random_pixels("rgb8"), "rgb8"))


# --- CompressedImage -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1"])
def test_png_round_trip_is_exact(encoding):
    pixels = random_pixels(encoding)
    header = Header(frame_id="camera")
    msg = compressed_from_numpy(pixels, encoding, "png", header)
    assert msg.header.frame_id == "camera"
    assert parse_compressed_format(msg.format).original_encoding == encoding
    decoded, decoded_encoding = numpy_from_compressed(msg)
    assert decoded_encoding == encoding
    assert_same_pixels(decoded, pixels)


def smooth_rgb() -> np.ndarray:
    """A smooth colour image: JPEG keeps it within a few grey levels."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([u * 4, v * 5, (u + v) * 2], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_jpeg_round_trip_is_close(encoding):
    rgb = smooth_rgb()
    pixels = {"rgb8": rgb, "bgr8": np.ascontiguousarray(rgb[..., ::-1]), "mono8": rgb[..., 1].copy()}[
        encoding
    ]
    msg = compressed_from_numpy(pixels, encoding, "jpeg", jpeg_quality=95)
    assert msg.format == f"{encoding}; jpeg compressed {'mono8' if encoding == 'mono8' else 'bgr8'}"
    decoded, decoded_encoding = numpy_from_compressed(msg)
    assert decoded_encoding == encoding and decoded.shape == pixels.shape
    assert np.abs(decoded.astype(int) - pixels).mean() < 2.0


def test_jpeg_of_rgba_drops_alpha_and_restores_it_opaque():
    rgba = np.concatenate([smooth_rgb(), np.full((HEIGHT, WIDTH, 1), 7, np.uint8)], axis=-1)
    decoded, encoding = numpy_from_compressed(compressed_from_numpy(rgba, "rgba8", "jpeg", jpeg_quality=95))
    assert encoding == "rgba8"
    assert np.abs(decoded[..., :3].astype(int) - rgba[..., :3]).mean() < 2.0
    assert np.all(decoded[..., 3] == 255)


def test_rgb8_from_compressed():
    rgb = random_pixels("rgb8")
    assert_same_pixels(rgb8_from_compressed(compressed_from_numpy(rgb, "rgb8", "png")), rgb)
    grey = random_pixels("mono8")
    assert_same_pixels(
        rgb8_from_compressed(compressed_from_numpy(grey, "mono8", "png")), np.repeat(grey[..., None], 3, -1)
    )


def test_bare_format_decodes_as_opencv_bgr():
    rgb = random_pixels("rgb8")
    msg = compressed_from_numpy(rgb, "rgb8", "png")
    msg.format = "png"
    decoded, encoding = numpy_from_compressed(msg)
    assert encoding == "bgr8"
    assert_same_pixels(decoded, np.ascontiguousarray(rgb[..., ::-1]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jpeg", CompressedFormat("jpeg")),
        ("PNG", CompressedFormat("png")),
        ("", CompressedFormat(None)),
        ("rgb8; jpeg compressed bgr8", CompressedFormat("jpeg", "rgb8", "bgr8")),
        ("mono16; png compressed mono16", CompressedFormat("png", "mono16", "mono16")),
        ("bgr8;jpg compressed", CompressedFormat("jpeg", "bgr8", None)),
    ],
)
def test_parse_compressed_format(text, expected):
    assert parse_compressed_format(text) == expected


def test_format_string_round_trips():
    text = "rgb8; jpeg compressed bgr8"
    assert str(parse_compressed_format(text)) == text
    assert str(CompressedFormat("png")) == "png"


@pytest.mark.parametrize("text", ["16UC1; compressedDepth png", "tiff", "rgb8; jpeg compressed bgr8 extra"])
def test_unsupported_format_raises(text):
    with pytest.raises(ConversionError, match="format"):
        parse_compressed_format(text)


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not an image", None],
    ids=["empty", "garbage", "truncated-png"],
)
def test_corrupt_compressed_data_raises(data):
    if data is None:
        data = bytes(compressed_from_numpy(random_pixels("rgb8"), "rgb8", "png").data)[:40]
    msg = CompressedImage(format="rgb8; png compressed bgr8", data=data)
    with pytest.raises(ConversionError, match="CompressedImage.data"):
        numpy_from_compressed(msg)


def test_format_naming_an_impossible_encoding_raises():
    msg = compressed_from_numpy(random_pixels("rgb8"), "rgb8", "png")
    msg.format = "32FC1; png compressed bgr8"
    with pytest.raises(ConversionError, match="32FC1"):
        numpy_from_compressed(msg)


@pytest.mark.parametrize(
    ("encoding", "codec", "problem"),
    [
        ("mono16", "jpeg", "mono16"),
        ("32FC1", "png", "32FC1"),
        ("rgb8", "webp", "codec"),
    ],
)
def test_unencodable_input_raises(encoding, codec, problem):
    with pytest.raises(ConversionError, match=problem):
        compressed_from_numpy(random_pixels(encoding), encoding, codec)


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1", "32FC2", "yuv422"])
def test_camera_input_refuses_output_encodings_listing_only_camera_encodings(encoding):
    msg = Image(height=2, width=2, encoding=encoding, step=16, data=bytes(32))
    with pytest.raises(ConversionError, match="not a camera image encoding") as err:
        rgb8_from_image(msg)
    assert "32FC1" not in str(err.value).split("supported:")[1] and "rgb8" in str(err.value)
