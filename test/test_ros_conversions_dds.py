"""Conversions on messages that crossed DDS: publish and receive through a real rclpy node.

After deserialisation ``msg.data`` is an ``array.array('B')`` owned by rclpy; to-numpy must
still be a zero-copy view of it. DDS stays on localhost in a private domain (conftest.py).
"""

import array
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

from geovis_ros.ros.image import image_from_numpy, numpy_from_image
from geovis_ros.ros.pointcloud import numpy_from_pointcloud, pointcloud_from_numpy
from geovis_ros.ros.stamps import ns_from_time, time_from_ns

DISCOVERY_TIMEOUT_S = 15.0


@pytest.fixture
def node():
    context = rclpy.Context()
    rclpy.init(context=context)
    test_node = rclpy.create_node("geovis_test_ros_conversions", context=context)
    try:
        yield test_node
    finally:
        test_node.destroy_node()
        rclpy.shutdown(context=context)


def publish_until_received(node, message_type, topic: str, message):
    """Publish ``message`` (again, while discovery completes) until the node's subscription gets it."""
    received = []
    node.create_subscription(message_type, topic, received.append, 10)
    publisher = node.create_publisher(message_type, topic, 10)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while not received and time.monotonic() < deadline:
        publisher.publish(message)
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(node)
    assert received, f"nothing arrived on {topic} within {DISCOVERY_TIMEOUT_S} s"
    return received[0]


def test_image_and_cloud_round_trip_over_dds(node):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (21, 33, 3), dtype=np.uint8)  # odd width: 99-byte rows
    header = Header(stamp=time_from_ns(1_234_567_890_123), frame_id="camera")
    image = publish_until_received(node, Image, "geovis_test/image", image_from_numpy(pixels, "rgb8", header))

    assert isinstance(image.data, array.array)
    assert (image.header.frame_id, ns_from_time(image.header.stamp)) == ("camera", 1_234_567_890_123)
    view = numpy_from_image(image)
    assert np.shares_memory(view, np.frombuffer(image.data, dtype=np.uint8))
    np.testing.assert_array_equal(view, pixels)

    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    colours = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    cloud = publish_until_received(
        node, PointCloud2, "geovis_test/cloud", pointcloud_from_numpy(xyz, colours)
    )
    xyz_back, colours_back = numpy_from_pointcloud(cloud)
    np.testing.assert_array_equal(xyz_back, xyz)
    np.testing.assert_array_equal(colours_back, colours)
