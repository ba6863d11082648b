"""Replay a recorded bag through pipeline_node with sim time and mode:=bag (every frame, in order).

ros2 launch geovis_ros bag_replay.launch.py bag:=/path/to/bag image:=/camera/image_raw rate:=0.5

Bag mode never drops a frame silently: when the bag outruns the pipeline, the node's queue (bounded
in bytes) first absorbs the backlog, then drops the oldest frames with a counted warning naming
``rate``; /diagnostics reports the backlog. Lower ``rate`` until no drop is reported. The node keeps
running (and publishing the last map) after the bag ends; Ctrl-C stops everything.
"""

from functools import partial

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from geovis_ros.nodes.launch_description import end_launch_on_exit, in_ament_index, node_launch_description


def require_rosbag2(context):
    """Refuse the launch, before anything starts, where rosbag2 (``ros2 bag``) is not installed."""
    if not in_ament_index("ros2bag"):
        raise RuntimeError("bag_replay needs rosbag2 (`ros2 bag`): sudo apt install ros-$ROS_DISTRO-rosbag2")
    return []


def generate_launch_description():
    player = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate")],
        name="bag_player",
        output="screen",
        on_exit=partial(end_launch_on_exit, keep_running_on_success=True),
    )
    return node_launch_description(
        "pipeline_node",
        with_rviz=True,
        defaults={"use_sim_time": "true", "mode": "bag"},
        checks=[OpaqueFunction(function=require_rosbag2)],
        extra=[
            DeclareLaunchArgument("bag", description="bag to play (folder or file)"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate (lower it when the "
                                  "node reports dropped frames)"),
            player,
        ],
    )
