"""Machinery every geovis node shares: inputs, camera_info cache, worker, diagnostics, errors.

A subclass implements :meth:`PerceptionNode.process` (runs on the worker thread, publishes its
outputs) and :meth:`PerceptionNode.reset`. The subscription callbacks only convert and queue,
so inference never blocks them: ``live`` mode keeps the newest frame only, ``bag`` mode keeps
every frame in order.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from geovis_ros.frame import Frame
from geovis_ros.nodes.frame_queue import FrameQueue
from geovis_ros.nodes.params import declare_parameters
from geovis_ros.nodes.stats import RollingStats
from geovis_ros.ros.camera_info import CameraCalibration, calibration_from_camera_info
from geovis_ros.ros.compressed import rgb8_from_compressed
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.image import rgb8_from_image
from geovis_ros.ros.qos import incompatibility, input_qos
from geovis_ros.ros.stamps import ns_from_time

# A stamp this far behind the newest one is a clock jump (bag loop): the pipeline resets.
CLOCK_JUMP_BACK_NS = 1_000_000_000
# Subscription history in bag mode, so a fast player does not outrun the callback.
BAG_HISTORY = 100
# Bag mode holds this many images that arrive before the first camera_info.
AWAITING_INFO_LIMIT = 30
# Warn when no image arrived for this long.
NO_INPUT_WARNING_S = 5.0
# The same problem is logged at most once per this many seconds.
ERROR_THROTTLE_S = 5.0
# At shutdown the worker gets this long to finish the frame in hand.
WORKER_JOIN_TIMEOUT_S = 10.0


class ThrottledLog:
    """Logs each distinct problem (by key) at most once per ``period_s`` seconds."""

    def __init__(self, log: Callable[[str], Any], period_s: float = ERROR_THROTTLE_S) -> None:
        self._log = log
        self._period_s = period_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, message: str) -> bool:
        """Log ``message`` unless ``key`` was logged in the last period; True when logged."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -float("inf")) < self._period_s:
                return False
            self._last[key] = now
        self._log(message)
        return True


class PerceptionNode(Node):
    """Base node: image (+ compressed) and camera_info in, frames handed to a worker thread."""

    #: Parameter names this node declares (None = all of geovis_ros.nodes.params.PARAMS).
    PARAMETERS: list[str] | None = None

    def __init__(self, node_name: str, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self.params = declare_parameters(self, self.PARAMETERS)
        self.log_error = ThrottledLog(self.get_logger().error)
        self.log_warning = ThrottledLog(self.get_logger().warning)
        self._input_qos = input_qos(self.params["input_qos"], BAG_HISTORY if self.params["mode"] == "bag" else 5)
        if self.params["use_compressed"]:
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_compressed, self._input_qos
            )
        else:
            self._image_sub = self.create_subscription(Image, "image", self._on_image, self._input_qos)
        self._info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, self._input_qos)
        self.calibration: CameraCalibration | None = None
        self.queue: FrameQueue[tuple[Frame, Header, float]] = FrameQueue(self.params["mode"])
        self.input_stats = RollingStats()
        self.output_stats = RollingStats()
        self.rejected_frames = 0
        self.failed_frames = 0
        self._last_stamp_ns: int | None = None
        self._last_size: tuple[int, int] | None = None
        self._awaiting_info: deque[tuple[Header, Callable[[], Any]]] = deque(maxlen=AWAITING_INFO_LIMIT)
        self._last_processed_ns: int | None = None
        self._inputs_at_last_check = 0
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(NO_INPUT_WARNING_S, self._check_inputs)
        self._worker = threading.Thread(target=self._work, name=f"{node_name}-worker", daemon=True)
        self._worker.start()

    # -- to implement ---------------------------------------------------------------------
    def process(self, frame: Frame, header: Header) -> None:
        """Run the stage on ``frame`` and publish (worker thread). ``header`` is the input's."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all stream state (called on the worker thread before the next frame)."""

    def diagnostic_values(self) -> dict[str, str]:
        """Extra key/values for /diagnostics (backend, tracking state, ...)."""
        return {}

    # -- inputs ---------------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.calibration = calibration_from_camera_info(msg)
        except ConversionError as err:
            self.log_error("camera_info", f"invalid camera_info on {self._info_sub.topic_name}: {err}")
            return
        # Bag mode loses no frame to a camera_info that was recorded just after the first image.
        waiting, self._awaiting_info = self._awaiting_info, deque(maxlen=AWAITING_INFO_LIMIT)
        for header, decode in waiting:
            self._accept(header, decode)

    def _on_image(self, msg: Image) -> None:
        self.input_stats.add()
        self._accept(msg.header, lambda: rgb8_from_image(msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self.input_stats.add()
        self._accept(msg.header, lambda: rgb8_from_compressed(msg))

    def _accept(self, header: Header, decode: Callable[[], Any]) -> None:
        received = time.monotonic()
        topic = self._image_sub.topic_name
        if self.calibration is None and self.params["mode"] == "bag":
            if len(self._awaiting_info) == AWAITING_INFO_LIMIT:
                self._reject("no_info", f"dropping the oldest image held on {topic}: still no camera_info on "
                                        f"{self._info_sub.topic_name}")
            self._awaiting_info.append((header, decode))
            return
        if self.calibration is None:
            self._reject("no_info", f"dropping images on {topic}: waiting for camera_info on "
                                    f"{self._info_sub.topic_name}")
            return
        try:
            rgb = decode()
        except ConversionError as err:
            self._reject("decode", f"dropping image on {topic}: {err}")
            return
        intrinsics = self.calibration.intrinsics
        if (rgb.shape[1], rgb.shape[0]) != (intrinsics.width, intrinsics.height):
            self._reject("size", f"dropping image on {topic}: it is {rgb.shape[1]}x{rgb.shape[0]} but "
                                 f"camera_info says {intrinsics.width}x{intrinsics.height}")
            return
        stamp_ns = ns_from_time(header.stamp)
        if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
            if self._last_stamp_ns - stamp_ns >= CLOCK_JUMP_BACK_NS:
                # Accepted: the worker resets when it reaches this frame (frames before the jump
                # that are still queued are processed first, in order).
                self.get_logger().info(
                    f"time jumped back by {(self._last_stamp_ns - stamp_ns) * 1e-9:.2f} s "
                    "(bag loop?): resetting"
                )
            else:
                self._reject("stamp", f"dropping image on {topic}: stamp {stamp_ns} ns is not newer "
                                      f"than the previous {self._last_stamp_ns} ns")
                return
        self._last_stamp_ns = stamp_ns
        frame_id = self.params["camera_frame"] or header.frame_id or "camera"
        self.queue.put((Frame(stamp_ns, rgb, intrinsics, frame_id), header, received))

    def _reject(self, key: str, message: str) -> None:
        self.rejected_frames += 1
        self.log_error(key, message)

    # -- worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self.queue.get(timeout=0.5)
            if item is None:
                if self.queue.closed:
                    return
                continue
            frame, header, received = item
            size = (frame.intrinsics.width, frame.intrinsics.height)
            # Small steps back never reach the queue (see _accept), so any step back here is a
            # clock jump: a new stream, like a new image size.
            jumped = self._last_processed_ns is not None and frame.stamp_ns < self._last_processed_ns
            resized = self._last_size is not None and size != self._last_size
            self._last_size, self._last_processed_ns = size, frame.stamp_ns
            try:
                if jumped or resized:
                    self.reset()
                self.process(frame, header)
            except Exception as err:  # noqa: BLE001 - a bad frame must never kill the node
                self.failed_frames += 1
                self.log_error("process", f"frame at {frame.stamp_ns} ns failed and was dropped: {err!r}")
                continue
            self.output_stats.add(latency_ms=(time.monotonic() - received) * 1000.0)

    # -- monitoring -----------------------------------------------------------------------
    def _check_inputs(self) -> None:
        if self.input_stats.count != self._inputs_at_last_check:
            self._inputs_at_last_check = self.input_stats.count
            return
        topic = self._image_sub.topic_name
        publishers = self.get_publishers_info_by_topic(topic)
        if not publishers:
            detail = "no publisher on that topic (check the remapping)"
        else:
            reasons = {r for p in publishers if (r := incompatibility(p.qos_profile, self._input_qos))}
            detail = (f"{len(publishers)} publisher(s), incompatible QoS: {'; '.join(sorted(reasons))}"
                      if reasons else f"{len(publishers)} publisher(s) with compatible QoS, none sent anything")
        self.get_logger().warning(f"no image received on {topic} for {NO_INPUT_WARNING_S:.0f} s: {detail}")

    def _publish_diagnostics(self) -> None:
        p50, p99 = self.output_stats.latency_percentiles_ms()
        values = {
            "input_rate_hz": f"{self.input_stats.rate_hz():.2f}",
            "output_rate_hz": f"{self.output_stats.rate_hz():.2f}",
            "latency_ms_p50": f"{p50:.1f}",
            "latency_ms_p99": f"{p99:.1f}",
            "frames_in": str(self.input_stats.count),
            "frames_out": str(self.output_stats.count),
            "dropped_frames": str(self.queue.dropped),
            "rejected_frames": str(self.rejected_frames),
            "failed_frames": str(self.failed_frames),
            "mode": self.params["mode"],
            **self.diagnostic_values(),
        }
        problems = self.rejected_frames + self.failed_frames
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=f"{self.get_fully_qualified_name()}",
            message=f"{problems} frame(s) rejected or failed" if problems else "ok",
            hardware_id="geovis_ros",
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    @property
    def worker_busy(self) -> bool:
        """True while the worker thread runs; after :meth:`destroy_node`, a frame outlived the join timeout."""
        return self._worker.is_alive()

    def destroy_node(self) -> None:
        """Stop the worker (finishing the frame in hand, up to WORKER_JOIN_TIMEOUT_S), then destroy the node."""
        self.queue.close()
        self._worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
        if self._worker.is_alive():
            self.get_logger().warning(
                f"the worker is still processing a frame after {WORKER_JOIN_TIMEOUT_S:g} s; exiting without it")
        super().destroy_node()


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> None:
    """``main()`` of every node: init, spin until SIGINT/SIGTERM, shut down without a traceback.

    A node that cannot start (invalid parameter, missing model file) logs one fatal line and
    exits with status 2.
    """
    rclpy.init(args=args)
    node = None
    failure: Exception | None = None
    try:
        try:
            node = factory()
        except (ValueError, OSError, ParameterException) as err:  # bad parameter or file: one line, no traceback
            rclpy.logging.get_logger("geovis_ros").fatal(f"cannot start: {err}")
            raise SystemExit(2) from None
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as err:
        if rclpy.ok():
            failure = err
            raise
        # A timer or subscription callback was publishing when SIGINT/SIGTERM shut the context
        # down under it ("publisher's context is invalid"): that is a clean stop, not a failure.
    finally:
        worker_busy = False
        if node is not None:
            node.destroy_node()
            worker_busy = isinstance(node, PerceptionNode) and node.worker_busy
        rclpy.try_shutdown()
        if worker_busy:
            # The worker is inside a network call (native code): finalising the interpreter under a
            # running native thread aborts the process (SIGABRT). Leave now; nothing is left to save.
            # An error on its way out (spin failed while ROS was up) still prints and fails the exit status.
            if failure is not None:
                traceback.print_exception(failure)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0 if failure is None else 1)
