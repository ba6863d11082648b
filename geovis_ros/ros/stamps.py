"""``builtin_interfaces/Time`` and ``std_msgs/Header`` <-> integer nanoseconds (the core's stamps)."""

from __future__ import annotations

from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.messages import HEADER, RCLPY, TIME, Message, MessageFactory

_NS_PER_S = 1_000_000_000
_MAX_SECONDS = 2**31 - 1  # Time.sec is int32


def time_from_ns(stamp_ns: int, factory: MessageFactory = RCLPY) -> Message:
    """A Time message of ``stamp_ns`` nanoseconds since the epoch (0 <= stamp_ns < 2**31 s)."""
    stamp_ns = int(stamp_ns)
    seconds, nanoseconds = divmod(stamp_ns, _NS_PER_S)
    if not 0 <= seconds <= _MAX_SECONDS:
        raise ConversionError(f"stamp {stamp_ns} ns is outside Time.sec's range [0, {_MAX_SECONDS}] s")
    return factory.new(TIME, sec=seconds, nanosec=nanoseconds)


def ns_from_time(stamp: Message) -> int:
    """Nanoseconds since the epoch of a Time message."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def header_from_ns(stamp_ns: int, frame_id: str, factory: MessageFactory = RCLPY) -> Message:
    """A Header stamped ``stamp_ns`` nanoseconds since the epoch, in frame ``frame_id``."""
    return factory.new(HEADER, stamp=time_from_ns(stamp_ns, factory), frame_id=frame_id)
