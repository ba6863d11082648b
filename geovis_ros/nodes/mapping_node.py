"""mapping_node: CNN-SLAM fusion into a bounded, loop-corrected point-cloud map.

``ros2 run geovis_ros mapping_node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info``
"""

from __future__ import annotations

from typing import Any

from geovis_ros.nodes.base import run_node
from geovis_ros.nodes.stage_node import COMMON_PARAMETERS, MAP_PARAMETERS, ODOMETRY_PARAMETERS, StageNode


class MappingNode(StageNode):
    """Publishes map and keyframes (latched, at most map_rate Hz, in map_frame) and TF map -> odom."""

    PARAMETERS = [*COMMON_PARAMETERS, *ODOMETRY_PARAMETERS, *MAP_PARAMETERS]
    STAGES = ("depth", "odometry", "mapping")
    OUTPUTS = ("map",)

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("mapping_node", **node_kwargs)


def main(args: list[str] | None = None) -> None:
    """Console script ``mapping_node``."""
    run_node(MappingNode, args)


if __name__ == "__main__":
    main()
