"""ament_python build for geovis_ros (colcon and pip both use this file)."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "geovis_ros"

# Every ROS node is a console script under lib/geovis_ros (see setup.cfg) so
# `ros2 run geovis_ros <name>` and launch files find it.
NODES = {
    "depth_node": "geovis_ros.nodes.depth_node:main",
    "flow_node": "geovis_ros.nodes.flow_node:main",
    "odometry_node": "geovis_ros.nodes.odometry_node:main",
    "mapping_node": "geovis_ros.nodes.mapping_node:main",
    "pipeline_node": "geovis_ros.nodes.pipeline_node:main",
}


def tree(source: str) -> list[tuple[str, list[str]]]:
    """Map every file below ``source`` to its install folder under share/<package>."""
    entries: dict[str, list[str]] = {}
    for path in sorted(Path(source).rglob("*")):
        if path.is_file():
            entries.setdefault(str(Path("share", PACKAGE, path.parent)), []).append(str(path))
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["models/weights/*.safetensors", "models/*.md", "models/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "LICENSE"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        *tree("config"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="geovis_ros maintainers",
    maintainer_email="maintainers@users.noreply.b-seed-45231802.example",
    description="Monocular depth, optical flow, visual odometry and fused mapping for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in NODES.items()]
        + ["geovis = geovis_ros.cli:main"],
    },
)
