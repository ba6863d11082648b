"""ROS bag I/O without ROS: write ROS 2 bags (sqlite3 / mcap) and read ROS 1 and ROS 2 bags.

Uses the ``rosbags`` package (pure Python, its own message typestore and CDR/ROS 1 serialisers),
imported lazily. Messages are built for ROS 2 Jazzy.

Written bags hold, per frame (all stamped with the frame's capture time):

- ``image_topic``: ``sensor_msgs/Image`` rgb8, header.frame_id = ``frame_id``;
- ``info_topic``: ``sensor_msgs/CameraInfo`` (plumb_bob, zero distortion, K and P from intrinsics);
- ``gt_topic``: ``nav_msgs/Odometry`` in frame ``odom`` with child_frame_id = ``frame_id`` and
  pose = T_odom_camera (OpenCV optical frame), for frames that have a pose;
- ``depth_topic`` (``with_depth=True``): ``sensor_msgs/Image`` 32FC1, metres, NaN = invalid.

The image-message decoders are duck-typed (fields height, width, encoding, is_bigendian, step,
data / format, data) so they work on rosbags messages and on rclpy messages alike.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from geovis_ros.data.calibration import CalibrationSource, load_calibration
from geovis_ros.data.frame_source import associate_nearest, check_frame
from geovis_ros.data.image_io import DatasetError, to_rgb8
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.geometry.camera import CameraModelError, Intrinsics
from geovis_ros.geometry.se3 import pose_from_translation_quaternion, quaternion_from_matrix

if TYPE_CHECKING:
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
POSE_TYPES = (ODOMETRY_TYPE, "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped")
STORAGES = ("sqlite3", "mcap")
ROSBAG2_VERSION: Literal[9] = 9
"""rosbag2 metadata version written by ROS 2 Jazzy."""
MAX_TIME_DIFFERENCE_S = 0.02

# encoding -> (dtype, channels, OpenCV conversion to RGB or None when already RGB)
_COLOUR_ENCODINGS: dict[str, tuple[type[np.generic], int, int | None]] = {
    "rgb8": (np.uint8, 3, None),
    "bgr8": (np.uint8, 3, cv2.COLOR_BGR2RGB),
    "8UC3": (np.uint8, 3, cv2.COLOR_BGR2RGB),
    "rgba8": (np.uint8, 4, cv2.COLOR_RGBA2RGB),
    "bgra8": (np.uint8, 4, cv2.COLOR_BGRA2RGB),
    "mono8": (np.uint8, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": (np.uint8, 1, cv2.COLOR_GRAY2RGB),
    "mono16": (np.uint16, 1, cv2.COLOR_GRAY2RGB),
}
# encoding -> (dtype, metres per unit)
_DEPTH_ENCODINGS: dict[str, tuple[type[np.generic], float]] = {
    "32FC1": (np.float32, 1.0),
    "16UC1": (np.uint16, 1e-3),
    "mono16": (np.uint16, 1e-3),
}


def _import_error(err: ImportError) -> ImportError:
    return ImportError(f"reading and writing bags needs the 'rosbags' package (pip install rosbags): {err}")


def jazzy_typestore() -> Typestore:
    """The rosbags type store of ROS 2 Jazzy messages (raises a clear error without rosbags)."""
    try:
        from rosbags.typesys import Stores, get_typestore
    except ImportError as err:
        raise _import_error(err) from err
    return get_typestore(Stores.ROS2_JAZZY)


# --------------------------------------------------------------------------------------- decoding


def _pixel_array(msg: Any, dtype: type[np.generic], channels: int, where: str) -> NDArray[Any]:
    """(H, W, C) array of a raw image message, honouring ``step`` (row padding) and endianness."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    item = np.dtype(dtype).itemsize
    row_bytes = width * channels * item
    data = np.frombuffer(msg.data, np.uint8)  # bytes, array.array (rclpy) or ndarray (rosbags)
    if step < row_bytes or data.size < step * height:
        raise DatasetError(
            f"{where}: {msg.encoding} image {width}x{height} needs step >= {row_bytes} and "
            f"{step * height} bytes, got step {step} and {data.size} bytes"
        )
    rows = np.ascontiguousarray(data[: step * height].reshape(height, step)[:, :row_bytes])
    wire = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    return rows.view(wire).reshape(height, width, channels).astype(dtype)


def image_msg_to_rgb(msg: Any, where: str = "image") -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB from a ``sensor_msgs/Image`` in rgb8, bgr8, rgba8, bgra8, mono8 or mono16."""
    entry = _COLOUR_ENCODINGS.get(msg.encoding)
    if entry is None:
        raise DatasetError(
            f"{where}: unsupported colour encoding {msg.encoding!r} (supported: {', '.join(_COLOUR_ENCODINGS)})"
        )
    dtype, channels, conversion = entry
    pixels = _pixel_array(msg, dtype, channels, where)
    if dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    pixels = pixels[..., 0] if channels == 1 else pixels
    return np.array(pixels if conversion is None else cv2.cvtColor(pixels, conversion), dtype=np.uint8)


def compressed_msg_to_rgb(msg: Any, where: str = "image") -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB from a ``sensor_msgs/CompressedImage`` (jpeg or png)."""
    if "compresseddepth" in msg.format.lower():
        raise DatasetError(f"{where}: compressedDepth images are not colour images (format {msg.format!r})")
    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{where}: cannot decode compressed image (format {msg.format!r})")
    return to_rgb8(image, where)


def image_msg_to_depth(msg: Any, where: str = "depth") -> NDArray[np.float32]:
    """(H, W) float32 depth in metres (NaN invalid) from a 32FC1 (m) or 16UC1 / mono16 (mm) image."""
    entry = _DEPTH_ENCODINGS.get(msg.encoding)
    if entry is None:
        raise DatasetError(
            f"{where}: unsupported depth encoding {msg.encoding!r} (supported: {', '.join(_DEPTH_ENCODINGS)})"
        )
    dtype, metres_per_unit = entry
    raw = _pixel_array(msg, dtype, 1, where)[..., 0]
    depth = raw.astype(np.float32) * np.float32(metres_per_unit)
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _pose_of(msg: Any) -> NDArray[np.float64]:
    """T_frame_child (4, 4) of an Odometry / PoseStamped / PoseWithCovarianceStamped message."""
    pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
    p, q = pose.position, pose.orientation
    return pose_from_translation_quaternion([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def _camera_info_intrinsics(msg: Any, width: int, height: int, where: str) -> Intrinsics:
    """Intrinsics from CameraInfo K (ROS 2 ``k``, ROS 1 ``K``); its size, else the image's."""
    k = np.asarray(msg.k if hasattr(msg, "k") else msg.K, dtype=np.float64).reshape(3, 3)
    size = (int(msg.width), int(msg.height)) if msg.width and msg.height else (width, height)
    if size != (width, height):
        raise DatasetError(f"{where}: CameraInfo is for {size[0]}x{size[1]} but images are {width}x{height}")
    try:
        return Intrinsics.from_matrix(k, width, height)
    except CameraModelError as err:
        raise DatasetError(f"{where}: CameraInfo K is not a usable calibration ({err})") from None


# ---------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _RosMessages:
    """Builds ROS 2 messages for frames from a typestore."""

    types: dict[str, Any]
    frame_id: str

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        seconds, nanoseconds = divmod(stamp_ns, 1_000_000_000)
        time = self.types["builtin_interfaces/msg/Time"](sec=seconds, nanosec=nanoseconds)
        return self.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def image(self, stamp_ns: int, pixels: NDArray[Any], encoding: str) -> Any:
        height, width = pixels.shape[:2]
        data = np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)
        return self.types[IMAGE_TYPE](
            header=self.header(stamp_ns, self.frame_id), height=height, width=width, encoding=encoding,
            is_bigendian=0, step=data.size // height, data=data,
        )

    def camera_info(self, stamp_ns: int, k: Intrinsics) -> Any:
        projection = np.zeros((3, 4))
        projection[:, :3] = k.matrix
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.types[CAMERA_INFO_TYPE](
            header=self.header(stamp_ns, self.frame_id), height=k.height, width=k.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=k.matrix.reshape(-1), r=np.eye(3).reshape(-1),
            p=projection.reshape(-1), binning_x=0, binning_y=0, roi=roi,
        )

    def odometry(self, stamp_ns: int, pose: NDArray[np.float64]) -> Any:
        t = self.types
        x, y, z = (float(v) for v in pose[:3, 3])
        qx, qy, qz, qw = (float(v) for v in quaternion_from_matrix(pose[:3, :3]))
        geometry_pose = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=x, y=y, z=z),
            orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
        )
        zero = t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
        return t[ODOMETRY_TYPE](
            header=self.header(stamp_ns, "odom"), child_frame_id=self.frame_id,
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=geometry_pose, covariance=np.zeros(36)),
            twist=t["geometry_msgs/msg/TwistWithCovariance"](
                twist=t["geometry_msgs/msg/Twist"](linear=zero, angular=zero), covariance=np.zeros(36)
            ),
        )


def write_bag(
    path: Path,
    frames: Iterable[SequenceFrame],
    storage: str = "sqlite3",
    image_topic: str = "/camera/image_raw",
    info_topic: str = "/camera/camera_info",
    gt_topic: str = "/ground_truth/odom",
    frame_id: str = "camera",
    with_depth: bool = False,
    depth_topic: str = "/camera/depth/image",
) -> Path:
    """Write frames as a ROS 2 bag directory (content in the module docstring); returns ``path``.

    Args:
        path: bag directory to create (must not exist).
        frames: streamed, never held in memory together.
        storage: ``"sqlite3"`` (.db3) or ``"mcap"``.
        image_topic: sensor_msgs/Image rgb8 topic.
        info_topic: sensor_msgs/CameraInfo topic.
        gt_topic: nav_msgs/Odometry ground-truth topic.
        frame_id: camera frame (image header.frame_id, Odometry child_frame_id).
        with_depth: also write depth (32FC1) for frames that have it.
        depth_topic: topic of the depth images.

    """
    if storage not in STORAGES:
        raise DatasetError(f"unknown bag storage {storage!r}; expected one of {', '.join(STORAGES)}")
    path = Path(path)
    if path.exists():
        raise DatasetError(f"{path}: already exists; a bag is written to a new directory")
    typestore = jazzy_typestore()
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    build = _RosMessages(typestore.types, frame_id)
    connections: dict[str, Connection] = {}
    wrote_any = False
    with Writer(path, version=ROSBAG2_VERSION, storage_plugin=plugin) as writer:

        def write(topic: str, msgtype: str, stamp_ns: int, msg: Any) -> None:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
            writer.write(connections[topic], stamp_ns, typestore.serialize_cdr(msg, msgtype))

        for frame in frames:
            check_frame(frame)
            stamp = frame.stamp_ns
            write(image_topic, IMAGE_TYPE, stamp, build.image(stamp, frame.rgb, "rgb8"))
            write(info_topic, CAMERA_INFO_TYPE, stamp, build.camera_info(stamp, frame.intrinsics))
            if frame.pose is not None:
                write(gt_topic, ODOMETRY_TYPE, stamp, build.odometry(stamp, np.asarray(frame.pose, np.float64)))
            if with_depth and frame.depth is not None:
                depth = np.asarray(frame.depth, dtype="<f4")
                write(depth_topic, IMAGE_TYPE, stamp, build.image(stamp, depth, "32FC1"))
            wrote_any = True
        if not wrote_any:
            raise DatasetError(f"{path}: no frames to write")
    return path


# ---------------------------------------------------------------------------------------- reading


def _bag_paths(path: Path) -> list[Path]:
    """What rosbags' AnyReader opens for ``path``: [ROS 2 bag directory] or [ROS 1 .bag file]."""
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return [path]
        raise DatasetError(f"{path}: not a ROS 2 bag directory (no metadata.yaml)")
    if not path.is_file():
        raise DatasetError(f"{path}: bag does not exist")
    if path.suffix == ".bag":
        return [path]
    if path.suffix in (".db3", ".mcap") or path.name == "metadata.yaml":
        if (path.parent / "metadata.yaml").is_file():
            return [path.parent]
        raise DatasetError(
            f"{path}: a ROS 2 bag file needs the metadata.yaml of its directory "
            f"(recreate it with 'ros2 bag reindex {path.parent}')"
        )
    raise DatasetError(f"{path}: not a bag (expected a ROS 2 bag directory, .db3, .mcap or ROS 1 .bag)")


class BagSequence:
    """Frames from the images of a ROS 1 or ROS 2 bag (sqlite3 or mcap), read with rosbags.

    Args:
        path: ROS 2 bag directory (or its .db3 / .mcap / metadata.yaml), or ROS 1 ``.bag`` file.
        image_topic: Image or CompressedImage topic; default the first such topic, by name, whose
            name does not contain "depth".
        info_topic: CameraInfo topic; default the one sharing the longest prefix with the image topic.
        gt_topic: Odometry / PoseStamped / PoseWithCovarianceStamped ground truth; default the
            first such topic. Its poses (pose of child frame in header frame) become
            ``SequenceFrame.pose``, matched by header stamp within 20 ms.
        depth_topic: depth Image (32FC1 m, 16UC1 mm); default an Image topic with "depth" in its name.
        calib: intrinsics override (file, ``"fx,fy,cx,cy"`` or Intrinsics), needed when the bag has
            no CameraInfo.
        max_time_difference_s: stamp window for matching depth and ground truth to images.

    Frames are named ``000000``, ``000001``, ... and stamped with the image header stamp.

    """

    def __init__(
        self,
        path: Path,
        image_topic: str | None = None,
        info_topic: str | None = None,
        gt_topic: str | None = None,
        depth_topic: str | None = None,
        calib: CalibrationSource | None = None,
        max_time_difference_s: float = MAX_TIME_DIFFERENCE_S,
    ) -> None:
        self.path = Path(path)
        self._paths = _bag_paths(self.path)
        self._max_difference_ns = round(max_time_difference_s * 1e9)
        with self._open() as reader:
            self._topic_types = {
                c.topic: c.msgtype for c in sorted(reader.connections, key=lambda c: c.topic)
            }
            self.image_topic = self._pick_image_topic(image_topic)
            self.depth_topic = self._pick_depth_topic(depth_topic)
            self._count = sum(c.msgcount for c in reader.connections if c.topic == self.image_topic)
            first_image = self._first_message(reader, self.image_topic)
            rgb = self._decode_rgb(first_image)
            height, width = rgb.shape[:2]
            self.info_topic: str | None = None
            if calib is not None:
                self._intrinsics = load_calibration(calib).intrinsics(width, height, str(calib))
            else:
                self.info_topic = self._pick_info_topic(info_topic)
                info = self._first_message(reader, self.info_topic)
                self._intrinsics = _camera_info_intrinsics(info, width, height, f"{self.path} {self.info_topic}")
            self.gt_topic = self._pick_topic(gt_topic, POSE_TYPES, required=gt_topic is not None)
            self._gt_stamps_ns, self._gt_poses = self._read_ground_truth(reader)

    # -- topic selection

    def _topics_text(self) -> str:
        return ", ".join(f"{name} ({kind})" for name, kind in self._topic_types.items()) or "none"

    def _pick_topic(self, wanted: str | None, kinds: tuple[str, ...], required: bool) -> str | None:
        if wanted is not None:
            if self._topic_types.get(wanted) not in kinds:
                raise DatasetError(
                    f"{self.path}: topic {wanted!r} is not one of {', '.join(kinds)}; topics: {self._topics_text()}"
                )
            return wanted
        candidates = [name for name, kind in self._topic_types.items() if kind in kinds]
        if not candidates and required:
            raise DatasetError(f"{self.path}: no {' / '.join(kinds)} topic; topics: {self._topics_text()}")
        return candidates[0] if candidates else None

    def _pick_image_topic(self, wanted: str | None) -> str:
        kinds = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
        if wanted is None:
            colour = [n for n, k in self._topic_types.items() if k in kinds and "depth" not in n.lower()]
            wanted = colour[0] if colour else None
        topic = self._pick_topic(wanted, kinds, required=True)
        assert topic is not None
        return topic

    def _pick_depth_topic(self, wanted: str | None) -> str | None:
        if wanted is None:
            depth = [n for n, k in self._topic_types.items() if k == IMAGE_TYPE and "depth" in n.lower()]
            wanted = next((n for n in depth if n != self.image_topic), None)
            if wanted is None:
                return None
        return self._pick_topic(wanted, (IMAGE_TYPE,), required=True)

    def _pick_info_topic(self, wanted: str | None) -> str:
        if wanted is None:
            infos = [n for n, k in self._topic_types.items() if k == CAMERA_INFO_TYPE]
            if not infos:
                raise DatasetError(
                    f"{self.path}: no sensor_msgs/CameraInfo topic for the intrinsics (give a calibration); "
                    f"topics: {self._topics_text()}"
                )
            wanted = max(infos, key=lambda n: len(os.path.commonprefix([n, self.image_topic])))
        topic = self._pick_topic(wanted, (CAMERA_INFO_TYPE,), required=True)
        assert topic is not None
        return topic

    # -- reading

    @contextmanager
    def _open(self) -> Iterator[AnyReader]:
        """An open rosbags AnyReader, closed on exit."""
        try:
            from rosbags.highlevel import AnyReader, AnyReaderError
        except ImportError as err:
            raise _import_error(err) from err
        reader = AnyReader(self._paths, default_typestore=jazzy_typestore())
        try:
            reader.open()
        except AnyReaderError as err:
            raise DatasetError(f"{self.path}: cannot read bag ({err})") from None
        try:
            yield reader
        finally:
            reader.close()

    def _connections(self, reader: AnyReader, topic: str | None) -> list[Connection]:
        return [c for c in reader.connections if c.topic == topic]

    def _first_message(self, reader: AnyReader, topic: str) -> Any:
        for connection, _, raw in reader.messages(connections=self._connections(reader, topic)):
            return reader.deserialize(raw, connection.msgtype)
        raise DatasetError(f"{self.path}: topic {topic} has no messages")

    def _read_ground_truth(self, reader: AnyReader) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        stamps: list[int] = []
        poses: list[NDArray[np.float64]] = []
        if self.gt_topic is not None:
            for connection, _, raw in reader.messages(connections=self._connections(reader, self.gt_topic)):
                msg = reader.deserialize(raw, connection.msgtype)
                stamps.append(_stamp_ns(msg))
                poses.append(_pose_of(msg))
        order = np.argsort(np.array(stamps, dtype=np.int64), kind="stable")
        stamp_array = np.array(stamps, dtype=np.int64)[order]
        pose_array = np.stack(poses)[order] if poses else np.zeros((0, 4, 4))
        return stamp_array, pose_array

    def _decode_rgb(self, msg: Any) -> NDArray[np.uint8]:
        where = f"{self.path} {self.image_topic}"
        if self._topic_types[self.image_topic] == COMPRESSED_IMAGE_TYPE:
            return compressed_msg_to_rgb(msg, where)
        return image_msg_to_rgb(msg, where)

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics from the CameraInfo topic (or the calibration given)."""
        return self._intrinsics

    @property
    def has_poses(self) -> bool:
        """Whether the bag has a ground-truth pose topic with messages."""
        return len(self._gt_stamps_ns) > 0

    def __len__(self) -> int:
        """Number of messages on the image topic."""
        return self._count

    def __iter__(self) -> Iterator[SequenceFrame]:
        """Frames in bag order; depth and pose attached where a message matches the image stamp."""
        with self._open() as reader:
            connections = self._connections(reader, self.image_topic) + self._connections(reader, self.depth_topic)
            pending: deque[tuple[int, Any]] = deque()  # images waiting for a later depth message
            depths: list[tuple[int, Any]] = []
            index = 0
            for connection, _, raw in reader.messages(connections=connections):
                msg = reader.deserialize(raw, connection.msgtype)
                if connection.topic == self.image_topic:
                    pending.append((_stamp_ns(msg), msg))
                else:
                    depths.append((_stamp_ns(msg), msg))
                # An image is complete once a depth message later than its matching window arrived.
                while pending and (
                    self.depth_topic is None
                    or (depths and depths[-1][0] > pending[0][0] + self._max_difference_ns)
                ):
                    oldest_needed = pending[0][0] - self._max_difference_ns
                    depths = [d for d in depths if d[0] >= oldest_needed]
                    yield self._frame(index, *pending.popleft(), depths)
                    index += 1
            while pending:
                yield self._frame(index, *pending.popleft(), depths)
                index += 1

    def _frame(self, index: int, stamp_ns: int, msg: Any, depths: list[tuple[int, Any]]) -> SequenceFrame:
        rgb = self._decode_rgb(msg)
        k = self._intrinsics
        if rgb.shape[:2] != (k.height, k.width):
            raise DatasetError(
                f"{self.path} {self.image_topic}: message {index} is {rgb.shape[1]}x{rgb.shape[0]}, "
                f"the calibration is for {k.width}x{k.height}"
            )
        query = np.array([stamp_ns], dtype=np.int64)
        depth = None
        if depths:
            depth_stamps = np.array([d[0] for d in depths], dtype=np.int64)
            order = np.argsort(depth_stamps, kind="stable")
            match = associate_nearest(query, depth_stamps[order], self._max_difference_ns)[0]
            if match >= 0:
                depth = image_msg_to_depth(depths[order[match]][1], f"{self.path} {self.depth_topic}")
        pose_match = associate_nearest(query, self._gt_stamps_ns, self._max_difference_ns)[0]
        pose = self._gt_poses[pose_match].copy() if pose_match >= 0 else None
        return SequenceFrame(
            name=f"{index:06d}", stamp_ns=stamp_ns, rgb=rgb, intrinsics=k, depth=depth, pose=pose
        )
