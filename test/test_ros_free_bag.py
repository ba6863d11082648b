"""The bag reader/writer and process-bag's message mapping run without ROS: rclpy and message packages blocked.

A child Python process installs a meta-path finder that refuses every ROS module before it imports
geovis_ros, then writes a bag (``write_bag``), reads it back (``BagSequence``), maps a pipeline
result to messages (``frame_messages`` / ``map_messages`` through the rosbags factory), writes
them with process-bag's ``BagOutput`` and decodes them with the ``ros/`` codecs.
"""

import subprocess
import sys
import textwrap

from test_package_layering import ROS_MODULES

CHILD = textwrap.dedent("""
    import importlib.abc
    import sys
    from pathlib import Path

    BLOCKED = set(sys.argv[2].split(","))


    class BlockRos(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is blocked: this path must run without ROS", name=name)
            return None


    sys.meta_path.insert(0, BlockRos())

    import numpy as np
    from rosbags.highlevel import AnyReader

    from geovis_ros.apps.process_bag import BagOutput
    from geovis_ros.data.bag import BagSequence, jazzy_typestore, open_bag_writer, write_bag
    from geovis_ros.data.sequence import SequenceFrame
    from geovis_ros.frame import DepthResult, FlowResult, Frame, OdometryResult, PipelineResult, PointCloud
    from geovis_ros.frame import TrackingState
    from geovis_ros.geometry.camera import Intrinsics
    from geovis_ros.geometry.se3 import se3_exp
    from geovis_ros.ros.image import depth_from_image, numpy_from_image
    from geovis_ros.ros.pointcloud import numpy_from_pointcloud
    from geovis_ros.ros.poses import matrices_from_path, matrix_from_odometry, matrix_from_transform

    folder = Path(sys.argv[1])
    K = Intrinsics(20.0, 21.0, 7.5, 5.5, 16, 12)
    rng = np.random.default_rng(1)
    frames = [SequenceFrame(name=f"{i:06d}", stamp_ns=10**9 + i * 10**8,
                            rgb=rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), intrinsics=K,
                            depth=rng.uniform(1, 3, (12, 16)).astype(np.float32), pose=se3_exp(rng.normal(0, 0.2, 6)))
              for i in range(2)]
    read = list(BagSequence(write_bag(folder / "in", frames, with_depth=True)))
    assert [f.stamp_ns for f in read] == [f.stamp_ns for f in frames]
    for got, written in zip(read, frames):
        np.testing.assert_array_equal(got.rgb, written.rgb)
        np.testing.assert_array_equal(got.depth, written.depth)
        np.testing.assert_allclose(got.pose, written.pose, atol=1e-12)

    depth = frames[0].depth
    cloud = PointCloud(rng.normal(size=(5, 3)).astype(np.float32), rng.integers(0, 256, (5, 3), dtype=np.uint8),
                       "camera")
    result = PipelineResult(
        frame=Frame(frames[0].stamp_ns, frames[0].rgb, K, "camera"),
        depth=DepthResult(depth, depth * 0.1, K),
        flow=FlowResult(np.zeros((12, 16, 2), np.float32), 0),
        odometry=OdometryResult(frames[0].pose, np.eye(6), np.zeros(6), TrackingState.TRACKING, True, 1.0, 0),
        points=cloud,
    )
    switches = {"publish_depth": True, "publish_colored": True, "publish_points": True, "publish_flow": True,
                "publish_tf": True}
    with open_bag_writer(folder / "out", "mcap") as bag:
        output = BagOutput(bag, "/geovis", "odom", switches)
        output.write_result(result)
        output.write_map(result.frame.stamp_ns, cloud, {0: np.eye(4)}, K)
        output.write_path([result.frame.stamp_ns], [frames[0].pose])
    with AnyReader([folder / "out"], default_typestore=jazzy_typestore()) as reader:
        messages = {c.topic: reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()}
    assert sorted(messages) == sorted(["/geovis/" + t for t in (
        "depth/image", "depth/uncertainty", "depth/camera_info", "depth/colored", "points", "flow/image",
        "flow/colored",
        "odom", "map", "keyframes", "path")] + ["/tf"]), sorted(messages)
    np.testing.assert_array_equal(depth_from_image(messages["/geovis/depth/image"]), depth)
    assert numpy_from_image(messages["/geovis/flow/image"]).shape == (12, 16, 2)
    np.testing.assert_array_equal(numpy_from_pointcloud(messages["/geovis/points"])[0], cloud.xyz)
    np.testing.assert_allclose(matrix_from_odometry(messages["/geovis/odom"])[0], frames[0].pose, atol=1e-12)
    np.testing.assert_allclose(matrix_from_transform(messages["/tf"].transforms[0]), frames[0].pose, atol=1e-12)
    np.testing.assert_allclose(matrices_from_path(messages["/geovis/path"])[0], frames[0].pose, atol=1e-12)
    assert len(messages["/geovis/keyframes"].markers[0].points) == 16
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ROS-free OK")
""")


def test_bag_io_and_result_mapping_run_with_ros_imports_blocked(tmp_path):
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), ",".join(sorted(ROS_MODULES))],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "ROS-free OK" in done.stdout


def test_the_blocker_really_blocks(tmp_path):
    """The same child fails when asked to import a ROS message package (the finder is not a no-op)."""
    child = CHILD.replace("import numpy as np\n", "import numpy as np\nimport sensor_msgs.msg\n", 1)
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path), ",".join(sorted(ROS_MODULES))],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode != 0 and "sensor_msgs is blocked" in done.stderr
