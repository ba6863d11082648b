"""The layer rules of DESIGN.md, checked on the import statements of every module (module level and lazy).

The table below is the rule, written once: each layer names the layers it may import (besides
itself). Data flows down: a layer never imports one above it, only ``nodes/`` and ``ros/``
touch ROS, the allowed relation has no cycle, and no two modules import each other in a loop.
The README's Layout section draws the same map.
"""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geovis_ros"
ROS_MODULES = {"rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "std_msgs", "builtin_interfaces",
               "visualization_msgs", "diagnostic_msgs", "rcl_interfaces", "rosgraph_msgs", "tf2_ros",
               "tf2_msgs", "cv_bridge", "rosbag2_py"}
ROS_LAYERS = {"nodes", "ros"}

# layer -> the layers it may import. A layer is a top-level module or folder (slam/ counts its
# two halves separately); `__init__` is the package itself.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "geometry": {"errors"},
    "visualization": {"geometry", "errors"},
    "frame": {"geometry", "errors"},
    "data": {"ros", "geometry", "errors"},
    "synthetic": {"data", "visualization", "geometry", "errors"},
    "models": {"geometry", "errors"},
    "inference": {"models", "geometry", "errors"},
    "eval": {"data", "visualization", "geometry", "errors"},
    "training": {"synthetic", "data", "inference", "models", "geometry", "errors"},
    "slam.frontend": {"frame", "geometry", "errors"},
    "slam.backend": {"slam.frontend", "frame", "geometry", "errors"},
    "pipeline": {"slam.backend", "slam.frontend", "inference", "models", "frame", "geometry", "errors"},
    "ros": {"frame", "visualization", "geometry", "errors"},
    "nodes": {"ros", "pipeline", "frame", "data", "visualization", "geometry", "errors"},
    "apps": {"nodes", "ros", "pipeline", "slam.backend", "slam.frontend", "training", "eval", "inference",
             "models", "synthetic", "data", "frame", "visualization", "geometry", "errors"},
    "cli": {"errors"},
    "__init__": set(),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # `from geovis_ros.pkg import module` imports a module too.
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / submodule.replace(".", "/")).with_suffix(".py").exists():
                    names.add(submodule)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; write geovis_ros.<module> in full")
    return names


def _module_layer(dotted: str) -> str:
    """Layer of a dotted module name inside geovis_ros (``geovis_ros.slam.frontend.x`` -> ``slam.frontend``)."""
    parts = dotted.split(".")[1:]
    if not parts:
        return "__init__"
    if parts[0] == "slam" and len(parts) > 1:
        return f"slam.{parts[1]}"
    return parts[0]


def _dotted(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


MODULES = sorted(PACKAGE.rglob("*.py"))
DOTTED = {_dotted(p): p for p in MODULES}


def test_every_layer_is_in_the_table():
    layers = {_module_layer(_dotted(p)) for p in MODULES if p.name != "__init__.py" or p.parent == PACKAGE}
    assert layers - ALLOWED.keys() == set(), "add the new layer to ALLOWED (and to the README's Layout)"
    assert ALLOWED.keys() - layers == set(), "a layer in ALLOWED has no module any more"


def test_the_layer_table_has_no_cycle():
    try:
        tuple(TopologicalSorter(ALLOWED).static_order())
    except CycleError as err:
        pytest.fail(f"the layer table allows a cycle: {err.args[1]}")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    layer = _module_layer(_dotted(path))
    imports = _imports(path)
    ros = sorted(name for name in imports if name.split(".")[0] in ROS_MODULES)
    if layer not in ROS_LAYERS:
        assert not ros, f"{path.name} ({layer}) imports ROS: {ros}"
    inside = {name for name in imports if name.startswith("geovis_ros.")}
    upward = sorted(name for name in inside if _module_layer(name) not in ALLOWED.get(layer, set()) | {layer})
    assert not upward, f"{path.name} ({layer}) imports a layer it may not: {upward}"


def test_no_module_imports_itself_through_others():
    graph = {name: {imported for imported in _imports(path) if imported in DOTTED and imported != name}
             for name, path in DOTTED.items()}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")
