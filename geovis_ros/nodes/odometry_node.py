"""odometry_node: monocular visual odometry with metric scale from the depth network.

``ros2 run geovis_ros odometry_node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info``
"""

from __future__ import annotations

from typing import Any

from geovis_ros.nodes.base import run_node
from geovis_ros.nodes.stage_node import COMMON_PARAMETERS, ODOMETRY_PARAMETERS, StageNode


class OdometryNode(StageNode):
    """Publishes odom (child base_frame, with covariance), path and (with tf2_ros) TF odom -> base_frame."""

    PARAMETERS = [*COMMON_PARAMETERS, *ODOMETRY_PARAMETERS, "publish_tf"]
    STAGES = ("depth", "odometry")
    OUTPUTS = ("odometry",)

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("odometry_node", **node_kwargs)


def main(args: list[str] | None = None) -> None:
    """Console script ``odometry_node``."""
    run_node(OdometryNode, args)


if __name__ == "__main__":
    main()
