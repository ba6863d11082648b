"""Machinery every geovis node shares: inputs, camera_info cache, rectification, worker, diagnostics, errors.

A subclass implements :meth:`PerceptionNode.process` (runs on the worker thread, publishes its
outputs) and :meth:`PerceptionNode.reset`. The subscription callbacks only check headers and
queue, so inference never blocks them: ``live`` mode keeps the newest image only and decodes
nothing else (a flood cannot starve the worker), ``bag`` mode keeps every image in order, bounded
in bytes (``bag_queue_mb``; beyond it the oldest are dropped, counted and logged). The worker
decodes, rectifies (:class:`~geovis_ros.ros.rectify.Rectifier`, tables built once per camera_info)
and processes.

/diagnostics (every second, on the steady clock so it goes on when a bag's /clock stops) carries
one status per node named after it, plus ``<node>: frequency`` and ``<node>: timestamp`` in the
style of diagnostic_updater; see :meth:`PerceptionNode.health_checks` for the levels.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import QoSMessageLostInfo, SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from geovis_ros.frame import Frame
from geovis_ros.geometry.camera import CameraModelError, Intrinsics, check_plausible_intrinsics
from geovis_ros.nodes.frame_queue import FrameQueue
from geovis_ros.nodes.health import ERROR, OK, STALE, WARN, Check, WindowedCounters, worst
from geovis_ros.nodes.params import declare_parameters
from geovis_ros.nodes.stats import RATE_WINDOW_S, RollingStats
from geovis_ros.ros.camera_info import CameraCalibration, calibration_from_camera_info
from geovis_ros.ros.compressed import rgb8_from_compressed
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.image import rgb8_from_image
from geovis_ros.ros.qos import incompatibility, input_qos
from geovis_ros.ros.rectify import Rectifier
from geovis_ros.ros.stamps import ns_from_time

# A stamp this far behind the newest one is a clock jump (bag loop): the pipeline resets.
CLOCK_JUMP_BACK_NS = 1_000_000_000
# Subscription history in bag mode, so a fast player does not outrun the callback.
BAG_HISTORY = 100
# Bag mode holds this many images that arrive before the first camera_info.
AWAITING_INFO_LIMIT = 30
# Warn (and report STALE) when no image arrived for this long; waiting this long for camera_info is normal.
NO_INPUT_WARNING_S = 5.0
# The same problem is logged at most once per this many seconds.
ERROR_THROTTLE_S = 5.0
# At shutdown the worker gets this long to finish the frame in hand.
WORKER_JOIN_TIMEOUT_S = 10.0
# /diagnostics period, seconds.
DIAGNOSTICS_PERIOD_S = 1.0
# A compressed image may declare at most this many times the camera_info's pixels (and max_image_pixels).
PIXEL_BUDGET_FACTOR = 4


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


@dataclass(frozen=True)
class QueuedImage:
    """An accepted image waiting for the worker: decoded there, with the rectifier current at arrival.

    ``decode(max_pixels)`` returns (H, W, 3) uint8 RGB, refusing (ConversionError) a compressed image
    that declares more pixels, before decoding it; ``nbytes`` is the message's payload size; ``rectifier``
    is None only while the image is held for the first camera_info (bag mode).
    """

    header: Header
    stamp_ns: int
    decode: Callable[[int], np.ndarray]
    nbytes: int
    rectifier: Rectifier | None
    received_s: float


class PerceptionNode(Node):
    """Base node: image (+ compressed) and camera_info in, frames handed to a worker thread."""

    #: Parameter names this node declares (None = all of geovis_ros.nodes.params.PARAMS).
    PARAMETERS: list[str] | None = None

    def __init__(self, node_name: str, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self.params = declare_parameters(self, self.PARAMETERS)
        # One logger object per severity: rclpy refuses two severities from one call site on one logger.
        name = self.get_logger().name
        self.log_error = ThrottledLog(rclpy.logging.get_logger(name).error)
        self.log_warning = ThrottledLog(rclpy.logging.get_logger(name).warning)
        self.log_info = ThrottledLog(rclpy.logging.get_logger(name).info)
        mode = self.params["mode"]
        self._input_qos = input_qos(self.params["input_qos"], BAG_HISTORY if mode == "bag" else 5)
        events = SubscriptionEventCallbacks(message_lost=self._on_message_lost)
        if self.params["use_compressed"]:
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_compressed, self._input_qos, event_callbacks=events)
        else:
            self._image_sub = self.create_subscription(Image, "image", self._on_image, self._input_qos,
                                                       event_callbacks=events)
        self._info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, self._input_qos)
        self.calibration: CameraCalibration | None = None
        self.rectifier: Rectifier | None = None
        self._warm_up_for: Intrinsics | None = None  # set by request_warm_up, read by the worker
        self._projection: tuple[float, ...] = ()
        self.queue: FrameQueue[QueuedImage] = FrameQueue(
            mode, self.params["bag_queue_mb"] * 1024 * 1024, lambda item: item.nbytes)
        self.input_stats = RollingStats()
        self.output_stats = RollingStats()
        self._counts_lock = threading.Lock()
        self.rejected_frames = 0
        self.failed_frames = 0
        self.waiting_for_info_frames = 0
        self.lost_messages = 0
        self._last_problem = ""
        self._last_stamp_ns: int | None = None
        self._last_size: tuple[int, int] | None = None
        self._awaiting_info: deque[QueuedImage] = deque(maxlen=AWAITING_INFO_LIMIT)
        self._last_processed_ns: int | None = None
        self._last_delay_s = float("nan")
        self._inputs_at_last_check = 0
        self._started_s = time.monotonic()
        self._first_image_s: float | None = None
        self._windowed = WindowedCounters()
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, clock=steady)
        self.create_timer(NO_INPUT_WARNING_S, self._check_inputs, clock=steady)
        self._worker = threading.Thread(target=self._work, name=f"{node_name}-worker", daemon=True)
        self._worker.start()

    # -- to implement ---------------------------------------------------------------------
    def process(self, frame: Frame, header: Header) -> None:
        """Run the stage on ``frame`` and publish (worker thread). ``header`` is the input's."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all stream state (called on the worker thread before the next frame)."""

    def warm_up(self, intrinsics: Intrinsics) -> None:
        """Prepare for frames of ``intrinsics`` (e.g. build engines) before the first one (worker thread).

        Runs as :meth:`request_warm_up` asked (a subclass at start, every new camera_info), so that
        in live mode the first images are not dropped while the first frame would build what it
        needs. Nothing by default.
        """

    def request_warm_up(self, intrinsics: Intrinsics) -> None:
        """Have the worker run :meth:`warm_up` for ``intrinsics`` before its next image (at once when idle)."""
        self._warm_up_for = intrinsics
        self.queue.wake()

    def diagnostic_values(self) -> dict[str, str]:
        """Extra key/values for /diagnostics (backend, tracking state, ...)."""
        return {}

    def stage_checks(self) -> list[Check]:
        """Findings of the stage itself for /diagnostics (tracking, scale, backend); none by default."""
        return []

    # -- inputs ---------------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            calibration = calibration_from_camera_info(msg)
            check_plausible_intrinsics(calibration.intrinsics, calibration.distortion_model)
            projection = tuple(float(v) for v in msg.p)
            if calibration != self.calibration or projection != self._projection or self.rectifier is None:
                self.rectifier = Rectifier(calibration, projection)  # remap tables: once per calibration
                self.request_warm_up(self.rectifier.intrinsics)
        except (ConversionError, CameraModelError) as err:
            self.log_error("camera_info", f"invalid camera_info on {self._info_sub.topic_name}: {err}")
            return
        self.calibration, self._projection = calibration, projection
        # Bag mode loses no frame to a camera_info that was recorded just after the first image; live
        # mode processes the newest image that came before it.
        waiting, self._awaiting_info = self._awaiting_info, deque(maxlen=AWAITING_INFO_LIMIT)
        for item in waiting:
            self._enqueue(QueuedImage(item.header, item.stamp_ns, item.decode, item.nbytes, self.rectifier,
                                      item.received_s))

    def _on_image(self, msg: Image) -> None:
        self.input_stats.add()
        self._accept(msg.header, lambda _max_pixels: rgb8_from_image(msg), len(msg.data))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self.input_stats.add()
        self._accept(msg.header, lambda max_pixels: rgb8_from_compressed(msg, max_pixels), len(msg.data))

    def _on_message_lost(self, info: QoSMessageLostInfo) -> None:
        with self._counts_lock:
            self.lost_messages += info.total_count_change
        self.log_warning("lost", f"{info.total_count_change} image(s) lost by DDS on {self._image_sub.topic_name} "
                                 f"({info.total_count} in all)")

    def _accept(self, header: Header, decode: Callable[[int], np.ndarray], nbytes: int) -> None:
        """Check the stamp and queue the image (decoded later, on the worker)."""
        received = time.monotonic()
        if self._first_image_s is None:
            self._first_image_s = received
        topic = self._image_sub.topic_name
        stamp_ns = ns_from_time(header.stamp)
        if self.rectifier is None:
            info_topic = self._info_sub.topic_name
            if self.params["mode"] == "bag":
                with self._counts_lock:
                    self.waiting_for_info_frames += 1
                if len(self._awaiting_info) == AWAITING_INFO_LIMIT:
                    self._reject("no_info", f"dropping the oldest image held on {topic}: still no camera_info on "
                                            f"{info_topic}")
                self.log_info("no_info", f"holding images on {topic} until camera_info arrives on {info_topic}")
            else:
                if self._awaiting_info:  # live: only the newest image waits; the one before is skipped
                    self._awaiting_info.clear()
                    with self._counts_lock:
                        self.waiting_for_info_frames += 1
                self.log_info("no_info", f"waiting for camera_info on {info_topic}: images on {topic} are skipped "
                                         "until it arrives (the newest is kept for it)")
            self._awaiting_info.append(QueuedImage(header, stamp_ns, decode, nbytes, None, received))
            return
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
        self._enqueue(QueuedImage(header, stamp_ns, decode, nbytes, self.rectifier, received))

    def _enqueue(self, item: QueuedImage) -> None:
        dropped = self.queue.put(item)
        if dropped and self.params["mode"] == "bag":
            self.log_warning("backlog", f"bag mode: the input outruns the pipeline; dropped the {dropped} oldest "
                                        f"queued image(s) ({self.queue.dropped} in all, bag_queue_mb "
                                        f"{self.params['bag_queue_mb']}): play the bag slower (rate:=0.5)")

    def _reject(self, key: str, message: str) -> None:
        with self._counts_lock:
            self.rejected_frames += 1
            self._last_problem = message
        self.log_error(key, message)

    # -- worker ---------------------------------------------------------------------------
    def _frame(self, item: QueuedImage) -> Frame | None:
        """Decode, size-check and rectify a queued image (None, counted and logged, when it is refused)."""
        topic = self._image_sub.topic_name
        assert item.rectifier is not None, "images are queued for the worker only once camera_info arrived"
        source = item.rectifier.source.intrinsics
        budget = min(self.params["max_image_pixels"], PIXEL_BUDGET_FACTOR * source.width * source.height)
        try:
            rgb = item.decode(budget)
        except ConversionError as err:
            self._reject("decode", f"dropping image on {topic}: {err}")
            return None
        if (rgb.shape[1], rgb.shape[0]) != (source.width, source.height):
            self._reject("size", f"dropping image on {topic}: it is {rgb.shape[1]}x{rgb.shape[0]} but "
                                 f"camera_info says {source.width}x{source.height}")
            return None
        frame_id = self.params["camera_frame"] or item.header.frame_id or "camera"
        return Frame(item.stamp_ns, item.rectifier.apply(rgb), item.rectifier.intrinsics, frame_id)

    def _work(self) -> None:
        while True:
            self._warm_up_if_new()
            item = self.queue.get(timeout=0.5)
            if self.queue.closed:
                return
            if item is None:
                continue
            self._warm_up_if_new()  # a camera_info that came with this image: before it
            try:
                frame = self._frame(item)
                if frame is None:
                    continue
                size = (frame.intrinsics.width, frame.intrinsics.height)
                # Small steps back never reach the queue (see _accept), so any step back here is a
                # clock jump: a new stream, like a new image size.
                jumped = self._last_processed_ns is not None and frame.stamp_ns < self._last_processed_ns
                resized = self._last_size is not None and size != self._last_size
                self._last_size, self._last_processed_ns = size, frame.stamp_ns
                if jumped or resized:
                    self.reset()
                self.process(frame, item.header)
            except Exception as err:  # noqa: BLE001 - a bad frame must never kill the node
                message = f"frame at {item.stamp_ns} ns failed and was dropped: {err!r}"
                with self._counts_lock:
                    self.failed_frames += 1
                    self._last_problem = message
                self.log_error("process", message)
                continue
            self.output_stats.add(latency_ms=(time.monotonic() - item.received_s) * 1000.0)
            self._last_delay_s = (self.get_clock().now().nanoseconds - item.stamp_ns) * 1e-9

    def _warm_up_if_new(self) -> None:
        """Run :meth:`warm_up` for a camera_info whose image size the worker has not processed yet."""
        target, self._warm_up_for = self._warm_up_for, None
        if target is None or (target.width, target.height) == self._last_size:
            return
        try:
            self.warm_up(target)
        except Exception as err:  # noqa: BLE001 - the first frame will try again, and report what fails
            self.log_error("warm_up", f"warm-up for {target.width}x{target.height} images failed: {err!r}")

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

    def health_checks(self, now: float | None = None) -> tuple[list[Check], Check, Check]:
        """(node checks, frequency check, timestamp check) for /diagnostics.

        - STALE: no image for NO_INPUT_WARNING_S (nothing to work on);
        - OK "waiting for camera_info" for NO_INPUT_WARNING_S after the first image, WARN after that;
        - frequency: ERROR when images arrive but no output came in the window (after a first one),
          WARN below ``min_output_rate``;
        - timestamp: WARN when the last output lagged its input stamp by more than ``max_delay``;
        - WARN for frames rejected or failed, images lost by DDS, and (bag mode) queue drops, all
          counted over the last HEALTH_WINDOW_S seconds only;
        - the stage's own findings (:meth:`stage_checks`).
        """
        now = time.monotonic() if now is None else now
        topic, info_topic = self._image_sub.topic_name, self._info_sub.topic_name
        with self._counts_lock:
            counters = {"rejected": self.rejected_frames, "failed": self.failed_frames, "lost": self.lost_messages,
                        "dropped": self.queue.dropped, "outputs": self.output_stats.count}
            last_problem = self._last_problem
        grown = self._windowed.update(counters, now)
        checks: list[Check] = []
        idle_s = self.input_stats.seconds_since_last(now)
        if min(idle_s, now - self._started_s) >= NO_INPUT_WARNING_S:
            checks.append(Check(STALE, f"no image on {topic} for {min(idle_s, now - self._started_s):.0f} s"))
        elif self.input_stats.count == 0:
            checks.append(Check(OK, f"waiting for images on {topic}"))
        if self.rectifier is None and self._first_image_s is not None:
            level = OK if now - self._first_image_s < NO_INPUT_WARNING_S else WARN
            checks.append(Check(level, f"waiting for camera_info on {info_topic}"))
        if grown["rejected"] or grown["failed"]:
            checks.append(Check(WARN, f"{grown['rejected']} frame(s) rejected and {grown['failed']} failed in the "
                                      f"last {RATE_WINDOW_S:.0f} s; last: {last_problem}"))
        if grown["lost"]:
            checks.append(Check(WARN, f"{grown['lost']} image(s) lost by DDS in the last {RATE_WINDOW_S:.0f} s"))
        if grown["dropped"] and self.params["mode"] == "bag":
            checks.append(Check(WARN, f"bag mode backlog: {grown['dropped']} image(s) dropped in the last "
                                      f"{RATE_WINDOW_S:.0f} s (play the bag slower)"))
        checks += self.stage_checks()
        frequency = self._frequency_check(idle_s, grown["outputs"])
        timestamp = self._timestamp_check()
        return checks + [c for c in (frequency, timestamp) if c.level != OK], frequency, timestamp

    def _frequency_check(self, idle_s: float, outputs_in_window: int) -> Check:
        rate = self.output_stats.rate_hz()
        minimum = float(self.get_parameter("min_output_rate").value)
        inputs_flowing = idle_s < NO_INPUT_WARNING_S and self.rectifier is not None
        if not inputs_flowing:
            return Check(OK, f"output rate {rate:.2f} Hz (no input to process)")
        if self.output_stats.count == 0:
            return Check(OK, "processing the first frame")
        if outputs_in_window == 0:
            return Check(ERROR, f"no output in the last {RATE_WINDOW_S:.0f} s while images arrive")
        if outputs_in_window < 2:
            return Check(OK, "output rate not measured yet (one output in the window)")
        if rate < minimum:
            return Check(WARN, f"output rate {rate:.2f} Hz is below min_output_rate {minimum:g} Hz")
        return Check(OK, f"output rate {rate:.2f} Hz")

    def _timestamp_check(self) -> Check:
        delay = self._last_delay_s
        limit = float(self.get_parameter("max_delay").value)
        if delay > limit:
            return Check(WARN, f"outputs lag their input stamp by {delay:.2f} s (max_delay {limit:g} s)")
        return Check(OK, "no output yet" if np.isnan(delay) else f"delay {delay:.3f} s")

    def _publish_diagnostics(self) -> None:
        checks, frequency, timestamp = self.health_checks()
        summary = worst(checks)
        p50, p99 = self.output_stats.latency_percentiles_ms()
        values = {
            "input_rate_hz": f"{self.input_stats.rate_hz():.2f}",
            "output_rate_hz": f"{self.output_stats.rate_hz():.2f}",
            "latency_ms_p50": f"{p50:.1f}",
            "latency_ms_p99": f"{p99:.1f}",
            "delay_s": f"{self._last_delay_s:.3f}",
            "frames_in": str(self.input_stats.count),
            "frames_out": str(self.output_stats.count),
            "dropped_frames": str(self.queue.dropped),
            "queued_frames": str(len(self.queue)),
            "queued_mb": f"{self.queue.bytes / 1048576:.1f}",
            "rejected_frames": str(self.rejected_frames),
            "failed_frames": str(self.failed_frames),
            "lost_messages": str(self.lost_messages),
            "waiting_for_camera_info_frames": str(self.waiting_for_info_frames),
            "rectified": str(self.rectifier is not None and not self.rectifier.identity).lower(),
            "mode": self.params["mode"],
            **self.diagnostic_values(),
        }
        name = self.get_fully_qualified_name()
        minimum = self.get_parameter("min_output_rate").value
        statuses = [
            _status(name, summary, values),
            _status(f"{name}: frequency", frequency, {
                "Events since startup": str(self.output_stats.count),
                "Actual frequency (Hz)": values["output_rate_hz"],
                "Minimum acceptable frequency (Hz)": f"{minimum:g}",
                "Duration of window (s)": f"{RATE_WINDOW_S:g}",
            }),
            _status(f"{name}: timestamp", timestamp, {
                "Last delay (s)": values["delay_s"],
                "Maximum acceptable delay (s)": f"{self.get_parameter('max_delay').value:g}",
            }),
        ]
        array = DiagnosticArray(status=statuses)
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


def _status(name: str, check: Check, values: dict[str, str]) -> DiagnosticStatus:
    """A DiagnosticStatus of one check (hardware_id geovis_ros)."""
    return DiagnosticStatus(level=bytes([check.level]), name=name, message=check.message, hardware_id="geovis_ros",
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])


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
