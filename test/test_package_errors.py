"""Every exception geovis_ros defines derives from the one root, so callers can catch them all."""

import importlib
import inspect
import pkgutil

import geovis_ros
from geovis_ros.errors import CommandError, GeovisError

ROS_FREE_MODULES = [m.name for m in pkgutil.walk_packages(geovis_ros.__path__, "geovis_ros.")
                    if not m.name.startswith(("geovis_ros.nodes", "geovis_ros.ros"))]


def _exception_classes(module_names):
    for name in module_names:
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                yield value


def test_every_exception_class_derives_from_the_root():
    classes = list(_exception_classes(ROS_FREE_MODULES))
    assert len(classes) > 20  # the package defines its errors layer by layer
    strays = sorted(c.__qualname__ for c in classes if not issubclass(c, GeovisError))
    assert not strays, f"derive these from geovis_ros.errors.GeovisError: {strays}"


def test_the_ros_conversion_error_derives_from_the_root():
    from geovis_ros.ros.errors import ConversionError  # ROS-free module inside ros/

    assert issubclass(ConversionError, GeovisError) and issubclass(ConversionError, ValueError)


def test_command_error_is_a_geovis_error():
    assert issubclass(CommandError, GeovisError)
