"""TUM RGB-D folders: a streaming writer and a reader (ours and the real TUM benchmark's).

Folder layout (TUM RGB-D, plus geovis additions marked *)::

    rgb/<name>.png           8-bit RGB
    depth/<name>.png         16-bit depth * depth_scale, 0 = invalid (ours: mm; real TUM: 1/5000 m)
    flow/<name>.flo        * Middlebury forward flow from frame <name> to the next frame, pixels
    flow/<name>_valid.png  * 8-bit mask of that flow, 255 = exact (visible in both frames), 0 = not
    rgb.txt, depth.txt       '#' comment lines, then "timestamp filename" per frame (seconds)
    groundtruth.txt          "t tx ty tz qx qy qz qw": T_world_camera, OpenCV optical frame
    calibration.yaml       * fx fy cx cy width height depth_scale (see geovis_ros.data.calibration)

The reader associates depth and ground truth to each RGB frame by the nearest timestamp within
20 ms, like the TUM benchmark tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geovis_ros.data.calibration import (
    Calibration,
    CalibrationSource,
    find_calibration_file,
    load_calibration,
    write_calibration,
)
from geovis_ros.data.frame_source import TrajectoryFrameSource, associate_nearest, check_frame, read_rgb_sized
from geovis_ros.data.image_io import (
    DatasetError,
    read_depth_png,
    read_flo,
    read_mask_png,
    read_rgb,
    write_depth_png,
    write_flo,
    write_mask_png,
    write_rgb,
)
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.data.trajectory_io import TrajectoryFormatError, read_trajectory, write_trajectory
from geovis_ros.geometry.camera import Intrinsics

WRITTEN_DEPTH_SCALE = 1000.0
"""Depth PNG units of the folders this module writes: millimetres."""
TUM_DEPTH_SCALE = 5000.0
"""Depth PNG units of the real TUM RGB-D benchmark: 1/5000 m."""
TUM_FR1_CALIBRATION = Calibration(517.3, 516.5, 318.6, 255.3, 640, 480)
"""Freiburg 1 (fr1) colour camera of the TUM RGB-D benchmark, used when a folder has no calibration."""
MAX_TIME_DIFFERENCE_S = 0.02


def format_stamp(stamp_ns: int) -> str:
    """Seconds with nine decimals, exact for any integer nanosecond stamp >= 0."""
    if stamp_ns < 0:
        raise DatasetError(f"timestamp must be >= 0, got {stamp_ns} ns")
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


def parse_stamp_ns(text: str) -> int:
    """Integer nanoseconds from decimal seconds text (exact up to 9 decimals); ValueError if not a number."""
    whole, _, fraction = text.strip().partition(".")
    if whole.lstrip("+-").isdigit() and (fraction == "" or fraction.isdigit()) and len(fraction) <= 9:
        sign = -1 if whole.startswith("-") else 1
        return int(whole) * 1_000_000_000 + sign * int(fraction.ljust(9, "0"))
    return round(float(text) * 1e9)


# ----------------------------------------------------------------------------------------- writer


def _list_header(title: str) -> str:
    return f"# {title}\n# written by geovis_ros\n# timestamp filename\n"


def write_tum_sequence(out_dir: Path, frames: Iterable[SequenceFrame]) -> Path:
    """Write frames as a TUM RGB-D folder (layout in the module docstring); returns ``out_dir``.

    Frames are written as they arrive (never held in memory together). All frames must share one
    set of intrinsics. Depth is stored in millimetres (``depth_scale: 1000`` in calibration.yaml);
    ``groundtruth.txt`` lists the frames that have a pose, ``flow/`` the frames that have flow.
    """
    out_dir = Path(out_dir)
    for sub in ("rgb", "depth", "flow"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    pose_stamps_s: list[float] = []
    poses: list[NDArray[np.float64]] = []
    intrinsics: Intrinsics | None = None
    names: set[str] = set()
    with (out_dir / "rgb.txt").open("w") as rgb_list, (out_dir / "depth.txt").open("w") as depth_list:
        rgb_list.write(_list_header("color images"))
        depth_list.write(_list_header("depth maps"))
        for frame in frames:
            check_frame(frame)
            if intrinsics is None:
                intrinsics = frame.intrinsics
                write_calibration(out_dir / "calibration.yaml", intrinsics, WRITTEN_DEPTH_SCALE)
            elif frame.intrinsics != intrinsics:
                raise DatasetError(
                    f"frame {frame.name!r}: intrinsics {frame.intrinsics} differ from the first frame's "
                    f"{intrinsics}; a TUM folder holds one camera"
                )
            if frame.name in names:
                raise DatasetError(f"frame name {frame.name!r} is used twice; names must be unique")
            names.add(frame.name)
            stamp = format_stamp(frame.stamp_ns)
            write_rgb(out_dir / "rgb" / f"{frame.name}.png", frame.rgb)
            rgb_list.write(f"{stamp} rgb/{frame.name}.png\n")
            if frame.depth is not None:
                write_depth_png(out_dir / "depth" / f"{frame.name}.png", frame.depth, WRITTEN_DEPTH_SCALE)
                depth_list.write(f"{stamp} depth/{frame.name}.png\n")
            if frame.flow is not None:
                write_flo(out_dir / "flow" / f"{frame.name}.flo", frame.flow)
                if frame.flow_valid is not None:
                    write_mask_png(out_dir / "flow" / f"{frame.name}_valid.png", frame.flow_valid)
            if frame.pose is not None:
                pose_stamps_s.append(frame.stamp_ns * 1e-9)
                poses.append(np.asarray(frame.pose, dtype=np.float64))
    if intrinsics is None:
        raise DatasetError(f"{out_dir}: no frames to write")
    if poses:
        write_trajectory(out_dir / "groundtruth.txt", np.asarray(pose_stamps_s), np.stack(poses), "tum")
    return out_dir


# ----------------------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class _ListEntry:
    stamp_ns: int
    path: Path


def _read_file_list(list_path: Path) -> list[_ListEntry]:
    """Entries of a TUM ``rgb.txt`` / ``depth.txt``; errors name the file and line."""
    entries: list[_ListEntry] = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 2:
            raise DatasetError(f"{list_path}:{number}: expected 'timestamp filename', got {text[:80]!r}")
        try:
            stamp_ns = parse_stamp_ns(fields[0])
        except ValueError:
            raise DatasetError(f"{list_path}:{number}: timestamp {fields[0]!r} is not a number") from None
        file_path = list_path.parent / fields[1]
        if not file_path.is_file():
            raise DatasetError(f"{list_path}:{number}: {fields[1]} does not exist")
        entries.append(_ListEntry(stamp_ns, file_path))
    return entries


def _sorted_entries(list_path: Path) -> tuple[list[_ListEntry], NDArray[np.int64]]:
    entries = sorted(_read_file_list(list_path), key=lambda e: e.stamp_ns)
    return entries, np.array([e.stamp_ns for e in entries], dtype=np.int64)


class TumSequence(TrajectoryFrameSource):
    """Reader of a TUM RGB-D folder (ours or the benchmark's): one frame per ``rgb.txt`` line.

    Args:
        path: the folder holding ``rgb.txt``.
        calib: calibration file, ``"fx,fy,cx,cy"`` or Intrinsics; default: the folder's
            ``calibration.yaml`` (or camera_info YAML), else the TUM fr1 intrinsics.
        depth_scale: depth PNG value per metre; default: calibration.yaml's ``depth_scale``, else
            5000 (real TUM).
        max_time_difference_s: association window for depth and ground truth.

    Frames carry depth, pose (T_world_camera) and flow where the folder has them.

    """

    def __init__(
        self,
        path: Path,
        calib: CalibrationSource | None = None,
        depth_scale: float | None = None,
        max_time_difference_s: float = MAX_TIME_DIFFERENCE_S,
    ) -> None:
        self.path = Path(path)
        rgb_list = self.path / "rgb.txt"
        if not rgb_list.is_file():
            raise DatasetError(f"{self.path}: not a TUM RGB-D folder (no rgb.txt)")
        self._rgb, rgb_stamps = _sorted_entries(rgb_list)
        if not self._rgb:
            raise DatasetError(f"{rgb_list}: lists no images")
        max_difference_ns = round(max_time_difference_s * 1e9)

        self._depth: list[_ListEntry] = []
        self._depth_index = np.full(len(self._rgb), -1, dtype=np.intp)
        if (self.path / "depth.txt").is_file():
            self._depth, depth_stamps = _sorted_entries(self.path / "depth.txt")
            self._depth_index = associate_nearest(rgb_stamps, depth_stamps, max_difference_ns)

        self._pose_index = np.full(len(self._rgb), -1, dtype=np.intp)
        gt_path = self.path / "groundtruth.txt"
        if gt_path.is_file():
            try:
                gt_stamps_s, gt_poses = read_trajectory(gt_path, "tum")
            except TrajectoryFormatError as err:
                raise DatasetError(str(err)) from err
            order = np.argsort(gt_stamps_s, kind="stable")
            self._poses = gt_poses[order]
            gt_stamps = np.round(gt_stamps_s[order] * 1e9).astype(np.int64)
            self._pose_index = associate_nearest(rgb_stamps, gt_stamps, max_difference_ns)

        calibration_file = find_calibration_file(self.path)
        if calib is not None:
            calibration, source = load_calibration(calib), str(calib)
        elif calibration_file is not None:
            calibration, source = load_calibration(calibration_file), str(calibration_file)
        else:
            calibration, source = TUM_FR1_CALIBRATION, f"{self.path} (no calibration file: TUM fr1 default)"
        height, width = read_rgb(self._rgb[0].path).shape[:2]
        self._intrinsics = calibration.intrinsics(width, height, source)
        file_scale = load_calibration(calibration_file).depth_scale if calibration_file else None
        self.depth_scale = float(depth_scale or file_scale or TUM_DEPTH_SCALE)

    def __len__(self) -> int:
        """Number of RGB frames."""
        return len(self._rgb)

    def load(self, index: int) -> SequenceFrame:
        """Frame ``index`` with whatever depth, pose and flow are associated to it."""
        entry = self._rgb[index]
        rgb = read_rgb_sized(entry.path, self._intrinsics)
        depth_index = self._depth_index[index]
        depth = None if depth_index < 0 else read_depth_png(self._depth[depth_index].path, self.depth_scale)
        pose_index = self._pose_index[index]
        pose = None if pose_index < 0 or self._poses is None else self._poses[pose_index].copy()
        name = entry.path.stem
        flow, flow_valid = None, None
        flow_path = self.path / "flow" / f"{name}.flo"
        if flow_path.is_file():
            flow = read_flo(flow_path)
            valid_path = self.path / "flow" / f"{name}_valid.png"
            flow_valid = read_mask_png(valid_path) if valid_path.is_file() else None
        return SequenceFrame(
            name=name, stamp_ns=entry.stamp_ns, rgb=rgb, intrinsics=self._intrinsics,
            depth=depth, pose=pose, flow=flow, flow_valid=flow_valid,
        )
