"""Launch descriptions shared by the files in launch/ (needs the ROS 2 `launch`/`launch_ros` packages).

Every geovis node takes the same arguments, so one function builds them all; the files in
``launch/`` only choose the executable.
"""

from __future__ import annotations

from typing import Any

# Arguments every geovis launch file accepts: name -> (default, description).
COMMON_ARGUMENTS: dict[str, tuple[str, str]] = {
    "image": ("/camera/image_raw", "input image topic (sensor_msgs/Image)"),
    "camera_info": ("/camera/camera_info", "input camera_info topic"),
    "namespace": ("geovis", "namespace of the geovis nodes and their output topics"),
    "config": ("", "parameter file; empty = the package's config/geovis.yaml"),
    "backend": ("auto", "inference backend: auto | tensorrt | torch | onnxruntime"),
    "use_sim_time": ("false", "use /clock (bag playback)"),
    "mode": ("live", "live: newest frame only | bag: every frame in order"),
}


def node_launch_description(
    executable: str,
    *,
    with_rviz: bool = False,
    defaults: dict[str, str] | None = None,
    extra: list[Any] | None = None,
) -> Any:
    """LaunchDescription starting one geovis node (``executable``) with the common arguments.

    ``with_rviz`` adds an ``rviz`` argument (default true) that opens rviz2 with
    ``config/rviz/geovis.rviz``. ``defaults`` replaces default values of the common arguments
    (e.g. ``{"mode": "bag"}``). ``extra`` actions are appended (e.g. a bag player).
    """
    import os

    from ament_index_python.packages import get_package_share_directory
    from launch.actions import DeclareLaunchArgument
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration, PythonExpression
    from launch_ros.actions import Node

    from launch import LaunchDescription

    share = get_package_share_directory("geovis_ros")
    default_config = os.path.join(share, "config", "geovis.yaml")
    overrides = defaults or {}
    unknown = set(overrides) - set(COMMON_ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch arguments in defaults: {sorted(unknown)}")
    arguments = [
        DeclareLaunchArgument(name, default_value=overrides.get(name, default), description=description)
        for name, (default, description) in COMMON_ARGUMENTS.items()
    ]
    config = PythonExpression(["'", LaunchConfiguration("config"), "' or '", default_config, "'"])
    actions: list[Any] = [
        *arguments,
        Node(
            package="geovis_ros",
            executable=executable,
            namespace=LaunchConfiguration("namespace"),
            parameters=[
                config,
                {
                    "backend": LaunchConfiguration("backend"),
                    "mode": LaunchConfiguration("mode"),
                    "use_sim_time": LaunchConfiguration("use_sim_time"),
                },
            ],
            remappings=[("image", LaunchConfiguration("image")), ("camera_info", LaunchConfiguration("camera_info"))],
            output="screen",
        ),
    ]
    if with_rviz:
        actions.append(DeclareLaunchArgument("rviz", default_value="true", description="start rviz2"))
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "config", "rviz", "geovis.rviz")],
                parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
                condition=IfCondition(LaunchConfiguration("rviz")),
            )
        )
    return LaunchDescription(actions + list(extra or []))
