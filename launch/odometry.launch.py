"""Only the odometry stage: ros2 launch geovis_ros odometry.launch.py image:=... camera_info:=..."""

from geovis_ros.nodes.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description("odometry_node")
