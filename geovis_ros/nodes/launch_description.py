"""Launch descriptions shared by the files in launch/ (needs the ROS 2 `launch`/`launch_ros` packages).

Every geovis node takes the same arguments, so one function builds them all; the files in
``launch/`` only choose the executable. What every launch gets:

- the node is started from the colcon install (``lib/geovis_ros/<executable>``) or, when the
  package is not in the ament index (``ros2 launch launch/geovis.launch.py`` in a source tree),
  as ``python -m geovis_ros.nodes.<executable>`` with the interpreter that runs the launch;
- a ``config`` file that does not exist, or an unknown ``image_transport``, is an error (the
  launch exits non-zero before anything starts);
- when any started process exits, the whole launch shuts down; a non-zero exit status makes
  ``ros2 launch`` exit non-zero (a node that dies at start never leaves the others running);
- rviz2 (``rviz:=true``, off by default) gets ``config/rviz/geovis.rviz`` with its topics moved
  to the launch's ``namespace`` and ``image``; where rviz2 is not installed it is skipped with a
  warning.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "geovis_ros"
# Arguments every geovis launch file accepts: name -> (default, description).
COMMON_ARGUMENTS: dict[str, tuple[str, str]] = {
    "image": ("/camera/image_raw", "input image topic (sensor_msgs/Image); with image_transport:=compressed "
                                   "the node reads <image>/compressed"),
    "camera_info": ("/camera/camera_info", "input camera_info topic"),
    "image_transport": ("raw", "raw: sensor_msgs/Image on <image> | compressed: sensor_msgs/CompressedImage on "
                               "<image>/compressed"),
    "namespace": ("geovis", "namespace of the geovis nodes and their output topics"),
    "config": ("", "parameter file; empty = the package's config/geovis.yaml (a missing file is an error)"),
    "backend": ("auto", "inference backend: auto | tensorrt | torch | onnxruntime"),
    "use_sim_time": ("false", "use /clock (bag playback)"),
    "mode": ("live", "live: newest frame only | bag: every frame in order"),
}
RVIZ_ARGUMENT = ("false", "start rviz2 with config/rviz/geovis.rviz for this namespace and image "
                          "(skipped with a warning where rviz2 is not installed)")
IMAGE_TRANSPORTS = ("raw", "compressed")
# glibc keeps freed blocks below its (adaptive) mmap threshold in the heap: per-frame image buffers
# then make RSS creep (+6.5 % over a 10,000-frame soak after the map bounds, +0.5 % with a fixed
# 1 MiB threshold; `geovis soak-bench`). Buffers of 1 MiB and more go straight back to the system.
NODE_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "1048576"}
# Topic prefixes written in config/rviz/geovis.rviz (the defaults of `namespace` and `image`).
RVIZ_NAMESPACE = "/geovis/"
RVIZ_IMAGE = "/camera/image_raw"


def package_share() -> tuple[Path, bool]:
    """(folder holding ``config/`` and ``launch/``, whether the package is installed in the ament index).

    The installed share folder when ``geovis_ros`` is in the ament index (a sourced colcon
    install); otherwise the source tree this module lives in.
    """
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)), True
    except (ImportError, LookupError, OSError):  # not installed, or no AMENT_PREFIX_PATH at all
        return Path(__file__).resolve().parents[2], False


def rviz_config_text(template: str, namespace: str, image: str) -> str:
    """The rviz config ``template`` (written for ``/geovis`` and ``/camera/image_raw``) for ``namespace`` and ``image``.

    ``namespace`` may be empty (topics at the root), relative or absolute; ``image`` is the
    input topic as remapped (a relative name is taken in the root namespace).
    """
    prefix = "/" + namespace.strip("/") + "/" if namespace.strip("/") else "/"
    image_topic = image if image.startswith("/") else "/" + image
    lines = []
    for line in template.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("Value: " + RVIZ_NAMESPACE):
            line = line.replace(RVIZ_NAMESPACE, prefix, 1)
        elif stripped == "Value: " + RVIZ_IMAGE:
            line = line.replace(RVIZ_IMAGE, image_topic, 1)
        lines.append(line)
    return "".join(lines)


def end_launch_on_exit(event: Any, context: Any, *, keep_running_on_success: bool = False) -> list[Any]:
    """``on_exit`` of every started process: shut the launch down when it ends.

    A non-zero status while the launch is not already shutting down raises, which makes
    ``ros2 launch`` log the reason, stop every other process and exit with status 1.
    ``keep_running_on_success`` (the bag player) leaves the others running after a clean exit.
    """
    from launch.actions import LogInfo, Shutdown

    name = event.action.name
    if context.is_shutdown:
        return []
    if event.returncode != 0:
        raise RuntimeError(f"{name} exited with status {event.returncode}: stopping the launch")
    if keep_running_on_success:
        return [LogInfo(msg=f"{name} finished; the nodes keep running (Ctrl-C to stop)")]
    return [Shutdown(reason=f"{name} exited")]


def node_launch_description(
    executable: str,
    *,
    with_rviz: bool = False,
    defaults: dict[str, str] | None = None,
    checks: list[Any] | None = None,
    extra: list[Any] | None = None,
) -> Any:
    """LaunchDescription starting one geovis node (``executable``) with the common arguments.

    ``with_rviz`` adds an ``rviz`` argument (default false). ``defaults`` replaces default values
    of the common arguments (e.g. ``{"mode": "bag"}``). ``checks`` run before the node starts
    (actions that raise to refuse the launch, so nothing is left half-started); ``extra`` actions
    are appended (e.g. a bag player): give started processes ``on_exit=end_launch_on_exit`` so
    they follow the same rules.
    """
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    overrides = defaults or {}
    unknown = set(overrides) - set(COMMON_ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch arguments in defaults: {sorted(unknown)}")
    actions: list[Any] = [
        DeclareLaunchArgument(name, default_value=overrides.get(name, default), description=description)
        for name, (default, description) in COMMON_ARGUMENTS.items()
    ]
    if with_rviz:
        actions.append(DeclareLaunchArgument("rviz", default_value=RVIZ_ARGUMENT[0], description=RVIZ_ARGUMENT[1]))
    actions += list(checks or [])
    actions.append(OpaqueFunction(function=_start, kwargs={"executable": executable, "with_rviz": with_rviz}))
    return LaunchDescription(actions + list(extra or []))


def _start(context: Any, executable: str, with_rviz: bool) -> list[Any]:
    """The node (and rviz2) for the resolved launch arguments; raises on a missing config or bad transport."""
    from launch_ros.actions import Node

    def argument(name: str) -> str:
        value: str = context.perform_substitution(_configuration(name))
        return value

    share, installed = package_share()
    config = argument("config") or str(share / "config" / "geovis.yaml")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"config:={config}: no such parameter file")
    transport = argument("image_transport")
    if transport not in IMAGE_TRANSPORTS:
        raise ValueError(f"image_transport:={transport}: must be one of {', '.join(IMAGE_TRANSPORTS)}")
    image = argument("image")
    command = ({"executable": executable, "package": PACKAGE} if installed
               else {"executable": sys.executable, "arguments": ["-m", f"{PACKAGE}.nodes.{executable}"]})
    actions: list[Any] = [
        Node(
            **command,
            name=executable,
            exec_name=executable,
            namespace=argument("namespace"),
            parameters=[
                config,
                {
                    "backend": argument("backend"),
                    "mode": argument("mode"),
                    "use_sim_time": argument("use_sim_time").lower() == "true",
                    "use_compressed": transport == "compressed",
                },
            ],
            remappings=[("image", image), ("image/compressed", image.rstrip("/") + "/compressed"),
                        ("camera_info", argument("camera_info"))],
            output="screen",
            additional_env=NODE_ENVIRONMENT,
            on_exit=end_launch_on_exit,
        )
    ]
    if with_rviz and argument("rviz").lower() == "true":
        actions += _rviz(share, argument("namespace"), image, argument("use_sim_time").lower() == "true")
    return actions


def _rviz(share: Path, namespace: str, image: str, use_sim_time: bool) -> list[Any]:
    """rviz2 with the package's display config for ``namespace`` and ``image``; a warning and nothing without rviz2."""
    import launch.logging
    from launch_ros.actions import Node

    if shutil.which("rviz2") is None and not in_ament_index("rviz2"):
        launch.logging.get_logger(PACKAGE).warning(
            "rviz:=true but rviz2 is not installed (sudo apt install ros-$ROS_DISTRO-rviz2): starting without it")
        return []
    template = (share / "config" / "rviz" / "geovis.rviz").read_text()
    handle, path = tempfile.mkstemp(prefix="geovis_", suffix=".rviz")
    with os.fdopen(handle, "w") as file:
        file.write(rviz_config_text(template, namespace, image))
    return [Node(package="rviz2", executable="rviz2", arguments=["-d", path],
                 parameters=[{"use_sim_time": use_sim_time}], on_exit=end_launch_on_exit)]


def in_ament_index(package: str) -> bool:
    """True when ``package`` is installed where ament finds packages."""
    try:
        from ament_index_python.packages import get_package_prefix

        get_package_prefix(package)
    except (ImportError, LookupError, OSError):
        return False
    return True


def _configuration(name: str) -> Any:
    """``LaunchConfiguration(name)`` (imported lazily: this module is importable without launch)."""
    from launch.substitutions import LaunchConfiguration

    return LaunchConfiguration(name)
