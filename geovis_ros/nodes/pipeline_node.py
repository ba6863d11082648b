"""pipeline_node: every stage in one process, sharing one model runtime (the recommended mode).

``ros2 launch geovis_ros geovis.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info``
"""

from __future__ import annotations

from typing import Any

from geovis_ros.nodes.base import run_node
from geovis_ros.nodes.stage_node import StageNode


class PipelineNode(StageNode):
    """Publishes depth/image, points, flow/image, odom, path, TF, map and keyframes (see the README topic table)."""

    PARAMETERS = None  # all of geovis_ros.nodes.params
    STAGES = ("depth", "flow", "odometry", "mapping")
    OUTPUTS = ("depth", "points", "flow", "odometry", "map")

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("pipeline_node", **node_kwargs)

    def stages(self) -> tuple[str, ...]:
        """All stages; flow only when it is published (odometry does not need it)."""
        return tuple(s for s in self.STAGES if s != "flow" or self.params["publish_flow"])


def main(args: list[str] | None = None) -> None:
    """Console script ``pipeline_node``."""
    run_node(PipelineNode, args)


if __name__ == "__main__":
    main()
