"""QoS profiles for geovis topics and a readable check of publisher/subscriber compatibility."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# Outputs: reliable, shallow. rviz2 and recorders subscribe reliable by default.
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# The fused map: latched so a late rviz2 still gets the last map.
LATCHED_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)


def input_qos(name: str, depth: int = 5) -> QoSProfile:
    """QoS of the image/camera_info subscriptions: ``sensor_data`` (best effort) or ``reliable``.

    ``depth`` is the history kept while the callback is busy (bag replay needs more than live).
    """
    if name == "sensor_data":
        return QoSProfile(
            depth=depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
            history=HistoryPolicy.KEEP_LAST,
        )
    if name == "reliable":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    raise ValueError(f"input_qos must be 'sensor_data' or 'reliable', got '{name}'")


def incompatibility(publisher: QoSProfile, subscription: QoSProfile) -> str | None:
    """Why a publisher with QoS ``publisher`` cannot reach a ``subscription``; None when it can."""
    if (
        publisher.reliability == ReliabilityPolicy.BEST_EFFORT
        and subscription.reliability == ReliabilityPolicy.RELIABLE
    ):
        return "publisher is BEST_EFFORT but the subscription is RELIABLE (set input_qos: sensor_data)"
    if (
        publisher.durability == DurabilityPolicy.VOLATILE
        and subscription.durability == DurabilityPolicy.TRANSIENT_LOCAL
    ):
        return "publisher is VOLATILE but the subscription is TRANSIENT_LOCAL"
    return None
