"""TF for the stage nodes, through tf2_ros where it is installed (it is optional: not in the package registry).

:class:`TfLink` broadcasts ``odom -> base_frame`` and ``map -> odom``, and finds the camera extrinsic
``T_base_camera``: a TF lookup ``base_frame -> camera frame`` (the robot's URDF, waited for up to
``tf_timeout`` seconds on the first frame of each camera frame), else the ``camera_extrinsic``
parameter, which is then broadcast as a static transform so the camera-frame outputs still show up
in ``base_frame``. Without tf2_ros nothing is broadcast and the parameter is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time
from std_msgs.msg import Header

from geovis_ros.ros.poses import matrix_from_transform, transform_stamped_from_matrix


class TfLink:
    """Broadcasts transforms and resolves the camera extrinsic (see the module doc)."""

    def __init__(self, node: Node, base_frame: str, fallback_extrinsic: NDArray[np.float64], timeout_s: float,
                 listen: bool) -> None:
        self._node = node
        self._base_frame = base_frame
        self._fallback = fallback_extrinsic
        self._timeout_s = timeout_s
        self._extrinsics: dict[str, NDArray[np.float64]] = {}
        self._broadcaster: Any = None
        self._static: Any = None
        self._buffer: Any = None
        try:
            import tf2_ros
        except ImportError:
            node.get_logger().info("tf2_ros is not installed: no TF is broadcast (odom, path and map are "
                                   "published) and the camera extrinsic comes from camera_extrinsic")
            return
        self._broadcaster = tf2_ros.TransformBroadcaster(node)
        self._static = tf2_ros.StaticTransformBroadcaster(node)
        if listen:
            self._buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._buffer, node)

    @property
    def available(self) -> bool:
        """True when tf2_ros is installed (transforms are broadcast)."""
        return self._broadcaster is not None

    def send(self, transform: Any) -> None:
        """Broadcast a geometry_msgs/TransformStamped when tf2_ros is installed."""
        if self._broadcaster is not None:
            self._broadcaster.sendTransform(transform)

    def extrinsic(self, camera_frame: str) -> NDArray[np.float64]:
        """``T_base_camera`` (4, 4) of ``camera_frame``: from TF (waited for once), else the parameter."""
        known = self._extrinsics.get(camera_frame)
        if known is not None:
            return known
        logger = self._node.get_logger()
        extrinsic = None
        if camera_frame == self._base_frame:
            extrinsic = np.eye(4)
        elif self._buffer is not None:
            logger.info(f"waiting up to {self._timeout_s:g} s for TF {self._base_frame} -> {camera_frame} "
                        "(the camera extrinsic)")
            try:
                transform = self._buffer.lookup_transform(self._base_frame, camera_frame, Time(),
                                                          timeout=Duration(seconds=self._timeout_s))
                extrinsic = matrix_from_transform(transform)
                logger.info(f"camera extrinsic from TF {self._base_frame} -> {camera_frame}")
            except Exception as err:  # noqa: BLE001 - tf2's lookup, connectivity and timeout errors alike
                logger.warning(f"no TF {self._base_frame} -> {camera_frame} within {self._timeout_s:g} s "
                               f"({type(err).__name__}): using camera_extrinsic and broadcasting it as a static "
                               "transform")
        if extrinsic is None:
            extrinsic = self._fallback
            if self._static is not None:
                header = Header(stamp=self._node.get_clock().now().to_msg(), frame_id=self._base_frame)
                self._static.sendTransform(transform_stamped_from_matrix(extrinsic, header, camera_frame))
        self._extrinsics[camera_frame] = extrinsic
        return extrinsic

    def height_above(self, ground_frame: str, camera_frame: str) -> float | None:
        """Height of ``camera_frame``'s origin above ``ground_frame`` (z up, REP 103), metres; None without TF.

        Looked up once (waited for up to ``tf_timeout``); None when tf2_ros is missing, the transform
        does not arrive, or the camera is not above the ground plane.
        """
        if self._buffer is None:
            return None
        logger = self._node.get_logger()
        try:
            transform = self._buffer.lookup_transform(ground_frame, camera_frame, Time(),
                                                      timeout=Duration(seconds=self._timeout_s))
        except Exception as err:  # noqa: BLE001 - tf2's lookup, connectivity and timeout errors alike
            logger.warning(f"no TF {ground_frame} -> {camera_frame} within {self._timeout_s:g} s "
                           f"({type(err).__name__}): no metric scale from the camera height (set camera_height)")
            return None
        height = float(matrix_from_transform(transform)[2, 3])
        if not height > 0:
            logger.warning(f"camera frame {camera_frame} is {height:.3f} m above {ground_frame}, not above it: "
                           "no metric scale from the camera height")
            return None
        logger.info(f"camera height {height:.3f} m above {ground_frame} from TF: metric scale from the ground plane")
        return height
