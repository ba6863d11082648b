"""Throughput of the message conversions: ``python -m geovis_ros.ros.bench [--repeats N]``.

Prints one row per conversion with the median time of N repeats (after one warm-up call)
and the payload rate. :func:`run_conversion_bench` returns the same rows for ``geovis bench``.
"""

from __future__ import annotations

import argparse
import array
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from geovis_ros.ros.compressed import compressed_from_numpy, numpy_from_compressed
from geovis_ros.ros.image import image_from_depth, image_from_numpy, numpy_from_image, rgb8_from_image
from geovis_ros.ros.messages import IMAGE, RCLPY
from geovis_ros.ros.pointcloud import numpy_from_pointcloud, pointcloud_from_numpy

IMAGE_HEIGHT, IMAGE_WIDTH = 480, 640
CLOUD_POINTS = 300_000


def run_conversion_bench(repeats: int = 50) -> list[dict[str, Any]]:
    """Time each conversion ``repeats`` times; one dict per conversion.

    Keys: ``conversion`` (str), ``payload_mb`` (pixel/point bytes, MB = 1e6 bytes),
    ``median_ms``, ``min_ms`` and ``mb_per_s`` (payload / median time).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 10.0, (IMAGE_HEIGHT, IMAGE_WIDTH)).astype(np.float32)
    xyz = rng.normal(size=(CLOUD_POINTS, 3)).astype(np.float32)
    colours = rng.integers(0, 256, (CLOUD_POINTS, 3), dtype=np.uint8)

    rgb_msg = image_from_numpy(rgb, "rgb8")
    bgr_msg = image_from_numpy(rgb, "bgr8")
    depth_msg = image_from_depth(depth)
    cloud_msg = pointcloud_from_numpy(xyz, colours)
    jpeg_msg = compressed_from_numpy(rgb, "rgb8", "jpeg")
    image_label = f"{IMAGE_WIDTH}x{IMAGE_HEIGHT}"
    cases: list[tuple[str, int, Callable[[], object]]] = [
        (f"Image rgb8 {image_label} numpy->msg", rgb.nbytes, lambda: image_from_numpy(rgb, "rgb8")),
        (f"Image rgb8 {image_label} msg->numpy (view)", rgb.nbytes, lambda: numpy_from_image(rgb_msg)),
        (f"Image bgr8 {image_label} msg->rgb8", rgb.nbytes, lambda: rgb8_from_image(bgr_msg)),
        (f"Image 32FC1 {image_label} numpy->msg", depth.nbytes, lambda: image_from_depth(depth)),
        (f"Image 32FC1 {image_label} msg->numpy (view)", depth.nbytes, lambda: numpy_from_image(depth_msg)),
        (
            f"PointCloud2 {CLOUD_POINTS} xyz+rgb numpy->msg",
            len(cloud_msg.data),
            lambda: pointcloud_from_numpy(xyz, colours),
        ),
        (
            f"PointCloud2 {CLOUD_POINTS} xyz+rgb msg->numpy",
            len(cloud_msg.data),
            lambda: numpy_from_pointcloud(cloud_msg),
        ),
        (f"CompressedImage jpeg {image_label} decode", rgb.nbytes, lambda: numpy_from_compressed(jpeg_msg)),
    ]
    return [_time_case(name, payload, convert, repeats) for name, payload, convert in cases]


def run_data_assignment_bench(repeats: int = 50) -> list[dict[str, Any]]:
    """Time the ways of putting a 640x480 rgb8 array into ``Image.data`` (rows as above).

    The generated setter copies whatever it is given into a new ``array.array('B')``, so
    every ``msg.data = ...`` path copies twice (or iterates element by element for a
    memoryview); extending the message's own array in place copies once. The conversions
    use the last path.
    """
    pixels = np.random.default_rng(0).integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    image_class = RCLPY.message_class(IMAGE)

    def assign_tobytes() -> None:
        image_class().data = pixels.tobytes()

    def assign_array() -> None:
        data = array.array("B")
        data.frombytes(pixels.reshape(-1))  # type: ignore[arg-type]  # ndarray has the buffer protocol
        image_class().data = data

    def assign_memoryview() -> None:
        image_class().data = memoryview(pixels).cast("B")  # type: ignore[arg-type]  # ndarray has the buffer protocol

    def extend_in_place() -> None:
        image_class().data.frombytes(pixels.reshape(-1))

    cases: list[tuple[str, Callable[[], object]]] = [
        ("msg.data = arr.tobytes()", assign_tobytes),
        ("msg.data = array.array('B') of arr", assign_array),
        ("msg.data = memoryview(arr)", assign_memoryview),
        ("msg.data.frombytes(arr)  [used]", extend_in_place),
    ]
    return [_time_case(name, pixels.nbytes, assign, repeats) for name, assign in cases]


def _time_case(name: str, payload_bytes: int, convert: Callable[[], object], repeats: int) -> dict[str, Any]:
    convert()  # warm-up: first-touch page faults, lazy imports
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        convert()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "conversion": name,
        "payload_mb": payload_bytes / 1e6,
        "median_ms": median * 1e3,
        "min_ms": min(seconds) * 1e3,
        "mb_per_s": payload_bytes / 1e6 / median,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`run_conversion_bench` as a fixed-width text table."""
    width = max(len(row["conversion"]) for row in rows)
    lines = [f"{'conversion':<{width}}  {'MB':>6}  {'median ms':>9}  {'min ms':>8}  {'MB/s':>9}"]
    lines += [
        f"{row['conversion']:<{width}}  {row['payload_mb']:>6.2f}  {row['median_ms']:>9.3f}  "
        f"{row['min_ms']:>8.3f}  {row['mb_per_s']:>9.0f}"
        for row in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m geovis_ros.ros.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--repeats", type=int, default=50, help="timed calls per conversion (median reported)"
    )
    args = parser.parse_args(argv)
    print(format_table(run_conversion_bench(args.repeats)))
    print()
    print(format_table(run_data_assignment_bench(args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
