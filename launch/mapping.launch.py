"""Only the mapping stage: ros2 launch geovis_ros mapping.launch.py image:=... camera_info:=..."""

from geovis_ros.nodes.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description("mapping_node")
