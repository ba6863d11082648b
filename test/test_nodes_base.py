"""The shared node machinery with real rclpy over DDS: inputs, rejection, reset, diagnostics."""

import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.nodes.base import PerceptionNode
from geovis_ros.nodes.health import ERROR, OK, STALE, WARN, Check, WindowedCounters, worst
from geovis_ros.ros.camera_info import CameraCalibration, camera_info_from_calibration
from geovis_ros.ros.image import image_from_numpy, rgb8_from_image
from geovis_ros.ros.stamps import time_from_ns

W, H = 32, 24


class EchoNode(PerceptionNode):
    """Publishes each frame back as rgb8: the smallest real stage."""

    def __init__(self, **kwargs):
        super().__init__("echo", **kwargs)
        self.out = self.create_publisher(Image, "echo", 10)
        self.resets = 0
        self.fail_next = False
        self.delay_s = 0.0

    def process(self, frame, header):
        time.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        self.out.publish(image_from_numpy(frame.image, "rgb8", header))

    def reset(self):
        self.resets += 1


@pytest.fixture
def harness(request):
    rclpy.init()
    overrides = [Parameter("input_qos", Parameter.Type.STRING, "reliable")]
    overrides += getattr(request, "param", [])
    node = EchoNode(parameter_overrides=overrides)
    peer = rclpy.create_node("peer")
    received, diagnostics = [], []
    peer.create_subscription(Image, "echo", received.append, 10)
    peer.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    image_pub = peer.create_publisher(Image, "image", 10)
    info_pub = peer.create_publisher(CameraInfo, "camera_info", 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)

    def spin_until(condition, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not condition():
            executor.spin_once(timeout_sec=0.02)
        return condition()

    calibration = CameraCalibration(Intrinsics(30.0, 30.0, 15.5, 11.5, W, H))

    def send_info(width=W, height=H):
        info_pub.publish(camera_info_from_calibration(calibration.resized(width, height)))
        spin_until(lambda: node.calibration is not None and node.calibration.intrinsics.width == width)

    def send_image(stamp_ns, pixels=None, encoding="bgr8", frame_id="cam"):
        pixels = np.full((H, W, 3), 7, np.uint8) if pixels is None else pixels
        msg = image_from_numpy(pixels, encoding)
        msg.header.stamp = time_from_ns(stamp_ns)
        msg.header.frame_id = frame_id
        image_pub.publish(msg)

    spin_until(lambda: node.count_publishers("image") > 0 and peer.count_subscribers("echo") > 0, 2.0)
    yield node, send_info, send_image, spin_until, received, diagnostics
    executor.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.shutdown()


def test_frame_flows_through_with_header_copied(harness):
    node, send_info, send_image, spin_until, received, _ = harness
    send_info()
    pixels = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    send_image(1_000_000_123, pixels, "bgr8", "cam_optical")
    assert spin_until(lambda: received)
    out = received[0]
    assert out.header.frame_id == "cam_optical"
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (1, 123)
    np.testing.assert_array_equal(rgb8_from_image(out), pixels[..., ::-1])


def test_bad_inputs_are_dropped_and_node_recovers(harness):
    node, send_info, send_image, spin_until, received, _ = harness
    send_image(0)  # no camera_info yet (live mode): held, then skipped when a newer one arrives, not an error
    send_image(1)
    assert spin_until(lambda: node.waiting_for_info_frames == 1)
    assert node.rejected_frames == 0 and not received
    send_info()  # the newest image that waited for it is processed
    assert spin_until(lambda: len(received) == 1)
    assert (received[0].header.stamp.sec, received[0].header.stamp.nanosec) == (0, 1)
    send_image(2, np.zeros((H, W), np.float32), "32FC1")  # not a colour encoding
    assert spin_until(lambda: node.rejected_frames == 1)
    send_image(3, np.zeros((H * 2, W * 2, 3), np.uint8))  # size differs from camera_info
    assert spin_until(lambda: node.rejected_frames == 2)
    send_image(10)
    assert spin_until(lambda: len(received) == 2)
    send_image(9)  # out of order (less than the clock-jump threshold)
    assert spin_until(lambda: node.rejected_frames == 3)
    node.fail_next = True
    send_image(11)
    assert spin_until(lambda: node.failed_frames == 1)
    send_image(12)
    assert spin_until(lambda: len(received) == 3)


def test_clock_jump_back_resets_and_size_change_resets(harness):
    node, send_info, send_image, spin_until, received, _ = harness
    send_info()
    send_image(5_000_000_000)
    assert spin_until(lambda: len(received) == 1)
    send_image(1_000_000_000)  # bag loop: 4 s back
    assert spin_until(lambda: len(received) == 2)
    assert node.resets == 1 and node.rejected_frames == 0
    send_info(W * 2, H * 2)
    send_image(2_000_000_000, np.zeros((H * 2, W * 2, 3), np.uint8))
    assert spin_until(lambda: len(received) == 3)
    assert node.resets == 2


def test_diagnostics_report_rates_and_counters(harness):
    node, send_info, send_image, spin_until, received, diagnostics = harness
    send_info()
    now_ns = node.get_clock().now().nanoseconds  # real stamps: the timestamp check judges their delay
    for count in (1, 2, 3):
        send_image(now_ns + count)
        assert spin_until(lambda expected=count: len(received) == expected)
    assert spin_until(lambda: any(s.name.endswith("echo") for d in diagnostics for s in d.status), 3.0)
    status = [s for d in diagnostics for s in d.status if s.name.endswith("echo")][-1]
    values = {kv.key: kv.value for kv in status.values}
    for key in ("input_rate_hz", "output_rate_hz", "latency_ms_p50", "latency_ms_p99", "dropped_frames", "mode"):
        assert key in values
    assert status.level == DiagnosticStatus.OK, status.message
    # diagnostic_updater-style frequency and timestamp statuses beside the node's own
    names = {s.name.rsplit("/", 1)[-1] for d in diagnostics for s in d.status}
    assert {"echo", "echo: frequency", "echo: timestamp"} <= names
    frequency = [s for d in diagnostics for s in d.status if s.name.endswith("echo: frequency")][-1]
    keys = {kv.key for kv in frequency.values}
    assert {"Actual frequency (Hz)", "Minimum acceptable frequency (Hz)"} <= keys


def levels(checks):
    return {c.level for c in checks}


def test_health_levels_follow_the_stream_and_a_startup_hiccup_clears(harness):
    node, send_info, send_image, spin_until, received, _ = harness
    now = time.monotonic()
    checks, _, _ = node.health_checks(now)
    assert worst(checks) == Check(OK, "waiting for images on /image")
    send_image(1)  # before camera_info: a normal startup, OK (not WARN, not ERROR)
    assert spin_until(lambda: node._first_image_s is not None)
    checks, _, _ = node.health_checks()
    assert worst(checks).level == OK and "waiting for camera_info on /camera_info" in worst(checks).message
    send_info()
    assert spin_until(lambda: len(received) == 1)  # the image that waited for it
    now_ns = node.get_clock().now().nanoseconds
    send_image(now_ns, np.zeros((H, W), np.float32), "32FC1")  # refused: a WARN, while it is recent
    assert spin_until(lambda: node.rejected_frames == 1)
    send_image(now_ns + 1)
    assert spin_until(lambda: len(received) == 2)
    checks, frequency, timestamp = node.health_checks()
    assert worst(checks).level == WARN and "1 frame(s) rejected" in worst(checks).message
    assert frequency.level == OK and timestamp.level == OK
    later = time.monotonic() + 11.0  # the window has passed: the hiccup is forgotten ...
    checks, _, _ = node.health_checks(later)
    assert not any("rejected" in c.message for c in checks)
    assert worst(checks).level == STALE and "no image on /image" in worst(checks).message  # ... but input stopped


def test_worst_check_and_windowed_counters():
    assert worst([]) == Check(OK, "ok")
    assert worst([Check(OK, "a"), Check(WARN, "b"), Check(ERROR, "c"), Check(ERROR, "d")]) == Check(ERROR, "c; d")
    counters = WindowedCounters(window_s=10.0, start=0.0)
    assert counters.update({"n": 0}, now=0.0) == {"n": 0}
    assert counters.update({"n": 3}, now=5.0) == {"n": 3}
    assert counters.update({"n": 3}, now=12.0) == {"n": 3}  # 0 -> 3 happened less than 10 s before 12 s ...
    assert counters.update({"n": 4}, now=16.0) == {"n": 1}  # ... and is forgotten by 16 s


@pytest.mark.parametrize("harness", [[Parameter("mode", Parameter.Type.STRING, "live")]], indirect=True)
def test_live_mode_drops_oldest_when_processing_is_slow(harness):
    node, send_info, send_image, spin_until, received, _ = harness
    send_info()
    node.delay_s = 0.2
    for i in range(10):
        send_image(i + 1)
        spin_until(lambda: False, 0.01)
    spin_until(lambda: node.queue.dropped > 0 and len(node.queue) == 0, 5.0)
    assert node.queue.dropped > 0
    assert rclpy.ok()


@pytest.mark.parametrize("harness", [[Parameter("mode", Parameter.Type.STRING, "bag")]], indirect=True)
def test_bag_mode_processes_every_frame_in_order(harness):
    node, send_info, send_image, spin_until, received, _ = harness
    send_info()
    node.delay_s = 0.02
    for i in range(10):
        send_image(i + 1)
    assert spin_until(lambda: len(received) == 10)
    assert [m.header.stamp.nanosec for m in received] == list(range(1, 11)) and node.queue.dropped == 0


def test_input_qos_default_is_sensor_data():
    rclpy.init()
    try:
        node = EchoNode()
        assert node._input_qos.reliability == qos_profile_sensor_data.reliability
        node.destroy_node()
    finally:
        rclpy.shutdown()


@pytest.mark.parametrize("harness", [[Parameter("mode", Parameter.Type.STRING, "bag")]], indirect=True)
def test_bag_mode_holds_images_that_arrive_before_camera_info(harness):
    node, send_info, send_image, spin_until, received, _ = harness
    send_image(1)
    send_image(2)
    assert spin_until(lambda: node.input_stats.count == 2)
    assert not received and node.rejected_frames == 0
    send_info()
    assert spin_until(lambda: len(received) == 2)
    assert [m.header.stamp.nanosec for m in received] == [1, 2]


SLOW_NODE_SCRIPT = """
import os, signal, sys, threading, time
import numpy as np
from std_msgs.msg import Header
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.nodes import base
from geovis_ros.ros.camera_info import CameraCalibration
from geovis_ros.ros.rectify import Rectifier

base.WORKER_JOIN_TIMEOUT_S = 0.2


class SlowNode(base.PerceptionNode):
    def process(self, frame, header):
        print("processing", flush=True)
        time.sleep(30.0)  # a frame that outlives the shutdown join


def factory():
    node = SlowNode("slow_node")
    rectifier = Rectifier(CameraCalibration(Intrinsics(2.0, 2.0, 1.5, 1.5, 4, 4)))
    node.queue.put(base.QueuedImage(Header(), 1, lambda _budget: np.zeros((4, 4, 3), np.uint8), 48, rectifier,
                                    time.monotonic()))
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    return node


base.run_node(factory)
print("not reached: run_node must leave the process", flush=True)
sys.exit(3)
"""


def test_shutdown_with_a_frame_outliving_the_join_exits_cleanly(tmp_path):
    """SIGTERM while the worker is stuck in a long frame: exit status 0 within seconds, a warning, no traceback."""
    import subprocess
    import sys

    script = tmp_path / "slow_node.py"
    script.write_text(SLOW_NODE_SCRIPT)
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=25)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert time.monotonic() - started < 20.0
    assert "processing" in output and "still processing a frame" in output, output
    assert "Traceback" not in output and "not reached" not in output, output


def test_a_failing_callback_with_a_frame_outliving_the_join_still_fails_the_exit_status(tmp_path):
    """A callback error while ROS is up is a failure even when the worker is stuck: traceback and status 1."""
    import subprocess
    import sys

    failing = SLOW_NODE_SCRIPT.replace(
        "threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()",
        "node.create_timer(1.0, lambda: 1 / 0)",
    )
    assert failing != SLOW_NODE_SCRIPT
    script = tmp_path / "failing_node.py"
    script.write_text(failing)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=25)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "still processing a frame" in output and "ZeroDivisionError" in output, output
    assert "not reached" not in output, output


@pytest.mark.parametrize("focal, cx", [(1e-6, 15.5), (1e12, 15.5), (30.0, -1e6)])
def test_implausible_intrinsics_are_refused_and_the_node_keeps_waiting(harness, focal, cx):
    node = harness[0]
    info = camera_info_from_calibration(CameraCalibration(Intrinsics(focal, focal, cx, 11.5, W, H)))
    node._on_camera_info(info)  # as the subscription would, on the node's own thread
    assert node.calibration is None and node.rectifier is None
