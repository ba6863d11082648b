"""All stages in one process (pipeline_node), rviz2 with rviz:=true: the recommended way to run geovis_ros.

ros2 launch geovis_ros geovis.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
"""

from geovis_ros.nodes.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description("pipeline_node", with_rviz=True)
