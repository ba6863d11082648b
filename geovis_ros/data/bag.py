"""ROS bag I/O without ROS: write ROS 2 bags (sqlite3 / mcap) and read ROS 1 and ROS 2 bags.

Uses the ``rosbags`` package (pure Python, its own message typestore and CDR/ROS 1 serialisers),
imported lazily. Messages are built for ROS 2 Jazzy, and encoded and decoded by the same
conversions as the nodes' (:mod:`geovis_ros.ros`), through a rosbags message factory.

Written bags hold, per frame (all stamped with the frame's capture time):

- ``image_topic``: ``sensor_msgs/Image`` rgb8, header.frame_id = ``frame_id``;
- ``info_topic``: ``sensor_msgs/CameraInfo`` (plumb_bob, zero distortion, K and P from intrinsics);
- ``gt_topic``: ``nav_msgs/Odometry`` in frame ``odom`` with child_frame_id = ``frame_id`` and
  pose = T_odom_camera (OpenCV optical frame), for frames that have a pose;
- ``depth_topic`` (``with_depth=True``): ``sensor_msgs/Image`` 32FC1, metres, NaN = invalid.

Reading trusts nothing in the bag: a message that cannot be deserialized (e.g. a CDR length that
lies), decoded (bad encoding, over the pixel budget) or used (wrong size) is
skipped and counted in :attr:`BagSequence.skipped`, never a crash; only a bag that cannot give a
single usable image, or CameraInfo with implausible intrinsics, is refused (DatasetError). Images
wait for a matching depth message for at most ``max_depth_wait_s`` of bag time and in at most
``max_pending_images`` at once, so a depth topic that stops never makes the reader buffer the bag.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from geovis_ros.data.calibration import CalibrationSource, load_calibration
from geovis_ros.data.frame_source import associate_nearest, check_frame
from geovis_ros.data.image_io import DatasetError
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.geometry.camera import CameraModelError, Intrinsics, check_plausible_intrinsics
from geovis_ros.ros.camera_info import CameraCalibration, calibration_from_camera_info, camera_info_from_calibration
from geovis_ros.ros.compressed import rgb8_from_compressed
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.image import depth_from_image, image_from_depth, image_from_numpy, rgb8_from_image
from geovis_ros.ros.messages import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    ODOMETRY,
    Message,
    RosbagsMessageFactory,
)
from geovis_ros.ros.poses import matrix_from_stamped_pose, odometry_from_matrix
from geovis_ros.ros.stamps import header_from_ns, ns_from_time

if TYPE_CHECKING:
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import Connection
    from rosbags.rosbag2 import Writer
    from rosbags.typesys.store import Typestore

POSE_TYPES = (ODOMETRY, "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped")
STORAGES = ("sqlite3", "mcap")
ROSBAG2_VERSION: Literal[9] = 9
"""rosbag2 metadata version written by ROS 2 Jazzy."""
MAX_TIME_DIFFERENCE_S = 0.02
MAX_DEPTH_WAIT_S = 0.5
"""Bag time (s) an image waits for a depth message after its own stamp before it goes on without depth."""
MAX_PENDING_IMAGES = 8
"""Images held at most while waiting for depth; the oldest goes on without depth beyond this."""
FIRST_IMAGE_ATTEMPTS = 100
"""Image messages tried for the first usable one (its size) before a bag is refused."""

LOG = logging.getLogger(__name__)
# The distortion written with the intrinsics: plumb_bob, all zero (an ideal pinhole).
_NO_DISTORTION = ("plumb_bob", (0.0,) * 5)

_Decoded = TypeVar("_Decoded")


def _import_error(err: ImportError) -> ImportError:
    return ImportError(f"reading and writing bags needs the 'rosbags' package (pip install rosbags): {err}")


def jazzy_typestore() -> Typestore:
    """The rosbags type store of ROS 2 Jazzy messages (raises a clear error without rosbags)."""
    try:
        from rosbags.typesys import Stores, get_typestore
    except ImportError as err:
        raise _import_error(err) from err
    return get_typestore(Stores.ROS2_JAZZY)


# ---------------------------------------------------------------------------------------- writing


class BagWriter:
    """An open ROS 2 bag being written: rosbags messages in, CDR out, one connection per topic.

    ``factory`` makes the messages (pass it to the :mod:`geovis_ros.ros` encoders);
    ``messages_written`` counts them.
    """

    def __init__(self, writer: Writer, typestore: Typestore) -> None:
        self.factory = RosbagsMessageFactory(typestore)
        self.messages_written = 0
        self._writer = writer
        self._typestore = typestore
        self._connections: dict[str, Connection] = {}

    def write(self, topic: str, stamp_ns: int, msg: Message) -> None:
        """Write ``msg`` (a message of :attr:`factory`) on ``topic`` at bag time ``stamp_ns`` (ns)."""
        msgtype = msg.__msgtype__
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
        self._writer.write(self._connections[topic], int(stamp_ns), self._typestore.serialize_cdr(msg, msgtype))
        self.messages_written += 1


@contextmanager
def open_bag_writer(path: Path, storage: str = "sqlite3") -> Iterator[BagWriter]:
    """A :class:`BagWriter` on a new ROS 2 bag directory ``path`` (``"sqlite3"`` or ``"mcap"``), closed on exit.

    Raises DatasetError for an unknown storage or an existing ``path``, ImportError naming rosbags
    when it is not installed.
    """
    if storage not in STORAGES:
        raise DatasetError(f"unknown bag storage {storage!r}; expected one of {', '.join(STORAGES)}")
    path = Path(path)
    if path.exists():
        raise DatasetError(f"{path}: already exists; a bag is written to a new directory")
    typestore = jazzy_typestore()
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    with Writer(path, version=ROSBAG2_VERSION, storage_plugin=plugin) as writer:
        yield BagWriter(writer, typestore)


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
    wrote_any = False
    with open_bag_writer(path, storage) as bag:
        factory = bag.factory
        for frame in frames:
            check_frame(frame)
            stamp = frame.stamp_ns
            header = header_from_ns(stamp, frame_id, factory)
            try:
                bag.write(image_topic, stamp, image_from_numpy(frame.rgb, "rgb8", header, factory))
                calibration = CameraCalibration(frame.intrinsics, *_NO_DISTORTION)
                bag.write(info_topic, stamp, camera_info_from_calibration(calibration, header, factory))
                if frame.pose is not None:
                    odom_header = header_from_ns(stamp, "odom", factory)
                    bag.write(gt_topic, stamp, odometry_from_matrix(frame.pose, odom_header, frame_id, factory=factory))
                if with_depth and frame.depth is not None:
                    bag.write(depth_topic, stamp, image_from_depth(frame.depth, "32FC1", header, factory))
            except ConversionError as err:
                raise DatasetError(f"{path}: frame {frame.name!r}: {err}") from None
            wrote_any = True
        if not wrote_any:
            raise DatasetError(f"{path}: no frames to write")
    return path


# ---------------------------------------------------------------------------------------- reading


def _one_line(err: BaseException) -> str:
    """The message of ``err`` with its line breaks and runs of spaces collapsed (for one-line errors)."""
    return " ".join(str(err).split())


def _stamp_ns(msg: Any) -> int:
    """Header stamp of a message in nanoseconds."""
    return ns_from_time(msg.header.stamp)


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


@dataclass
class SkippedMessages:
    """Messages of a bag that could not be used: how many per topic, and the first reason for each."""

    counts: Counter[str] = field(default_factory=Counter)
    first_reasons: dict[str, str] = field(default_factory=dict)

    def add(self, topic: str, reason: str) -> None:
        """Count one skipped message of ``topic``; the first reason per topic is kept and logged."""
        if topic not in self.first_reasons:
            self.first_reasons[topic] = reason
            LOG.warning("skipping bad messages on %s (first: %s)", topic, reason)
        self.counts[topic] += 1

    @property
    def total(self) -> int:
        """Messages skipped in all."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: ``"no bad messages"`` or the count per topic with its first reason."""
        if not self.counts:
            return "no bad messages"
        parts = [f"{topic}: {count} (first: {self.first_reasons[topic]})" for topic, count in self.counts.items()]
        return f"{self.total} bad message(s) skipped; " + "; ".join(parts)


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
        max_depth_wait_s: bag time an image waits for a depth message (see the module docstring).
        max_pending_images: images held at most while waiting for depth.

    Frames are named ``000000``, ``000001``, ... (usable images only) and stamped with the image
    header stamp. Bad messages are skipped and counted in :attr:`skipped` (reading the ground
    truth at construction, then each iteration).

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
        max_depth_wait_s: float = MAX_DEPTH_WAIT_S,
        max_pending_images: int = MAX_PENDING_IMAGES,
    ) -> None:
        self.path = Path(path)
        self._paths = _bag_paths(self.path)
        self._max_difference_ns = round(max_time_difference_s * 1e9)
        self._max_wait_ns = round(max_depth_wait_s * 1e9)
        self._max_pending = max(1, max_pending_images)
        self.skipped = SkippedMessages()
        with self._open() as reader:
            self._topic_types = {
                c.topic: c.msgtype for c in sorted(reader.connections, key=lambda c: c.topic)
            }
            self.image_topic = self._pick_image_topic(image_topic)
            self.depth_topic = self._pick_depth_topic(depth_topic)
            self._count = sum(c.msgcount for c in reader.connections if c.topic == self.image_topic)
            height, width = self._first_image_size(reader)
            self.info_topic: str | None = None
            if calib is not None:
                self._intrinsics = self._plausible(load_calibration(calib).intrinsics(width, height, str(calib)),
                                                   "plumb_bob", str(calib))
            else:
                self.info_topic = self._pick_info_topic(info_topic)
                info = self._first_message(reader, self.info_topic)
                self._intrinsics = self._camera_info_intrinsics(info, width, height)
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
        kinds = (IMAGE, COMPRESSED_IMAGE)
        if wanted is None:
            colour = [n for n, k in self._topic_types.items() if k in kinds and "depth" not in n.lower()]
            wanted = colour[0] if colour else None
        topic = self._pick_topic(wanted, kinds, required=True)
        assert topic is not None
        return topic

    def _pick_depth_topic(self, wanted: str | None) -> str | None:
        if wanted is None:
            depth = [n for n, k in self._topic_types.items() if k == IMAGE and "depth" in n.lower()]
            wanted = next((n for n in depth if n != self.image_topic), None)
            if wanted is None:
                return None
        return self._pick_topic(wanted, (IMAGE,), required=True)

    def _pick_info_topic(self, wanted: str | None) -> str:
        if wanted is None:
            infos = [n for n, k in self._topic_types.items() if k == CAMERA_INFO]
            if not infos:
                raise DatasetError(
                    f"{self.path}: no sensor_msgs/CameraInfo topic for the intrinsics (give a calibration); "
                    f"topics: {self._topics_text()}"
                )
            wanted = max(infos, key=lambda n: len(os.path.commonprefix([n, self.image_topic])))
        topic = self._pick_topic(wanted, (CAMERA_INFO,), required=True)
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
            raise DatasetError(f"{self.path}: cannot read bag ({_one_line(err)})") from None
        try:
            yield reader
        finally:
            reader.close()

    def _messages(self, reader: AnyReader, topic_names: tuple[str | None, ...]) -> Iterator[tuple[str, Any]]:
        """(topic, message) of ``topic_names`` in bag order; undeserializable ones skipped and counted.

        A storage that cannot be read on (corrupt database or chunk) raises DatasetError.
        """
        from rosbags.highlevel import AnyReaderError
        from rosbags.rosbag1 import ReaderError as Rosbag1Error
        from rosbags.rosbag2 import ReaderError as Rosbag2Error

        connections = [c for c in reader.connections if c.topic in topic_names]
        try:
            for connection, _, raw in reader.messages(connections=connections):
                try:
                    yield connection.topic, reader.deserialize(raw, connection.msgtype)
                except AnyReaderError as err:  # rosbags' SerdeError: e.g. a CDR length that lies
                    self.skipped.add(connection.topic, f"cannot deserialize ({_one_line(err)})")
        except (Rosbag1Error, Rosbag2Error, sqlite3.DatabaseError) as err:
            raise DatasetError(f"{self.path}: cannot read the bag on ({_one_line(err)})") from None

    def _first_message(self, reader: AnyReader, topic: str) -> Any:
        for _, msg in self._messages(reader, (topic,)):
            return msg
        raise DatasetError(f"{self.path}: topic {topic} has no usable messages")

    def _first_image_size(self, reader: AnyReader) -> tuple[int, int]:
        """(height, width) of the first usable image among the first :data:`FIRST_IMAGE_ATTEMPTS`."""
        first_error: DatasetError | None = None
        for attempt, (_, msg) in enumerate(self._messages(reader, (self.image_topic,))):
            try:
                height, width = self._decode_rgb(msg).shape[:2]
                return height, width
            except DatasetError as err:
                first_error = first_error or err
                self.skipped.add(self.image_topic, str(err))
            if attempt + 1 >= FIRST_IMAGE_ATTEMPTS:
                break
        if first_error is not None:
            raise first_error
        raise DatasetError(f"{self.path}: topic {self.image_topic} has no usable messages")

    def _plausible(self, k: Intrinsics, distortion_model: str, source: str) -> Intrinsics:
        """``k`` if :func:`check_plausible_intrinsics` accepts it, else DatasetError naming ``source``."""
        try:
            check_plausible_intrinsics(k, distortion_model)
        except CameraModelError as err:
            raise DatasetError(f"{self.path} {source}: {err}") from None
        return k

    def _read_ground_truth(self, reader: AnyReader) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        stamps: list[int] = []
        poses: list[NDArray[np.float64]] = []
        if self.gt_topic is not None:
            for topic, msg in self._messages(reader, (self.gt_topic,)):
                try:
                    stamp, pose = self._decoded(lambda m: (_stamp_ns(m), matrix_from_stamped_pose(m)), msg, topic)
                except DatasetError as err:
                    self.skipped.add(topic, str(err))
                    continue
                stamps.append(stamp)
                poses.append(pose)
        order = np.argsort(np.array(stamps, dtype=np.int64), kind="stable")
        stamp_array = np.array(stamps, dtype=np.int64)[order]
        pose_array = np.stack(poses)[order] if poses else np.zeros((0, 4, 4))
        return stamp_array, pose_array

    def _decoded(self, decode: Callable[[Any], _Decoded], msg: Any, topic: str | None) -> _Decoded:
        """``decode(msg)``, with a ConversionError raised again as a DatasetError naming the bag and topic."""
        try:
            return decode(msg)
        except ConversionError as err:
            raise DatasetError(f"{self.path} {topic}: {err}") from None

    def _decode_rgb(self, msg: Any) -> NDArray[np.uint8]:
        """(H, W, 3) uint8 RGB of an Image or CompressedImage of the image topic, in an array of its own."""
        compressed = self._topic_types[self.image_topic] == COMPRESSED_IMAGE
        rgb = self._decoded(rgb8_from_compressed if compressed else rgb8_from_image, msg, self.image_topic)
        return np.require(rgb, requirements=["C", "W", "O"])  # not a view of the message

    def _camera_info_intrinsics(self, msg: Any, width: int, height: int) -> Intrinsics:
        """Intrinsics of a CameraInfo (ROS 1 or 2); its size, else (when unset) the images'."""
        calibration = self._decoded(
            lambda info: calibration_from_camera_info(info, unset_size=(width, height)), msg, self.info_topic
        )
        k = calibration.intrinsics
        if (k.width, k.height) != (width, height):
            raise DatasetError(
                f"{self.path} {self.info_topic}: CameraInfo is for {k.width}x{k.height} but images are "
                f"{width}x{height}"
            )
        return self._plausible(k, calibration.distortion_model, str(self.info_topic))

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
        """Frames in bag order; depth and pose attached where a message matches the image stamp.

        Streams: an image is held only until a depth message later than its matching window
        arrives, until a later image is ``max_depth_wait_s`` newer, or while fewer than
        ``max_pending_images`` are held; unusable messages are skipped and counted.
        """
        with self._open() as reader:
            pending: deque[tuple[int, Any]] = deque()  # images waiting for a later depth message
            depths: deque[tuple[int, Any]] = deque(maxlen=4 * self._max_pending)
            index = 0
            for topic, msg in self._messages(reader, (self.image_topic, self.depth_topic)):
                (pending if topic == self.image_topic else depths).append((_stamp_ns(msg), msg))
                while pending and self._image_complete(pending, depths):
                    stamp_ns, image = pending.popleft()
                    oldest_needed = stamp_ns - self._max_difference_ns
                    while depths and depths[0][0] < oldest_needed:
                        depths.popleft()
                    frame = self._frame(index, stamp_ns, image, list(depths))
                    if frame is not None:
                        yield frame
                        index += 1
            while pending:
                frame = self._frame(index, *pending.popleft(), list(depths))
                if frame is not None:
                    yield frame
                    index += 1

    def _image_complete(self, pending: deque[tuple[int, Any]], depths: deque[tuple[int, Any]]) -> bool:
        """Whether the oldest pending image should go now: its depth arrived, or waiting is over."""
        oldest = pending[0][0]
        return (self.depth_topic is None
                or (bool(depths) and depths[-1][0] > oldest + self._max_difference_ns)
                or len(pending) > self._max_pending
                or pending[-1][0] > oldest + self._max_wait_ns)

    def _frame(self, index: int, stamp_ns: int, msg: Any, depths: list[tuple[int, Any]]) -> SequenceFrame | None:
        """The frame of one image message, or None (skipped and counted) when it cannot be used."""
        try:
            rgb = self._decode_rgb(msg)
        except DatasetError as err:
            self.skipped.add(self.image_topic, str(err))
            return None
        k = self._intrinsics
        if rgb.shape[:2] != (k.height, k.width):
            self.skipped.add(self.image_topic, f"{self.path} {self.image_topic}: an image is {rgb.shape[1]}x"
                                               f"{rgb.shape[0]}, the calibration is for {k.width}x{k.height}")
            return None
        query = np.array([stamp_ns], dtype=np.int64)
        depth = None
        if depths:
            depth_stamps = np.array([d[0] for d in depths], dtype=np.int64)
            order = np.argsort(depth_stamps, kind="stable")
            match = associate_nearest(query, depth_stamps[order], self._max_difference_ns)[0]
            if match >= 0:
                try:
                    depth = self._decoded(depth_from_image, depths[order[match]][1], self.depth_topic)
                except DatasetError as err:
                    self.skipped.add(str(self.depth_topic), str(err))
        pose_match = associate_nearest(query, self._gt_stamps_ns, self._max_difference_ns)[0]
        pose = self._gt_poses[pose_match].copy() if pose_match >= 0 else None
        return SequenceFrame(
            name=f"{index:06d}", stamp_ns=stamp_ns, rgb=rgb, intrinsics=k, depth=depth, pose=pose
        )
