"""The package builds and installs the way a robot workspace does (colcon, ament_python)."""

import ast
import importlib.util
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COLCON = Path(sys.executable).parent / "colcon"


def setup_py_entry_points() -> dict[str, str]:
    """console_scripts of setup.py, read without running it: NODES plus the geovis CLI."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    nodes = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODES"
    )
    return {**nodes, "geovis": "geovis_ros.cli:main"}


NODE_NAMES = sorted(name for name in setup_py_entry_points() if name.endswith("_node"))


def test_package_xml_format3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "geovis_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_depends = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "std_msgs", "visualization_msgs",
                "diagnostic_msgs", "tf2_ros", "launch", "launch_ros", "python3-numpy", "python3-opencv"):
        assert dep in exec_depends, dep
    test_depends = {e.text for e in root.findall("test_depend")}
    assert {"python3-pytest", "ament_flake8", "ament_pep257"} <= test_depends


@pytest.mark.skipif(not COLCON.exists(), reason="colcon is not installed in this environment (make setup installs it)")
def test_colcon_build_installs_nodes_launch_config_and_index_marker(tmp_path):
    result = subprocess.run(
        [str(COLCON), "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(ROOT),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--packages-select", "geovis_ros"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / "install" / "geovis_ros"
    for name in [*NODE_NAMES, "geovis"]:
        assert (prefix / "lib" / "geovis_ros" / name).is_file(), name
    share = prefix / "share" / "geovis_ros"
    assert (share / "package.xml").is_file()
    assert (share / "config" / "geovis.yaml").is_file()
    assert (share / "config" / "rviz" / "geovis.rviz").is_file()
    launch_files = {p.name for p in (share / "launch").glob("*.launch.py")}
    assert {"geovis.launch.py", "bag_replay.launch.py"} <= launch_files
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "geovis_ros").is_file()


def launch_files() -> list[Path]:
    return sorted((ROOT / "launch").glob("*.launch.py"))


def test_every_launched_executable_is_a_console_script():
    declared = setup_py_entry_points()
    source = (ROOT / "geovis_ros" / "nodes" / "launch_description.py").read_text()
    assert 'package="geovis_ros"' in source
    launched = set()
    for path in launch_files():
        launched |= set(re.findall(r'node_launch_description\(\s*"(\w+)"', path.read_text()))
    assert launched, "no launch file starts a geovis node"
    assert launched <= set(declared), launched - set(declared)
    per_stage = {p.name.removesuffix(".launch.py") for p in launch_files()} - {"geovis", "bag_replay"}
    assert {f"{stage}_node" for stage in per_stage} <= launched


@pytest.mark.parametrize("path", launch_files(), ids=lambda p: p.name)
def test_launch_description_loads(path):
    if importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None:
        pytest.skip("the ROS 2 'launch'/'launch_ros' packages are not installed (not in the package registry)")
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert description.entities


def test_config_yaml_is_valid_ros_parameter_file():
    data = yaml.safe_load((ROOT / "config" / "geovis.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert params["backend"] in {"auto", "tensorrt", "torch", "onnxruntime"}
    assert params["mode"] in {"live", "bag"}
