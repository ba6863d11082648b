"""The launch files as a robot runs them: `ros2 launch` from a colcon install and from the source tree.

Needs the pure-Python ROS 2 launch tools (launch, launch_ros, ros2launch, ros2param), which are not in
the package registry: `make setup` installs them from ../shared/ros-launch-kit when that folder exists.
Every process runs on this test run's private ROS_DOMAIN_ID with discovery kept on localhost
(test/conftest.py); the ros2 CLI is run with --no-daemon so no daemon outlives the tests.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from geovis_ros.nodes.launch_description import COMMON_ARGUMENTS, rviz_config_text
from geovis_ros.ros.camera_info import CameraCalibration, camera_info_from_calibration
from geovis_ros.ros.image import image_from_numpy
from geovis_ros.ros.qos import OUTPUT_QOS
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAUNCH_TOOLS = ("launch", "launch_ros", "ros2launch", "ros2param", "psutil")  # psutil: the kit has a copy
MISSING = [name for name in LAUNCH_TOOLS if importlib.util.find_spec(name) is None]
needs_launch = pytest.mark.skipif(
    bool(MISSING) or not (BIN / "ros2").exists(),
    reason=f"the ROS 2 launch tools are not installed ({', '.join(MISSING) or 'no ros2 command'} missing): they are "
           "not in the package registry; `make setup` installs them from ../shared/ros-launch-kit when it exists")
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
WIDTH, HEIGHT = 128, 96


def ros_environment() -> dict[str, str]:
    """This run's private DDS domain on localhost (conftest.py), the venv's tools first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in (str(BIN), env.get("PATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ros2(*args: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ros2"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def stop(process: subprocess.Popen) -> None:
    """Kill what is left of a launch (its whole session) after a failed test."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def alive(processes: list) -> list:
    """The psutil processes that still run (zombies and reused pids excluded)."""
    import psutil

    running = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append(p)
        except psutil.NoSuchProcess:
            pass
    return running


def processes_with(marker: str) -> list:
    """The psutil processes whose command line contains ``marker``."""
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def test_rviz_config_follows_namespace_and_image():
    template = (ROOT / "config" / "rviz" / "geovis.rviz").read_text()
    text = rviz_config_text(template, "robot1/perception", "front/image_raw")
    topics = [v["Topic"]["Value"] for v in yaml.safe_load(text)["Visualization Manager"]["Displays"]
              if isinstance(v.get("Topic"), dict)]
    assert "/front/image_raw" in topics and "/robot1/perception/depth/colored" in topics
    assert "/robot1/perception/map" in topics and not any(t.startswith("/geovis/") for t in topics)
    assert rviz_config_text(template, "geovis", "/camera/image_raw") == template
    assert "Value: /depth/colored" in rviz_config_text(template, "", "/camera/image_raw")


@needs_launch
@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_loads_and_its_arguments_parse(path):
    result = ros2("launch", str(path), "--show-args", env=ros_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    declared = {line.strip().strip("':") for line in result.stdout.splitlines() if line.startswith("    '")}
    assert set(COMMON_ARGUMENTS) <= declared, declared
    if path.name in ("geovis.launch.py", "bag_replay.launch.py"):
        assert "rviz" in declared
    if path.name == "bag_replay.launch.py":
        assert {"bag", "rate"} <= declared


@needs_launch
def test_missing_config_file_is_an_error_before_anything_starts(tmp_path):
    result = ros2("launch", str(ROOT / "launch" / "depth.launch.py"), f"config:={tmp_path / 'nope.yaml'}",
                  env=ros_environment())
    assert result.returncode != 0
    assert f"config:={tmp_path / 'nope.yaml'}: no such parameter file" in result.stdout + result.stderr
    assert "process started" not in result.stdout + result.stderr


@needs_launch
def test_bag_replay_without_rosbag2_says_what_to_install():
    if ros2("bag", "--help", env=ros_environment()).returncode == 0:
        pytest.skip("rosbag2 is installed here: bag_replay would play the bag")
    namespace = f"bag_replay_{os.getpid()}"
    result = ros2("launch", str(ROOT / "launch" / "bag_replay.launch.py"), "bag:=/nonexistent",
                  f"namespace:={namespace}", env=ros_environment(), timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "bag_replay needs rosbag2 (`ros2 bag`)" in output and "process started" not in output, output
    time.sleep(2.0)  # a node started by mistake would still be up
    assert not alive(processes_with(f"__ns:=/{namespace}"))


@needs_launch
def test_a_node_that_dies_at_start_ends_the_launch_non_zero_from_the_source_tree(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"odometry_method": "magic"}}}))
    process = subprocess.Popen(
        [str(BIN / "ros2"), "launch", str(ROOT / "launch" / "geovis.launch.py"), f"config:={config}"],
        env=ros_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        stop(process)
    assert process.returncode != 0, output
    assert "cannot start: invalid parameter: odometry_method must be one of direct, features" in output
    assert "exited with status 2: stopping the launch" in output
    assert not alive(processes_with(str(config)))


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """A colcon install of the package in a temporary workspace, as on a robot."""
    colcon = BIN / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (make setup installs it)")
    workspace = tmp_path_factory.mktemp("ws")
    result = subprocess.run(
        [str(colcon), "--log-base", str(workspace / "log"), "build", "--base-paths", str(ROOT),
         "--build-base", str(workspace / "build"), "--install-base", str(workspace / "install"),
         "--packages-select", "geovis_ros"],
        cwd=workspace, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return workspace / "install"


class CameraAndListener:
    """An rclpy peer: publishes a synthetic camera (image_raw + camera_info) and records geovis outputs."""

    def __init__(self, namespace: str):
        self.node = rclpy.create_node("launch_test_camera")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.image = self.node.create_publisher(Image, "/camera/image_raw", 10)
        self.info = self.node.create_publisher(CameraInfo, "/camera/camera_info", 10)
        self.depth, self.points, self.odom, self.statuses = [], [], [], []
        self.node.create_subscription(Image, f"{namespace}/depth/image", self.depth.append, OUTPUT_QOS)
        self.node.create_subscription(PointCloud2, f"{namespace}/points", self.points.append, OUTPUT_QOS)
        self.node.create_subscription(Odometry, f"{namespace}/odom", self.odom.append, OUTPUT_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.statuses.extend(m.status), 10)
        self.frames = list(render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=60, width=WIDTH,
                                                       height=HEIGHT, seed=3), with_flow=False))
        self.sent = 0

    def send(self) -> None:
        """Publish the next frame (camera_info with it), stamped now."""
        frame = self.frames[self.sent % len(self.frames)]
        header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id="camera_optical")
        self.info.publish(camera_info_from_calibration(CameraCalibration(frame.intrinsics), header))
        self.image.publish(image_from_numpy(frame.rgb, "rgb8", header))
        self.sent += 1

    def stream_until(self, condition, timeout_s: float, period_s: float = 0.2) -> bool:
        """Send a frame every ``period_s`` while spinning, until ``condition()`` or the timeout."""
        end = time.monotonic() + timeout_s
        next_send = time.monotonic()
        while time.monotonic() < end and not condition():
            if time.monotonic() >= next_send:
                self.send()
                next_send += period_s
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@needs_launch
def test_installed_launch_streams_the_contract_answers_ros2_param_and_stops_cleanly_on_sigint(install):
    import psutil

    env = ros_environment()
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(install / "geovis_ros"),
                                                           env.get("AMENT_PREFIX_PATH", "")) if p)
    site = next((install / "geovis_ros" / "lib").glob("python3*/site-packages"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    # What the README tells a robot engineer to type: default arguments (backend auto), and rviz asked for on a
    # machine that may not have rviz2.
    process = subprocess.Popen(
        [str(BIN / "ros2"), "launch", "geovis_ros", "geovis.launch.py", "rviz:=true"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    rclpy.init()
    camera = CameraAndListener("/geovis")
    try:
        launched = psutil.Process(process.pid)
        ok = [DiagnosticStatus.OK]

        def streaming():
            healthy = [s for s in camera.statuses[-10:] if s.name == "/geovis/pipeline_node" and s.level in ok]
            return len(camera.odom) >= 3 and bool(camera.points) and bool(healthy)

        assert camera.stream_until(streaming, 120.0), (
            len(camera.depth), len(camera.odom), [(s.name, s.level, s.message) for s in camera.statuses[-6:]])
        depth = camera.depth[-1]
        assert depth.encoding == "32FC1" and (depth.width, depth.height) == (WIDTH, HEIGHT)
        assert depth.header.frame_id == "camera_optical"
        assert max(p.width * p.height for p in camera.points) > 0
        assert {(m.header.frame_id, m.child_frame_id) for m in camera.odom} == {("odom", "base_link")}
        children = launched.children(recursive=True)
        assert children, "ros2 launch started no process"

        got = ros2("param", "get", "--no-daemon", "--spin-time", "5", "/geovis/pipeline_node", "base_frame", env=env)
        assert got.returncode == 0 and "String value is: base_link" in got.stdout, got.stdout + got.stderr
        changed = ros2("param", "set", "--no-daemon", "--spin-time", "5", "/geovis/pipeline_node", "map_rate", "2.0",
                       env=env)
        assert "Set parameter successful" in changed.stdout, changed.stdout + changed.stderr
        refused = ros2("param", "set", "--no-daemon", "--spin-time", "5", "/geovis/pipeline_node", "mode", "bag",
                       env=env)
        assert "Set parameter successful" not in refused.stdout, refused.stdout

        process.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = process.communicate(timeout=60)
    finally:
        camera.close()
        rclpy.shutdown()
        stop(process)
    assert process.returncode == 0, output
    assert not alive(children), (alive(children), output)
    assert "Traceback" not in output, output
    assert "rviz2 is not installed" in output or shutil.which("rviz2"), output  # skipped with a warning
    assert np.isfinite(np.frombuffer(depth.data, np.float32)).any()
