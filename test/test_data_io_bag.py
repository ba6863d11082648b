"""ROS bag I/O with rosbags: ROS 2 write/read (sqlite3, mcap), ROS 1 reading, encodings, errors."""

import sqlite3
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from geovis_ros.data.bag import BagSequence, open_bag_writer, write_bag
from geovis_ros.data.image_io import DatasetError
from geovis_ros.data.readers import open_sequence
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import se3_exp
from geovis_ros.ros.errors import ConversionError
from geovis_ros.ros.image import depth_from_image, rgb8_from_image
from geovis_ros.ros.messages import IMAGE
from geovis_ros.ros.stamps import header_from_ns

H, W = 12, 16
K = Intrinsics(20.0, 21.0, 7.5, 5.5, W, H)


def make_frames(count: int = 3) -> list[SequenceFrame]:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        depth = rng.uniform(0.5, 8.0, (H, W)).astype(np.float32)
        depth[1, i % W] = np.nan
        frames.append(SequenceFrame(
            name=f"{i:06d}", stamp_ns=1_700_000_000_000_000_000 + i * 50_000_000,
            rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8), intrinsics=K,
            depth=depth, pose=se3_exp(rng.normal(0, 0.5, 6)),
        ))
    return frames


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_ros2_bag_round_trip(tmp_path, storage):
    frames = make_frames()
    frames[1].pose = None
    bag = write_bag(tmp_path / "bag", iter(frames), storage=storage, with_depth=True)
    assert (bag / "metadata.yaml").is_file()
    assert list(bag.glob("*.mcap" if storage == "mcap" else "*.db3"))
    sequence = BagSequence(bag)
    assert sequence.image_topic == "/camera/image_raw" and sequence.info_topic == "/camera/camera_info"
    assert sequence.gt_topic == "/ground_truth/odom" and sequence.depth_topic == "/camera/depth/image"
    assert len(sequence) == 3 and sequence.intrinsics == K
    read = list(sequence)
    assert len(read) == 3
    for written, got in zip(frames, read, strict=True):
        assert got.stamp_ns == written.stamp_ns
        np.testing.assert_array_equal(got.rgb, written.rgb)
        np.testing.assert_array_equal(got.depth, written.depth)
        if written.pose is None:
            assert got.pose is None
        else:
            np.testing.assert_allclose(got.pose, written.pose, atol=1e-12)


def test_bag_file_inside_directory_and_open_sequence(tmp_path):
    bag = write_bag(tmp_path / "bag", make_frames(2), storage="mcap")
    (storage_file,) = bag.glob("*.mcap")
    for path in (bag, storage_file, bag / "metadata.yaml"):
        sequence = open_sequence(path)
        assert isinstance(sequence, BagSequence) and len(sequence) == 2
    sequence = BagSequence(bag)
    assert sequence.depth_topic is None and [f.depth for f in sequence] == [None, None]


def test_write_bag_refuses_existing_path_and_unknown_storage(tmp_path):
    with pytest.raises(DatasetError, match="unknown bag storage 'zip'"):
        write_bag(tmp_path / "a", make_frames(1), storage="zip")
    (tmp_path / "b").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        write_bag(tmp_path / "b", make_frames(1))


def test_bag_without_camera_info_lists_topics(tmp_path):
    bag = write_bag(tmp_path / "bag", make_frames(1), info_topic="/camera/camera_info")
    with pytest.raises(DatasetError, match=r"topic '/nothing' is not one of sensor_msgs/msg/CameraInfo.*"
                                           r"/camera/image_raw \(sensor_msgs/msg/Image\)"):
        BagSequence(bag, info_topic="/nothing")
    assert BagSequence(bag, calib="30,30,7.5,5.5").intrinsics.fx == 30


def write_ros1_bag(path: Path, with_info: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A ROS 1 bag: mono8 and compressed PNG colour images, CameraInfo (K), PoseStamped ground truth."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    t = store.types
    rng = np.random.default_rng(7)
    greys, colours = [], []
    poses = []
    with Writer(path) as writer:
        conns = {
            "mono": writer.add_connection("/cam/mono", "sensor_msgs/msg/Image", typestore=store),
            "png": writer.add_connection("/cam/color/compressed", "sensor_msgs/msg/CompressedImage",
                                         typestore=store),
            "pose": writer.add_connection("/mocap/pose", "geometry_msgs/msg/PoseStamped", typestore=store),
        }
        if with_info:
            conns["info"] = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for i in range(2):
            stamp = 1_000_000_000 + i * 100_000_000
            header = t["std_msgs/msg/Header"](
                seq=i, stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                frame_id="cam",
            )
            grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
            padded = np.zeros((H, W + 4), np.uint8)  # step larger than the row: must be honoured
            padded[:, :W] = grey
            mono = t["sensor_msgs/msg/Image"](header=header, height=H, width=W, encoding="mono8",
                                              is_bigendian=0, step=W + 4, data=padded.reshape(-1))
            colour = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            png = cv2.imencode(".png", cv2.cvtColor(colour, cv2.COLOR_RGB2BGR))[1].reshape(-1)
            compressed = t["sensor_msgs/msg/CompressedImage"](header=header, format="png", data=png)
            roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False)
            info = t["sensor_msgs/msg/CameraInfo"](
                header=header, height=H, width=W, distortion_model="plumb_bob", D=np.zeros(5),
                K=K.matrix.reshape(-1), R=np.eye(3).reshape(-1), P=np.zeros(12), binning_x=0, binning_y=0,
                roi=roi,
            )
            x = 0.1 * i
            pose = t["geometry_msgs/msg/PoseStamped"](header=header, pose=t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=x, y=0.0, z=0.0),
                orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
            for key, msg, kind in [("mono", mono, "sensor_msgs/msg/Image"),
                                   ("info", info, "sensor_msgs/msg/CameraInfo"),
                                   ("png", compressed, "sensor_msgs/msg/CompressedImage"),
                                   ("pose", pose, "geometry_msgs/msg/PoseStamped")]:
                if key in conns:
                    writer.write(conns[key], stamp, store.serialize_ros1(msg, kind))
            greys.append(grey)
            colours.append(colour)
            poses.append(x)
    return greys, colours


def test_ros1_bag_mono_and_compressed(tmp_path):
    path = tmp_path / "old.bag"
    greys, colours = write_ros1_bag(path)
    compressed = open_sequence(path, image_topic="/cam/color/compressed")
    assert compressed.intrinsics == K and compressed.info_topic == "/cam/camera_info"
    frames = list(compressed)
    for frame, colour in zip(frames, colours, strict=True):
        np.testing.assert_array_equal(frame.rgb, colour)
    assert frames[1].pose[0, 3] == pytest.approx(0.1) and frames[1].stamp_ns == 1_100_000_000
    mono = BagSequence(path, image_topic="/cam/mono")
    for frame, grey in zip(mono, greys, strict=True):
        np.testing.assert_array_equal(frame.rgb, np.repeat(grey[..., None], 3, 2))
    assert BagSequence(path).image_topic == "/cam/color/compressed"  # first image topic by name


def raw_image(encoding: str, pixels: np.ndarray, bigendian: bool = False) -> SimpleNamespace:
    data = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<")).tobytes()
    return SimpleNamespace(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                           is_bigendian=int(bigendian), step=len(data) // pixels.shape[0], data=data)


def test_image_decoders_by_encoding():
    """The bag reader's decoders (the ros/ codecs) on duck-typed messages, as rosbags gives them."""
    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb8_from_image(raw_image("rgb8", rgb)), rgb)
    np.testing.assert_array_equal(rgb8_from_image(raw_image("bgr8", rgb[..., ::-1].copy())), rgb)
    np.testing.assert_array_equal(rgb8_from_image(raw_image("8UC3", rgb[..., ::-1].copy())), rgb)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(rgb8_from_image(raw_image("rgba8", rgba)), rgb)
    mono16 = rng.integers(0, 65536, (H, W)).astype(np.uint16)
    decoded = rgb8_from_image(raw_image("mono16", mono16, bigendian=True))
    np.testing.assert_array_equal(decoded[..., 1], (mono16 >> 8).astype(np.uint8))
    depth_mm = np.array([[0, 1500]], np.uint16)
    for encoding in ("16UC1", "mono16"):
        depth = depth_from_image(raw_image(encoding, depth_mm))
        assert np.isnan(depth[0, 0]) and depth[0, 1] == pytest.approx(1.5)
    with pytest.raises(ConversionError, match="encoding 'yuv422' is not a camera image encoding"):
        rgb8_from_image(raw_image("yuv422", rgb))
    short = raw_image("rgb8", rgb)
    short.data = short.data[:-5]
    with pytest.raises(ConversionError, match="needs height \\* step"):
        rgb8_from_image(short)


def test_ros1_bag_without_camera_info_names_the_topics(tmp_path):
    write_ros1_bag(tmp_path / "noinfo.bag", with_info=False)
    with pytest.raises(DatasetError, match=r"no sensor_msgs/CameraInfo topic.*topics: /cam/color/compressed "
                                           r"\(sensor_msgs/msg/CompressedImage\), /cam/mono"):
        BagSequence(tmp_path / "noinfo.bag")
    assert BagSequence(tmp_path / "noinfo.bag", calib=K).intrinsics == K


def test_missing_rosbags_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rosbags.typesys", None)  # makes the import fail
    with pytest.raises(ImportError, match="needs the 'rosbags' package"):
        write_bag(tmp_path / "bag", make_frames(1))


def test_undecodable_image_is_a_dataset_error_naming_bag_and_topic(tmp_path):
    with open_bag_writer(tmp_path / "bag") as bag:
        factory = bag.factory
        bag.write("/cam/image", 1, factory.new(IMAGE, header=header_from_ns(1, "cam", factory), height=H, width=W,
                                               encoding="yuv422", step=2 * W, data=np.zeros(2 * W * H, np.uint8)))
    with pytest.raises(DatasetError, match=r"bag /cam/image: Image.encoding 'yuv422' is not a camera image encoding"):
        BagSequence(tmp_path / "bag", calib=K)


# -- hostile bags ----------------------------------------------------------------------------------


def rewrite_messages(bag: Path, topic: str, indices: list[int], rewrite) -> None:
    """Replace the raw CDR of messages ``indices`` (in bag order) of ``topic`` by ``rewrite(raw)``."""
    (database,) = bag.glob("*.db3")
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT m.id, m.data FROM messages m JOIN topics t ON m.topic_id = t.id WHERE t.name = ? "
            "ORDER BY m.timestamp", (topic,)).fetchall()
        for index in indices:
            connection.execute("UPDATE messages SET data = ? WHERE id = ?", (rewrite(rows[index][1]), rows[index][0]))


def lie_about_frame_id_length(raw: bytes) -> bytes:
    """CDR: 4-byte encapsulation, stamp (8 bytes), then the frame_id length: make it 4 GB."""
    return raw[:12] + struct.pack("<I", 0xFFFFFFF0) + raw[16:]


def lie_about_data_length(raw: bytes) -> bytes:
    """The pixel sequence's length (just before the pixels) one short: deserializes, cannot be an image."""
    offset = len(raw) - H * W * 3 - 4
    return raw[:offset] + struct.pack("<I", H * W * 3 - 1) + raw[offset + 4:-1]


def test_lying_cdr_lengths_are_skipped_and_counted(tmp_path):
    frames = make_frames(5)
    bag = write_bag(tmp_path / "bag", frames, with_depth=True)
    rewrite_messages(bag, "/camera/image_raw", [0, 3], lie_about_frame_id_length)
    rewrite_messages(bag, "/camera/image_raw", [2], lie_about_data_length)
    rewrite_messages(bag, "/camera/depth/image", [1], lie_about_frame_id_length)
    rewrite_messages(bag, "/ground_truth/odom", [4], lambda raw: raw[:20])
    sequence = BagSequence(bag)  # the first image lies: the size comes from the next usable one
    read = list(sequence)
    assert [f.stamp_ns for f in read] == [frames[1].stamp_ns, frames[4].stamp_ns]
    assert read[0].depth is None and read[1].depth is not None and read[1].pose is None
    skipped = sequence.skipped
    assert skipped.counts == {"/camera/image_raw": 4, "/camera/depth/image": 1, "/ground_truth/odom": 1}
    assert skipped.total == 6  # image 0 is counted twice: once for the size, once when iterating
    assert "Invalid string length 4294967280" in skipped.first_reasons["/camera/image_raw"]
    assert skipped.summary().startswith("6 bad message(s) skipped; ")


def test_bag_with_no_usable_image_is_refused_with_the_first_reason(tmp_path):
    bag = write_bag(tmp_path / "bag", make_frames(2))
    rewrite_messages(bag, "/camera/image_raw", [0, 1], lie_about_frame_id_length)
    with pytest.raises(DatasetError, match="topic /camera/image_raw has no usable messages"):
        BagSequence(bag)
    rewrite_messages(bag, "/camera/image_raw", [0, 1], lambda raw: raw)
    bag2 = write_bag(tmp_path / "bag2", make_frames(2))
    rewrite_messages(bag2, "/camera/image_raw", [0, 1], lie_about_data_length)
    with pytest.raises(DatasetError, match=r"/camera/image_raw: .*needs height \* step"):
        BagSequence(bag2)


def test_implausible_camera_info_is_refused_in_one_line(tmp_path):
    frames = make_frames(1)
    frames[0].intrinsics = Intrinsics(1e-6, 1e-6, 7.5, 5.5, W, H)
    bag = write_bag(tmp_path / "bag", frames)
    with pytest.raises(DatasetError, match=r"/camera/camera_info: implausible intrinsics: horizontal field of view"):
        BagSequence(bag)


class CountingBagSequence(BagSequence):
    """A BagSequence that counts the messages it has read from the bag so far."""

    messages_read = 0

    def _messages(self, reader, topic_names):
        for item in super()._messages(reader, topic_names):
            self.messages_read += 1
            yield item


def test_a_depth_topic_that_stops_is_waited_for_boundedly(tmp_path):
    frames = make_frames(40)  # 20 Hz
    for frame in frames[3:]:
        frame.depth = None  # the depth camera died after three frames
    bag = write_bag(tmp_path / "bag", frames, with_depth=True)

    def lags(sequence: CountingBagSequence) -> list[int]:
        """Per frame: messages read beyond its own image when it was yielded."""
        sequence.messages_read = 0
        read = [sequence.messages_read for _ in sequence]
        own = [2 * (i + 1) if i < 3 else 6 + (i - 2) for i in range(len(frames))]  # image + depth, then image
        return [r - o for r, o in zip(read, own, strict=True)]

    assert [f.depth is not None for f in BagSequence(bag)] == [True] * 3 + [False] * 37
    # Without depth, frame i goes as soon as an image 0.25 s (5 frames) newer arrives, not at the end of the bag.
    assert max(lags(CountingBagSequence(bag, max_depth_wait_s=0.25))[:-6]) == 6
    # However long the wait, at most max_pending_images images are held.
    assert max(lags(CountingBagSequence(bag, max_depth_wait_s=100.0, max_pending_images=4))[:-4]) == 4


def test_unreadable_metadata_is_one_line(tmp_path):
    bag = write_bag(tmp_path / "bag", make_frames(1))
    (bag / "metadata.yaml").write_text("{{{ not yaml")
    with pytest.raises(DatasetError, match="cannot read bag") as raised:
        BagSequence(bag)
    assert "\n" not in str(raised.value)


def test_odometry_over_a_bag_reports_its_skipped_messages(tmp_path, capsys):
    from geovis_ros.cli import main

    frames = make_frames(5)
    bag = write_bag(tmp_path / "bag", frames, with_depth=True)
    rewrite_messages(bag, "/camera/image_raw", [2], lie_about_data_length)
    rewrite_messages(bag, "/ground_truth/odom", range(5), lambda raw: raw[:20])  # nothing to score against
    assert main(["odometry", str(bag), "--out", str(tmp_path / "t.txt"), "--depth-source", "gt"]) == 0
    out = capsys.readouterr().out
    assert "frames       4 (" in out  # the bad image is skipped, the other four are tracked
    assert "6 bad message(s) skipped; " in out and "/camera/image_raw: 1 (" in out and "/ground_truth/odom: 5 (" in out
