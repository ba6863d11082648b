"""Camera calibration files: geovis ``calibration.yaml``, ROS camera_info YAML and ``fx,fy,cx,cy`` text.

geovis ``calibration.yaml`` (written by :func:`write_calibration`)::

    fx: 320.0          # focal lengths and principal point, pixels
    fy: 320.0
    cx: 159.5
    cy: 119.5
    width: 320         # image size, pixels
    height: 240
    depth_scale: 1000.0  # depth PNG value per metre (optional)

ROS camera_info YAML (camera_calibration / camera_info_manager): ``image_width``,
``image_height`` and ``camera_matrix: {rows: 3, cols: 3, data: [9 values]}``. Distortion is
ignored: images are assumed rectified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from geovis_ros.data.image_io import DatasetError
from geovis_ros.geometry.camera import CameraModelError, Intrinsics

CALIBRATION_FILE_NAMES = ("calibration.yaml", "calibration.yml", "camera_info.yaml", "camera_info.yml")

CalibrationSource = Path | str | Intrinsics
"""A calibration file path, a ``"fx,fy,cx,cy"`` string, or ready intrinsics."""


@dataclass(frozen=True)
class Calibration:
    """Intrinsics from a calibration file; width/height are None when the file does not give them."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None
    depth_scale: float | None = None

    def intrinsics(self, width: int, height: int, source: str) -> Intrinsics:
        """Intrinsics for images of ``width`` x ``height``; a size clash raises DatasetError naming ``source``."""
        if (self.width, self.height) not in ((None, None), (width, height)):
            raise DatasetError(
                f"{source}: calibration is for {self.width}x{self.height} images but the images are "
                f"{width}x{height}"
            )
        try:
            return Intrinsics(float(self.fx), float(self.fy), float(self.cx), float(self.cy), int(width), int(height))
        except CameraModelError as err:
            raise DatasetError(f"{source}: {err}") from None


def write_calibration(path: Path, intrinsics: Intrinsics, depth_scale: float | None = None) -> None:
    """Write a geovis ``calibration.yaml`` (see module docstring)."""
    content: dict[str, float | int] = {
        "fx": float(intrinsics.fx),
        "fy": float(intrinsics.fy),
        "cx": float(intrinsics.cx),
        "cy": float(intrinsics.cy),
        "width": int(intrinsics.width),
        "height": int(intrinsics.height),
    }
    if depth_scale is not None:
        content["depth_scale"] = float(depth_scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# geovis_ros pinhole calibration: fx fy cx cy in pixels, image size in pixels,\n"
    header += "# depth_scale = depth PNG value per metre.\n"
    path.write_text(header + yaml.safe_dump(content, sort_keys=False))


def _number(path: Path, content: dict[str, Any], key: str) -> float:
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DatasetError(f"{path}: key {key!r} must be a finite number, got {value!r}")
    return float(value)


def _size(path: Path, content: dict[str, Any], key: str) -> int:
    value = _number(path, content, key)
    if value != int(value):
        raise DatasetError(f"{path}: key {key!r} must be a whole number of pixels, got {value!r}")
    return int(value)


def read_calibration(path: Path) -> Calibration:
    """Read a geovis ``calibration.yaml`` or a ROS camera_info YAML."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: calibration file does not exist")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DatasetError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a YAML mapping with fx/fy/cx/cy or camera_matrix")
    if "camera_matrix" in content:
        matrix = content["camera_matrix"]
        data = matrix.get("data") if isinstance(matrix, dict) else None
        if not isinstance(data, list) or len(data) != 9:
            raise DatasetError(f"{path}: camera_matrix/data must list 9 numbers, got {data!r}")
        k = {f"k{i}": v for i, v in enumerate(data)}
        return Calibration(
            _number(path, k, "k0"), _number(path, k, "k4"), _number(path, k, "k2"), _number(path, k, "k5"),
            _size(path, content, "image_width"), _size(path, content, "image_height"),
        )
    missing = [key for key in ("fx", "fy", "cx", "cy") if key not in content]
    if missing:
        raise DatasetError(
            f"{path}: missing {', '.join(missing)} (expected geovis fx/fy/cx/cy keys or ROS camera_matrix)"
        )
    size = [_size(path, content, key) if key in content else None for key in ("width", "height")]
    depth_scale = _number(path, content, "depth_scale") if "depth_scale" in content else None
    return Calibration(
        _number(path, content, "fx"), _number(path, content, "fy"),
        _number(path, content, "cx"), _number(path, content, "cy"),
        size[0], size[1], depth_scale,
    )


def parse_k_string(text: str) -> Calibration:
    """Calibration from ``"fx,fy,cx,cy"`` (pixels), as given on a command line."""
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise DatasetError(f"intrinsics {text!r}: expected four comma-separated numbers fx,fy,cx,cy")
    return Calibration(values[0], values[1], values[2], values[3])


def find_calibration_file(folder: Path) -> Path | None:
    """The first of :data:`CALIBRATION_FILE_NAMES` present in ``folder``, else None."""
    for name in CALIBRATION_FILE_NAMES:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def load_calibration(calib: CalibrationSource) -> Calibration:
    """Calibration from a file path, a ``"fx,fy,cx,cy"`` string, or Intrinsics."""
    if isinstance(calib, Intrinsics):
        return Calibration(calib.fx, calib.fy, calib.cx, calib.cy, calib.width, calib.height)
    if isinstance(calib, str) and "," in calib and not Path(calib).exists():
        return parse_k_string(calib)
    return read_calibration(Path(calib))
