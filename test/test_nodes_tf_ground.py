"""The camera's height above ``ground_frame`` from TF, with a real rclpy node.

tf2_ros is not installable here (not in the package registry), so a stand-in module with its API
(``Buffer.lookup_transform(target, source, time, timeout=...)``, ``TransformListener``, the two
broadcasters) is put in ``sys.modules`` for these tests; rclpy and the messages are real.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node

from geovis_ros.nodes.tf import TfLink


def _stand_in_tf2(transforms: dict[tuple[str, str], TransformStamped]) -> types.ModuleType:
    """A ``tf2_ros`` module whose buffer knows ``transforms`` ((target, source) -> transform)."""

    class Buffer:
        def lookup_transform(self, target: str, source: str, time: Any, timeout: Any = None) -> TransformStamped:
            if (target, source) not in transforms:
                raise LookupError(f'"{target}" passed to lookupTransform argument target_frame does not exist')
            return transforms[(target, source)]

    class Broadcaster:
        def __init__(self, node: Node) -> None:
            self.sent: list[TransformStamped] = []

        def sendTransform(self, transform: TransformStamped) -> None:  # noqa: N802 - tf2_ros' name
            self.sent.append(transform)

    module = types.ModuleType("tf2_ros")
    module.Buffer = Buffer  # type: ignore[attr-defined]
    module.TransformListener = lambda buffer, node: None  # type: ignore[attr-defined]
    module.TransformBroadcaster = Broadcaster  # type: ignore[attr-defined]
    module.StaticTransformBroadcaster = Broadcaster  # type: ignore[attr-defined]
    return module


def _transform(parent: str, child: str, translation: tuple[float, float, float]) -> TransformStamped:
    transform = TransformStamped()
    transform.header.frame_id, transform.child_frame_id = parent, child
    transform.transform.translation.x, transform.transform.translation.y, transform.transform.translation.z = (
        translation)
    transform.transform.rotation.w = 1.0
    return transform


@pytest.fixture
def node():
    rclpy.init()
    node = Node("tf_ground_test")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def test_camera_height_is_read_from_tf_above_the_ground_frame(node, monkeypatch) -> None:
    transforms = {("base_footprint", "camera"): _transform("base_footprint", "camera", (1.2, 0.0, 1.65)),
                  ("base_footprint", "sunk"): _transform("base_footprint", "sunk", (0.0, 0.0, -0.2))}
    monkeypatch.setitem(sys.modules, "tf2_ros", _stand_in_tf2(transforms))
    link = TfLink(node, "base_link", np.eye(4), timeout_s=0.1, listen=True)
    assert link.available
    assert link.height_above("base_footprint", "camera") == pytest.approx(1.65)  # z only: REP 103, z up
    assert link.height_above("base_footprint", "sunk") is None  # below the ground: no scale from it
    assert link.height_above("base_footprint", "unknown") is None  # no transform: a warning, no crash


def test_without_tf2_ros_there_is_no_height(node, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tf2_ros", None)  # import fails as where tf2_ros is not installed
    link = TfLink(node, "base_link", np.eye(4), timeout_s=0.1, listen=True)
    assert not link.available
    assert link.height_above("base_footprint", "camera") is None
