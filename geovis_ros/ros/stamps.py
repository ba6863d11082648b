"""``builtin_interfaces/Time`` <-> integer nanoseconds (the stamp type of the ROS-free core)."""

from __future__ import annotations

from builtin_interfaces.msg import Time

from geovis_ros.ros.errors import ConversionError

_NS_PER_S = 1_000_000_000
_MAX_SECONDS = 2**31 - 1  # Time.sec is int32


def time_from_ns(stamp_ns: int) -> Time:
    """A Time message of ``stamp_ns`` nanoseconds since the epoch (0 <= stamp_ns < 2**31 s)."""
    stamp_ns = int(stamp_ns)
    seconds, nanoseconds = divmod(stamp_ns, _NS_PER_S)
    if not 0 <= seconds <= _MAX_SECONDS:
        raise ConversionError(f"stamp {stamp_ns} ns is outside Time.sec's range [0, {_MAX_SECONDS}] s")
    return Time(sec=seconds, nanosec=nanoseconds)


def ns_from_time(stamp: Time) -> int:
    """Nanoseconds since the epoch of a Time message."""
    return stamp.sec * _NS_PER_S + stamp.nanosec
