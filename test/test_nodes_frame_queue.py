"""Bag-mode memory is bounded in bytes; live mode keeps up with a flood by processing the newest frame."""

import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.nodes.base import PerceptionNode
from geovis_ros.nodes.frame_queue import FrameQueue
from geovis_ros.nodes.health import WARN
from geovis_ros.ros.camera_info import CameraCalibration, camera_info_from_calibration
from geovis_ros.ros.image import image_from_numpy
from geovis_ros.ros.stamps import time_from_ns


def test_bag_queue_drops_the_oldest_beyond_its_byte_budget_and_counts_them():
    q = FrameQueue[bytes]("bag", max_bytes=10, size_of=len)
    assert [q.put(b"abcd") for _ in range(2)] == [0, 0] and q.bytes == 8
    assert q.put(b"xyz") == 1 and q.dropped == 1 and q.bytes == 7  # 8 + 3 > 10: the oldest goes
    assert q.put(b"0123456789AB") == 2 and len(q) == 1 and q.bytes == 12  # the newest is always kept
    assert q.get(timeout=0) == b"0123456789AB" and q.bytes == 0


def test_wake_returns_a_waiting_get_at_once_and_keeps_items():
    import threading

    q = FrameQueue[bytes]("live")
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=10.0)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.05)
    q.wake()
    waiter.join(5.0)
    assert got == [None] and time.monotonic() - started < 2.0  # not the 10 s timeout
    q.put(b"frame")
    q.wake()
    assert q.get(timeout=0) == b"frame"  # a wake never hides a queued item


class SlowEcho(PerceptionNode):
    """Counts the frames it processes, each taking ``delay_s``."""

    def __init__(self, delay_s, **kwargs):
        super().__init__("slow_echo", **kwargs)
        self.delay_s = delay_s
        self.processed = []

    def process(self, frame, header):
        time.sleep(self.delay_s)
        self.processed.append(frame.stamp_ns)

    def warm_up(self, intrinsics):
        self.warmed = [*getattr(self, "warmed", []), (intrinsics.width, intrinsics.height, len(self.processed))]


def run(mode, delay_s, width, height, frames, period_s, **params):
    """Publish ``frames`` images of width x height every ``period_s`` to a SlowEcho; return the node after."""
    rclpy.init()
    overrides = [Parameter("input_qos", value="reliable"), Parameter("mode", value=mode),
                 *(Parameter(k, value=v) for k, v in params.items())]
    node = SlowEcho(delay_s, parameter_overrides=overrides)
    peer = rclpy.create_node("flood")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    image_pub = peer.create_publisher(Image, "image", 1000)
    info_pub = peer.create_publisher(CameraInfo, "camera_info", 10)
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end and not (node.count_publishers("image") and node.count_publishers("camera_info")):
            executor.spin_once(timeout_sec=0.02)
        info_pub.publish(camera_info_from_calibration(CameraCalibration(Intrinsics(100.0, 100.0, width / 2 - 0.5,
                                                                                   height / 2 - 0.5, width, height))))
        end = time.monotonic() + 3.0
        while time.monotonic() < end and node.rectifier is None:
            executor.spin_once(timeout_sec=0.02)
        pixels = np.zeros((height, width, 3), np.uint8)
        started = time.monotonic()
        for i in range(frames):
            msg = image_from_numpy(pixels, "rgb8")
            stamp_ns = node.get_clock().now().nanoseconds
            msg.header.stamp = time_from_ns(stamp_ns)
            image_pub.publish(msg)
            executor.spin_once(timeout_sec=0.0)
            while time.monotonic() < started + (i + 1) * period_s:
                executor.spin_once(timeout_sec=period_s / 4)
        node.flood_s = time.monotonic() - started
        node.last_stamp_ns = stamp_ns
        end = time.monotonic() + 20.0
        while time.monotonic() < end and (len(node.queue) or node.output_stats.count < len(node.processed)):
            executor.spin_once(timeout_sec=0.05)
        node.checks = node.health_checks()[0]
        return node
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
        rclpy.shutdown()


def test_bag_mode_holds_at_most_bag_queue_mb_and_reports_the_drops():
    # 30 images of 2.36 MB (1024x768 rgb8) arrive faster than a 200 ms worker: 70 MB against a 16 MB budget.
    node = run("bag", 0.2, 1024, 768, 30, 0.005, bag_queue_mb=16)
    assert node.queue.dropped > 0 and len(node.processed) + node.queue.dropped == 30
    assert len(node.processed) >= 7  # at most 16 MB (6 images) queued, plus the one in hand
    assert any(c.level == WARN and "bag mode backlog" in c.message for c in node.checks), node.checks


@pytest.mark.parametrize("width, height", [(320, 240)])
def test_live_mode_keeps_processing_the_newest_frame_under_a_flood(width, height):
    # A 20 ms stage under about 500 images/s: the worker must not starve (throughput was 7 frames in 8 s).
    node = run("live", 0.02, width, height, 1000, 0.002)
    throughput = len(node.processed) / node.flood_s
    assert throughput > 0.25 / 0.02, (len(node.processed), node.flood_s)  # a collapse is about 1 frame/s
    assert node.queue.dropped > 0 and node.processed[-1] == node.last_stamp_ns  # the newest frame was processed
    assert node.failed_frames == 0 and node.rejected_frames == 0


def test_a_new_camera_info_warms_the_stage_up_before_the_first_image():
    node = run("live", 0.0, 64, 48, 3, 0.05)
    assert node.warmed == [(64, 48, 0)]  # once, for that size, before any image was processed
    assert len(node.processed) == 3
