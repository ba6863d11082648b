"""7-Scenes-style RGB-D folders (Microsoft 7-Scenes, and TSDF-fusion demos that use its layout).

Layout (one folder per sequence)::

    frame-000000.color.png|.jpg   colour image
    frame-000000.depth.png        16-bit depth in millimetres, 0 and 65535 = invalid
    frame-000000.pose.txt         4x4 camera-to-world matrix T_world_camera (4 lines of 4 numbers)
    camera-intrinsics.txt         optional 3x3 K (3 lines of 3 numbers); default fx=fy=585, (320, 240)

The folder has no timestamps: frame k is stamped k / 30 s (the Kinect rate). Poses with non-finite
entries (7-Scenes marks tracking failures so) are treated as missing. In 7-Scenes the depth map
is not registered to the colour image: use it for statistics at moderate tolerance.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geovis_ros.data.calibration import Calibration, CalibrationSource, load_calibration
from geovis_ros.data.frame_source import IndexedFrameSource, read_rgb_sized
from geovis_ros.data.image_io import DatasetError, read_depth_png, read_rgb
from geovis_ros.data.sequence import SequenceFrame

SEVEN_SCENES_CALIBRATION = Calibration(585.0, 585.0, 320.0, 240.0, 640, 480)
SEVEN_SCENES_FRAME_RATE_HZ = 30.0
COLOR_FILE = re.compile(r"^frame-(\d+)\.color\.(png|jpg|jpeg)$", re.IGNORECASE)
INTRINSICS_FILE = "camera-intrinsics.txt"


def read_matrix_text(path: Path, rows: int, cols: int) -> NDArray[np.float64]:
    """A (rows, cols) float64 matrix from a text file of whitespace-separated numbers, one row per line.

    Non-finite values are returned as they are; errors name the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file does not exist")
    values: list[list[float]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        try:
            row = [float(f) for f in fields]
        except ValueError:
            raise DatasetError(f"{path}:{number}: not a number in {text[:80]!r}") from None
        if len(row) != cols:
            raise DatasetError(f"{path}:{number}: expected {cols} numbers, got {len(row)}")
        values.append(row)
    if len(values) != rows:
        raise DatasetError(f"{path}: expected {rows} rows of {cols} numbers, got {len(values)} rows")
    return np.array(values, dtype=np.float64)


class SevenScenesSequence(IndexedFrameSource):
    """Reader of a 7-Scenes-style folder (layout in the module docstring).

    Args:
        path: the folder holding ``frame-XXXXXX.*`` files.
        calib: override for the intrinsics (file, ``"fx,fy,cx,cy"`` or Intrinsics); default
            ``camera-intrinsics.txt``, else the 7-Scenes nominal K.

    """

    def __init__(self, path: Path, calib: CalibrationSource | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: folder does not exist")
        indexed = [
            (int(match.group(1)), p)
            for p in self.path.iterdir()
            if (match := COLOR_FILE.match(p.name)) is not None
        ]
        if not indexed:
            raise DatasetError(f"{self.path}: not a 7-Scenes folder (no frame-XXXXXX.color.png/.jpg)")
        indexed.sort()
        self._indices = [index for index, _ in indexed]
        self._colors = [p for _, p in indexed]
        height, width = read_rgb(self._colors[0]).shape[:2]
        intrinsics_path = self.path / INTRINSICS_FILE
        if calib is not None:
            calibration, source = load_calibration(calib), str(calib)
        elif intrinsics_path.is_file():
            k = read_matrix_text(intrinsics_path, 3, 3)
            calibration, source = Calibration(k[0, 0], k[1, 1], k[0, 2], k[1, 2]), str(intrinsics_path)
        else:
            calibration, source = SEVEN_SCENES_CALIBRATION, f"{self.path} (7-Scenes default intrinsics)"
        self._intrinsics = calibration.intrinsics(width, height, source)

    def __len__(self) -> int:
        """Number of colour frames."""
        return len(self._colors)

    def _sibling(self, index: int, suffix: str) -> Path:
        return self.path / f"frame-{self._indices[index]:06d}.{suffix}"

    def load(self, index: int) -> SequenceFrame:
        """Frame ``index`` with depth (metres) and pose T_world_camera where present."""
        rgb = read_rgb_sized(self._colors[index], self._intrinsics)
        depth_path = self._sibling(index, "depth.png")
        depth = read_depth_png(depth_path, 1000.0) if depth_path.is_file() else None
        if depth is not None and depth.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{depth_path}: depth is {depth.shape[1]}x{depth.shape[0]}, colour {rgb.shape[1]}x{rgb.shape[0]}"
            )
        pose_path = self._sibling(index, "pose.txt")
        pose = read_matrix_text(pose_path, 4, 4) if pose_path.is_file() else None
        if pose is not None and not np.all(np.isfinite(pose)):
            pose = None
        return SequenceFrame(
            name=self._colors[index].name.split(".")[0],
            stamp_ns=round(self._indices[index] * 1e9 / SEVEN_SCENES_FRAME_RATE_HZ),
            rgb=rgb, intrinsics=self._intrinsics, depth=depth, pose=pose,
        )
