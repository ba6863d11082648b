"""One codec, two message kinds: rclpy and rosbags messages of the same values serialise to the same CDR."""

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore

from geovis_ros.frame import DepthResult, FlowResult, Frame, OdometryResult, PipelineResult, PointCloud, TrackingState
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import se3_exp
from geovis_ros.ros.camera_info import CameraCalibration, calibration_from_camera_info
from geovis_ros.ros.compressed import compressed_from_numpy, numpy_from_compressed
from geovis_ros.ros.messages import HEADER, IMAGE, RCLPY, RosbagsMessageFactory
from geovis_ros.ros.poses import matrices_from_path, path_from_matrices
from geovis_ros.ros.results import OUTPUT_GROUPS, OUTPUT_TYPES, frame_messages, map_messages, output_topics
from geovis_ros.ros.stamps import header_from_ns

W, H = 16, 12
K = Intrinsics(20.0, 21.0, 7.5, 5.5, W, H)
STAMP_NS = 1_700_000_000_123_456_789
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
ROSBAGS = RosbagsMessageFactory(TYPESTORE)
ALL_SWITCHES = {"publish_depth": True, "publish_colored": True, "publish_points": True, "publish_flow": True}


def make_result() -> PipelineResult:
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.5, 5.0, (H, W)).astype(np.float32)
    depth[0, 0] = np.nan
    return PipelineResult(
        frame=Frame(STAMP_NS, rng.integers(0, 256, (H, W, 3), dtype=np.uint8), K, "camera"),
        depth=DepthResult(depth, np.full((H, W), 0.1, np.float32), K),
        flow=FlowResult(rng.normal(size=(H, W, 2)).astype(np.float32), STAMP_NS - 10),
        odometry=OdometryResult(se3_exp(rng.normal(0, 0.3, 6)), np.diag(np.arange(1.0, 7.0)),
                                rng.normal(size=6), TrackingState.TRACKING, True, 0.9, 0),
        points=PointCloud(rng.normal(size=(30, 3)).astype(np.float32),
                          rng.integers(0, 256, (30, 3), dtype=np.uint8), "camera"),
    )


def assert_same_bytes(rclpy_msg, rosbags_msg):
    """Same CDR bytes: rclpy's are read back by rosbags first, so that alignment padding is zeroed alike."""
    msgtype = rosbags_msg.__msgtype__
    from_rclpy = TYPESTORE.deserialize_cdr(serialize_message(rclpy_msg), msgtype)
    assert bytes(TYPESTORE.serialize_cdr(from_rclpy, msgtype)) == bytes(TYPESTORE.serialize_cdr(rosbags_msg, msgtype))


def both(build):
    return build(RCLPY), build(ROSBAGS)


def test_every_per_frame_output_is_the_same_message_in_both_kinds():
    result = make_result()
    wanted = [*output_topics(OUTPUT_GROUPS, ALL_SWITCHES), "tf"]
    calibration = CameraCalibration(K, "plumb_bob", (0.1, 0.0, 0.0, 0.0, 0.0))
    rclpy_msgs, rosbags_msgs = both(lambda factory: frame_messages(
        result, header_from_ns(STAMP_NS, "camera", factory), "odom", wanted, calibration, factory))
    assert list(rclpy_msgs) == list(rosbags_msgs) == [
        "depth/image", "depth/uncertainty", "depth/camera_info", "depth/colored", "points", "flow/image",
        "flow/colored", "odom", "tf"]
    for name, msg in rosbags_msgs.items():
        assert msg.__msgtype__ == OUTPUT_TYPES[name]
        assert_same_bytes(rclpy_msgs[name], msg)
    odom = rosbags_msgs["odom"]
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "camera")
    assert calibration_from_camera_info(rosbags_msgs["depth/camera_info"]) == calibration
    in_base = frame_messages(result, header_from_ns(STAMP_NS, "camera", ROSBAGS), "odom", ["odom", "tf"],
                             factory=ROSBAGS, child_frame_id="base_link")
    assert in_base["odom"].child_frame_id == in_base["tf"].child_frame_id == "base_link"  # REP 105


def test_only_wanted_outputs_are_built():
    result = make_result()
    header = header_from_ns(STAMP_NS, "camera", ROSBAGS)
    assert list(frame_messages(result, header, "odom", {"flow/image", "odom"}, factory=ROSBAGS)) == [
        "flow/image", "odom"]
    result.depth = result.flow = None
    assert list(frame_messages(result, header, "odom", ["depth/image", "flow/image", "points"],
                               factory=ROSBAGS)) == ["points"]


def test_map_path_and_compressed_are_the_same_message_in_both_kinds():
    result = make_result()
    poses = {0: np.eye(4), 5: se3_exp([0.1, 0.0, 0.3, 0.0, 0.1, 0.0])}
    rclpy_map, rosbags_map = both(lambda factory: map_messages(
        result.points, poses, K, header_from_ns(STAMP_NS, "odom", factory), factory))
    assert len(rosbags_map["keyframes"].markers[0].points) == 32
    for name in ("map", "keyframes"):
        assert_same_bytes(rclpy_map[name], rosbags_map[name])
    trajectory = np.stack(list(poses.values()))
    rclpy_path, rosbags_path = both(lambda factory: path_from_matrices(
        trajectory, [STAMP_NS, STAMP_NS + 1], header_from_ns(0, "odom", factory), factory))
    assert_same_bytes(rclpy_path, rosbags_path)
    np.testing.assert_allclose(matrices_from_path(rosbags_path), trajectory, atol=1e-12)
    rclpy_png, rosbags_png = both(lambda factory: compressed_from_numpy(
        result.frame.image, "rgb8", "png", header_from_ns(STAMP_NS, "camera", factory), factory=factory))
    assert_same_bytes(rclpy_png, rosbags_png)
    np.testing.assert_array_equal(numpy_from_compressed(rosbags_png)[0], result.frame.image)


def test_rosbags_factory_fills_defaults_and_refuses_unknown_fields():
    image = ROSBAGS.new(IMAGE)
    assert (image.height, image.encoding, image.header.frame_id, image.data.dtype) == (0, "", "", np.uint8)
    assert_same_bytes(RCLPY.new(IMAGE), image)
    with pytest.raises(TypeError, match="no field"):
        ROSBAGS.new(HEADER, frame="camera")
