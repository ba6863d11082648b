"""Replay a recorded bag through pipeline_node with sim time and mode:=bag (every frame, in order).

ros2 launch geovis_ros bag_replay.launch.py bag:=/path/to/bag image:=/camera/image_raw
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

from geovis_ros.nodes.launch_description import node_launch_description


def generate_launch_description():
    player = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate")],
        output="screen",
    )
    return node_launch_description(
        "pipeline_node",
        with_rviz=True,
        defaults={"use_sim_time": "true", "mode": "bag"},
        extra=[
            DeclareLaunchArgument("bag", description="bag to play (folder or file)"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
            player,
        ],
    )
