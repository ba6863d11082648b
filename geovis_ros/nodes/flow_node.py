"""flow_node: optical flow from the previous frame to this one, and its colour-wheel view.

``ros2 run geovis_ros flow_node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info``
"""

from __future__ import annotations

from typing import Any

from geovis_ros.nodes.base import run_node
from geovis_ros.nodes.stage_node import COMMON_PARAMETERS, StageNode


class FlowNode(StageNode):
    """Publishes flow/image (32FC2, pixels) and flow/colored; nothing for the first frame of a stream."""

    PARAMETERS = [*COMMON_PARAMETERS, "model_flow", "model_flow_card", "flow_refinement", "publish_flow",
                  "publish_colored"]
    STAGES = ("flow",)
    OUTPUTS = ("flow",)

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("flow_node", **node_kwargs)


def main(args: list[str] | None = None) -> None:
    """Console script ``flow_node``."""
    run_node(FlowNode, args)


if __name__ == "__main__":
    main()
