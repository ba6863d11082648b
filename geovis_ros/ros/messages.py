"""Message factories: the conversions build rclpy messages or rosbags messages through one interface.

Every encoder in ``geovis_ros.ros`` takes a ``factory`` (default :data:`RCLPY`) and asks it for
messages by their ROS 2 type name (``"sensor_msgs/msg/Image"``). :class:`RclpyMessageFactory`
makes the generated rclpy classes (imported on first use, so importing this module needs no
ROS); :class:`RosbagsMessageFactory` makes the dataclasses of a rosbags ``Typestore``, which is
how ``geovis process-bag`` and the bag writer run without ROS installed. Decoders need no
factory: they read the fields that both kinds share (rosbags' ``uint8[] data`` is a numpy array,
rclpy's an ``array.array('B')``; both have the buffer protocol).

Fields not given get the ROS default of their type: 0, 0.0, False, "", empty sequences, zero
arrays and default nested messages. One difference: rclpy's Quaternion defaults ``w`` to 1,
rosbags' to 0, so the encoders always give every quaternion explicitly.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

Message = Any
"""A ROS 2 message of either kind: an rclpy message or a rosbags dataclass."""

# The ROS 2 type names the conversions build.
TIME = "builtin_interfaces/msg/Time"
DURATION = "builtin_interfaces/msg/Duration"
HEADER = "std_msgs/msg/Header"
COLOR_RGBA = "std_msgs/msg/ColorRGBA"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
POINT_FIELD = "sensor_msgs/msg/PointField"
POINT = "geometry_msgs/msg/Point"
QUATERNION = "geometry_msgs/msg/Quaternion"
VECTOR3 = "geometry_msgs/msg/Vector3"
POSE = "geometry_msgs/msg/Pose"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_WITH_COVARIANCE = "geometry_msgs/msg/PoseWithCovariance"
TWIST = "geometry_msgs/msg/Twist"
TWIST_WITH_COVARIANCE = "geometry_msgs/msg/TwistWithCovariance"
TRANSFORM = "geometry_msgs/msg/Transform"
TRANSFORM_STAMPED = "geometry_msgs/msg/TransformStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
PATH = "nav_msgs/msg/Path"
MARKER = "visualization_msgs/msg/Marker"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


class MessageFactory(ABC):
    """Builds messages by ROS 2 type name (``"<package>/msg/<Name>"``)."""

    @abstractmethod
    def new(self, type_name: str, **fields: Any) -> Message:
        """A message of ``type_name`` with ``fields``; the others have their default."""

    @abstractmethod
    def with_data(self, type_name: str, payload: NDArray[Any], **fields: Any) -> Message:
        """A message whose ``uint8[] data`` holds the bytes of ``payload`` in C order: one copy."""

    @abstractmethod
    def with_zeroed_data(self, type_name: str, nbytes: int, **fields: Any) -> tuple[Message, NDArray[np.uint8]]:
        """A message whose ``data`` is ``nbytes`` zero bytes, and a writable (nbytes,) uint8 view of them."""


class RclpyMessageFactory(MessageFactory):
    """The generated rclpy message classes, imported on first use of each type.

    ``data`` is filled by extending the (empty) ``array.array('B')`` a fresh message holds, in
    place: Jazzy's generated setter copies its argument into a new array, so
    ``msg.data = arr.tobytes()`` would copy the payload twice.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def message_class(self, type_name: str) -> type:
        """The rclpy class of ``type_name``, e.g. ``sensor_msgs.msg.Image`` for ``"sensor_msgs/msg/Image"``."""
        cls = self._classes.get(type_name)
        if cls is None:
            package, _, name = type_name.split("/")
            cls = getattr(importlib.import_module(f"{package}.msg"), name)
            self._classes[type_name] = cls
        return cls

    def new(self, type_name: str, **fields: Any) -> Message:
        """A message of ``type_name`` with ``fields``; the others have their default."""
        return self.message_class(type_name)(**fields)

    def with_data(self, type_name: str, payload: NDArray[Any], **fields: Any) -> Message:
        """A message whose ``uint8[] data`` holds the bytes of ``payload`` in C order: one copy."""
        msg = self.new(type_name, **fields)
        if payload.flags.c_contiguous:
            msg.data.frombytes(payload.reshape(-1).view(np.uint8))
        else:
            np.copyto(_zeroed_data(msg, payload.nbytes).view(payload.dtype).reshape(payload.shape), payload)
        return msg

    def with_zeroed_data(self, type_name: str, nbytes: int, **fields: Any) -> tuple[Message, NDArray[np.uint8]]:
        """A message whose ``data`` is ``nbytes`` zero bytes, and a writable (nbytes,) uint8 view of them."""
        msg = self.new(type_name, **fields)
        return msg, _zeroed_data(msg, nbytes)


def _zeroed_data(msg: Message, nbytes: int) -> NDArray[np.uint8]:
    """Grow the empty ``msg.data`` of an rclpy message to ``nbytes`` zero bytes; a writable view of them."""
    msg.data.frombytes(bytes(nbytes))
    return np.frombuffer(msg.data, dtype=np.uint8)


class RosbagsMessageFactory(MessageFactory):
    """The message dataclasses of a rosbags ``Typestore`` (e.g. ``get_typestore(Stores.ROS2_JAZZY)``).

    rosbags dataclasses have no field defaults and serialise primitive arrays from numpy arrays,
    so :meth:`new` fills every field not given with its default and turns primitive array and
    sequence values (lists, tuples, arrays of another dtype) into numpy arrays of the field's type.
    """

    def __init__(self, typestore: Typestore) -> None:
        from rosbags.interfaces import Nodetype

        self.typestore = typestore
        self._nodetype = Nodetype

    def new(self, type_name: str, **fields: Any) -> Message:
        """A message of ``type_name`` with ``fields``; the others have their default."""
        _, definitions = self.typestore.fielddefs[type_name]
        unknown = fields.keys() - {name for name, _ in definitions}
        if unknown:
            raise TypeError(f"{type_name} has no field(s) {sorted(unknown)}")
        values = {
            name: self._coerce(kind, fields[name]) if name in fields else self._default(kind)
            for name, kind in definitions
        }
        return self.typestore.types[type_name](**values)

    def with_data(self, type_name: str, payload: NDArray[Any], **fields: Any) -> Message:
        """A message whose ``uint8[] data`` holds the bytes of ``payload`` in C order: one copy."""
        data = np.empty(payload.nbytes, dtype=np.uint8)
        np.copyto(data.view(payload.dtype).reshape(payload.shape), payload)
        return self.new(type_name, data=data, **fields)

    def with_zeroed_data(self, type_name: str, nbytes: int, **fields: Any) -> tuple[Message, NDArray[np.uint8]]:
        """A message whose ``data`` is ``nbytes`` zero bytes, and a writable (nbytes,) uint8 view of them."""
        data = np.zeros(nbytes, dtype=np.uint8)
        return self.new(type_name, data=data, **fields), data

    def _default(self, kind: tuple[Any, Any]) -> Any:
        """Default value of a field of rosbags node type ``kind``."""
        node, detail = kind
        if node == self._nodetype.BASE:
            return _BASE_DEFAULTS.get(detail[0], 0)
        if node == self._nodetype.NAME:
            return self.new(detail)
        element, length = detail  # ARRAY (fixed length) or SEQUENCE (length 0 = unbounded)
        count = length if node == self._nodetype.ARRAY else 0
        if element[0] == self._nodetype.NAME:
            return [self.new(element[1]) for _ in range(count)]
        if element[1][0] == "string":
            return [""] * count
        return np.zeros(count, dtype=_numpy_dtype(element[1][0]))

    def _coerce(self, kind: tuple[Any, Any], value: Any) -> Any:
        """``value`` as rosbags serialises it: primitive arrays and sequences become numpy arrays."""
        node, detail = kind
        if node in (self._nodetype.ARRAY, self._nodetype.SEQUENCE):
            element = detail[0]
            if element[0] == self._nodetype.BASE and element[1][0] != "string":
                return np.asarray(value, dtype=_numpy_dtype(element[1][0]))
        return value


# Defaults of the rosbags base types that are not integers (0).
_BASE_DEFAULTS: dict[str, Any] = {"bool": False, "float32": 0.0, "float64": 0.0, "string": ""}


def _numpy_dtype(base_type: str) -> np.dtype[Any]:
    """The numpy dtype of a ROS 2 primitive type name (``byte`` and ``char`` are uint8)."""
    return np.dtype({"byte": "uint8", "char": "uint8", "bool": "bool"}.get(base_type, base_type))


RCLPY = RclpyMessageFactory()
"""The default factory of the conversions: rclpy messages."""
