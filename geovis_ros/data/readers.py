"""One entry point for every input format: :func:`open_sequence` detects what ``path`` is.

Detection, in order:

====================================  =====================================================
what is found                         reader
====================================  =====================================================
``.bag`` / ``.db3`` / ``.mcap`` file,  :class:`~geovis_ros.data.bag.BagSequence`
``metadata.yaml`` (file or in dir)
video file (``.mp4``, ``.avi``, ...)   :class:`~geovis_ros.data.folder.VideoSequence`
folder with ``rgb.txt``                :class:`~geovis_ros.data.tum.TumSequence`
folder with ``frame-*.color.*``        :class:`~geovis_ros.data.sevenscenes.SevenScenesSequence`
folder with ``image_0/``, ``image_2/``  :class:`~geovis_ros.data.kitti.KittiSequence`
(or ``image_l/`` ...) and ``calib.txt``
folder with image files                :class:`~geovis_ros.data.folder.ImageFolderSequence`
====================================  =====================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geovis_ros.data.bag import BagSequence
from geovis_ros.data.calibration import CalibrationSource
from geovis_ros.data.folder import VIDEO_EXTENSIONS, ImageFolderSequence, VideoSequence
from geovis_ros.data.frame_source import FrameSource
from geovis_ros.data.image_io import DatasetError, list_images
from geovis_ros.data.kitti import CAMERA_FOLDERS, KittiSequence
from geovis_ros.data.sevenscenes import COLOR_FILE, SevenScenesSequence
from geovis_ros.data.tum import TumSequence

__all__ = ["FrameSource", "detect_format", "open_sequence"]

BAG_SUFFIXES = (".bag", ".db3", ".mcap")
LOOKED_FOR = (
    "a bag (.bag / .db3 / .mcap file, or a directory with metadata.yaml)",
    f"a video file ({' '.join(VIDEO_EXTENSIONS)})",
    "a TUM RGB-D folder (rgb.txt)",
    "a 7-Scenes folder (frame-XXXXXX.color.png/.jpg)",
    f"a KITTI odometry folder (calib.txt and one of {', '.join(CAMERA_FOLDERS)}/)",
    "a folder of images",
)
READERS: dict[str, Callable[..., FrameSource]] = {
    "bag": BagSequence,
    "video": VideoSequence,
    "tum": TumSequence,
    "7scenes": SevenScenesSequence,
    "kitti": KittiSequence,
    "images": ImageFolderSequence,
}


def detect_format(path: Path) -> str:
    """Name of the reader for ``path`` (a key of :data:`READERS`); DatasetError listing what was looked for."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: does not exist")
    if path.is_file():
        if path.suffix.lower() in BAG_SUFFIXES or path.name == "metadata.yaml":
            return "bag"
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return "video"
    else:
        if (path / "metadata.yaml").is_file():
            return "bag"
        if (path / "rgb.txt").is_file():
            return "tum"
        if any(COLOR_FILE.match(p.name) for p in path.iterdir()):
            return "7scenes"
        if (path / "calib.txt").is_file() and any((path / name).is_dir() for name in CAMERA_FOLDERS):
            return "kitti"
        if list_images(path):
            return "images"
    raise DatasetError(f"{path}: unrecognised input; looked for " + "; ".join(LOOKED_FOR))


def open_sequence(path: Path, calib: CalibrationSource | None = None, **options: Any) -> FrameSource:
    """Open any supported input as a frame source (iterable of SequenceFrame with ``intrinsics``).

    Args:
        path: dataset folder, bag, or video (see the module docstring for detection).
        calib: calibration file, ``"fx,fy,cx,cy"`` or Intrinsics; overrides what the dataset has.
        **options: passed to the reader (e.g. ``fps`` for images/video, ``image_topic`` for bags,
            ``camera`` for KITTI); an option the detected reader does not take raises DatasetError.

    Returns:
        A ``len()``-able source for every format (a video's length is the container's count).

    """
    kind = detect_format(path)
    reader = READERS[kind]
    accepted = set(inspect.signature(reader).parameters) - {"path", "calib"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DatasetError(
            f"{path}: option(s) {', '.join(unknown)} do not apply to a {kind} input "
            f"(it takes: {', '.join(sorted(accepted)) or 'none'})"
        )
    return reader(Path(path), calib=calib, **options)
