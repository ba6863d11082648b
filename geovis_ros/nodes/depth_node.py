"""depth_node: metric depth, its uncertainty, a coloured view and the per-frame point cloud.

``ros2 run geovis_ros depth_node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info``
"""

from __future__ import annotations

from typing import Any

from geovis_ros.nodes.base import run_node
from geovis_ros.nodes.stage_node import COMMON_PARAMETERS, StageNode


class DepthNode(StageNode):
    """Publishes depth/image, depth/camera_info, depth/uncertainty, depth/colored and points."""

    PARAMETERS = [*COMMON_PARAMETERS, "model_depth", "model_depth_card", "publish_depth", "publish_points",
                  "publish_colored", "points_stride", "points_confidence"]
    STAGES = ("depth",)
    OUTPUTS = ("depth", "points")

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("depth_node", **node_kwargs)


def main(args: list[str] | None = None) -> None:
    """Console script ``depth_node``."""
    run_node(DepthNode, args)


if __name__ == "__main__":
    main()
