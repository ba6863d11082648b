"""The package builds and installs the way a robot workspace does (colcon, ament_python)."""

import ast
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
    assert root.findtext("license") == "Apache-2.0" and (ROOT / "LICENSE").is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    exec_depends = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "std_msgs", "visualization_msgs",
                "diagnostic_msgs", "rosgraph_msgs", "rcl_interfaces", "ament_index_python", "tf2_ros", "launch",
                "launch_ros", "python3-numpy", "python3-opencv", "python3-yaml", "python3-scipy", "python3-tqdm",
                "python3-matplotlib", "python3-torch", "python3-onnxruntime-pip", "python3-rosbags-pip"):
        assert dep in exec_depends, dep
    assert "rviz2" not in exec_depends  # optional: rviz:=true skips it with a warning where it is missing
    test_depends = {e.text for e in root.findall("test_depend")}
    assert "python3-pytest" in test_depends
    assert not {d for d in test_depends if d.startswith("ament_")}, "ament linters are not run (ruff + mypy are)"


def test_every_imported_third_party_module_has_a_dependency():
    """Each top-level module the package imports maps to a package.xml key (or, without a rosdep key, the README)."""
    imported = set()
    for path in (ROOT / "geovis_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    keys = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter() if e.tag.endswith("depend")}
    by_module = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "scipy": "python3-scipy",
                 "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "torch": "python3-torch",
                 "onnxruntime": "python3-onnxruntime-pip", "rosbags": "python3-rosbags-pip"}
    pip_only = {"onnx", "safetensors", "onnxconverter_common"}  # no rosdep key: the README installs them with pip
    optional = {"tensorrt", "cuda", "pycuda", "tf2_ros", "tf2_msgs", "cv_bridge", "rosbag2_py", "evo", "psutil"}
    readme = (ROOT / "README.md").read_text()
    for module in sorted(imported - set(sys.stdlib_module_names) - {"geovis_ros"} - optional):
        if module in pip_only:
            assert module.replace("_", "-") in readme or module in readme, module
        else:
            assert by_module.get(module, module) in keys, module


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
    assert 'PACKAGE = "geovis_ros"' in source
    launched = set()
    for path in launch_files():
        launched |= set(re.findall(r'node_launch_description\(\s*"(\w+)"', path.read_text()))
    assert launched, "no launch file starts a geovis node"
    assert launched <= set(declared), launched - set(declared)
    per_stage = {p.name.removesuffix(".launch.py") for p in launch_files()} - {"geovis", "bag_replay"}
    assert {f"{stage}_node" for stage in per_stage} <= launched


def test_config_yaml_is_valid_ros_parameter_file():
    data = yaml.safe_load((ROOT / "config" / "geovis.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert params["backend"] in {"auto", "tensorrt", "torch", "onnxruntime"}
    assert params["mode"] in {"live", "bag"}
