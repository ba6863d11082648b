"""The layer rules of DESIGN.md, checked on the import statements of every module (module level and lazy).

Only ``nodes/`` and ``ros/`` touch ROS; data flows down ``nodes -> ros -> pipeline -> inference ->
models -> geometry``, so a lower layer never imports a higher one. The ``geovis`` command modules
(``cli.py`` and each layer's command entry points) may import ``geovis_ros.cli`` for its error type.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geovis_ros"
ROS_MODULES = {"rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "std_msgs", "builtin_interfaces",
               "visualization_msgs", "diagnostic_msgs", "tf2_ros", "cv_bridge", "rosbag2_py"}
# What each layer must never import (besides ROS, which only nodes/ and ros/ may import).
FORBIDDEN = {
    "geometry": {"ros", "nodes", "pipeline", "inference", "models", "training", "eval", "data", "demo"},
    "models": {"ros", "nodes", "pipeline", "inference", "training", "eval", "demo"},
    "inference": {"ros", "nodes", "pipeline", "training", "demo"},
    "pipeline": {"ros", "nodes", "training", "demo"},
    "ros": {"nodes", "pipeline", "inference", "models", "training", "demo"},
    "data": {"ros", "nodes", "pipeline", "inference", "models", "training", "demo"},
    "training": {"ros", "nodes", "pipeline", "demo"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_has_modules_in_every_checked_layer():
    assert set(FORBIDDEN) <= {_layer(p) for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    layer = _layer(path)
    imports = _imports(path)
    ros = sorted(name for name in imports if name.split(".")[0] in ROS_MODULES)
    if layer not in ("nodes", "ros"):
        assert not ros, f"{path.name} ({layer}/) imports ROS: {ros}"
    upward = sorted(name for name in imports
                    if name.startswith("geovis_ros.") and name.split(".")[1] in FORBIDDEN.get(layer, set()))
    assert not upward, f"{path.name} ({layer}/) imports a higher layer: {upward}"
