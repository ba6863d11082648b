"""Plain image folders and video files, with intrinsics from a calibration file or ``fx,fy,cx,cy``.

Neither carries timestamps: frame k is stamped k / fps. Calibration is looked for, when not given,
as ``calibration.yaml`` / ``camera_info.yaml`` in the image folder, or next to a video as
``<video stem>.yaml`` or ``calibration.yaml`` / ``camera_info.yaml`` (formats in
:mod:`geovis_ros.data.calibration`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
from numpy.typing import NDArray

from geovis_ros.data.calibration import CalibrationSource, find_calibration_file, load_calibration
from geovis_ros.data.frame_source import IndexedFrameSource, read_rgb_sized
from geovis_ros.data.image_io import DatasetError, list_images, read_rgb, to_rgb8
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.geometry.camera import Intrinsics

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_FPS = 30.0


def _intrinsics_for(
    calib: CalibrationSource | None, candidates: list[Path | None], width: int, height: int, what: Path
) -> Intrinsics:
    """Intrinsics from ``calib``, else the first existing candidate file; DatasetError when there is none."""
    if calib is None:
        calib = next((c for c in candidates if c is not None and c.is_file()), None)
    if calib is None:
        raise DatasetError(
            f"{what}: no calibration found; give one (calibration.yaml, a ROS camera_info YAML, "
            f"or 'fx,fy,cx,cy')"
        )
    return load_calibration(calib).intrinsics(width, height, str(calib))


def _frame_stamp_ns(index: int, fps: float) -> int:
    return round(index * 1e9 / fps)


def _check_fps(fps: float, what: Path) -> float:
    if not fps > 0:
        raise DatasetError(f"{what}: frame rate must be > 0, got {fps}")
    return float(fps)


class ImageFolderSequence(IndexedFrameSource):
    """Images of one folder in natural name order (frame2 before frame10), stamped k / ``fps``.

    Args:
        path: folder of images (PNG, JPEG, ...); grey images become 3-channel RGB.
        calib: calibration file, ``"fx,fy,cx,cy"`` or Intrinsics; default a calibration file in
            the folder (see module docstring).
        fps: frame rate used for the stamps.

    """

    def __init__(self, path: Path, calib: CalibrationSource | None = None, fps: float = DEFAULT_FPS) -> None:
        self.path = Path(path)
        self.fps = _check_fps(fps, self.path)
        self._images = list_images(self.path)
        if not self._images:
            raise DatasetError(f"{self.path}: no images in folder")
        height, width = read_rgb(self._images[0]).shape[:2]
        self._intrinsics = _intrinsics_for(calib, [find_calibration_file(self.path)], width, height, self.path)

    def __len__(self) -> int:
        """Number of images."""
        return len(self._images)

    def load(self, index: int) -> SequenceFrame:
        """Frame ``index`` (image only)."""
        path = self._images[index]
        return SequenceFrame(
            name=path.stem, stamp_ns=_frame_stamp_ns(index, self.fps),
            rgb=read_rgb_sized(path, self._intrinsics), intrinsics=self._intrinsics,
        )


class VideoSequence:
    """Frames of a video file decoded with OpenCV, stamped k / ``fps``, named ``000000``, ``000001``, ...

    Args:
        path: video file (anything cv2.VideoCapture opens).
        calib: calibration file, ``"fx,fy,cx,cy"`` or Intrinsics; default a calibration file next to
            the video (see module docstring).
        fps: frame rate for the stamps; default the container's, else 30.

    """

    def __init__(self, path: Path, calib: CalibrationSource | None = None, fps: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: video file does not exist")
        capture = self._open()
        try:
            container_fps = float(capture.get(cv2.CAP_PROP_FPS))
            self._frame_count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            ok, first = capture.read()
        finally:
            capture.release()
        if not ok:
            raise DatasetError(f"{self.path}: video has no decodable frame")
        self.fps = _check_fps(fps if fps is not None else (container_fps if container_fps > 0 else DEFAULT_FPS),
                              self.path)
        height, width = first.shape[:2]
        candidates = [self.path.with_suffix(".yaml"), find_calibration_file(self.path.parent)]
        self._intrinsics = _intrinsics_for(calib, candidates, width, height, self.path)

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise DatasetError(f"{self.path}: OpenCV cannot open this video")
        return capture

    def __len__(self) -> int:
        """Frame count the container declares (some codecs only estimate it)."""
        return self._frame_count

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the video frames."""
        return self._intrinsics

    def __iter__(self) -> Iterator[SequenceFrame]:
        """Decode frames in order until the video ends."""
        capture = self._open()
        try:
            index = 0
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield self._frame(index, image)
                index += 1
        finally:
            capture.release()

    def _frame(self, index: int, image: NDArray[Any]) -> SequenceFrame:
        rgb = to_rgb8(image, f"{self.path} frame {index}")
        return SequenceFrame(
            name=f"{index:06d}", stamp_ns=_frame_stamp_ns(index, self.fps), rgb=rgb, intrinsics=self._intrinsics
        )
