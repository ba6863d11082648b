"""depth_node, flow_node, odometry_node, mapping_node and pipeline_node in-process with real rclpy over DDS.

Each node lives in its own namespace; a peer node feeds it images and camera_info and records
its outputs. Networks run on the torch backend (no ONNX export) at 64x48 / 96x72.
"""

import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.nodes.depth_node import DepthNode
from geovis_ros.nodes.flow_node import FlowNode
from geovis_ros.nodes.health import ERROR, WARN, worst
from geovis_ros.nodes.mapping_node import MappingNode
from geovis_ros.nodes.odometry_node import OdometryNode
from geovis_ros.nodes.pipeline_node import PipelineNode
from geovis_ros.ros.camera_info import CameraCalibration, camera_info_from_calibration
from geovis_ros.ros.compressed import compressed_from_numpy
from geovis_ros.ros.image import depth_from_image, image_from_numpy, numpy_from_image
from geovis_ros.ros.pointcloud import numpy_from_pointcloud
from geovis_ros.ros.poses import matrix_from_odometry
from geovis_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS
from geovis_ros.ros.results import keyframe_markers
from geovis_ros.ros.stamps import ns_from_time, time_from_ns
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

W, H = 64, 48
K = Intrinsics(50.0, 50.0, 31.5, 23.5, W, H)
FAST = {"input_qos": "reliable", "backend": "torch", "device": "cpu", "mode": "bag"}
OUTPUT_TYPES = {
    "depth/image": Image, "depth/uncertainty": Image, "depth/colored": Image, "depth/camera_info": CameraInfo,
    "points": PointCloud2, "flow/image": Image, "flow/colored": Image, "odom": Odometry, "path": Path,
}
LATCHED_TYPES = {"map": PointCloud2, "keyframes": MarkerArray}


class Probe:
    """Publishes into one node's namespace and records its outputs."""

    def __init__(self, harness, node, namespace):
        self.harness, self.node, self.ns = harness, node, namespace
        peer = harness.peer
        self.received = {topic: [] for topic in (*OUTPUT_TYPES, *LATCHED_TYPES)}
        for topic, kind in OUTPUT_TYPES.items():
            self._subscribe(kind, topic, OUTPUT_QOS)
        for topic, kind in LATCHED_TYPES.items():
            self._subscribe(kind, topic, LATCHED_QOS)
        self.image_pub = peer.create_publisher(Image, f"{namespace}/image", 10)
        self.compressed_pub = peer.create_publisher(CompressedImage, f"{namespace}/image/compressed", 10)
        self.info_pub = peer.create_publisher(CameraInfo, f"{namespace}/camera_info", 10)
        harness.spin_until(lambda: self.node.count_publishers(f"{namespace}/image") > 0
                           or self.node.count_publishers(f"{namespace}/image/compressed") > 0, 3.0)

    def _subscribe(self, kind, topic, qos):
        self.harness.peer.create_subscription(kind, f"{self.ns}/{topic}", self.received[topic].append, qos)

    def unsubscribe(self, topic):
        """Drop the probe's subscription to ``topic``; returns its full name once the node sees no subscriber."""
        name = f"{self.ns}/{topic}"
        peer = self.harness.peer
        for subscription in [s for s in peer.subscriptions if s.topic_name == name]:
            peer.destroy_subscription(subscription)
        assert self.harness.spin_until(lambda: self.node.count_subscribers(name) == 0, 5.0)
        return name

    def send_info(self, intrinsics=K):
        self.info_pub.publish(camera_info_from_calibration(CameraCalibration(intrinsics)))
        assert self.harness.spin_until(lambda: self.node.calibration is not None
                                       and self.node.calibration.intrinsics == intrinsics, 5.0)

    def send_image(self, stamp_ns, pixels, encoding="rgb8", frame_id="cam"):
        msg = image_from_numpy(pixels, encoding)
        msg.header.stamp = time_from_ns(stamp_ns)
        msg.header.frame_id = frame_id
        self.image_pub.publish(msg)

    def wait(self, topic, count, timeout=30.0):
        return self.harness.spin_until(lambda: len(self.received[topic]) >= count, timeout)


class Harness:
    def __init__(self):
        self.executor = SingleThreadedExecutor()
        self.peer = rclpy.create_node("geovis_stage_test_peer")
        self.executor.add_node(self.peer)
        self.nodes = []

    def spin_until(self, condition, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not condition():
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def start(self, node_class, namespace, **params):
        overrides = [Parameter(name, value=value) for name, value in {**FAST, **params}.items()]
        node = node_class(namespace=namespace, parameter_overrides=overrides)
        self.nodes.append(node)
        self.executor.add_node(node)
        return Probe(self, node, namespace)

    def close(self):
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    harness = Harness()
    yield harness
    harness.close()
    rclpy.shutdown()


def texture(seed=0, shape=(H, W)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def depth_probe(ros):
    probe = ros.start(DepthNode, "/depth_test", input_width=64)
    probe.send_info()
    return probe


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "mono16"])
def test_depth_node_contract(depth_probe, encoding):
    probe = depth_probe
    before = len(probe.received["depth/image"])
    pixels = texture(3)
    if encoding == "mono8":
        pixels = pixels[..., 0]
    elif encoding == "mono16":
        pixels = pixels[..., 0].astype(np.uint16) * 257
    stamp = 1_000_000_000 * (10 + ["rgb8", "bgr8", "mono8", "mono16"].index(encoding)) + 7
    probe.send_image(stamp, pixels, encoding, frame_id="cam_optical")
    for topic in ("depth/image", "depth/uncertainty", "depth/colored", "depth/camera_info", "points"):
        assert probe.wait(topic, before + 1), topic
    depth_msg = probe.received["depth/image"][-1]
    assert depth_msg.encoding == "32FC1" and (depth_msg.width, depth_msg.height) == (W, H)
    assert ns_from_time(depth_msg.header.stamp) == stamp and depth_msg.header.frame_id == "cam_optical"
    depth = depth_from_image(depth_msg)
    assert np.isfinite(depth).mean() > 0.5 and np.nanmin(depth) > 0
    std = numpy_from_image(probe.received["depth/uncertainty"][-1])
    assert std.shape == (H, W) and std.dtype == np.float32 and np.nanmin(std) >= 0
    colored = probe.received["depth/colored"][-1]
    assert colored.encoding == "rgb8" and numpy_from_image(colored).shape == (H, W, 3)
    info = probe.received["depth/camera_info"][-1]
    assert (info.width, info.height) == (W, H) and ns_from_time(info.header.stamp) == stamp
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), K.matrix)
    cloud = probe.received["points"][-1]
    assert cloud.header.frame_id == "cam_optical" and ns_from_time(cloud.header.stamp) == stamp
    xyz, rgb = numpy_from_pointcloud(cloud)
    assert rgb is not None and xyz.shape == rgb.shape and np.isfinite(xyz).all()


def test_depth_node_bad_input_is_dropped_and_node_recovers(depth_probe):
    probe, node = depth_probe, depth_probe.node
    rejected, count = node.rejected_frames, len(probe.received["depth/image"])
    probe.send_image(20_000_000_000, np.zeros((H, W), np.float32), "32FC1")  # not a colour encoding
    probe.send_image(20_100_000_000, texture(1, (H * 2, W * 2)))  # size differs from camera_info
    bad_info = camera_info_from_calibration(CameraCalibration(K))
    bad_info.k = [0.0] * 9  # uncalibrated: refused, the previous calibration stays
    probe.info_pub.publish(bad_info)
    assert probe.harness.spin_until(lambda: node.rejected_frames == rejected + 2, 5.0)
    probe.send_image(20_200_000_000, np.zeros((H, W, 3), np.uint8))  # black frame: processed, no crash
    assert probe.wait("depth/image", count + 1)
    probe.send_image(20_150_000_000, texture(2))  # older than the previous frame
    assert probe.harness.spin_until(lambda: node.rejected_frames == rejected + 3, 5.0)
    probe.send_image(20_300_000_000, texture(2))
    assert probe.wait("depth/image", count + 2)
    assert node.calibration.intrinsics == K and node.failed_frames == 0 and rclpy.ok()


def test_depth_node_follows_a_size_change_with_new_camera_info(depth_probe):
    probe = depth_probe
    count = len(probe.received["depth/image"])
    bigger = K.resized(96, 72)
    probe.send_info(bigger)
    probe.send_image(30_000_000_000, texture(4, (72, 96)))
    assert probe.wait("depth/camera_info", count + 1) and probe.wait("depth/image", count + 1)
    assert (probe.received["depth/image"][-1].width, probe.received["depth/image"][-1].height) == (96, 72)
    info = probe.received["depth/camera_info"][-1]
    assert (info.width, info.height) == (96, 72)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), bigger.matrix)
    probe.send_info(K)  # back to the size the other tests use


def test_per_frame_cloud_is_computed_only_while_points_has_a_subscriber(ros):
    probe = ros.start(DepthNode, "/depth_unheard_test", input_width=64)
    probe.send_info()
    topic = probe.unsubscribe("points")
    probe.send_image(1_000, texture(6))
    assert probe.wait("depth/image", 1)
    assert "points" not in probe.node.pipeline.describe()  # the last frame's cloud was never computed
    probe._subscribe(PointCloud2, "points", OUTPUT_QOS)
    assert ros.spin_until(lambda: probe.node.count_subscribers(topic) == 1, 5.0)
    probe.send_image(2_000, texture(7))
    assert probe.wait("points", 1)
    xyz, _ = numpy_from_pointcloud(probe.received["points"][0])
    assert int(probe.node.pipeline.describe()["points"]) == xyz.shape[0]


def test_coloured_depth_is_built_only_while_someone_subscribes(ros, monkeypatch):
    import geovis_ros.ros.results as results

    coloured = []
    original = results.colored_depth
    monkeypatch.setattr(results, "colored_depth", lambda depth: coloured.append(1) or original(depth))
    probe = ros.start(DepthNode, "/depth_colour_unheard_test", input_width=64)
    probe.send_info()
    topic = probe.unsubscribe("depth/colored")
    probe.send_image(1_000, texture(6))
    assert probe.wait("depth/image", 1)
    assert coloured == []  # nobody listens: not coloured at all
    probe._subscribe(Image, "depth/colored", OUTPUT_QOS)
    assert ros.spin_until(lambda: probe.node.count_subscribers(topic) == 1, 5.0)
    probe.send_image(2_000, texture(7))
    assert probe.wait("depth/colored", 1) and len(coloured) == 1


def test_depth_node_reads_compressed_images_and_switches_outputs_at_run_time(ros):
    probe = ros.start(DepthNode, "/depth_compressed_test", input_width=64, use_compressed=True,
                      publish_colored=False, publish_points=False)
    probe.send_info()

    def send(stamp_ns):
        msg = compressed_from_numpy(texture(5), "rgb8", "jpeg")
        msg.header.stamp = time_from_ns(stamp_ns)
        msg.header.frame_id = "cam"
        probe.compressed_pub.publish(msg)

    send(5_000)
    assert probe.wait("depth/image", 1)
    assert probe.received["depth/image"][0].encoding == "32FC1" and probe.received["depth/image"][0].width == W
    assert probe.received["points"] == [] and probe.received["depth/colored"] == []
    # publish switches are runtime parameters: switched on, the outputs come with the next frame
    results = probe.node.set_parameters([Parameter("publish_colored", value=True),
                                         Parameter("publish_points", value=True)])
    assert all(r.successful for r in results)
    send(6_000)
    assert probe.wait("depth/colored", 1) and probe.wait("points", 1)
    assert ns_from_time(probe.received["depth/colored"][0].header.stamp) == 6_000
    # the stages' configuration stays read-only
    refused = probe.node.set_parameters([Parameter("input_width", value=96)])[0]
    assert not refused.successful and "read-only" in refused.reason


def test_compressed_image_over_the_pixel_budget_is_refused_before_decoding(ros):
    probe = ros.start(DepthNode, "/depth_budget_test", input_width=64, use_compressed=True)
    node = probe.node
    probe.send_info()  # 64x48: budget 4 x 3072 pixels
    big = compressed_from_numpy(texture(6, (128, 128)), "rgb8", "png")  # 16384 pixels: over it
    big.header.stamp = time_from_ns(7_000)
    probe.compressed_pub.publish(big)
    assert ros.spin_until(lambda: node.rejected_frames == 1, 5.0)
    warning = next(c for c in node.health_checks()[0] if "rejected" in c.message)  # what /diagnostics says
    assert "over the budget" in warning.message and "refused before decoding" in warning.message
    assert probe.received["depth/image"] == []


def test_depth_node_rectifies_distorted_input_and_publishes_the_rectified_camera_info(ros):
    probe = ros.start(DepthNode, "/depth_rectify_test", input_width=64)
    node = probe.node
    info = camera_info_from_calibration(CameraCalibration(K, "plumb_bob", (-0.25, 0.05, 0.0, 0.0, 0.0)))
    info.p = [45.0, 0.0, 31.0, 0.0, 0.0, 46.0, 23.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # the driver's rectified projection
    probe.info_pub.publish(info)
    assert ros.spin_until(lambda: node.rectifier is not None and not node.rectifier.identity, 5.0)
    tables = node.rectifier
    probe.info_pub.publish(info)  # the same calibration again: the remap tables are not rebuilt
    probe.send_image(1_000, texture(8), frame_id="cam")
    assert probe.wait("depth/camera_info", 1) and probe.wait("depth/image", 1)
    assert node.rectifier is tables
    rectified = probe.received["depth/camera_info"][0]
    np.testing.assert_allclose(np.reshape(rectified.k, (3, 3)), [[45.0, 0, 31.0], [0, 46.0, 23.0], [0, 0, 1]])
    assert rectified.distortion_model == "plumb_bob" and not any(rectified.d)
    assert node.failed_frames == 0 and node.rejected_frames == 0


def test_flow_node_contract_and_image_before_camera_info(ros):
    probe = ros.start(FlowNode, "/flow_test", input_width=64)
    node = probe.node
    assert not node.has_parameter("map_rate") and node.has_parameter("publish_flow")
    first = texture(7)
    probe.send_image(1_000, first)  # before any camera_info: held in bag mode, not dropped
    assert ros.spin_until(lambda: node.input_stats.count == 1, 5.0)
    assert node.rejected_frames == 0 and probe.received["flow/image"] == []
    probe.send_info()
    probe.send_image(2_000, np.roll(first, 2, axis=1))
    assert probe.wait("flow/image", 1) and probe.wait("flow/colored", 1)
    flow_msg = probe.received["flow/image"][0]
    assert flow_msg.encoding == "32FC2" and ns_from_time(flow_msg.header.stamp) == 2_000
    assert numpy_from_image(flow_msg).shape == (H, W, 2)
    assert numpy_from_image(probe.received["flow/colored"][0]).shape == (H, W, 3)
    assert len(probe.received["flow/image"]) == 1  # the first frame of a stream has no flow
    assert probe.received["depth/image"] == []


@pytest.fixture(scope="module")
def room():
    return list(render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=30, width=96, height=72,
                                            seed=5), with_flow=False))


def play(probe, frames, topic, offset_ns=0):
    start = len(probe.received[topic])
    for frame in frames:
        probe.send_image(frame.stamp_ns + offset_ns, frame.rgb, frame_id="camera")
    assert probe.wait(topic, start + len(frames), timeout=60.0), (topic, len(probe.received[topic]) - start)


def test_odometry_node_publishes_odom_and_path_and_resets_on_clock_jump(ros, room):
    probe = ros.start(OdometryNode, "/odometry_test", input_width=96)
    node = probe.node
    assert node.pipeline.config.stages == ("depth", "odometry")
    assert node.set_parameters([Parameter("publish_tf", value=False)])[0].successful  # changeable at run time
    probe.send_info(room[0].intrinsics)
    play(probe, room[:6], "odom", offset_ns=10_000_000_000)
    odom = probe.received["odom"]
    assert [ns_from_time(m.header.stamp) for m in odom] == [f.stamp_ns + 10_000_000_000 for f in room[:6]]
    assert {(m.header.frame_id, m.child_frame_id) for m in odom} == {("odom", "base_link")}  # REP 105
    pose, covariance = matrix_from_odometry(odom[-1])
    assert np.isfinite(pose).all() and np.all(np.linalg.eigvalsh(covariance) >= -1e-12)
    np.testing.assert_allclose(matrix_from_odometry(odom[0])[0], np.eye(4), atol=1e-9)
    assert probe.wait("path", 6) and len(probe.received["path"][-1].poses) == 6
    play(probe, room[:2], "odom")  # 10 s back in time (bag loop): a new odometry frame starts
    np.testing.assert_allclose(matrix_from_odometry(probe.received["odom"][6])[0], np.eye(4), atol=1e-9)
    assert probe.wait("path", 8) and len(probe.received["path"][-1].poses) == 2
    assert node.diagnostic_values()["tracking_state"] in {"tracking", "initializing", "lost", "relocalized"}


def test_tracking_lost_is_a_warning_then_an_error_in_diagnostics(ros, room):
    probe = ros.start(OdometryNode, "/odometry_lost_test", input_width=96, lost_frames_error=2)
    node = probe.node
    probe.send_info(room[0].intrinsics)
    play(probe, room[:3], "odom")
    assert not any("tracking lost" in c.message for c in node.stage_checks())
    noise = np.random.default_rng(0)
    levels = []
    for index in range(2):  # frames the tracker cannot follow
        probe.send_image(room[2].stamp_ns + (index + 1) * 100_000_000, noise.integers(0, 256, (72, 96, 3), np.uint8),
                         frame_id="camera")
        assert probe.wait("odom", 4 + index)
        levels.append([c.level for c in node.stage_checks() if "tracking lost" in c.message])
    assert levels == [[WARN], [ERROR]], (levels, node.diagnostic_values().get("tracking_state"))
    assert worst(node.health_checks()[0]).level == ERROR


def test_mapping_node_publishes_a_latched_map_and_keyframes(ros, room):
    # sim time with no /clock at all: the map timer runs on the steady clock, so the map still comes out
    probe = ros.start(MappingNode, "/mapping_test", input_width=96, map_rate=20.0, use_sim_time=True)
    node = probe.node
    probe.send_info(room[0].intrinsics)
    for frame in room:
        probe.send_image(frame.stamp_ns, frame.rgb, frame_id="camera")
    assert ros.spin_until(lambda: node.output_stats.count == len(room), 90.0)
    if node.pipeline.map_version == 0:
        pytest.fail(f"no keyframe was finalized in {len(room)} frames: {node.pipeline.describe()}")
    assert probe.wait("map", 1, 5.0) and probe.wait("keyframes", 1, 5.0)
    late = []  # a subscriber that joins afterwards still gets the map (transient local)
    ros.peer.create_subscription(PointCloud2, "/mapping_test/map", late.append, LATCHED_QOS)
    assert ros.spin_until(lambda: late, 5.0)
    assert late[-1].header.frame_id == "map"
    xyz, rgb = numpy_from_pointcloud(late[-1])
    assert len(xyz) > 0 and rgb is not None
    markers = probe.received["keyframes"][-1].markers
    assert len(markers[0].points) == 16 * len(node.pipeline.keyframe_poses())
    assert probe.received["odom"] == [] and probe.received["depth/image"] == []


def test_pipeline_node_declares_every_parameter_and_prunes_unpublished_flow(ros):
    probe = ros.start(PipelineNode, "/pipeline_params_test", publish_flow=False, points_stride=3,
                      odometry_method="features", map_voxel_size=0.2)
    node = probe.node
    config = node.pipeline.config
    assert config.stages == ("depth", "odometry", "mapping")
    assert config.cloud.stride == 3 and config.odometry_config.method == "features"
    assert config.mapping_config.map.map.voxel_size_m == 0.2
    assert node.count_publishers("/pipeline_params_test/flow/image") == 0
    assert node.count_publishers("/pipeline_params_test/odom") == 1
    assert node.has_parameter("map_rate") and node.has_parameter("points_stride")


def test_invalid_parameters_are_refused_naming_the_parameter(ros):
    with pytest.raises(InvalidParameterValueException, match="points_stride"):
        ros.start(DepthNode, "/bad_stride", points_stride=0)
    with pytest.raises(FileNotFoundError, match="model_depth: no such file"):
        ros.start(DepthNode, "/bad_model", model_depth="/nonexistent/depth.onnx")
    with pytest.raises(ValueError, match="odometry_method must be one of direct, features"):
        ros.start(OdometryNode, "/bad_method", odometry_method="magic")
    with pytest.raises(ValueError, match="camera_extrinsic quaternion .* must not be zero"):
        ros.start(OdometryNode, "/bad_extrinsic", camera_extrinsic=[0.0] * 7)
    probe = ros.start(MappingNode, "/bad_rate_test")
    result = probe.node.set_parameters([Parameter("map_rate", value=100.0)])[0]
    assert not result.successful and "map_rate" in result.reason


def test_diagnostics_carry_backend_and_stage_timings(ros, depth_probe):
    statuses = []
    ros.peer.create_subscription(DiagnosticArray, "/diagnostics", statuses.append, 10)
    assert ros.spin_until(lambda: any(s.name.endswith("depth_test/depth_node") for d in statuses
                                      for s in d.status), 5.0)
    status = [s for d in statuses for s in d.status if s.name.endswith("depth_test/depth_node")][-1]
    values = {kv.key: kv.value for kv in status.values}
    assert values["depth_backend"] == "torch" and float(values["depth_ms"]) > 0
    assert values["stages"] == "depth" and "latency_ms_p99" in values


def test_keyframe_markers_draw_one_frustum_per_keyframe():
    markers = keyframe_markers({0: np.eye(4), 3: np.eye(4)}, K, Odometry().header)
    assert len(markers.markers) == 1 and len(markers.markers[0].points) == 32
    assert markers.markers[0].ns == "keyframes"
